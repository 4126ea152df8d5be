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


def test_it_declares_the_eager_plugins_fixed_methods_backprop_and_the_adjoint():
    eager, compiled = _plugins()
    assert compiled.compiled and not eager.compiled
    assert set(compiled.methods) == {m for m in eager.methods if eager.is_fixed_step(m)}
    assert compiled.grad_modes == ("backprop", "adjoint")
    assert compiled.unsupported_reason("dopri5", "backprop") and compiled.unsupported_reason("rk4", "checkpoint")
    assert compiled.unsupported_reason("rk4", "adjoint-seminorm") and compiled.unsupported_reason("rk4", "adjoint") is None


def _adjoint_pair(method, step_size, ts, weights_seed=1):
    """The eager adjoint and the compiled plugin's, its code run op by op (``force_eager``: no compiling):
    per plugin the solution, the gradients for ``y0`` and the parameters, and the counted NFE."""
    from odebench.backends.torch import NFECounter, counting

    out = {}
    for plugin in _plugins():
        f = MLPField(SPEC, mlp_weights(SPEC, weights_seed), torch.float64)
        y0 = torch.tensor(np.random.default_rng(0).normal(size=(4, 2)), dtype=torch.float64, requires_grad=True)
        weights = torch.arange(1.0, len(ts) + 1.0, dtype=torch.float64)[:, None, None]  # a cotangent per time
        counter = NFECounter()
        with torch.compiler.set_stance("force_eager"), counting(f, counter):
            sol = plugin.odeint(f, y0, ts, method=method, step_size=step_size, grad_mode="adjoint")
            assert sol.ok, sol.message
            counter.phase = "bwd"
            grads = torch.autograd.grad((sol.ys.square() * weights).sum(), [y0, *f.parameters()])
        out[plugin.name] = (sol, grads, counter)
    return out["torch_custom"], out["torch_custom_compiled"]


@pytest.mark.parametrize("method,step_size,ts", [
    ("rk4", None, [0.0, 0.25, 0.5, 1.0, 1.5]),
    ("heun", 0.125, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("midpoint", 0.3, [1.0, 0.7, 0.1]),  # backwards in time, several steps between outputs
    ("euler", 0.1, [0.0, 0.5]),
    ("rk4-classic", None, [0.0, 0.2, 0.3, 0.7]),
    ("euler", 0.05, [0.0, 0.5, 1.0]),  # 20 steps back: more than unroll_steps, one compiled step in a loop
], ids=["rk4-grid", "heun-steps", "midpoint-reversed", "euler-one-interval", "rk4-classic-uneven", "euler-stepwise"])
def test_its_adjoint_is_the_eager_adjoint_step_for_step(method, step_size, ts):
    """The reverse solve's grid, jumps, cotangents and parameter quadrature against the eager adjoint's,
    run uncompiled: gradients to rounding, the same stats and the same counted evaluations and VJPs."""
    assert _plugins()[1].unroll_steps == 16  # the last case's 20 steps take the stepwise path
    (a, ga, ca), (b, gb, cb) = _adjoint_pair(method, step_size, torch.tensor(ts, dtype=torch.float64))
    torch.testing.assert_close(b.ys, a.ys, rtol=1e-13, atol=1e-15)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    assert b.stats.extra == a.stats.extra and b.stats.extra["nfe_bwd"] > 0
    assert (b.stats.nfe, b.stats.n_steps) == (a.stats.nfe, a.stats.n_steps)
    assert (cb.nfe_fwd, cb.nfe_bwd, cb.n_vjp) == (ca.nfe_fwd, ca.nfe_bwd, ca.n_vjp) == (
        a.stats.nfe, a.stats.extra["nfe_bwd"], a.stats.extra["n_vjp"])


def test_its_adjoint_differs_from_backprop_as_the_continuous_adjoint_does():
    """Not backprop in disguise: on a coarse grid the adjoint's gradient is the continuous one's
    discretisation, which differs from the exact gradient of the discrete solve."""
    (_, g_adj, _), _ = _adjoint_pair("euler", None, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    _, compiled = _plugins()
    f = MLPField(SPEC, mlp_weights(SPEC, 1), torch.float64)
    y0 = torch.tensor(np.random.default_rng(0).normal(size=(4, 2)), dtype=torch.float64, requires_grad=True)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    with torch.compiler.set_stance("force_eager"):
        sol = compiled.odeint(f, y0, ts, method="euler", grad_mode="backprop")
        g_bp = torch.autograd.grad((sol.ys.square() * torch.arange(1.0, 4.0, dtype=torch.float64)[:, None, None]).sum(),
                                   [y0, *f.parameters()])
    assert not torch.allclose(g_adj[1], g_bp[1], rtol=1e-6)


def test_its_reverse_solve_reports_a_step_budget_and_a_nonfinite_adjoint_as_solver_errors():
    from odebench_plugins.torch_custom.adjoint import SolverError

    _, compiled = _plugins()
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    f = MLPField(SPEC, mlp_weights(SPEC, 1), torch.float64)
    y0 = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    with torch.compiler.set_stance("force_eager"):
        sol = compiled.odeint(f, y0, ts, method="rk4", grad_mode="adjoint", max_steps=4)
        assert sol.ok
        sol.ys.sum().backward()  # four steps back: within the budget
        sol = compiled.odeint(f, y0, ts, method="rk4", grad_mode="adjoint", max_steps=4)
        sol.ys.grad_fn.job.max_steps = 3  # the node is the Function's context
        with pytest.raises(SolverError, match="4 fixed steps > 3") as err:
            sol.ys.sum().backward()
        assert err.value.status == "max_steps"
        sol = compiled.odeint(f, y0, ts, method="rk4", grad_mode="adjoint")
        with pytest.raises(SolverError, match="non-finite adjoint") as err:
            sol.ys.backward(torch.full_like(sol.ys, float("inf")))
        assert err.value.status == "nonfinite"


def test_a_step_grid_that_misses_an_output_time_is_unsupported_not_interpolated():
    _, compiled = _plugins()
    f = MLPField(SPEC, mlp_weights(SPEC, 0), torch.float64)
    y0 = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(UnsupportedError, match="misses an output time"):
        compiled.odeint(f, y0, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64), method="rk4", step_size=0.25)


@pytest.mark.slow
@pytest.mark.parametrize("method,step_size,grad_mode", [("rk4", None, "backprop"), ("heun", 0.125, "backprop"),
                                                        ("rk4", None, "adjoint"), ("heun", 0.05, "adjoint")])
def test_compiled_states_gradients_and_nfe_equal_the_eager_plugins(method, step_size, grad_mode):
    """One compile per case: about a minute on 2 CPU cores."""
    from torch._dynamo.utils import counters

    eager, compiled = _plugins()
    y0 = torch.tensor(np.random.default_rng(0).normal(size=(4, 2)), dtype=torch.float64)
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    out = {}
    for plugin in (eager, compiled):
        f = MLPField(SPEC, mlp_weights(SPEC, 1), torch.float64)
        if plugin is compiled:
            assert plugin.prepare(f, y0, ts, method=method, step_size=step_size, grad_mode=grad_mode) > 0
            graphs = counters["stats"]["unique_graphs"]
        with torch.compiler.set_stance("eager_on_recompile"):  # what prepare compiled, or eager
            sol = plugin.odeint(f, y0, ts, method=method, step_size=step_size, grad_mode=grad_mode)
            assert sol.ok, sol.message
            grads = torch.autograd.grad(sol.ys.square().sum(), list(f.parameters()))
        out[plugin.name] = (sol, grads)
    assert counters["stats"]["unique_graphs"] == graphs  # the timed calls ran compiled code, none new
    (a, ga), (b, gb) = out["torch_custom"], out["torch_custom_compiled"]
    assert b.ys.shape == a.ys.shape
    torch.testing.assert_close(b.ys, a.ys, rtol=1e-12, atol=1e-14)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-14)
    assert (b.stats.nfe, b.stats.n_steps) == (a.stats.nfe, a.stats.n_steps)
    assert b.stats.extra == a.stats.extra


@pytest.mark.slow
@pytest.mark.parametrize("grad_mode,nfe_bwd", [("backprop", 0), ("adjoint", 16)])
def test_the_trainer_compiles_once_untimed_and_the_harness_counts_the_eager_nfe(grad_mode, nfe_bwd):
    """The training path: compile_s from prepare, no compile after it, NFE counted in the eager pass."""
    eager, compiled = _plugins()
    problem = PROBLEMS["linear_spiral"](n_points=60, t1=3.0)
    truth = problem.reference(problem.ts)
    starts = np.arange(0, 40, 10)
    batch = Batch(truth[starts], problem.ts[:5], np.stack([truth[starts + i] for i in range(5)]))
    passes = {}
    for plugin in (eager, compiled):
        trainer = make_trainer(plugin, SPEC, mlp_weights(SPEC, 2), method="rk4", rtol=1e-7, atol=1e-9,
                               grad_mode=grad_mode, max_steps=1000, lr=1e-3, dtype="float64")
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
    assert b.nfe_fwd == a.nfe_fwd == b.stats.nfe == 16 and b.nfe_bwd == a.nfe_bwd == nfe_bwd
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
