"""The seminorm adjoint (Kidger et al. 2021) saves backward evaluations where it should.

The problem is built so that the parameter adjoint ``a_θ`` alone limits the reverse solve's
steps: besides a small MLP, the field has a term ``W3 sin(ω t)`` with ``W3 = 0``. The state
never sees it (so the forward solve and the ``z``, ``a`` channels are smooth), but
``a_W3 = -∫ aᵀ sin(ω t) dt`` is an oscillatory quadrature whose local error, in the full
norm, forces small steps. The seminorm leaves ``a_θ`` out of the error norm, so the reverse
solve of every plugin declaring ``adjoint-seminorm`` must take far fewer evaluations; a
seminorm that still measured ``a_θ`` (the full norm) takes as many and fails.

Evaluations are counted by wrapping the field, as the harness's instrumented pass does.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from odebench import registry
from odebench.measure import NFECounter

PLUGINS = registry.plugin_names()
HIDDEN, K = 16, 8  # 98 parameters for a state of 2
RTOL, ATOL = 1e-5, 1e-6
MAX_STEPS = 10_000  # a broken controller fails fast instead of stepping for minutes
_rng = np.random.default_rng(0)
W1 = _rng.normal(0.0, 1.0, (HIDDEN, 2))
B1 = _rng.normal(0.0, 0.5, HIDDEN)
W2 = _rng.normal(0.0, 1.0 / np.sqrt(HIDDEN), (2, HIDDEN))
B2 = _rng.normal(0.0, 0.1, 2)
W3 = np.zeros((2, K))  # a parameter the state never feels, with an oscillating gradient
OMEGA = 2.0 * np.arange(1, K + 1)
Y0 = np.array([[1.0, 0.5]])
TS = np.array([0.0, 2.0])


def _torch_backward_nfe(plugin, grad_mode: str) -> tuple[int, int]:
    import torch

    from odebench.backends.torch import CountingField

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, value in dict(w1=W1, b1=B1, w2=W2, b2=B2, w3=W3).items():
                setattr(self, name, torch.nn.Parameter(torch.tensor(value)))
            self.register_buffer("omega", torch.tensor(OMEGA))

        def forward(self, t, y):
            return torch.tanh(y @ self.w1.T + self.b1) @ self.w2.T + self.b2 + torch.sin(self.omega * t) @ self.w3.T

    counter = NFECounter()
    f = CountingField(Field(), counter)
    sol = plugin.odeint(f, torch.tensor(Y0), torch.tensor(TS), method="dopri5", rtol=RTOL, atol=ATOL,
                        grad_mode=grad_mode, max_steps=MAX_STEPS)
    assert sol.ok, sol.message
    counter.phase = "bwd"
    sol.ys.square().sum().backward()
    assert f.inner.w3.grad is not None and torch.any(f.inner.w3.grad != 0)
    return counter.nfe_fwd, counter.nfe_bwd


@functools.cache
def _jax_field_class():
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    class Field(eqx.Module):
        w1: jax.Array
        b1: jax.Array
        w2: jax.Array
        b2: jax.Array
        w3: jax.Array
        omega: jax.Array

        def __call__(self, t, y):
            return jnp.tanh(y @ self.w1.T + self.b1) @ self.w2.T + self.b2 + jnp.sin(self.omega * t) @ self.w3.T

    return Field


_JAX_COUNTER = NFECounter()


def _jax_backward_nfe(plugin, grad_mode: str) -> tuple[int, int]:
    import jax
    import jax.numpy as jnp

    from odebench.backends.jax import counted

    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        model = _jax_field_class()(*(jnp.asarray(a) for a in (W1, B1, W2, B2, W3, OMEGA)))
        counter = _JAX_COUNTER  # one counter: its callbacks are static, so compiled code is reused
        counter.reset()

        def loss(m):
            sol = plugin.odeint(counted(m, counter), jnp.asarray(Y0), jnp.asarray(TS), method="dopri5",
                                rtol=RTOL, atol=ATOL, grad_mode=grad_mode, max_steps=MAX_STEPS)
            return jnp.sum(sol.ys**2)

        value, vjp = jax.vjp(loss, model)
        jax.block_until_ready(value)
        jax.effects_barrier()
        assert np.isfinite(float(value))
        counter.phase = "bwd"
        (grads,) = vjp(jnp.ones_like(value))
        jax.block_until_ready(grads)
        jax.effects_barrier()
        assert bool(jnp.all(jnp.isfinite(grads.w3))) and bool(jnp.any(grads.w3 != 0))
        return counter.nfe_fwd, counter.nfe_bwd
    finally:
        jax.config.update("jax_enable_x64", before)


DRIVERS = {"torch": _torch_backward_nfe, "jax": _jax_backward_nfe}


@pytest.mark.parametrize("name", PLUGINS)
def test_seminorm_needs_fewer_backward_evaluations(name):
    entry = registry.entry(name)
    cls = entry.load()
    if cls is None or "adjoint-seminorm" not in cls.grad_modes:
        pytest.skip(f"{name} does not declare adjoint-seminorm")
    reason = entry.available()
    if reason:
        pytest.skip(f"{name}: {reason}")
    plugin = registry.get_plugin(name)
    if plugin.framework not in DRIVERS:
        pytest.skip(f"no counting driver for framework {plugin.framework!r}")
    fwd_full, bwd_full = DRIVERS[plugin.framework](plugin, "adjoint")
    fwd_semi, bwd_semi = DRIVERS[plugin.framework](plugin, "adjoint-seminorm")
    assert fwd_semi == fwd_full, "the seminorm changes only the reverse solve"
    # Measured: the full norm needs 4-5x the seminorm's backward evaluations here (torch_custom
    # 158 vs 44, torchdiffeq 170 vs 32, diffrax 145 vs 37); half leaves a wide margin.
    assert bwd_semi < bwd_full, (name, bwd_semi, bwd_full)
    assert bwd_semi <= 0.5 * bwd_full, f"{name}: seminorm {bwd_semi} vs full norm {bwd_full} backward NFE"
