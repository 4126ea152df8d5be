"""torch_custom_compiled: the compiled fixed-step solve gives the eager plugin's states, gradients
and NFE, compiles outside the timers, and refuses what it cannot do with one line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from odebench import registry  # noqa: E402
from odebench.backends.base import Batch  # noqa: E402
from odebench.backends.torch import MLPField, make_trainer  # noqa: E402
from odebench.models import MLPSpec, mlp_weights  # noqa: E402
from odebench.problems import PROBLEMS  # noqa: E402
from odebench.protocol import UnsupportedError  # noqa: E402

SPEC = MLPSpec((2, 8, 2), "tanh", 0.1, 0.0)


def _plugins():
    return registry.get_plugin("torch_custom"), registry.get_plugin("torch_custom_compiled")


def test_it_declares_the_eager_plugins_fixed_methods_and_backprop_only():
    eager, compiled = _plugins()
    assert compiled.compiled and not eager.compiled
    assert set(compiled.methods) == {m for m in eager.methods if eager.is_fixed_step(m)}
    assert compiled.grad_modes == ("backprop",)
    assert compiled.unsupported_reason("dopri5", "backprop") and compiled.unsupported_reason("rk4", "adjoint")


def test_a_step_grid_that_misses_an_output_time_is_unsupported_not_interpolated():
    _, compiled = _plugins()
    f = MLPField(SPEC, mlp_weights(SPEC, 0), torch.float64)
    y0 = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(UnsupportedError, match="misses an output time"):
        compiled.odeint(f, y0, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64), method="rk4", step_size=0.25)


@pytest.mark.slow
@pytest.mark.parametrize("method,step_size", [("rk4", None), ("heun", 0.125)])
def test_compiled_states_gradients_and_nfe_equal_the_eager_plugins(method, step_size):
    """One compile per case: about a minute on 2 CPU cores."""
    eager, compiled = _plugins()
    y0 = torch.tensor(np.random.default_rng(0).normal(size=(4, 2)), dtype=torch.float64)
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    out = {}
    for plugin in (eager, compiled):
        f = MLPField(SPEC, mlp_weights(SPEC, 1), torch.float64)
        if plugin is compiled:
            assert plugin.prepare(f, y0, ts, method=method, step_size=step_size, grad_mode="backprop") > 0
        sol = plugin.odeint(f, y0, ts, method=method, step_size=step_size)
        assert sol.ok, sol.message
        grads = torch.autograd.grad(sol.ys.square().sum(), list(f.parameters()))
        out[plugin.name] = (sol, grads)
    (a, ga), (b, gb) = out["torch_custom"], out["torch_custom_compiled"]
    assert b.ys.shape == a.ys.shape
    torch.testing.assert_close(b.ys, a.ys, rtol=1e-12, atol=1e-14)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-14)
    assert (b.stats.nfe, b.stats.n_steps) == (a.stats.nfe, a.stats.n_steps)


@pytest.mark.slow
def test_the_trainer_compiles_once_untimed_and_the_harness_counts_the_eager_nfe():
    """The training path: compile_s from prepare, no compile after it, NFE counted in the eager pass."""
    eager, compiled = _plugins()
    problem = PROBLEMS["linear_spiral"](n_points=60, t1=3.0)
    truth = problem.reference(problem.ts)
    starts = np.arange(0, 40, 10)
    batch = Batch(truth[starts], problem.ts[:5], np.stack([truth[starts + i] for i in range(5)]))
    passes = {}
    for plugin in (eager, compiled):
        trainer = make_trainer(plugin, SPEC, mlp_weights(SPEC, 2), method="rk4", rtol=1e-7, atol=1e-9,
                               grad_mode="backprop", max_steps=1000, lr=1e-3, dtype="float64")
        tb = trainer.to_batch(batch)
        if plugin is compiled:
            assert trainer.compile_s > 0
            spent = trainer.compile_s
            from torch._dynamo.utils import counters

            graphs = counters["stats"]["unique_graphs"]
            trainer.reset()  # a new field of the same structure reuses the compiled code
            trainer.backward(trainer.forward(trainer.to_batch(batch)))
            assert trainer.compile_s == spent and counters["stats"]["unique_graphs"] == graphs
            trainer.reset()
        passes[plugin.name] = trainer.instrumented(tb)
    a, b = passes["torch_custom"], passes["torch_custom_compiled"]
    assert b.nfe_fwd == a.nfe_fwd == b.stats.nfe == 16 and b.nfe_bwd == a.nfe_bwd == 0
    assert b.loss == pytest.approx(a.loss, rel=1e-12)


def test_the_solver_swap_evaluates_a_compiled_plugin_eagerly_without_compiling():
    """The swap's untimed evaluation with the trained solver (float64, the whole trajectory) runs the
    compiled plugin's code op by op: compiling it for that one call took minutes per case."""
    from torch._dynamo.utils import counters

    from odebench import swap

    eager, compiled = _plugins()
    params = [a for layer in mlp_weights(SPEC, 0) for a in layer]
    ts = np.linspace(0.0, 2.0, 41)
    y0 = np.array([[1.0, 0.5], [-0.3, 0.2]])
    ys = {}
    for plugin in (eager, compiled):
        before = sum(counters["stats"].values())
        ys[plugin.name] = swap.mlp_trajectory(SPEC, params, ts, y0, swap.Solver(plugin, "rk4", 1e-7, 1e-9, None, "float64"),
                                              max_steps=1000, grad_mode="backprop")
        assert sum(counters["stats"].values()) == before, plugin.name  # dynamo saw no frame
    np.testing.assert_allclose(ys["torch_custom_compiled"], ys["torch_custom"], rtol=1e-13, atol=1e-15)
