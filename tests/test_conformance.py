"""Conformance of every registered solver plugin to the plugin contract (odebench/protocol.py).

The cases are built at collection time from what each plugin *declares* (``methods``,
``grad_modes``, ``fixed_step_methods``, ``unsupported_reason``) through ``odebench.registry``,
so a newly registered plugin is tested here with no edit. Each plugin is driven in its
``backend_framework()`` (scipy: torch modules and tensors through its black-box adjoint), in
float64:

1. convergence: the log-log slope of the error against the step size of every fixed-step
   method, and for every adaptive method an error that falls as ``rtol`` falls;
2. gradients (every grad mode × one fixed-step and one adaptive method) against central
   finite differences of the same solve, with respect to ``y0`` and every parameter;
3. the harness's NFE count against the library's own (``Solution.stats.nfe``), exactly;
4. the contract: a ``Solution`` of the right shape for every declared combination,
   ``UnsupportedError`` for undeclared ones, status ``max_steps`` for an exhausted budget.

A plugin that cannot run here is skipped with its reason, except that a built-in one fails
under ``CI=true`` (:func:`plugin_or_skip`). JAX plugins compile once per solve setting, so
beyond one case per plugin × grad mode (and per test) their cases are ``slow``.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import pytest

from odebench import registry
from odebench.measure import NFECounter
from odebench.models import MLPSpec
from odebench.protocol import ADAPTIVE_METHODS, METHODS, Solution, SolverPlugin, Status, UnsupportedError

#: Orders of the fixed-step methods (a declared fixed-step method missing here fails the test).
FIXED_ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "rk4-classic": 4}
#: Frameworks whose solves compile (seconds each): their non-representative cases are slow.
COMPILED_FRAMEWORKS = frozenset({"jax"})
#: Where the built-in plugins live; only they must be available under ``CI=true``.
BUILTIN_PACKAGE = "odebench_plugins."


# --------------------------------------------------------------------------- availability
def plugin_or_skip(name: str) -> SolverPlugin:
    """An instance of plugin ``name``, or skip the test with the reason it cannot run here.

    Under ``CI=true`` a built-in plugin (registered from ``odebench_plugins``) that cannot run
    fails the test instead: CI installs every extra, so a skip there would hide a breakage.
    """
    entry = registry.entry(name)
    reason = entry.available()
    cls = entry.load()
    if reason is None and importlib.util.find_spec(cls.backend_framework()) is None:
        reason = f"unavailable: its backend framework {cls.backend_framework()!r} is not installed"
    if reason is None:
        return registry.get_plugin(name)
    if os.environ.get("CI", "").lower() == "true" and entry.entry_point.value.startswith(BUILTIN_PACKAGE):
        pytest.fail(f"built-in plugin {name!r} must run in CI: {reason}", pytrace=False)
    pytest.skip(f"{name}: {reason}")


# --------------------------------------------------------------------------- collection
def _classes() -> list[tuple[str, type[SolverPlugin] | None]]:
    """Every registered plugin's class (None when its module cannot be imported)."""
    return [(name, registry.entry(name).load()) for name in registry.plugin_names()]


def _combos(cls: type[SolverPlugin]) -> list[tuple[str, str]]:
    """Every (method, grad mode) the plugin declares and does not exclude."""
    return [(m, g) for m in cls.methods for g in cls.grad_modes if cls.unsupported_reason(m, g) is None]


def _fixed(cls: type[SolverPlugin]) -> list[str]:
    return [m for m in cls.methods if m in cls.fixed_step_methods]


def _adaptive(cls: type[SolverPlugin]) -> list[str]:
    return [m for m in cls.methods if m not in cls.fixed_step_methods]


def _representatives(cls: type[SolverPlugin]) -> list[str]:
    """One fixed-step and one adaptive method: rk4 (else the highest-order fixed one) and
    dopri5 (else the first declared explicit adaptive one, else any adaptive one)."""
    reps = []
    fixed = _fixed(cls)
    if fixed:
        reps.append("rk4" if "rk4" in fixed else max(fixed, key=lambda m: FIXED_ORDERS.get(m, 0)))
    adaptive = _adaptive(cls)
    if adaptive:
        explicit = [m for m in ADAPTIVE_METHODS if m in adaptive]
        reps.append("dopri5" if "dopri5" in adaptive else (explicit or adaptive)[0])
    return reps


def _default_method(cls: type[SolverPlugin], grad_mode: str) -> str:
    """The method that runs by default for a grad mode: the first representative allowed."""
    return next(m for m in _representatives(cls) if cls.unsupported_reason(m, grad_mode) is None)


def _param(values: tuple, cls: type[SolverPlugin], default: bool) -> pytest.param:
    # A plugin that compiles each solve with torch.compile (a minute per method on 2 cores) runs
    # with the slow tests only.
    slow = (cls.framework in COMPILED_FRAMEWORKS and not default) or cls.compiled
    return pytest.param(*values, id="-".join(values), marks=[pytest.mark.slow] if slow else [])


def _cases(kind: str) -> list:
    """The parameters of one test, for every registered plugin (see the module docstring)."""
    out = []
    for name, cls in _classes():
        if cls is None:  # cannot even be imported: one case, skipped (or failed in CI) with the reason
            width = {"plugin": 1, "method": 2, "grad": 3}[kind.split(":")[0]]
            out.append(pytest.param(name, *["unavailable"] * (width - 1), id=f"{name}-unavailable"))
            continue
        reps = _representatives(cls)
        if cls.compiled:  # its eager twin has the full matrix; the compiled one its representatives
            kind_methods = set(reps)
        else:
            kind_methods = set(cls.methods)
        if kind == "plugin":
            out.append(pytest.param(name, id=name))
        elif kind == "method:fixed":
            out += [_param((name, m), cls, m in reps) for m in _fixed(cls) if m in kind_methods]
        elif kind == "method:adaptive":
            out += [_param((name, m), cls, m in reps) for m in _adaptive(cls) if m in kind_methods]
        elif kind == "grad:all":
            out += [_param((name, m, g), cls, m == _default_method(cls, g)) for m, g in _combos(cls)
                    if m in kind_methods]
        elif kind == "grad:representative":
            out += [_param((name, m, g), cls, m == _default_method(cls, g))
                    for m, g in _combos(cls) if m in reps]
    return out


# --------------------------------------------------------------------------- the test problem
# y1' = -t y1², y2' = y1 y2: nonlinear, coupled and non-autonomous (a wrong stage time c_i
# changes the solution), with the closed form y1 = 1 / (t²/2 + c), c = 1 / y1(0), and
# y2 = y2(0) exp(sqrt(2/c) atan(t / sqrt(2c))). A batch of three states, shape (3, 2).
PROBLEM_Y0 = np.array([[1.0, 1.0], [0.5, -0.5], [2.0, 0.3]])


def exact(ts: np.ndarray) -> np.ndarray:
    """The closed-form solution at ``ts``, shape ``(len(ts), 3, 2)``."""
    t = np.asarray(ts)[:, None]
    c = 1.0 / PROBLEM_Y0[:, 0]
    y1 = 1.0 / (t * t / 2 + c)
    y2 = PROBLEM_Y0[:, 1] * np.exp(np.sqrt(2 / c) * np.arctan(t / np.sqrt(2 * c)))
    return np.stack([y1, y2], axis=-1)


def _problem(y, t, xp_stack):
    y1, y2 = y[..., 0], y[..., 1]
    return xp_stack([-t * y1 * y1, y1 * y2], -1)


# The gradient problem: a 2-8-2 tanh MLP (random weights and biases, fixed seed) times (1 + t/2),
# so that the reverse solve's times matter too; loss = sum of squares of ys at the output times.
GRAD_SPEC = MLPSpec((2, 8, 2), activation="tanh")
GRAD_Y0 = np.array([[0.8, -0.4], [-0.3, 1.1], [1.5, 0.2]])
GRAD_TS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])  # on the fixed-step grid below: no interpolation


def _grad_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20240611)
    return [(rng.normal(0.0, 0.8, (o, i)), rng.normal(0.0, 0.3, (o,)))
            for i, o in zip(GRAD_SPEC.sizes[:-1], GRAD_SPEC.sizes[1:])]


# --------------------------------------------------------------------------- frameworks
class TorchFrame:
    """Arrays, vector fields and counting in torch (the harness's ``CountingField``)."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def array(self, x):
        return self.torch.tensor(np.asarray(x), dtype=self.torch.float64)

    def scalar(self, x: float):
        return x

    def numpy(self, ys) -> np.ndarray:
        return ys.detach().numpy()

    def problem(self):
        return _torch_classes().Problem()

    def counting(self, f, counter: NFECounter, plugin: SolverPlugin, method: str):
        from odebench.backends.torch import CountingField

        return CountingField(f, counter)

    def settle(self) -> None:
        pass

    def gradient_check(self, plugin: SolverPlugin, method: str, grad_mode: str, opts: dict) -> list:
        """(leaf, analytic, central differences, |grad| |direction|): the derivative of the loss
        along one random direction per leaf (y0, then each parameter tensor)."""
        torch = self.torch
        from odebench.backends.torch import MLPField

        field = _torch_classes().TimeScaled(MLPField(GRAD_SPEC, _grad_weights(), torch.float64))
        ts = self.array(GRAD_TS)

        def loss(y0):
            sol = plugin.odeint(field, y0, ts, method=method, grad_mode=grad_mode, **opts)
            assert sol.status == Status.OK, sol.message
            return (sol.ys**2).sum()

        y0 = self.array(GRAD_Y0).requires_grad_(True)
        loss(y0).backward()
        leaves = [("y0", y0)] + list(field.named_parameters())
        grads = [torch.zeros_like(x) if x.grad is None else x.grad.clone() for _, x in leaves]
        gen = torch.Generator().manual_seed(7)
        out = []
        with torch.no_grad():
            for (name, x), g in zip(leaves, grads):
                v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
                values = []
                for sign in (1.0, -1.0):
                    x.add_(v, alpha=sign * FD_EPS)
                    values.append(loss(y0.detach()).item())
                    x.sub_(v, alpha=sign * FD_EPS)
                scale = (torch.linalg.vector_norm(g) * torch.linalg.vector_norm(v)).item()
                out.append((name, (g * v).sum().item(), (values[0] - values[1]) / (2 * FD_EPS), scale))
        return out


@functools.cache
def _torch_classes():
    import torch

    class Problem(torch.nn.Module):
        def forward(self, t, y):
            return _problem(y, t, torch.stack)

    class TimeScaled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, t, y):
            return self.inner(t, y) * (1.0 + 0.5 * t)

    return type("TorchClasses", (), dict(Problem=Problem, TimeScaled=TimeScaled))


class JaxFrame:
    """Arrays and vector fields in JAX; counting through the plugin's ``counted``, as the JAX
    backend does (odebench/backends/jax.py). Tolerances are passed as concrete 0-d arrays:
    as Python floats they would be static, and every tolerance would compile a new solve."""

    name = "jax"

    def __init__(self) -> None:
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

    def array(self, x):
        return self.jnp.asarray(np.asarray(x), dtype=self.jnp.float64)

    def scalar(self, x: float):
        return self.jnp.asarray(x, dtype=self.jnp.float64)

    def numpy(self, ys) -> np.ndarray:
        return np.asarray(ys)

    def problem(self):
        return _jax_classes().Problem()

    def counting(self, f, counter: NFECounter, plugin: SolverPlugin, method: str):
        from odebench.backends.jax import counted  # the harness's wrapper, not the plugin's

        return counted(f, counter, count_vjp=plugin.counts_vjp(method))

    def settle(self) -> None:
        self.jax.effects_barrier()

    def gradient_check(self, plugin: SolverPlugin, method: str, grad_mode: str, opts: dict) -> list:
        jax, jnp = self.jax, self.jnp
        from odebench.backends.jax import build_mlp

        field = _jax_classes().TimeScaled(build_mlp(GRAD_SPEC, _grad_weights(), jnp.float64))
        ts = self.array(GRAD_TS)

        def loss(f, y0):
            # Under jit the status cannot be read: a failed solve raises (protocol, diffrax docs).
            sol = plugin.odeint(f, y0, ts, method=method, grad_mode=grad_mode, **opts)
            return jnp.sum(sol.ys**2)

        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))  # one compile for all calls
        args = (field, self.array(GRAD_Y0))
        _, grads = value_and_grad(*args)
        paths, treedef = jax.tree_util.tree_flatten_with_path(args)
        leaves = [x for _, x in paths]
        g_leaves = jax.tree.leaves(grads)
        assert len(g_leaves) == len(leaves)
        rng = np.random.default_rng(7)
        out = []
        for i, ((path, x), g) in enumerate(zip(paths, g_leaves)):
            v = rng.normal(size=x.shape)
            values = []
            for sign in (1.0, -1.0):
                moved = [y + sign * FD_EPS * v if j == i else y for j, y in enumerate(leaves)]
                values.append(float(value_and_grad(*jax.tree.unflatten(treedef, moved))[0]))
            name = "y0" if path[0].idx == 1 else jax.tree_util.keystr(path[1:])
            scale = float(jnp.linalg.norm(g.ravel()) * np.linalg.norm(v.ravel()))
            out.append((name, float(jnp.sum(g * v)), (values[0] - values[1]) / (2 * FD_EPS), scale))
        return out


@functools.cache
def _jax_classes():
    import equinox as eqx
    import jax.numpy as jnp

    class Problem(eqx.Module):
        def __call__(self, t, y):
            return _problem(y, t, jnp.stack)

    class TimeScaled(eqx.Module):
        inner: eqx.Module

        def __call__(self, t, y):
            return self.inner(t, y) * (1.0 + 0.5 * t)

    return type("JaxClasses", (), dict(Problem=Problem, TimeScaled=TimeScaled))


class NumpyFrame:
    """Plain numpy (forward solves only: numpy has no autodiff)."""

    name = "numpy"

    def array(self, x):
        return np.asarray(x, dtype=np.float64)

    def scalar(self, x: float):
        return x

    def numpy(self, ys) -> np.ndarray:
        return np.asarray(ys)

    def problem(self):
        return lambda t, y: _problem(y, t, np.stack)

    def counting(self, f, counter: NFECounter, plugin: SolverPlugin, method: str):
        def counted(t, y):
            counter.call()
            return f(t, y)

        return counted

    def settle(self) -> None:
        pass

    def gradient_check(self, plugin, method, grad_mode, opts) -> list:
        pytest.skip(f"{plugin.name}: its backend framework is numpy, which cannot differentiate a solve")


FRAMES = {"torch": TorchFrame, "jax": JaxFrame, "numpy": NumpyFrame}


@pytest.fixture(scope="module", autouse=True)
def _float64_jax():
    """JAX in float64 for this module only (finite differences and orders need it)."""
    if importlib.util.find_spec("jax") is None:
        yield
        return
    import jax

    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def _setup(name: str) -> tuple[SolverPlugin, TorchFrame | JaxFrame | NumpyFrame]:
    plugin = plugin_or_skip(name)
    return plugin, FRAMES[plugin.backend_framework()]()


def _solve(plugin, frame, f, ts, method, grad_mode=None, **kw) -> Solution:
    kw = {k: frame.scalar(v) if k in ("rtol", "atol") else v for k, v in kw.items()}
    return plugin.odeint(f, frame.array(PROBLEM_Y0), frame.array(ts), method=method,
                         grad_mode=grad_mode or plugin.grad_modes[0], **kw)


# --------------------------------------------------------------------------- 1. convergence
def _slope(hs, errs) -> float:
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


@pytest.mark.parametrize("name,method", _cases("method:fixed"))
def test_fixed_step_convergence_order(name, method):
    """Error at t = 1, 2 against the closed form for three halvings of the step: the log-log
    slope is the method's order ± 0.3 (the steps are in the asymptotic regime and far above
    round-off, so a correct method lands within ±0.05; a wrong coefficient loses an order)."""
    plugin, frame = _setup(name)
    assert method in FIXED_ORDERS, f"{name} declares fixed-step {method!r} whose order this test does not know"
    order = FIXED_ORDERS[method]
    first = {1: 5, 2: 4, 3: 3}.get(order, 2)  # h = 2^-first: errors between ~1e-2 and ~1e-6
    hs = [2.0**-k for k in range(first, first + 3)]  # powers of two: the grid hits t = 1, 2 exactly
    ts = np.array([0.0, 1.0, 2.0])
    errs = []
    for h in hs:
        sol = _solve(plugin, frame, frame.problem(), ts, method, step_size=h, max_steps=10_000)
        assert sol.status == Status.OK, sol.message
        errs.append(np.max(np.abs(frame.numpy(sol.ys) - exact(ts))))
    assert errs[-1] > 1e-12, f"errors {errs} reach round-off: the slope would be meaningless"
    assert abs(_slope(hs, errs) - order) <= 0.3, (hs, errs)


ADAPTIVE_RTOLS = (1e-5, 1e-6, 1e-7, 1e-8)


@pytest.mark.parametrize("name,method", _cases("method:adaptive"))
def test_adaptive_error_falls_with_rtol(name, method):
    """Over three decades of rtol (atol = rtol; the solution is of order 1), the error at nine
    output times (most inside steps: dense output) against the closed form falls:

    - step to step it may stall, but never grows by more than 2x (variable-order bdf/lsoda and
      interpolation-limited dense output, e.g. torchdiffeq's dopri8, flatten one decade);
    - over the three decades it falls at least 20x (a tolerance-proportional solver gives
      ~1000x; the slowest built-in, lsoda, gives ~70x; a tolerance not passed on gives 1x).
    """
    plugin, frame = _setup(name)
    ts = np.linspace(0.0, 4.0, 9)
    errs = []
    for rtol in ADAPTIVE_RTOLS:
        sol = _solve(plugin, frame, frame.problem(), ts, method, rtol=rtol, atol=rtol)
        assert sol.status == Status.OK, (rtol, sol.message)
        errs.append(float(np.max(np.abs(frame.numpy(sol.ys) - exact(ts)))))
    assert all(b <= 2 * a for a, b in zip(errs, errs[1:])), dict(zip(ADAPTIVE_RTOLS, errs))
    assert errs[-1] <= errs[0] / 20, dict(zip(ADAPTIVE_RTOLS, errs))


# --------------------------------------------------------------------------- 2. gradients
FD_EPS = 1e-5  # central differences: truncation ~eps² ~1e-10, round-off ~1e-16 / eps ~1e-11 (relative)
GRAD_STEP = 2.0**-7  # fixed steps: 128 per unit time, on the output grid
GRAD_TOL = 1e-10  # adaptive rtol = atol


def _grad_opts(plugin: SolverPlugin, method: str) -> dict:
    if plugin.is_fixed_step(method):
        return dict(step_size=GRAD_STEP, max_steps=10_000)
    return dict(rtol=GRAD_TOL, atol=GRAD_TOL, max_steps=100_000)


def _grad_rtol(plugin: SolverPlugin, method: str, grad_mode: str) -> float:
    """How closely the gradient must match central differences of the same solve.

    backprop and checkpoint differentiate the discrete solve itself, so they match up to the
    differences' own error (~1e-9): 1e-6. The continuous adjoints (adjoint, adjoint-seminorm)
    solve a different equation backward; they match to its discretisation error: O(h^p)
    relative for fixed steps (rk4: h^4 = 4e-9) and O(tol) for adaptive ones (tol 1e-10),
    amplified by the adjoint's sensitivity: 1e-6 again, or 10 h^p for low orders.
    """
    if grad_mode in ("adjoint", "adjoint-seminorm") and plugin.is_fixed_step(method):
        return max(1e-6, 10 * GRAD_STEP ** FIXED_ORDERS.get(method, 1))
    return 1e-6


@pytest.mark.parametrize("name,method,grad_mode", _cases("grad:representative"))
def test_gradients_match_central_differences(name, method, grad_mode):
    """d loss along a random direction of y0 and of every parameter tensor, against central
    differences of the loss (the plugin's forward solve in the same grad mode)."""
    plugin, frame = _setup(name)
    rel = _grad_rtol(plugin, method, grad_mode)
    checks = frame.gradient_check(plugin, method, grad_mode, _grad_opts(plugin, method))
    assert len(checks) == 1 + 2 * (len(GRAD_SPEC.sizes) - 1), [c[0] for c in checks]  # y0, W and b per layer
    # Relative to |grad| |direction|, the directional derivative's size before cancellation: a
    # random direction can make the derivative itself small (diffrax's y0 here: 1e-3 of that).
    bad = [(leaf, ad, fd) for leaf, ad, fd, scale in checks if not abs(ad - fd) <= rel * scale]
    assert not bad, f"gradient off by more than {rel:g} (leaf, analytic, finite differences): {bad}"


# --------------------------------------------------------------------------- 3 + 4. contract and NFE
SOLVE_TS = np.linspace(0.0, 2.0, 9)
SOLVE_TOL = 1e-6


@pytest.mark.parametrize("name,method,grad_mode", _cases("grad:all"))
def test_declared_combination_solves_and_counts_nfe(name, method, grad_mode):
    """Every declared method × grad mode returns a Solution of shape (len(ts), *y0.shape) with
    status ok, starting at y0, close to the closed form, with consistent step statistics; and
    where the library reports an NFE it equals, exactly, the evaluations the harness counts with
    its wrapper (torch: ``CountingField``; JAX: the plugin's ``counted``, as the backends do)."""
    plugin, frame = _setup(name)
    counter = NFECounter()
    f = frame.counting(frame.problem(), counter, plugin, method)
    sol = _solve(plugin, frame, f, SOLVE_TS, method, grad_mode, rtol=SOLVE_TOL, atol=SOLVE_TOL)
    frame.settle()
    assert isinstance(sol, Solution)
    assert sol.status == Status.OK, sol.message
    ys = frame.numpy(sol.ys)
    assert ys.shape == (len(SOLVE_TS), *PROBLEM_Y0.shape)
    np.testing.assert_array_equal(ys[0], PROBLEM_Y0)
    # Fixed steps of h = 0.25 on the output grid: error / h^p is 0.3 (rk4) to 1.1 (euler, heun)
    # here, so 3 h^p (an order lost fails rk4); adaptive ones at rtol 1e-6: 1e-3 (the worst,
    # torchdiffeq's bosh3 with its interpolant, 3e-4).
    bound = 3 * 0.25 ** FIXED_ORDERS.get(method, 1) if plugin.is_fixed_step(method) else 1e-3
    assert np.max(np.abs(ys - exact(SOLVE_TS))) < bound
    assert counter.nfe_fwd > 0
    st = sol.stats
    if st.nfe is not None:
        assert st.nfe == counter.nfe_fwd, (st, counter)
    # Steps attempted = accepted + rejected; a fixed-step solve on the output grid takes one
    # step per interval and rejects none (each statistic may be None: not kept by the library).
    if None not in (st.n_steps, st.n_accepted, st.n_rejected):
        assert st.n_steps == st.n_accepted + st.n_rejected, st
    if plugin.is_fixed_step(method):
        assert st.n_steps in (None, len(SOLVE_TS) - 1) and st.n_rejected in (None, 0), st


@pytest.mark.parametrize("name", _cases("plugin"))
def test_undeclared_combinations_raise_unsupported(name):
    """An undeclared method, an undeclared grad mode and every declared pair the plugin excludes
    (``unsupported_reason``) raise UnsupportedError from odeint, before any solving."""
    plugin, frame = _setup(name)
    method = next((m for m in METHODS if m not in plugin.methods), "no-such-method")
    undeclared = [(method, plugin.grad_modes[0]), (next(iter(plugin.methods)), "no-such-grad-mode")]
    excluded = [(m, g) for m in plugin.methods for g in plugin.grad_modes if plugin.unsupported_reason(m, g)]
    for m, g in undeclared + excluded:
        with pytest.raises(UnsupportedError):
            _solve(plugin, frame, frame.problem(), SOLVE_TS, m, g)


@pytest.mark.parametrize("name,method", _cases("method:adaptive"))
def test_step_budget_of_one_is_a_status(name, method):
    """max_steps=1 cannot reach t = 4 at rtol 1e-8: status max_steps with a message, no exception."""
    plugin, frame = _setup(name)
    sol = _solve(plugin, frame, frame.problem(), np.array([0.0, 2.0, 4.0]), method, rtol=1e-8, atol=1e-8,
                 max_steps=1)
    assert isinstance(sol, Solution)
    assert sol.status == Status.MAX_STEPS and sol.message, (sol.status, sol.message)
