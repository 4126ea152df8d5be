"""The scipy plugin: capabilities, forward accuracy, stiff problems, failures, NFE, black-box adjoint.

Its numpy forward path and scipy's own counts are checked here; the torch path every plugin
is held to (gradients against finite differences, NFE agreement, the contract) is in
test_conformance.py, with dopri5 for the adjoint: the other methods are compared with dopri8
here."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from odebench.problems import LinearSpiral
from odebench.problems.robertson import Robertson
from odebench.protocol import FIXED_METHODS, SolverPlugin, Status, UnsupportedError
from odebench_plugins.scipy_solvers import ScipyPlugin

EXPLICIT = ("bosh3", "dopri5", "dopri8")
IMPLICIT = ("radau", "bdf")
ALL = EXPLICIT + IMPLICIT + ("lsoda",)


@pytest.fixture(scope="module")
def plugin() -> ScipyPlugin:
    return ScipyPlugin()


class Counted:
    """A vector field wrapper counting calls, as the harness does."""

    def __init__(self, f):
        self.f = f
        self.calls = 0

    def __call__(self, t, y):
        self.calls += 1
        return self.f(t, y)


# -- capabilities and unsupported combinations -------------------------------------------------


def test_capabilities(plugin):
    assert isinstance(plugin, SolverPlugin)
    assert (plugin.name, plugin.framework, plugin.library) == ("scipy", "numpy", "scipy")
    assert plugin.methods == {
        "dopri5": "RK45", "bosh3": "RK23", "dopri8": "DOP853",
        "radau": "Radau", "bdf": "BDF", "lsoda": "LSODA",
    }
    assert plugin.grad_modes == ("adjoint",)
    assert plugin.devices == ("cpu",)
    assert plugin.fixed_step_methods == frozenset()
    assert plugin.available() is None
    assert plugin.version()
    desc = plugin.describe()
    assert desc["name"] == "scipy" and "torch" in desc["notes"]
    assert plugin.adjoint_available() is None  # torch is installed in the dev venv


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_fixed_step_methods_unsupported(plugin, method):
    reason = plugin.unsupported_reason(method, "adjoint")
    assert reason and "no fixed-step methods" in reason
    with pytest.raises(UnsupportedError, match="fixed-step"):
        plugin.odeint(lambda t, y: -y, np.ones(2), np.linspace(0, 1, 3), method=method)


@pytest.mark.parametrize("grad_mode", ["backprop", "checkpoint", "adjoint-seminorm"])
def test_other_grad_modes_unsupported(plugin, grad_mode):
    reason = plugin.unsupported_reason("dopri5", grad_mode)
    assert reason and grad_mode in reason and "adjoint" in reason
    with pytest.raises(UnsupportedError):
        plugin.check("dopri5", grad_mode)


def test_unknown_method_and_device(plugin):
    assert "tsit5" in plugin.unsupported_reason("tsit5", "adjoint")
    assert "cuda" in plugin.unsupported_reason("dopri5", "adjoint", "cuda")
    assert plugin.unsupported_reason("radau", "adjoint") is None


# -- forward accuracy --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL)
def test_spiral_meets_tolerance(plugin, method):
    spiral = LinearSpiral(t1=3.0, n_points=30)
    ts = spiral.ts
    exact = spiral.exact(ts)
    scale = np.max(np.abs(exact))
    errors = {}
    for rtol in (1e-5, 1e-8):
        sol = plugin.odeint(spiral.rhs, np.array(spiral.y0), ts, method=method, rtol=rtol, atol=rtol * 1e-2)
        assert sol.status is Status.OK, sol.message
        assert sol.ys.shape == (len(ts), 2) and sol.ys.dtype == np.float64
        np.testing.assert_array_equal(sol.ys[0], spiral.y0)
        errors[rtol] = np.max(np.abs(sol.ys - exact)) / scale
        # global error within a modest multiple of the requested local tolerance
        assert errors[rtol] < 50 * rtol, (rtol, errors[rtol])
    assert errors[1e-8] < errors[1e-5] / 20  # tightening the tolerance pays


def test_batch_state_dtype_and_backward_time(plugin):
    spiral = LinearSpiral()
    y0 = np.array([[2.0, 0.0], [0.5, -1.0], [0.0, 1.0]])
    ts = np.linspace(0.0, 3.0, 7)
    sol = plugin.odeint(spiral.rhs, y0, ts, method="dopri8", rtol=1e-10, atol=1e-12)
    assert sol.ok and sol.ys.shape == (7, 3, 2)
    np.testing.assert_allclose(sol.ys, spiral.exact(ts, y0), rtol=0, atol=1e-8)

    # float32 in, float32 out (scipy still integrates in float64)
    sol32 = plugin.odeint(spiral.rhs, y0.astype(np.float32), ts, method="dopri5", rtol=1e-6, atol=1e-8)
    assert sol32.ok and sol32.ys.dtype == np.float32

    # decreasing output times integrate backward
    back = ts[::-1]
    y_end = spiral.exact(ts)[-1]
    solb = plugin.odeint(spiral.rhs, y_end, back, method="dopri5", rtol=1e-10, atol=1e-12)
    assert solb.ok
    np.testing.assert_allclose(solb.ys[-1], spiral.y0, atol=1e-7)

    # repeated and single output times
    sol1 = plugin.odeint(spiral.rhs, np.array(spiral.y0), np.array([0.0]), method="radau")
    assert sol1.ok and sol1.ys.shape == (1, 2)
    solr = plugin.odeint(spiral.rhs, np.array(spiral.y0), np.array([0.0, 0.0, 1.0, 1.0]), method="bdf")
    assert solr.ok
    np.testing.assert_array_equal(solr.ys[2], solr.ys[3])

    with pytest.raises(ValueError, match="monotone"):
        plugin.odeint(spiral.rhs, np.array(spiral.y0), np.array([0.0, 1.0, 0.5]), method="dopri5")


# -- stiff problems and the step budget --------------------------------------------------------


def test_robertson_stiff_methods_succeed_explicit_runs_out_of_steps(plugin):
    rob = Robertson(n_points=21)
    ts = rob.ts
    # an independent tight solve (the cached reference itself is tested in test_problems.py)
    ref = solve_ivp(rob.rhs, (ts[0], ts[-1]), rob.y0, method="LSODA", t_eval=ts, rtol=1e-10,
                    atol=[1e-14, 1e-18, 1e-14], jac=rob.jac).y.T
    scale = np.array([1.0, 4e-5, 1.0])  # y2 peaks at about 3.6e-5
    for method in ("radau", "bdf", "lsoda"):
        sol = plugin.odeint(rob.rhs, np.array(rob.y0), ts, method=method, rtol=1e-7, atol=1e-12, max_steps=2000)
        assert sol.status is Status.OK, (method, sol.message)
        assert sol.stats.n_accepted < 2000
        assert np.max(np.abs(sol.ys - ref) / scale) < 1e-4, method
        np.testing.assert_allclose(sol.ys.sum(axis=-1), 1.0, atol=1e-6)

    start = time.perf_counter()
    sol = plugin.odeint(rob.rhs, np.array(rob.y0), ts, method="dopri5", rtol=1e-7, atol=1e-12, max_steps=2000)
    elapsed = time.perf_counter() - start
    assert sol.status is Status.MAX_STEPS
    assert sol.ys is None and "2000" in sol.message
    assert sol.stats.n_accepted == 2000
    assert sol.stats.extra["t_reached"] < 10.0  # stability-limited steps, far from t1 = 1e5
    assert elapsed < 10.0


# -- failures are statuses ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL)
def test_nan_vector_field_is_nonfinite(plugin, method):
    def f(t, y):
        return -y * (np.nan if t > 0.5 else 1.0)

    sol = plugin.odeint(f, np.array([1.0, 2.0]), np.array([0.0, 1.0]), method=method, rtol=1e-6, atol=1e-9)
    assert sol.status is Status.NONFINITE, sol.message
    assert sol.ys is None and sol.message


def test_nonfinite_initial_state(plugin):
    sol = plugin.odeint(lambda t, y: -y, np.array([1.0, np.inf]), np.array([0.0, 1.0]), method="dopri5")
    assert sol.status is Status.NONFINITE


@pytest.mark.parametrize("method", ALL)
def test_nan_from_the_start_is_nonfinite_not_a_hang(plugin, method):
    # scipy picks a NaN initial step size here, and its step loop would then never end
    sol = plugin.odeint(lambda t, y: y * np.nan, np.ones(2), np.array([0.0, 1.0]), method=method)
    assert sol.status is Status.NONFINITE, sol.message


@pytest.mark.parametrize("method", ["dopri5", "radau"])
def test_blow_up_is_dt_underflow(plugin, method):
    # y' = y², y(0) = 1 has the solution 1 / (1 - t): a singularity at t = 1
    sol = plugin.odeint(lambda t, y: y**2, np.array([1.0]), np.array([0.0, 2.0]), method=method, rtol=1e-6, atol=1e-9)
    assert sol.status is Status.DT_UNDERFLOW, sol.message
    assert "step size" in sol.message


def test_exception_in_field_is_error(plugin):
    def f(t, y):
        if t > 0.1:
            raise ArithmeticError("boom")
        return -y

    sol = plugin.odeint(f, np.ones(2), np.array([0.0, 1.0]), method="dopri5")
    assert sol.status is Status.ERROR and "boom" in sol.message


# -- NFE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL)
def test_nfe_matches_counting_wrapper(plugin, method):
    spiral = LinearSpiral(t1=5.0, n_points=20)
    f = Counted(spiral.rhs)
    sol = plugin.odeint(f, np.array(spiral.y0), spiral.ts, method=method, rtol=1e-6, atol=1e-9)
    assert sol.ok
    st = sol.stats
    # every call of f the solve made, including finite-difference Jacobian columns
    assert st.nfe == f.calls
    assert st.extra["nfev"] + st.extra["nfe_jac"] == f.calls
    assert st.n_accepted > 0 and st.n_steps >= st.n_accepted
    if method in EXPLICIT or method == "lsoda":
        # scipy's own nfev is the whole count (LSODA counts its Jacobian calls itself)
        assert st.extra["nfev"] == f.calls and st.extra["nfe_jac"] == 0
    else:
        # Radau/BDF estimate the Jacobian outside scipy's nfev: one call per component, plus
        # scipy's re-evaluation of badly scaled columns
        assert st.extra["njev"] > 0
        assert st.extra["nfe_jac"] >= 2 * st.extra["njev"]
    if method in EXPLICIT:
        assert st.n_steps == st.n_accepted + st.n_rejected
    else:
        assert st.n_rejected is None


def test_nfe_robertson_implicit_jacobian_calls(plugin):
    rob = Robertson(n_points=11)
    for method in IMPLICIT:
        f = Counted(rob.rhs)
        sol = plugin.odeint(f, np.array(rob.y0), rob.ts, method=method, rtol=1e-6, atol=1e-12)
        assert sol.ok
        assert sol.stats.nfe == f.calls == sol.stats.extra["nfev"] + sol.stats.extra["nfe_jac"]
        assert sol.stats.extra["nfe_jac"] >= 3 * sol.stats.extra["njev"] > 0


# -- black-box adjoint -------------------------------------------------------------------------

try:
    import torch
except ImportError:  # forward solves need only scipy; the adjoint tests need torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="the black-box adjoint needs torch")
_Module = torch.nn.Module if torch is not None else object


class MLP(_Module):
    def __init__(self, dim=2, hidden=8, dtype=None):
        super().__init__()
        dtype = dtype or torch.float64
        gen = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(hidden, dim, generator=gen, dtype=dtype) * 0.7)
        self.b1 = torch.nn.Parameter(torch.randn(hidden, generator=gen, dtype=dtype) * 0.1)
        self.w2 = torch.nn.Parameter(torch.randn(dim, hidden, generator=gen, dtype=dtype) * 0.7)
        self.b2 = torch.nn.Parameter(torch.randn(dim, generator=gen, dtype=dtype) * 0.1)
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return torch.tanh(y @ self.w1.T + self.b1) @ self.w2.T + self.b2 - 0.1 * t * y


def _loss_setup(dtype=None):
    dtype = dtype or torch.float64
    gen = torch.Generator().manual_seed(1)
    y0 = torch.randn(3, 2, generator=gen, dtype=dtype)
    ts = torch.tensor([0.0, 0.25, 0.6, 1.0], dtype=dtype)
    weights = torch.randn(4, 3, 2, generator=gen, dtype=dtype)

    def loss(ys):  # a loss over every output time, including t0
        return (ys * weights).sum() + 0.5 * (ys**2).mean()

    return y0, ts, loss


def _adjoint_grads(plugin, f, y0, ts, loss, method, tol):
    y = y0.clone().requires_grad_(True)
    f.zero_grad()
    sol = plugin.odeint(f, y, ts, method=method, rtol=tol, atol=tol, grad_mode="adjoint")
    assert sol.ok, sol.message
    value = loss(sol.ys)
    value.backward()
    return value.item(), y.grad.clone(), [p.grad.clone() for p in f.parameters()], sol


@pytest.fixture(scope="module")
def dopri8_grads(plugin):
    if torch is None:
        pytest.skip("the black-box adjoint needs torch")
    y0, ts, loss = _loss_setup()
    _, gy, gp, _ = _adjoint_grads(plugin, MLP(), y0, ts, loss, "dopri8", 1e-12)
    return gy, gp


@needs_torch
@pytest.mark.parametrize(
    "method,tol,rel",
    [("dopri5", 1e-9, 1e-5), ("bosh3", 1e-7, 1e-4), ("radau", 1e-6, 1e-4), ("bdf", 1e-7, 1e-4), ("lsoda", 1e-9, 1e-5)],
)
def test_adjoint_all_methods_agree(plugin, dopri8_grads, method, tol, rel):
    gy_ref, gp_ref = dopri8_grads
    f = MLP()
    y0, ts, loss = _loss_setup()
    _, gy, gp, sol = _adjoint_grads(plugin, f, y0, ts, loss, method, tol)
    np.testing.assert_allclose(gy.numpy(), gy_ref.numpy(), rtol=rel, atol=rel * gy_ref.abs().max().item())
    for g, r in zip(gp, gp_ref):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=rel, atol=rel * r.abs().max().item())
    back = sol.stats.extra["backward"]
    # the harness's view: every module call was either forward or backward
    assert f.calls == sol.stats.nfe + back["nfe"]
    assert back["n_vjp"] == back["nfe"] and back["n_segments"] == 3
    if method in ("radau", "bdf"):
        assert back["nfe_jac"] > 0  # finite-difference Jacobians of the augmented state


@needs_torch
def test_adjoint_float32_module_and_training_step(plugin):
    f64 = MLP()
    y0_64, ts_64, loss = _loss_setup()
    _, gy64, _, _ = _adjoint_grads(plugin, f64, y0_64, ts_64, loss, "dopri5", 1e-8)

    f = MLP(dtype=torch.float32)
    f.load_state_dict({k: v.float() for k, v in f64.state_dict().items()})
    y0, ts = y0_64.float(), ts_64.float()
    y = y0.clone().requires_grad_(True)
    sol = plugin.odeint(f, y, ts, method="dopri5", rtol=1e-6, atol=1e-8)
    assert sol.ok and sol.ys.dtype == torch.float32
    loss(sol.ys).backward()
    assert y.grad.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in f.parameters())
    np.testing.assert_allclose(y.grad.numpy(), gy64.numpy(), rtol=1e-3, atol=1e-4)

    # gradient-descent steps on the adjoint's gradients reduce the loss
    losses = []
    for _ in range(2):
        f.zero_grad()
        value = loss(plugin.odeint(f, y0, ts, method="dopri5", rtol=1e-6, atol=1e-8).ys)
        value.backward()
        with torch.no_grad():
            for p in f.parameters():
                p -= 1e-2 * p.grad
        losses.append(value.item())
    assert losses[-1] < losses[0]


@needs_torch
def test_adjoint_backward_failure_raises_solve_failed(plugin):
    from odebench import SolveFailed

    class NanGrad(torch.autograd.Function):
        """Zero forward, NaN vector-Jacobian product: the forward solve is fine, the adjoint is not."""

        @staticmethod
        def forward(ctx, y):
            return torch.zeros_like(y)

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    class Blows(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

        def forward(self, t, y):
            return -self.k * y + NanGrad.apply(y)

    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    sol = plugin.odeint(Blows(), y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="dopri5")
    assert sol.ok
    with pytest.raises(SolveFailed) as err:
        sol.ys.sum().backward()
    assert err.value.status is Status.NONFINITE


@needs_torch
def test_problem_torch_field_through_plugin(plugin):
    from odebench.problems.vanderpol import VanDerPol

    vdp = VanDerPol(t1=2.0, n_points=5)
    field = vdp.torch_field()
    y0 = torch.tensor(vdp.y0, dtype=torch.float64, requires_grad=True)
    sol = plugin.odeint(field, y0, torch.as_tensor(vdp.ts), method="dopri8", rtol=1e-10, atol=1e-12)
    assert sol.ok
    np_sol = plugin.odeint(vdp.rhs, np.array(vdp.y0), vdp.ts, method="dopri8", rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sol.ys.detach().numpy(), np_sol.ys, rtol=1e-12, atol=1e-12)
    sol.ys[-1].sum().backward()  # no parameters: gradient wrt y0 only
    assert y0.grad is not None and torch.isfinite(y0.grad).all()



def _live(kind: type) -> int:
    """Objects of ``kind`` alive after a collection (``type`` checks: no attribute lookups)."""
    import gc

    gc.collect()
    return sum(issubclass(type(o), kind) for o in gc.get_objects())


@needs_torch
@pytest.mark.parametrize("method", ["lsoda", pytest.param("dopri5", marks=pytest.mark.slow)])
def test_adjoint_training_does_not_leak(plugin, method):
    """Training passes (forward solve, adjoint backward, optimiser step) keep memory flat:
    the bytes Python allocates (tracemalloc: numpy's arrays included) grow by less than
    0.5 MiB over 60 passes, and no scipy solver or adjoint context outlives its pass. scipy
    1.17's C LSODA kept every solve's work arrays alive: ~85 KiB per pass here (the augmented
    state has 94 components), ~5 MiB over the 60."""
    import gc
    import tracemalloc

    from scipy.integrate import OdeSolver

    from odebench_plugins.scipy_solvers import _AdjointContext

    f = MLP(hidden=16)
    y0 = _loss_setup()[0]
    ts = torch.tensor([0.0, 0.3], dtype=torch.float64)
    opt = torch.optim.SGD(f.parameters(), lr=1e-3)

    def one_pass():
        opt.zero_grad()
        sol = plugin.odeint(f, y0, ts, method=method, rtol=1e-4, atol=1e-6)
        assert sol.ok, sol.message
        sol.ys[-1].square().sum().backward()
        opt.step()

    for _ in range(20):  # caches and pools reach their steady state untraced
        one_pass()
    tracemalloc.start()
    try:
        for _ in range(10):
            one_pass()
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(60):
            one_pass()
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert growth < 2**19, f"{method}: {growth / 2**20:.2f} MiB more after 60 training passes"
    assert _live(OdeSolver) == 0 and _live(_AdjointContext) == 0
