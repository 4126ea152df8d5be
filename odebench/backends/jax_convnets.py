"""The ODE-Net's dynamics block in JAX, from the shared numpy weights (:func:`odebench.models.convnet_weights`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from odebench.models import convnet_weights


def jax_convnet(channels: int, seed: int, dtype: Any, device: Any = None) -> Any:
    """The ODE-Net's dynamics block in JAX (an ``equinox.Module``), from :func:`convnet_weights`.

    GroupNorm(min(32, C)) → ReLU → 3×3 conv of ``[t, h]`` → GroupNorm → ReLU → 3×3 conv of
    ``[t, h]`` → GroupNorm, as :class:`~odebench.backends.torch_convnets.ODEFunc`, but on
    channels-last states ``(B, H, W, C)`` (see :func:`to_jax_layout`): XLA's CPU backend
    runs an NCHW convolution inside a ``while`` loop (every diffrax solve) about 30× slower
    than an NHWC one. Same values, same bytes per state.
    """
    import jax
    import jax.numpy as jnp

    w = convnet_weights(channels, seed)
    put = lambda a: jax.device_put(jnp.asarray(a, dtype=dtype), device)  # noqa: E731
    w1, b1, w2, b2 = w["convs"]
    convs = (np.transpose(w1, (2, 3, 1, 0)), b1, np.transpose(w2, (2, 3, 1, 0)), b2)  # OIHW → HWIO
    cls = _jax_convnet_class()
    return cls(tuple(put(a) for a in convs), tuple(put(a) for a in w["norms"]), min(32, channels))


def to_jax_layout(block: str, y: np.ndarray) -> np.ndarray:
    """A state in torch's layout (NCHW for the convnet) in the JAX block's (NHWC)."""
    return np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1))) if block == "convnet" else y


_JAX_CONVNET: list[type] = []


def _jax_convnet_class() -> type:
    if _JAX_CONVNET:
        return _JAX_CONVNET[0]
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    def group_norm(x, g, b, groups, eps=1e-5):  # NHWC; biased variance, as torch
        n, h, w, c = x.shape
        xg = x.reshape(n, h, w, groups, c // groups)
        mean = xg.mean(axis=(1, 2, 4), keepdims=True)
        var = ((xg - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
        xg = (xg - mean) / jnp.sqrt(var + eps)
        return xg.reshape(n, h, w, c) * g + b

    def concat_conv(t, x, wt, bias):  # the time channel first, as torch's ConcatConv2d
        tt = jnp.ones_like(x[..., :1]) * t.astype(x.dtype)
        out = jax.lax.conv_general_dilated(jnp.concatenate([tt, x], axis=-1), wt, (1, 1), ((1, 1), (1, 1)),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out + bias

    class ConvField(eqx.Module):
        """``f(t, h)`` of the ODE-Net block (see :func:`jax_convnet`)."""

        convs: tuple
        norms: tuple
        groups: int = eqx.field(static=True)

        def __call__(self, t, y):
            w1, b1, w2, b2 = self.convs
            g1, c1, g2, c2, g3, c3 = self.norms
            t = jnp.asarray(t)
            h = jax.nn.relu(group_norm(y, g1, c1, self.groups))
            h = concat_conv(t, h, w1, b1)
            h = jax.nn.relu(group_norm(h, g2, c2, self.groups))
            h = concat_conv(t, h, w2, b2)
            return group_norm(h, g3, c3, self.groups)

    _JAX_CONVNET.append(ConvField)
    return ConvField
