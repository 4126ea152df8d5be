"""odebench's own PyTorch solvers (plugins/torch_custom): what is particular to them — the
tableaus it does not declare as fixed-step methods, tolerance, discrete against continuous
gradients, saved memory, NFE bookkeeping, statuses and torchdiffeq compatibility. What every
plugin must do (orders of the declared fixed-step methods, gradients against finite
differences, NFE agreement, the contract) is in test_conformance.py. Everything in float64."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from odebench.protocol import Solution, Status  # noqa: E402
from odebench_plugins.torch_custom import (  # noqa: E402
    SolverError,
    TorchCustomPlugin,
    odeint,
    odeint_adjoint,
    solve,
)

F64 = torch.float64
A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)
# The declared fixed-step methods' orders are checked in test_conformance.py; here the tableaus
# the plugin does not declare as such: rk4_classic, and the adaptive ones with a fixed step.
FIXED_ORDERS = {"rk4_classic": 4}
ADAPTIVE_ORDERS = {"bosh3": 3, "dopri5": 5, "tsit5": 5}
GRAD_MODES = ("backprop", "adjoint", "adjoint-seminorm", "checkpoint")
# Step budget of every adaptive solve here (the largest needs about 1 500 steps): a broken
# error estimate or controller then fails in seconds instead of stepping for hours.
BUDGET = 5_000
MAX_NUM_STEPS = {"max_num_steps": BUDGET}


class Spiral(torch.nn.Module):
    """y' = A y, exact solution expm(A (t - t0)) y0."""

    def forward(self, t, y):
        return y @ A.T


def exact(y0, ts):
    return torch.stack([y0 @ torch.linalg.matrix_exp(A * (t - ts[0])).T for t in ts])


class MLP(torch.nn.Module):
    """A small time-dependent neural vector field."""

    def __init__(self, width=6, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.l1 = torch.nn.Linear(2, width, dtype=F64)
        self.l2 = torch.nn.Linear(width, 2, dtype=F64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.5)

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(y))) * (1.0 + 0.2 * t)


class Counting(torch.nn.Module):
    """Counts calls to the wrapped vector field (the harness's NFE counter)."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.n = 0

    def forward(self, t, y):
        self.n += 1
        return self.f(t, y)


def _slope(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


# -- accuracy -----------------------------------------------------------------------


@pytest.mark.parametrize("method", list(FIXED_ORDERS) + list(ADAPTIVE_ORDERS))
def test_convergence_order(method):
    order = {**FIXED_ORDERS, **ADAPTIVE_ORDERS}[method]
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    t_end = 2.0
    n0 = {1: 200, 2: 40, 3: 20, 4: 10, 5: 32}[order]  # asymptotic regime for each order
    hs, errs = [], []
    for n in (n0, 2 * n0, 4 * n0):
        h = t_end / n
        if method in FIXED_ORDERS:  # step on the output grid
            ts = torch.linspace(0.0, t_end, n + 1, dtype=F64)
            ys = odeint(Spiral(), y0, ts, method=method)
        else:  # an adaptive tableau with a fixed step
            ts = torch.tensor([0.0, t_end], dtype=F64)
            ys = odeint(Spiral(), y0, ts, method=method, options={"step_size": h})
        hs.append(h)
        errs.append((ys[-1] - exact(y0, ts)[-1]).abs().max().item())
    assert errs[2] > 1e-13, "errors hit round-off; the slope would be meaningless"
    assert abs(_slope(hs, errs) - order) <= 0.3, (hs, errs)


@pytest.mark.parametrize("method", list(ADAPTIVE_ORDERS))
def test_adaptive_meets_tolerance(method):
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    ts = torch.linspace(0.0, 3.0, 31, dtype=F64)  # most outputs fall inside steps: dense output
    ref = exact(y0, ts)
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        sol = solve(Spiral(), y0, ts, method=method, rtol=tol, atol=tol, max_steps=BUDGET)
        assert sol.ok
        err = (sol.ys - ref).abs().max().item()
        assert err < 20 * tol, (tol, err)  # global error within a small multiple of the local tolerance
        errs.append(err)
    assert errs[0] > errs[1] > errs[2]


def test_dense_output_does_not_shorten_steps():
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    coarse = solve(Spiral(), y0, torch.tensor([0.0, 3.0], dtype=F64), method="dopri5", rtol=1e-8, atol=1e-8,
                   max_steps=BUDGET)
    fine = solve(Spiral(), y0, torch.linspace(0.0, 3.0, 301, dtype=F64), method="dopri5", rtol=1e-8, atol=1e-8,
                 max_steps=BUDGET)
    assert fine.stats.n_steps == coarse.stats.n_steps
    assert (fine.ys[-1] - coarse.ys[-1]).abs().max() < 1e-14


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_decreasing_t(method):
    y1 = torch.tensor([0.5, -1.0], dtype=F64)
    ts = torch.linspace(2.0, 0.0, 41, dtype=F64)
    ys = odeint(Spiral(), y1, ts, method=method, rtol=1e-9, atol=1e-9, options=MAX_NUM_STEPS)
    ref = exact(y1, ts)
    tol = 1e-5 if method == "rk4" else 1e-7
    assert (ys - ref).abs().max() < tol
    # and back: integrating forward from the end returns to the start
    back = odeint(Spiral(), ys[-1], ts.flip(0), method=method, rtol=1e-9, atol=1e-9, options=MAX_NUM_STEPS)
    assert (back.flip(0) - ys).abs().max() < 2 * tol


@pytest.mark.parametrize("method,opts", [("rk4", dict(step_size=0.03)), ("dopri5", dict(rtol=1e-10, atol=1e-12))])
def test_decreasing_t_gradients(method, opts):
    f = MLP()
    y0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(9))
    ts = torch.linspace(1.5, 0.0, 5, dtype=F64)
    w = torch.randn(5, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(10))
    grads = {}
    for mode in GRAD_MODES:
        f.zero_grad()
        y = y0.clone().requires_grad_(True)
        (solve(f, y, ts, method=method, grad_mode=mode, max_steps=BUDGET, **opts).ys * w).sum().backward()
        grads[mode] = torch.cat([y.grad.flatten()] + [p.grad.flatten() for p in f.parameters()])
    scale = grads["backprop"].abs().max()
    assert (grads["checkpoint"] - grads["backprop"]).abs().max() < 1e-12 * scale  # both discrete
    for mode in ("adjoint", "adjoint-seminorm"):  # continuous: O(h^4) / O(tol) from the discrete one
        assert (grads[mode] - grads["backprop"]).abs().max() < 1e-7 * scale, mode


# -- torchdiffeq compatibility ------------------------------------------------------


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_steps_equal_torchdiffeq(method):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    f = MLP()
    y0 = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    ts = torch.linspace(0.0, 1.3, 8, dtype=F64)
    cases = [
        ({}, {}),
        ({"step_size": 0.07, "interp": "linear"}, {"step_size": 0.07}),
        ({"step_size": 0.07}, {"step_size": 0.07, "interp": "cubic"}),
    ]
    for ours_opts, their_opts in cases:
        for t in (ts, ts.flip(0)):
            ours = odeint(f, y0, t, method=method, options=ours_opts)
            theirs = torchdiffeq.odeint(f, y0, t, method=method, options=their_opts)
            assert (ours - theirs).abs().max().item() < 1e-12, (ours_opts, t[0].item())
    f32, y32, t32 = MLP().float(), y0.float(), ts.float()  # float32 state and times, as torchdiffeq
    diff = odeint(f32, y32, t32, method=method) - torchdiffeq.odeint(f32, y32, t32, method=method)
    assert diff.abs().max().item() < 1e-6


def test_torchdiffeq_signature_runs_unchanged():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    f = MLP()
    y0 = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    kw = dict(rtol=1e-9, atol=1e-10, method="dopri5", options=dict(first_step=0.05, max_num_steps=10_000))
    ours = odeint(f, y0, t, **kw)
    theirs = torchdiffeq.odeint(f, y0, t, **kw)
    assert ours.shape == theirs.shape == (5, 4, 2)
    assert (ours - theirs).abs().max() < 1e-7
    y = y0.clone().requires_grad_(True)
    out = odeint_adjoint(f, y, t, rtol=1e-9, atol=1e-10, method="dopri5", options=MAX_NUM_STEPS,
                         adjoint_params=tuple(f.parameters()), adjoint_options=dict(norm="seminorm"))
    out.sum().backward()
    assert y.grad is not None and all(p.grad is not None for p in f.parameters())
    assert (odeint(f, y0, t, options=MAX_NUM_STEPS) - theirs).abs().max() < 1e-6  # dopri5, rtol 1e-7, atol 1e-9


def test_invalid_arguments_list_the_choices():
    y0 = torch.zeros(2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="valid: .*dopri5"):
        odeint(Spiral(), y0, t, method="rk45")
    with pytest.raises(ValueError, match="valid: .*step_size"):
        odeint(Spiral(), y0, t, options={"perturb": True})
    with pytest.raises(ValueError, match="strictly"):
        odeint(Spiral(), y0, torch.tensor([0.0, 1.0, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="valid: backprop"):
        solve(Spiral(), y0, t, grad_mode="reverse")


# -- gradients ------------------------------------------------------------------------


def _loss_fn(f, method, grad_mode, opts):
    ts = torch.tensor([0.0, 0.3, 0.8, 1.2], dtype=F64)
    w = torch.randn(4, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(3))

    def loss(y0):
        sol = solve(f, y0, ts, method=method, grad_mode=grad_mode, max_steps=BUDGET, **opts)
        assert sol.ok, sol.message
        return (sol.ys * w).sum(), sol

    return loss


@pytest.mark.parametrize("method,opts", [("dopri5", dict(rtol=1e-5, atol=1e-6)),
                                         ("rk4", dict(step_size=0.11)),
                                         ("euler", {})])
def test_checkpoint_gradient_is_the_discrete_gradient(method, opts):
    f = MLP()
    y0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(6))
    grads = {}
    for mode in ("backprop", "checkpoint"):
        f.zero_grad()
        y = y0.clone().requires_grad_(True)
        value, _ = _loss_fn(f, method, mode, opts)(y)
        value.backward()
        grads[mode] = torch.cat([y.grad.flatten()] + [p.grad.flatten() for p in f.parameters()])
    assert (grads["backprop"] - grads["checkpoint"]).abs().max() < 1e-12


def test_saved_memory_of_adjoint_and_checkpoint():
    f = MLP()
    y0 = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(7)).requires_grad_(True)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def saved_bytes(grad_mode, step_size):
        total = 0

        def pack(x):
            nonlocal total
            total += x.numel() * x.element_size()
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            sol = solve(f, y0, ts, method="rk4", step_size=step_size, grad_mode=grad_mode)
        sol.ys.sum().backward()
        return total

    state = y0.numel() * 8
    assert saved_bytes("adjoint", 0.1) == saved_bytes("adjoint", 0.01) == 3 * state
    assert saved_bytes("checkpoint", 0.1) == 10 * state
    assert saved_bytes("checkpoint", 0.01) == 100 * state


# -- NFE and statistics ---------------------------------------------------------------


def test_nfe_fixed_rk4():
    f = Counting(MLP())
    y0 = torch.randn(3, 2, dtype=F64)
    ts = torch.linspace(0.0, 1.0, 6, dtype=F64)
    plugin = TorchCustomPlugin()
    sol = plugin.odeint(f, y0, ts, method="rk4")
    assert sol.stats.n_steps == 5 and f.n == 4 * 5 == sol.stats.nfe
    f.n = 0
    sol = plugin.odeint(f, y0, ts, method="rk4", step_size=0.05)
    assert sol.stats.n_steps == 20 and f.n == 4 * 20 == sol.stats.nfe
    for mode in ("adjoint", "checkpoint"):
        f.n = 0
        y = y0.clone().requires_grad_(True)
        sol = plugin.odeint(f, y, ts, method="rk4", grad_mode=mode)
        assert f.n == sol.stats.nfe == 20
        f.n = 0
        sol.ys.sum().backward()
        assert f.n == sol.stats.extra["nfe_bwd"] == 20  # one rk4 step per interval / per recomputed step


class Stiffish(torch.nn.Module):
    def forward(self, t, y):
        return -50.0 * (y - torch.cos(t))


@pytest.mark.parametrize("method,stages", [("dopri5", 6), ("tsit5", 6), ("bosh3", 3)])
def test_nfe_adaptive(method, stages):
    f = Counting(Stiffish())
    y0 = torch.zeros(2, dtype=F64)
    ts = torch.linspace(0.0, 3.0, 4, dtype=F64)
    sol = TorchCustomPlugin().odeint(f, y0, ts, method=method, rtol=1e-6, atol=1e-8, max_steps=BUDGET)
    st = sol.stats
    assert sol.ok and st.n_steps == st.n_accepted + st.n_rejected
    # f(t0, y0) + the first-step heuristic's one evaluation + `stages` per attempted step
    assert f.n == st.nfe == 2 + stages * st.n_steps
    if method == "dopri5":
        assert st.n_rejected > 0


def test_nfe_backward_adjoint_adaptive():
    f = Counting(MLP())
    y = torch.randn(3, 2, dtype=F64).requires_grad_(True)
    sol = solve(f, y, torch.linspace(0.0, 1.0, 4, dtype=F64), method="dopri5", grad_mode="adjoint",
                max_steps=BUDGET)
    f.n = 0
    sol.ys.sum().backward()
    ex = sol.stats.extra
    assert f.n == ex["nfe_bwd"] == ex["n_vjp"] > 0
    # per interval one evaluation at its start, once the heuristic, 6 per attempted step
    assert ex["nfe_bwd"] == 3 + 1 + 6 * ex["n_steps_bwd"]


def test_seminorm_takes_fewer_backward_steps():
    f = MLP(width=16)
    ts = torch.linspace(0.0, 2.0, 3, dtype=F64)
    counts = {}
    for mode in ("adjoint", "adjoint-seminorm"):
        y = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(8)).requires_grad_(True)
        sol = solve(f, y, ts, method="dopri5", rtol=1e-6, atol=1e-8, grad_mode=mode, max_steps=BUDGET)
        sol.ys.sum().backward()
        counts[mode] = sol.stats.extra["n_steps_bwd"]
    assert counts["adjoint-seminorm"] < counts["adjoint"]  # 21 < 25; equal if a_θ were in the norm


# -- statuses ------------------------------------------------------------------------


class Square(torch.nn.Module):
    """y' = y², blows up at t = 1/y0."""

    def forward(self, t, y):
        return y * y


class NaNAfterHalf(torch.nn.Module):
    def forward(self, t, y):
        return y * (float("nan") if t > 0.5 else 1.0)


STATUS_CASES = {
    "max_steps_adaptive": (Spiral(), [2.0, 0.0], (0.0, 25.0), dict(method="dopri5", max_steps=5), Status.MAX_STEPS),
    "max_steps_fixed": (Spiral(), [2.0, 0.0], (0.0, 25.0), dict(method="rk4", step_size=0.1, max_steps=100),
                        Status.MAX_STEPS),
    "dt_underflow": (Square(), [1.0], (0.0, 2.0), dict(method="dopri5"), Status.DT_UNDERFLOW),
    "nonfinite_fixed": (Square(), [1.0], (0.0, 10.0), dict(method="euler", step_size=0.5), Status.NONFINITE),
    "nonfinite_adaptive": (NaNAfterHalf(), [1.0], (0.0, 1.0), dict(method="dopri5"), Status.NONFINITE),
}


@pytest.mark.parametrize("case", list(STATUS_CASES))
def test_status(case):
    f, y0, (t0, t1), kw, expected = STATUS_CASES[case]
    kw = {"max_steps": BUDGET, **kw}
    y0 = torch.tensor(y0, dtype=F64)
    ts = torch.tensor([t0, t1], dtype=F64)
    sol = TorchCustomPlugin().odeint(f, y0, ts, **kw)
    assert isinstance(sol, Solution)
    assert sol.status is expected and sol.ys is None and sol.message
    options = {"max_num_steps": kw["max_steps"]}
    if "step_size" in kw:
        options["step_size"] = kw["step_size"]
    with pytest.raises(SolverError) as info:
        odeint(f, y0, ts, method=kw["method"], options=options)
    assert info.value.status == expected.value


# -- plugin ------------------------------------------------------------------------------


def test_plugin_declares_capabilities():
    d = TorchCustomPlugin.describe()
    assert d["name"] == "torch_custom" and d["framework"] == "torch"
    assert d["version"] == torch.__version__.split("+")[0] or d["version"].startswith(torch.__version__[:4])
    assert set(d["grad_modes"]) == set(GRAD_MODES)
    assert {"euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5"} <= set(d["methods"])
    assert TorchCustomPlugin.available() is None


def test_plugin_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from odebench_plugins.torch_custom import TorchCustomPlugin as P\n"
        "print(P.name, sorted(P.grad_modes))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("torch_custom")
