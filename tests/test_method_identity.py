"""A canonical method name means one method in every plugin.

Fixed-step methods: every plugin's trajectory on a nonlinear, time-dependent problem equals,
to round-off, the one a hand-written Runge–Kutta stepper gives with the coefficients written
in this file (so ``rk4`` is Kutta's 3/8 rule everywhere and ``rk4-classic`` the classical
method everywhere, and a plugin mapping ``rk4`` to ``midpoint`` fails). Adaptive methods:
one step of size ``h`` taken by each plugin's method (through the plugin where it takes a
first step, else through the library with the plugin's own method map or solver object)
equals one hand-written step of the embedded pair's solution weights, and the full solve at
a tight tolerance agrees with an independent reference.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest

from odebench import registry
from odebench.protocol import ADAPTIVE_METHODS, FIXED_METHODS, STIFF_METHODS

PLUGINS = registry.plugin_names()
MU = 0.8  # nonlinearity of the forced van der Pol field below


# --------------------------------------------------------------------------- the problem
def f_numpy(t, y):
    """A forced van der Pol oscillator: nonlinear in ``y`` and dependent on ``t`` (so a
    method with wrong nodes ``c`` or wrong couplings ``a`` gives a different trajectory)."""
    y0, y1 = y[..., 0], y[..., 1]
    return np.stack([y1, -y0 + MU * (1.0 - y0**2) * y1 + 0.3 * np.cos(2.0 * t)], axis=-1)


Y0 = np.array([[1.5, 0.0], [-0.5, 1.2], [0.3, -0.9]])


def _field(framework: str):
    """The same vector field in a plugin's framework (float64)."""
    if framework == "torch":
        import torch

        class Field(torch.nn.Module):
            def forward(self, t, y):
                y0, y1 = y[..., 0], y[..., 1]
                return torch.stack([y1, -y0 + MU * (1.0 - y0**2) * y1 + 0.3 * torch.cos(2.0 * t)], dim=-1)

        return Field()
    if framework == "jax":
        import jax.numpy as jnp

        def field(t, y):
            y0, y1 = y[..., 0], y[..., 1]
            return jnp.stack([y1, -y0 + MU * (1.0 - y0**2) * y1 + 0.3 * jnp.cos(2.0 * t)], axis=-1)

        return field
    return f_numpy


def _arrays(framework: str, y0: np.ndarray, ts: np.ndarray):
    if framework == "torch":
        import torch

        return torch.as_tensor(y0), torch.as_tensor(ts)
    if framework == "jax":
        import jax.numpy as jnp

        return jnp.asarray(y0), jnp.asarray(ts)
    return y0, ts


def _numpy(ys) -> np.ndarray:
    return np.asarray(ys.detach() if hasattr(ys, "detach") else ys, dtype=np.float64)


@pytest.fixture(scope="module", autouse=True)
def _x64():
    """float64 in JAX for this module only."""
    try:
        import jax
    except ImportError:
        yield
        return
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def _plugin(name: str):
    reason = registry.entry(name).available()
    if reason:
        pytest.skip(f"{name}: {reason}")
    return registry.get_plugin(name)


# --------------------------------------------------------------------------- hand-written RK
# (c, a, b): nodes, strictly lower-triangular couplings (row i has i entries), weights.
TABLEAUS = {
    "euler": ((0.0,), ((),), (1.0,)),
    "midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "heun": ((0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    # Kutta's 3/8 rule: torchdiffeq's rk4, odebench's canonical rk4.
    "rk4": ((0.0, 1 / 3, 2 / 3, 1.0), ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)), (1 / 8, 3 / 8, 3 / 8, 1 / 8)),
    "rk4-classic": ((0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
    # Bogacki–Shampine 3(2): the third-order solution.
    "bosh3": ((0.0, 0.5, 0.75), ((), (0.5,), (0.0, 0.75)), (2 / 9, 1 / 3, 4 / 9)),
    # Dormand–Prince 5(4): the fifth-order solution (the FSAL 7th stage has weight 0).
    "dopri5": (
        (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0),
        (
            (),
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        ),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
}


def rk_step(method: str, t: float, y: np.ndarray, h: float) -> np.ndarray:
    """One explicit Runge–Kutta step of ``method`` (its tableau above) on :func:`f_numpy`."""
    c, a, b = TABLEAUS[method]
    ks = []
    for ci, ai in zip(c, a):
        ks.append(f_numpy(t + ci * h, y + h * sum((aij * k for aij, k in zip(ai, ks)), np.zeros_like(y))))
    return y + h * sum(bi * k for bi, k in zip(b, ks))


def rk_trajectory(method: str, ts: np.ndarray, step: float | None = None) -> np.ndarray:
    """Fixed steps on ``ts`` (or of ``step``, which must divide every output interval)."""
    out, y = [Y0], Y0
    for t0, t1 in zip(ts[:-1], ts[1:]):
        n = 1 if step is None else round((t1 - t0) / step)
        h = (t1 - t0) / n
        for k in range(n):
            y = rk_step(method, t0 + k * h, y, h)
        out.append(y)
    return np.stack(out)


TS = np.linspace(0.0, 2.0, 21)  # 20 steps of 0.1 on the output grid
TS_COARSE = np.linspace(0.0, 2.0, 5)  # with step_size 0.125: 4 steps per output interval
STEP = 0.125
ROUND_OFF = 1e-13


@functools.cache
def _fixed_solve(name: str, method: str, stepping: str) -> np.ndarray:
    """The plugin's trajectory (cached: the cross-plugin tests reuse it)."""
    plugin = _plugin(name)
    if method not in plugin.methods:
        pytest.skip(f"{name} does not declare {method!r}")
    ts = TS if stepping == "grid" else TS_COARSE
    y0, t = _arrays(plugin.framework, Y0, ts)
    sol = plugin.odeint(_field(plugin.framework), y0, t, method=method, grad_mode=plugin.grad_modes[0],
                        step_size=None if stepping == "grid" else STEP)
    assert sol.ok, (name, method, sol.message)
    assert sol.stats.n_steps == (20 if stepping == "grid" else 16), (name, method, sol.stats)
    return _numpy(sol.ys)


# --------------------------------------------------------------------------- fixed steps
def _fixed_cases() -> list:
    """Every plugin × fixed method × stepping; a torch_custom_compiled case compiles (a minute on 2 cores),
    so beyond rk4 on the grid its cases are ``slow`` (its eager twin runs the same algorithm in all)."""
    out = []
    for name in PLUGINS:
        for method in FIXED_METHODS:
            for stepping in ("grid", "step_size"):
                slow = name == "torch_custom_compiled" and (method, stepping) != ("rk4", "grid")
                out.append(pytest.param(name, method, stepping, id=f"{name}-{method}-{stepping}",
                                        marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize(("name", "method", "stepping"), _fixed_cases())
def test_fixed_step_method_is_the_tableau_of_its_name(name, method, stepping):
    """Each plugin's fixed-step ``method`` is, step for step, the tableau of that name."""
    ys = _fixed_solve(name, method, stepping)
    want = rk_trajectory(method, TS) if stepping == "grid" else rk_trajectory(method, TS_COARSE, STEP)
    err = np.max(np.abs(ys - want))
    assert err < ROUND_OFF, f"{name} {method!r} ({stepping}) is not the {method} tableau: off by {err:.3g}"


@pytest.mark.parametrize("method", ["rk4", "rk4-classic"])
def test_fixed_step_method_agrees_across_plugins(method):
    """Every available plugin that declares ``method`` gives the same float64 trajectory."""
    runs = {}
    for name in PLUGINS:
        cls = registry.entry(name).load()
        if cls is None or cls.available() or method not in cls.methods:
            continue
        runs[name] = _fixed_solve(name, method, "grid")
    if len(runs) < 2:
        pytest.skip(f"fewer than two available plugins declare {method!r}: {sorted(runs)}")
    for (a, ya), (b, yb) in itertools.combinations(runs.items(), 2):
        err = np.max(np.abs(ya - yb))
        assert err < ROUND_OFF, f"{method!r}: {a} and {b} differ by {err:.3g}"


def test_rk4_and_rk4_classic_are_different_methods():
    """On a nonlinear problem the two fourth-order methods differ far beyond round-off, so the
    agreement above tells them apart (on a linear problem they would coincide)."""
    diff = np.max(np.abs(rk_trajectory("rk4", TS) - rk_trajectory("rk4-classic", TS)))
    assert diff > 1e5 * ROUND_OFF, diff
    for name in PLUGINS:
        cls = registry.entry(name).load()
        if cls is None or cls.available() or not {"rk4", "rk4-classic"} <= set(cls.methods):
            continue
        mine = np.max(np.abs(_fixed_solve(name, "rk4", "grid") - _fixed_solve(name, "rk4-classic", "grid")))
        assert mine > 1e5 * ROUND_OFF, (name, mine)


# --------------------------------------------------------------------------- adaptive: one step
H = 0.3
LOOSE = 1e6  # a tolerance no step can fail: the first step is accepted whatever its error


def _one_step_torch_custom(plugin, method):
    import torch

    y0, ts = _arrays("torch", Y0, np.array([0.0, H]))
    # torch_custom takes step_size as the first adaptive step (diffrax's dt0).
    sol = plugin.odeint(_field("torch"), y0, ts, method=method, rtol=LOOSE, atol=LOOSE, step_size=H,
                        max_steps=16)
    assert sol.ok and sol.stats.n_steps == 1, sol.stats
    assert isinstance(sol.ys, torch.Tensor)
    return _numpy(sol.ys[-1])


def _one_step_torchdiffeq(plugin, method):
    import torchdiffeq

    # The plugin never passes a first step to an adaptive method, so the library is called
    # with the plugin's own method map, as the plugin calls it.
    y0, ts = _arrays("torch", Y0, np.array([0.0, H]))
    ys = torchdiffeq.odeint(_field("torch"), y0, ts, method=plugin.methods[method], rtol=LOOSE, atol=LOOSE,
                            options=dict(first_step=H, max_num_steps=16))
    return _numpy(ys[-1])


def _one_step_diffrax(plugin, method):
    import diffrax
    import jax.numpy as jnp

    # The solver object is the one the plugin builds for this method.
    ts = jnp.asarray([0.0, H])
    solver = plugin.build(method, ts, rtol=1e-8, atol=1e-8, step_size=None, grad_mode="backprop",
                          max_steps=16)["solver"]
    field = _field("jax")
    sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, args: field(t, y)), solver, t0=0.0, t1=H, dt0=H,
                              y0=jnp.asarray(Y0), stepsize_controller=diffrax.ConstantStepSize(),
                              saveat=diffrax.SaveAt(t1=True), max_steps=16)
    assert int(sol.stats["num_steps"]) == 1
    return _numpy(sol.ys[-1])


def _one_step_scipy(plugin, method):
    import scipy.integrate

    # The plugin never passes a first step either: the scipy class of its method map.
    solver_cls = getattr(scipy.integrate, plugin.methods[method])
    solver = solver_cls(lambda t, y: f_numpy(t, y.reshape(Y0.shape)).ravel(), 0.0, Y0.ravel(), H,
                        first_step=H, rtol=LOOSE, atol=LOOSE)
    assert solver.step() is None and solver.t == H
    return solver.y.reshape(Y0.shape)


ONE_STEP = {"torch_custom": _one_step_torch_custom, "torchdiffeq": _one_step_torchdiffeq,
            "diffrax": _one_step_diffrax, "scipy": _one_step_scipy}


@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
@pytest.mark.parametrize("name", PLUGINS)
def test_one_adaptive_step_is_the_pair_of_its_name(name, method):
    """One step of ``h`` equals the hand-written step of the named pair's solution weights:
    a plugin whose ``dopri5`` were tsit5 (or bosh3 were dopri5) fails here, although both
    converge to the same flow at a tight tolerance."""
    plugin = _plugin(name)
    if method not in plugin.methods:
        pytest.skip(f"{name} does not declare {method!r}")
    if name not in ONE_STEP:
        pytest.skip(f"no one-step driver for plugin {name!r}")
    got = ONE_STEP[name](plugin, method)
    want = rk_step(method, 0.0, Y0, H)
    err = np.max(np.abs(got - want))
    assert err < ROUND_OFF, f"{name} {method!r}: one step differs from the {method} tableau by {err:.3g}"
    # and the step is a real step of a high-order method, not the initial state
    assert np.max(np.abs(want - Y0)) > 0.1


@pytest.fixture(scope="module")
def reference():
    from scipy.integrate import solve_ivp

    sol = solve_ivp(lambda t, y: f_numpy(t, y.reshape(Y0.shape)).ravel(), (TS[0], TS[-1]), Y0.ravel(),
                    method="DOP853", t_eval=TS, rtol=1e-13, atol=1e-14)
    assert sol.success
    return sol.y.T.reshape(len(TS), *Y0.shape)


@pytest.mark.parametrize("method", ADAPTIVE_METHODS + tuple(pytest.param(m, marks=pytest.mark.slow)
                                                             for m in STIFF_METHODS))
@pytest.mark.parametrize("name", PLUGINS)
def test_adaptive_solve_converges_to_the_flow(name, method, reference):
    """At a tight tolerance every plugin's adaptive / stiff method reaches the reference flow:
    whichever library solves, the name gives a convergent solve of the same problem."""
    plugin = _plugin(name)
    if method not in plugin.methods:
        pytest.skip(f"{name} does not declare {method!r}")
    y0, ts = _arrays(plugin.framework, Y0, TS)
    sol = plugin.odeint(_field(plugin.framework), y0, ts, method=method, rtol=1e-10, atol=1e-12,
                        grad_mode=plugin.grad_modes[0], max_steps=5_000)  # bosh3 needs ~2 800
    assert sol.ok, (name, method, sol.message)
    err = np.max(np.abs(_numpy(sol.ys) - reference))
    # dense output between steps is below the method's order: 1e-6 leaves room for it
    assert err < 1e-6 and math.isfinite(err), (name, method, err)
