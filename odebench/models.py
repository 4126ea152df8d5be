"""Model specifications and the deterministic initial weights every framework shares.

Weights are drawn once in numpy from the seed, in a fixed order, so a torch model and
a JAX model built from the same spec and seed start from bit-identical float64 values
(DESIGN §4, fairness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ACTIVATIONS = ("tanh", "relu", "softplus")


@dataclass(frozen=True)
class MLPSpec:
    """A multilayer perceptron vector field ``f(t, y) = MLP(y)``.

    Arguments:
        sizes: layer widths including input and output, e.g. ``(2, 50, 2)``.
        activation: one of :data:`ACTIVATIONS`, applied between layers (not after the last).
        weight_std: standard deviation of the normal initial weights (default 0.1).
        bias: constant initial bias (default 0).
    """

    sizes: tuple[int, ...] = (2, 50, 2)
    activation: str = "tanh"
    weight_std: float = 0.1
    bias: float = 0.0

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(int(s) < 1 for s in self.sizes):
            raise ValueError(f"model.sizes must list at least two positive widths, got {list(self.sizes)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown model.activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in zip(self.sizes[:-1], self.sizes[1:]))


def mlp_weights(spec: MLPSpec, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Initial ``(W, b)`` per layer, ``W`` shaped ``(out, in)`` like ``torch.nn.Linear``.

    Arguments:
        spec: the model.
        seed: seed of the numpy generator (``numpy.random.default_rng``).

    Returns:
        A list of float64 arrays ``[(W1, b1), (W2, b2), ...]``.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(spec.sizes[:-1], spec.sizes[1:]):
        w = rng.normal(0.0, spec.weight_std, size=(n_out, n_in))
        b = np.full((n_out,), spec.bias, dtype=np.float64)
        layers.append((w, b))
    return layers


def convnet_weights(channels: int, seed: int) -> dict[str, list[np.ndarray]]:
    """Initial weights of the ODE-Net dynamics block, drawn once in numpy for every framework.

    The two 3×3 convs (``channels + 1`` inputs: the time channel) as torch's default
    ``Conv2d`` init draws them, ``U(-1/√fan_in, 1/√fan_in)`` for weight and bias; the three
    GroupNorms start at weight 1, bias 0.

    Returns:
        ``{"convs": [W1, b1, W2, b2], "norms": [g1, b1, g2, b2, g3, b3]}`` as float64,
        ``W`` shaped ``(out, in, 3, 3)``.
    """
    rng = np.random.default_rng([seed, 6])
    bound = 1.0 / math.sqrt((channels + 1) * 9)
    convs = []
    for _ in range(2):
        convs.append(rng.uniform(-bound, bound, size=(channels, channels + 1, 3, 3)))
        convs.append(rng.uniform(-bound, bound, size=(channels,)))
    norms = []
    for _ in range(3):
        norms += [np.ones(channels), np.zeros(channels)]
    return {"convs": convs, "norms": norms}
