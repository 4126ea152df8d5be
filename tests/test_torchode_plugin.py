"""The torchode plugin's quirks: method map, grid stepping, per-sample statuses and statistics,
NFE against the harness's count, gradients, and the compiled variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

torchode = pytest.importorskip("torchode")

from odebench.backends.base import Batch  # noqa: E402
from odebench.backends.torch import CountingField, MLPField, make_trainer  # noqa: E402
from odebench.measure import NFECounter  # noqa: E402
from odebench.models import MLPSpec, mlp_weights  # noqa: E402
from odebench.problems import LinearSpiral  # noqa: E402
from odebench.protocol import Status  # noqa: E402
from odebench_plugins.torch_custom import tableaus  # noqa: E402
from odebench_plugins.torchode_solvers import (  # noqa: E402
    TorchodeCompiledPlugin,
    TorchodePlugin,
    batch_status,
)

PLUGIN = TorchodePlugin()
SPEC = MLPSpec((2, 16, 2))
F64 = torch.float64
A = torch.as_tensor(np.asarray(LinearSpiral().A), dtype=F64)


class Linear(nn.Module):
    """``y' = A y`` with a trainable ``A``; declared autonomous (one call per batch)."""

    autonomous = True

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, y):
        return y @ self.A.T


class Decay(nn.Module):
    """``x' = -k x``, ``k' = 0``: each sample carries its own rate ``k`` in its state."""

    autonomous = True

    def forward(self, t, y):
        return torch.stack([-y[..., 1] * y[..., 0], torch.zeros_like(y[..., 1])], dim=-1)


class Drive(nn.Module):
    """``y' = cos(t)``: depends on t only (not autonomous, so adaptive solves vmap it)."""

    def forward(self, t, y):
        return torch.cos(t) * torch.ones_like(y)


class LogField(nn.Module):
    """``y' = -log(y)``: NaN at once for a sample starting below 0."""

    autonomous = True

    def forward(self, t, y):
        return -torch.log(y)


def _mlp(counter: NFECounter | None = None, seed: int = 0) -> nn.Module:
    f = MLPField(SPEC, mlp_weights(SPEC, seed), F64)
    return f if counter is None else CountingField(f, counter)


# -- the method map ---------------------------------------------------------------------


def test_method_map_is_torchodes_methods_with_odebenchs_tableaus():
    assert PLUGIN.methods == {"euler": "Euler", "heun": "Heun", "dopri5": "Dopri5", "tsit5": "Tsit5"}
    for method in ("heun", "dopri5", "tsit5"):
        ours = tableaus.get(method)
        theirs = getattr(torchode, PLUGIN.methods[method]).TABLEAU
        n = ours.stages
        assert theirs.c.tolist() == pytest.approx(ours.c, abs=1e-15), method
        assert theirs.a.shape == (n, n), method
        for i, row in enumerate(ours.a):
            assert theirs.a[i].tolist() == pytest.approx(list(row) + [0.0] * (n - len(row)), abs=1e-15), (method, i)
        assert theirs.b.tolist() == pytest.approx(ours.b, abs=1e-15), method
    # tsit5's error weights are odebench's with the opposite sign (invisible to a norm).
    tsit5 = torchode.Tsit5.TABLEAU.b_err.tolist()
    assert tsit5 == pytest.approx([-e for e in tableaus.TSIT5.e], abs=1e-15)
    # dopri5's are Shampine's, as torchdiffeq's, not the Hairer ones torch_custom uses.
    from torchdiffeq._impl.dopri5 import _DORMAND_PRINCE_SHAMPINE_TABLEAU as shampine

    dopri5 = torchode.Dopri5.TABLEAU.b_err.tolist()
    assert dopri5 == pytest.approx(shampine.c_error.tolist(), abs=1e-15)
    assert dopri5 != pytest.approx(list(tableaus.DOPRI5.e), abs=1e-6)


def test_euler_step_is_y_plus_h_f():
    f = _mlp()
    y0 = torch.tensor([[0.3, -0.7], [1.1, 0.2]], dtype=F64)
    sol = PLUGIN.odeint(f, y0, torch.tensor([0.5, 0.75], dtype=F64), method="euler")
    with torch.no_grad():
        assert torch.allclose(sol.ys[1], y0 + 0.25 * f(0.5, y0), rtol=1e-15, atol=1e-15)


# -- fixed steps -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fixed_steps_land_on_the_grid(dtype):
    """0.1 added ten times is not 1.0: stepping in torchode's own time would take an 11th step."""
    y0 = torch.ones(2, 2, dtype=dtype)
    ts = torch.linspace(0, 1, 11, dtype=dtype)
    for kw in ({}, {"step_size": 0.1}):
        sol = PLUGIN.odeint(Linear().to(dtype), y0, ts, method="euler", **kw)
        assert sol.ok and sol.stats.n_steps == 10 and sol.stats.nfe == 10, kw
    # step_size 0.3 on [0, 1]: three steps and a shorter fourth, outputs interpolated.
    sol = PLUGIN.odeint(Linear().to(dtype), y0, ts, method="heun", step_size=0.3)
    assert sol.ok and sol.stats.n_steps == 4 and sol.ys.shape == (11, 2, 2)


def test_fixed_steps_need_an_equally_spaced_grid():
    ts = torch.tensor([0.0, 0.1, 0.3], dtype=F64)
    with pytest.raises(ValueError, match="equally spaced"):
        PLUGIN.odeint(Linear(), torch.ones(1, 2, dtype=F64), ts, method="euler")
    with pytest.raises(ValueError, match="step_size must be positive, got -0.1"):
        PLUGIN.odeint(Linear(), torch.ones(1, 2, dtype=F64), ts, method="euler", step_size=-0.1)
    assert PLUGIN.odeint(Linear(), torch.ones(1, 2, dtype=F64), ts, method="euler", step_size=0.05).ok


@pytest.mark.parametrize("t0, t1", [(1.0, 2.0), (2.0, 1.0)])
def test_f_sees_the_right_times(t0, t1):
    """y' = cos(t) from t0: euler is the left Riemann sum, heun the trapezoid rule, dopri5 sin."""
    n = 8
    ts = torch.linspace(t0, t1, n + 1, dtype=F64)
    y0 = torch.zeros(3, 1, dtype=F64)
    h = (t1 - t0) / n
    grid = [t0 + k * h for k in range(n + 1)]
    euler = sum(h * math.cos(t) for t in grid[:-1])
    heun = sum(h * (math.cos(a) + math.cos(b)) / 2 for a, b in zip(grid, grid[1:]))
    exact = math.sin(t1) - math.sin(t0)
    for method, expected, tol in (("euler", euler, 1e-13), ("heun", heun, 1e-13), ("dopri5", exact, 1e-7)):
        sol = PLUGIN.odeint(Drive(), y0, ts, method=method, rtol=1e-9, atol=1e-11)
        assert sol.ok, sol.message
        assert torch.allclose(sol.ys[-1], torch.full_like(y0, expected), rtol=0, atol=tol), method


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2)])
def test_fixed_step_convergence_order(method, order):
    y0 = torch.tensor([[2.0, 0.0]], dtype=F64)
    exact = torch.as_tensor(LinearSpiral().exact(np.array([0.0, 2.0]), y0[0].numpy())[-1], dtype=F64)
    errors = []
    for n in (40, 80, 160):
        sol = PLUGIN.odeint(Linear(), y0, torch.linspace(0, 2, n + 1, dtype=F64), method=method)
        errors.append(float((sol.ys[-1, 0].detach() - exact).abs().max()))
    observed = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert observed == pytest.approx([order, order], abs=0.1), observed


# -- statistics and NFE ------------------------------------------------------------------

STAGES = {"euler": 1, "heun": 2}


@pytest.mark.parametrize("grad_mode", ["backprop", "adjoint"])
@pytest.mark.parametrize("method, step_size", [("euler", None), ("heun", 0.05), ("dopri5", None),
                                                ("dopri5", 0.01), ("tsit5", None)])
def test_nfe_is_the_number_of_calls_the_harness_counts(method, step_size, grad_mode):
    counter = NFECounter()
    y0 = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-1.5, 1.0]], dtype=F64)
    ts = torch.linspace(0, 1.5, 7, dtype=F64)
    sol = PLUGIN.odeint(_mlp(counter), y0, ts, method=method, rtol=1e-7, atol=1e-9, step_size=step_size,
                        grad_mode=grad_mode)
    assert sol.ok, sol.message
    assert sol.stats.nfe == counter.nfe_fwd
    # torchode counts per sample, one increment per batched call, so every entry is the same.
    assert sol.stats.extra["n_f_evals"] == [counter.nfe_fwd] * 3
    n = sol.stats.n_steps
    if method in STAGES:
        assert sol.stats.nfe == STAGES[method] * n
    else:  # FSAL: 7 stages, the first reused; plus the initial-step selection's 2 (1 with dt0)
        assert sol.stats.nfe == (2 if step_size is None else 1) + 6 * n


def test_per_sample_steps_and_statistics():
    """Each sample steps on its own: a slow sample does not change a fast one's steps."""
    y0 = torch.tensor([[1.0, 0.1], [1.0, 30.0]], dtype=F64)
    ts = torch.linspace(0, 2, 5, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-6, atol=1e-8)
    sol = PLUGIN.odeint(Decay(), y0, ts, **kw)
    extra = sol.stats.extra
    assert sol.ok and extra["n_steps"][0] < extra["n_steps"][1]
    assert sol.stats.n_steps == max(extra["n_steps"])
    assert sol.stats.n_accepted == extra["n_accepted"][1]
    assert sol.stats.n_rejected == extra["n_rejected"][1] == extra["n_steps"][1] - extra["n_accepted"][1]
    assert extra["n_initialized"] == [5, 5]
    for i in range(2):
        alone = PLUGIN.odeint(Decay(), y0[i : i + 1], ts, **kw)
        assert alone.stats.extra["n_steps"] == [extra["n_steps"][i]], i
        assert alone.stats.extra["n_accepted"] == [extra["n_accepted"][i]], i
        assert torch.allclose(alone.ys[:, 0], sol.ys[:, i], rtol=1e-13, atol=1e-15), i


def test_trainer_instrumented_pass_agrees_with_torchode():
    p = LinearSpiral()
    truth = p.exact()
    starts = np.arange(0, 64, 8)
    batch = Batch(truth[starts], p.ts[:10], np.stack([truth[starts + i] for i in range(10)]))
    trainer = make_trainer(PLUGIN, SPEC, mlp_weights(SPEC, 1), method="dopri5", rtol=1e-6, atol=1e-8,
                           grad_mode="adjoint", max_steps=10_000, lr=1e-3, dtype="float64")
    passed = trainer.instrumented(trainer.to_batch(batch))
    assert passed.stats.nfe == passed.nfe_fwd > 0 and passed.nfe_bwd > 0
    assert trainer.compile_s is None  # nothing to compile in the eager plugin


# -- statuses ----------------------------------------------------------------------------


def test_every_torchode_status_code_has_its_odebench_status():
    expected = {"SUCCESS": Status.OK, "GENERAL_ERROR": Status.ERROR, "REACHED_DT_MIN": Status.DT_UNDERFLOW,
                "REACHED_MAX_STEPS": Status.MAX_STEPS, "INFINITE_NORM": Status.NONFINITE}
    assert {s.name for s in torchode.Status} == set(expected)
    for s in torchode.Status:
        assert batch_status([s.value], [1], 1)[0] is expected[s.name], s


def test_batch_status_is_the_worst_sample_with_counts():
    status, message = batch_status([0, 3, 3, 4, 0], [5, 2, 2, 1, 3], 5)
    assert status is Status.NONFINITE
    assert message == ("3 of 5 samples failed (2 max_steps, 1 nonfinite); torchode stops the whole batch "
                       "there, leaving 1 other samples unfinished")
    assert batch_status([2, 3], [1, 1], 4)[0] is Status.DT_UNDERFLOW
    assert batch_status([0, 1, 4], [4, 1, 1], 4)[0] is Status.ERROR
    assert batch_status([0, 0], [4, 4], 4) == (Status.OK, "")
    with pytest.raises(ValueError, match=r"unknown torchode status code\(s\) \[7\]; valid: \[0, 1, 2, 3, 4\]"):
        batch_status([0, 7], [1, 1], 1)


def test_max_steps_is_a_status():
    sol = PLUGIN.odeint(_mlp(), torch.ones(2, 2, dtype=F64), torch.linspace(0, 50, 3, dtype=F64),
                        method="dopri5", rtol=1e-12, atol=1e-14, max_steps=3)
    assert sol.status is Status.MAX_STEPS and sol.ys is None
    assert sol.message.startswith("2 of 2 samples failed (2 max_steps)")
    assert sol.stats.n_steps == 4  # the budget, plus the step that found it exceeded


def test_a_fixed_step_budget_of_exactly_the_steps_needed_is_enough():
    ts = torch.linspace(0, 1, 11, dtype=F64)
    assert PLUGIN.odeint(Linear(), torch.ones(1, 2, dtype=F64), ts, method="heun", max_steps=10).ok
    sol = PLUGIN.odeint(Linear(), torch.ones(1, 2, dtype=F64), ts, method="heun", max_steps=9)
    assert sol.status is Status.MAX_STEPS


def test_nan_in_one_sample_is_nonfinite():
    y0 = torch.tensor([[2.0], [-1.0]], dtype=F64)
    ts = torch.linspace(0, 1, 4, dtype=F64)
    sol = PLUGIN.odeint(LogField(), y0, ts, method="dopri5")
    assert sol.status is Status.NONFINITE and sol.ys is None
    assert sol.message == ("1 of 2 samples failed (1 nonfinite); torchode stops the whole batch there, "
                           "leaving 1 other samples unfinished")
    # Fixed steps have no error estimate: torchode says success, the plugin checks the states.
    sol = PLUGIN.odeint(LogField(), y0, ts, method="euler")
    assert sol.status is Status.NONFINITE and sol.message == "1 of 2 samples reached non-finite values"


# -- gradients ---------------------------------------------------------------------------


def _loss_and_grads(method, grad_mode, step_size, tol):
    f = Linear()
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=F64, requires_grad=True)
    ts = torch.linspace(0, 1, 5, dtype=F64)
    weights = torch.linspace(-1, 1, 5 * 2 * 2, dtype=F64).reshape(5, 2, 2)

    def loss(A, y):
        with torch.no_grad():
            f.A.copy_(A)
        sol = PLUGIN.odeint(f, y, ts, method=method, rtol=tol, atol=tol, step_size=step_size, grad_mode=grad_mode)
        assert sol.ok, sol.message
        return (sol.ys * weights).sum()

    value = loss(A, y0)
    grad_a, grad_y0 = torch.autograd.grad(value, [f.A, y0])
    return loss, grad_a, grad_y0


def _central(loss, eps=1e-5):
    x = torch.cat([A.reshape(-1), torch.tensor([1.0, 0.5, -0.3, 0.8], dtype=F64)])
    out = []
    for i in range(len(x)):
        hi, lo = x.clone(), x.clone()
        hi[i] += eps
        lo[i] -= eps
        with torch.no_grad():
            out.append((loss(hi[:4].reshape(2, 2), hi[4:].reshape(2, 2))
                        - loss(lo[:4].reshape(2, 2), lo[4:].reshape(2, 2))) / (2 * eps))
    return torch.stack(out)


@pytest.mark.parametrize("grad_mode, method, step_size, rel", [
    ("backprop", "heun", 0.05, 1e-8),  # the discrete gradient: exact up to the difference quotient
    ("backprop", "dopri5", None, 1e-5),
    ("adjoint", "tsit5", None, 1e-5),
    ("adjoint", "heun", 1 / 256, 1e-4),  # the continuous adjoint, O(h^2) from the discrete one
])
def test_gradients_match_central_differences(grad_mode, method, step_size, rel):
    loss, grad_a, grad_y0 = _loss_and_grads(method, grad_mode, step_size, tol=1e-12)
    fd = _central(loss)
    ours = torch.cat([grad_a.reshape(-1), grad_y0.reshape(-1)])
    assert torch.allclose(ours, fd, rtol=rel, atol=rel * float(fd.abs().max())), (ours, fd)


def test_adjoint_needs_a_module():
    with pytest.raises(TypeError, match="needs f to be a torch.nn.Module, got function"):
        PLUGIN.odeint(lambda t, y: -y, torch.ones(1, 1), torch.linspace(0, 1, 3), method="dopri5",
                      grad_mode="adjoint")


# -- the compiled variant ----------------------------------------------------------------


@pytest.mark.slow
def test_compiled_variant_equals_eager_and_reports_compile_time():
    """torch.compile of torchode's solve: about 1–2 minutes of compilation on 2 CPU cores."""
    compiled = TorchodeCompiledPlugin()
    p = LinearSpiral()
    truth = p.exact()
    starts = np.arange(0, 64, 8)
    batch = Batch(truth[starts], p.ts[:10], np.stack([truth[starts + i] for i in range(10)]))
    trainer = make_trainer(compiled, SPEC, mlp_weights(SPEC, 3), method="dopri5", rtol=1e-6, atol=1e-8,
                           grad_mode="backprop", max_steps=10_000, lr=1e-3, dtype="float64")
    y0, ts, _ = tb = trainer.to_batch(batch)
    assert trainer.compile_s > 0
    spent = trainer.compile_s
    trainer.to_batch(batch)  # same shapes: nothing more to compile
    assert trainer.compile_s == spent

    # A new vector field of the same structure (the trainer's reset, the timed loop) reuses
    # the compiled code: no graph is compiled after prepare.
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    results = {}
    for plugin in (PLUGIN, compiled):
        f = _mlp(seed=3)
        sol = plugin.odeint(f, y0, ts, method="dopri5", rtol=1e-6, atol=1e-8)
        grads = torch.autograd.grad(sol.ys.square().sum(), list(f.parameters()))
        results[plugin.name] = (sol, grads)
    assert counters["stats"]["unique_graphs"] == graphs
    (eager, g_eager), (comp, g_comp) = results["torchode"], results["torchode_compiled"]
    assert comp.ok and comp.stats.extra == eager.stats.extra
    assert torch.allclose(comp.ys, eager.ys, rtol=1e-12, atol=1e-14)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-14) for a, b in zip(g_comp, g_eager))
    # The instrumented pass runs the compiled plugin eagerly: counts agree as for the eager one.
    passed = trainer.instrumented(tb)
    assert passed.stats.nfe == passed.nfe_fwd > 0 and passed.saved_bytes > 0
