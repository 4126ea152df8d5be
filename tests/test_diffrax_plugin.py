"""The diffrax plugin's particulars: its NFE formula (the FSAL first-step retry rule), statuses,
declared capabilities, backward time. Orders (both RK4 tableaus among them),
gradients against finite differences of every grad mode, NFE agreement and the contract are
checked for every plugin in test_conformance.py.

Each case compiles once (JAX); the longer ones run with ``-m slow``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("diffrax")
eqx = pytest.importorskip("equinox")

import jax.numpy as jnp  # noqa: E402

from odebench.backends.jax import counted  # noqa: E402
from odebench.measure import NFECounter  # noqa: E402
from odebench.protocol import Status, UnsupportedError  # noqa: E402
from odebench_plugins.diffrax_solvers import STAGES, DiffraxPlugin, expected_nfe  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _x64():
    """float64 for finite differences and orders, for this module only."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)

P = DiffraxPlugin()
A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
Y0 = np.array([[2.0, 0.0], [0.5, -1.0], [-1.0, 0.3]])


class Linear(eqx.Module):
    """``y' = scale * A y`` (exact: ``expm(scale A t) y0``); ``scale = nan`` makes it non-finite."""

    A: jax.Array
    scale: jax.Array

    def __call__(self, t, y):
        return self.scale * (y @ self.A.T)


def linear(scale=1.0) -> Linear:
    return Linear(jnp.asarray(A), jnp.asarray(scale, dtype=jnp.float64))


# --------------------------------------------------------------------------- capabilities
def test_declares_and_imports_without_jax():
    d = P.describe()
    assert d["framework"] == "jax" and d["available"] is None and d["version"]
    assert set(d["methods"]) == {"euler", "midpoint", "heun", "rk4", "rk4-classic", "bosh3", "dopri5", "tsit5",
                                 "dopri8", "kvaerno5"}
    assert d["grad_modes"] == ["backprop", "checkpoint", "adjoint", "adjoint-seminorm"]
    code = ("import sys; import odebench_plugins.diffrax_solvers as m; "
            "assert 'jax' not in sys.modules and 'diffrax' not in sys.modules; "
            "m.DiffraxPlugin.requires = ('jax_is_not_installed_here',); print(m.DiffraxPlugin.available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "unavailable" in out.stdout and "pip install odebench[jax]" in out.stdout


def test_unsupported_combinations_give_reasons():
    assert "has: bosh3, dopri5" in P.unsupported_reason("radau", "backprop")
    assert "has: backprop, checkpoint" in P.unsupported_reason("dopri5", "seminorm")
    assert "runs on: cpu, cuda" in P.unsupported_reason("dopri5", "backprop", "tpu")
    assert "fixed-step" in P.unsupported_reason("rk4", "adjoint-seminorm")
    assert P.unsupported_reason("dopri5", "adjoint-seminorm") is None
    with pytest.raises(UnsupportedError, match="no method 'bdf'"):
        P.odeint(linear(), Y0, np.linspace(0, 1, 3), method="bdf")


# --------------------------------------------------------------------------- NFE
# One method per family: the counts of every method are compared in test_conformance.py.
@pytest.mark.parametrize("method", ["rk4", "bosh3"])
def test_nfe_counter_equals_stats(method):
    """The counted evaluations equal the stats-based count, stated per method family:
    non-FSAL: ``s * num_steps``; FSAL: ``(s-1) * num_steps + r0 + 1`` — diffrax evaluates
    nothing at init, all ``s`` stages on each attempt of the first step (``r0`` rejected
    retries, a diffrax quirk that ``sol.stats`` does not show) and ``s-1`` afterwards."""
    counter = NFECounter()
    sol = P.odeint(counted(linear(), counter), Y0, np.linspace(0, 5, 11), method=method, rtol=1e-6, atol=1e-8)
    jax.effects_barrier()
    assert sol.status is Status.OK
    s, fsal = STAGES[method]
    n, r0 = sol.stats.n_steps, sol.stats.extra["first_step_retries"]
    want = (s - 1) * n + r0 + 1 if fsal else s * n
    assert counter.nfe_fwd == sol.stats.nfe == want == expected_nfe(method, n, r0)
    assert sol.stats.n_accepted + sol.stats.n_rejected == n
    if method == "bosh3":
        assert r0 > 0  # this problem rejects bosh3's first trial step (0.01): the retry is counted
    if method == "rk4":
        assert n == 10 and r0 == 0


# --------------------------------------------------------------------------- statuses
def test_statuses_max_steps_and_nonfinite():
    ts = np.linspace(0.0, 5.0, 6)

    @jax.jit
    def tiny_budget(scale):
        return P.solve(Linear(jnp.asarray(A), scale), jnp.asarray(Y0), ts,
                       method="dopri5", rtol=1e-8, atol=1e-10, max_steps=3)

    ys, code, stats = tiny_budget(jnp.asarray(1.0))
    assert P.status(code) is Status.MAX_STEPS and int(stats["num_steps"]) == 3
    assert np.all(np.isinf(np.asarray(ys)[-1]))  # unreached outputs are diffrax's inf fill
    # A NaN field: every trial step is rejected as non-finite until the budget runs out.
    ys, code, stats = tiny_budget(jnp.asarray(np.nan))
    assert P.status(code) is Status.NONFINITE and int(stats["num_accepted_steps"]) == 0
    # Fixed steps have no rejection: non-finite values reach the outputs.
    sol = P.odeint(linear(np.nan), Y0, ts, method="euler")
    assert sol.status is Status.NONFINITE and "non-finite" in sol.message
    assert sol.stats.n_steps == 5 and sol.stats.nfe == 5


@pytest.mark.slow
def test_status_dt_underflow_with_dtmin():
    # y' = y^2 from 1 blows up at t = 1: the step shrinks below dtmin on the way.
    sol = P.odeint(lambda t, y: y**2, jnp.ones(1), np.array([0.0, 2.0]), method="dopri5", dtmin=1e-8)
    assert sol.status is Status.DT_UNDERFLOW and "dtmin" in sol.message


def test_odeint_under_jit_raises_on_failure():
    ts = np.linspace(0.0, 1.0, 5)

    @jax.jit
    def run(scale):
        return P.odeint(Linear(jnp.asarray(A), scale), jnp.asarray(Y0), ts, method="rk4").ys

    assert np.all(np.isfinite(np.asarray(run(jnp.asarray(1.0)))))
    with pytest.raises(Exception, match="diffrax solve failed"):
        jax.block_until_ready(run(jnp.asarray(np.nan)))


# --------------------------------------------------------------------------- backward time
@pytest.mark.slow
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_decreasing_times_and_backward_adjoint(method):
    """ts running backward: the solution is the exact one and the adjoint's gradient wrt y0
    equals backprop's (linear field: RK4's discrete adjoint is RK4 on the adjoint ODE)."""
    import scipy.linalg

    ts = np.linspace(1.0, 0.0, 5)
    exact = np.stack([Y0 @ scipy.linalg.expm(A * (t - 1.0)).T for t in ts])
    tol = 1e-2 if method == "rk4" else 1e-8
    sol = P.odeint(linear(), Y0, ts, method=method, rtol=1e-10, atol=1e-10)
    assert sol.status is Status.OK and np.max(np.abs(np.asarray(sol.ys) - exact)) < tol

    def grad(mode):
        return jax.grad(lambda y0: jnp.sum(P.odeint(linear(), y0, ts, method=method, grad_mode=mode,
                                                    rtol=1e-10, atol=1e-10).ys[-1] ** 2))(jnp.asarray(Y0))

    np.testing.assert_allclose(np.asarray(grad("adjoint")), np.asarray(grad("backprop")), rtol=1e-7, atol=1e-8)
