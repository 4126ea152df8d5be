"""Per-step cost of every plugin × method on one fixed small problem: forward, backprop, adjoint.

One benchmark per registered plugin × its declared method × mode, each a single solve of the
same batch of the linear spiral through a 2-16-2 tanh MLP (float32, CPU): ``forward`` is a
no-grad solve, ``backprop`` and ``adjoint`` a forward and backward pass in that grad mode
(learning rate 0, so every round does the same work). ``extra_info`` carries the steps and
NFE of the solve, so ``odebench report results/benchmarks.json`` shows the cost per step.

In the normal test run pytest-benchmark is disabled (``--benchmark-disable`` in addopts) and
each benchmark runs its function once: a smoke test of every combination. CI measures them
with ``--benchmark-enable --benchmark-json results/benchmarks.json``. Unavailable plugins and
undeclared combinations are skipped. JAX plugins' benchmarks (each compiles its step) and the
implicit methods' are marked ``slow``: ``pytest tests/benchmarks -m slow`` runs them.
"""

from __future__ import annotations

import numpy as np
import pytest

from odebench import registry
from odebench.models import MLPSpec, mlp_weights
from odebench.problems import PROBLEMS
from odebench.protocol import STIFF_METHODS
from odebench.workloads.train.case import make_batches

MODES = ("forward", "backprop", "adjoint")
SPEC = MLPSpec((2, 16, 2), "tanh", 0.1, 0.0)
# 21 observations 0.1 apart; a batch of 8 windows of 11 points: 10 grid steps per solve.
PROBLEM = PROBLEMS["linear_spiral"](t1=2.0, n_points=21)
RTOL, ATOL = 1e-5, 1e-7

# The benchmark settings, once for every benchmark here (command-line options still win).
pytestmark = pytest.mark.benchmark(group="step cost", min_rounds=5, max_time=0.25, warmup=False)


def _cases():
    out = []
    for name in registry.plugin_names():
        cls = registry.entry(name).load()
        jax = cls is not None and cls.framework == "jax"
        for method in sorted(cls.methods) if cls is not None else ["-"]:
            # `slow` (run with -m slow): a JAX plugin compiles every method × mode, and the implicit
            # methods build Jacobians (each 5-40 s on 2 cores); a torch.compile'd plugin compiles each
            # method for a minute or more (its adjoint's reverse solve too), so by default it runs the
            # methods the README's ratios use, forward and backprop.
            for mode in MODES:
                compiled = cls is not None and cls.compiled and (method not in ("rk4", "dopri5") or mode == "adjoint")
                marks = [pytest.mark.slow] if jax or method in STIFF_METHODS or compiled else []
                out.append(pytest.param(name, method, mode, id=f"{name}-{method}-{mode}", marks=marks))
    return out


@pytest.fixture(scope="module")
def batch():
    ts = PROBLEM.ts
    (b,) = make_batches(PROBLEM.exact(ts), ts, n=1, batch_size=8, batch_time=11, seed=0)
    return b


@pytest.mark.parametrize(("plugin", "method", "mode"), _cases())
def test_step_cost(benchmark, batch, plugin, method, mode):
    from odebench.backends import get_backend

    entry = registry.entry(plugin)
    reason = entry.available()
    if reason:
        pytest.skip(reason)
    cls = entry.load()
    grad = mode if mode != "forward" else ("backprop" if "backprop" in cls.grad_modes else cls.grad_modes[0])
    why = cls.unsupported_reason(method, grad, "cpu")
    if why:
        pytest.skip(why)
    p = registry.get_plugin(plugin)
    trainer = get_backend(p.backend_framework()).make_trainer(
        p, SPEC, mlp_weights(SPEC, 0), method=method, rtol=RTOL, atol=ATOL, grad_mode=grad, max_steps=10_000,
        lr=0.0, optimizer="sgd", dtype="float32", device="cpu")
    b = trainer.to_batch(batch)
    counts = trainer.instrumented(b)  # untimed: steps and NFE of this solve (and JAX compiles here)

    if mode == "forward":
        def step():
            return trainer.predict(batch.ts, batch.y0)
    else:
        def step():
            trainer.backward(trainer.forward(b))
            trainer.sync()

    step()  # warm-up (JIT compilation is not a step's cost)
    out = benchmark(step)
    steps = counts.stats.n_steps
    benchmark.extra_info.update(plugin=plugin, method=method, mode=mode, grad_mode=grad,
                                steps=steps, nfe_fwd=counts.nfe_fwd,
                                nfe_bwd=counts.nfe_bwd if mode != "forward" else 0)
    if mode == "forward":
        assert np.all(np.isfinite(out)) and out.shape[0] == len(batch.ts)
    assert counts.nfe_fwd > 0 and (steps is None or steps > 0)
