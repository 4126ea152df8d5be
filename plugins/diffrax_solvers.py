"""diffrax (JAX) as an odebench solver plugin.

Nothing here imports JAX at module import time: the plugin is listed (and reported
"unavailable — `pip install odebench[jax]`") on machines without JAX; the solvers,
the two RK4 tableaus (``rk4``: Kutta's 3/8 rule, as torchdiffeq and torch_custom;
``rk4-classic``: the classical 1/6, 1/3, 1/3, 1/6 method) and the helper modules are
built on first use.

What diffrax evaluates (used for :attr:`SolveStats.nfe`; checked against a counting
vector field in ``tests/test_diffrax_plugin.py``), per *attempted* step (accepted or
rejected, ``num_steps`` in ``sol.stats``):

- non-FSAL explicit methods (euler 1, midpoint 2, heun 2, rk4 4, rk4-classic 4): ``s`` evaluations,
  nothing else, so ``nfe = s * num_steps``.
- FSAL explicit methods (bosh3 4 stages, dopri5 7, tsit5 7, dopri8 14): diffrax does no
  evaluation at ``init`` (it seeds the FSAL slot with zeros and a ``first_step`` flag),
  evaluates all ``s`` stages on every attempt of the first step (a rejected first step
  leaves the flag set, so its retry evaluates the first stage again) and ``s - 1`` on every
  later attempt: ``nfe = (s - 1) * num_steps + r0 + [a step was accepted]`` with ``r0`` the
  rejections before the first accepted step. ``sol.stats`` cannot tell ``r0``, so the
  adaptive controller is wrapped (:class:`_Tracked`, a pass-through around
  ``PIDController``) to count it in its state, read back with ``SaveAt(controller_state=True)``.
- diffrax's ``PIDController`` with ``dt0=None`` makes **no** evaluations for its initial
  step: its Hairer–Wanner step selection only runs for a bare ``ODETerm``, and diffrax has
  already wrapped the term (``WrapTerm``) by then, so the first trial step is 0.01 (times
  the direction). This is diffrax 0.7's behaviour and we keep it.
- kvaerno5 (implicit) evaluates a data-dependent number of times (Newton iterations and
  Jacobians): ``nfe`` is None there and only the harness's counted NFE exists.
- Output at ``ts`` is by the method's dense interpolation: no extra evaluations.

Gradient modes (``grad_mode`` → diffrax ``adjoint``). diffrax backpropagates through a
solve with a checkpointed step loop: its reverse pass re-runs each step from a stored carry
and then takes its VJP, and its Runge–Kutta stage loop is itself checkpointed, so each
stage is evaluated once more (NFE-B = 2 × NFE-F for the RK methods, 1 × for euler).

- ``backprop``: ``RecursiveCheckpointAdjoint(checkpoints=n)`` for fixed steps, with ``n``
  the number of steps (``len(ts) - 1``, or the span over ``step_size``): every step's carry
  is stored, nothing is recomputed beyond the one re-run per step — diffrax's nearest thing
  to store-everything backprop. Adaptive methods use diffrax's default checkpoints
  (``~sqrt(2 max_steps)``, 446 for 1e5): that is also full storage whenever the solve takes
  no more steps than that; a fixed ``checkpoints=max_steps`` is not used because diffrax
  allocates and sorts all of them on every solve (milliseconds per solve at 1e5), and
  ``DirectAdjoint`` is not used because it runs nested scans sized by ``max_steps``
  whatever the steps taken (diffrax itself advises against it).
- ``checkpoint``: ``RecursiveCheckpointAdjoint()``, diffrax's default online (Stumm–Walther)
  checkpointing with ``~sqrt(2 N)`` checkpoints for a loop of at most ``N`` steps; fixed-step
  solves size the loop by their grid (``N = n``), so memory grows like ``sqrt(n)``. For
  adaptive methods it is the same program as ``backprop``.
- ``adjoint``: ``BacksolveAdjoint`` — the continuous adjoint integrated backward between
  consecutive output times; the backward pass uses the forward method and controller
  (fixed-step methods: a constant step of the largest output-time gap, or ``-step_size``).
- ``adjoint-seminorm``: ``BacksolveAdjoint`` whose backward ``PIDController`` uses
  ``diffrax.adjoint_rms_seminorm`` (the parameter-adjoint channels are left out of the error
  norm, Kidger et al. 2021). Only adaptive methods: a fixed-step method has no error norm.

``BacksolveAdjoint`` differentiates with respect to ``y0``, ``args`` and the *terms*: the
vector field is stored as a field of the ``ODETerm``, so the array leaves of an
``equinox.Module`` vector field (its parameters) are differentiated. Parameters captured
by a plain Python closure are invisible to it (JAX raises ``CustomVJPException``), so pass
parameters as pytree leaves of ``f`` (an ``eqx.Module`` or a ``jax.tree_util.Partial``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

from odebench.protocol import FIXED_METHODS, JaxSolverPlugin, Solution, SolveStats, Status

#: Canonical name → diffrax spelling.
_NATIVE = {
    "euler": "Euler",
    "midpoint": "Midpoint",
    "heun": "Heun",
    "rk4": "RK38 (Kutta's 3/8 rule, a ButcherTableau on diffrax.AbstractERK)",
    "rk4-classic": "RK4Classic (the classical RK4, a ButcherTableau on diffrax.AbstractERK)",
    "bosh3": "Bosh3",
    "dopri5": "Dopri5",
    "tsit5": "Tsit5",
    "dopri8": "Dopri8",
    "kvaerno5": "Kvaerno5",
}

#: Stages per step and whether diffrax uses first-same-as-last, for the explicit methods.
STAGES: dict[str, tuple[int, bool]] = {
    "euler": (1, False),
    "midpoint": (2, False),
    "heun": (2, False),
    "rk4": (4, False),
    "rk4-classic": (4, False),
    "bosh3": (4, True),
    "dopri5": (7, True),
    "tsit5": (7, True),
    "dopri8": (14, True),
}

#: The status codes :meth:`DiffraxPlugin.solve` returns, as indices into this tuple.
STATUS_CODES: tuple[Status, ...] = (
    Status.OK,
    Status.MAX_STEPS,
    Status.DT_UNDERFLOW,
    Status.NONFINITE,
    Status.ERROR,
)
_OK, _MAX_STEPS, _DT_UNDERFLOW, _NONFINITE, _ERROR = range(len(STATUS_CODES))


def expected_nfe(method: str, num_steps: int, first_step_retries: int = 0, accepted_any: bool = True) -> int | None:
    """Vector-field evaluations diffrax makes for ``num_steps`` attempted steps of ``method``.

    Arguments:
        method: canonical method name.
        num_steps: attempted steps (``sol.stats["num_steps"]``).
        first_step_retries: rejected attempts before the first accepted step (FSAL only).
        accepted_any: whether any step was accepted (FSAL only).

    Returns:
        The count, or None for implicit methods (data-dependent Newton iterations).
    """
    if method not in STAGES:
        return None
    s, fsal = STAGES[method]
    if not fsal:
        return s * num_steps
    if num_steps == 0:
        return 0
    return (s - 1) * num_steps + first_step_retries + int(bool(accepted_any))


@functools.cache
def _jax_parts() -> Any:
    """Build (once) every JAX-dependent class; returns a namespace."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    class _CubicInterpolation(diffrax.AbstractLocalInterpolation):
        """A four-stage method's free third-order continuous extension.

        ``y(t0 + θh) = y0 + Σ b_i(θ) k_i`` with cubic weights ``b_i(θ)`` (``b_i(1)`` are the
        method's weights), whose (θ³, θ², θ) coefficients are the rows of the subclass's
        ``weights``; ``k_i`` are diffrax's stage increments ``h f_i``.
        """

        weights: ClassVar[np.ndarray]
        t0: Any
        t1: Any
        coeffs: Any  # (θ³, θ², θ, 1) coefficients, stacked on a leading axis of 4

        def __init__(self, *, t0, t1, y0, y1, k):
            del y1
            self.t0 = t0
            self.t1 = t1
            m = self.weights

            def _calc(_y0, _k):
                c = jnp.tensordot(jnp.asarray(m, dtype=_k.dtype), _k, axes=1)
                return jnp.concatenate([c, _y0[None]], axis=0)

            self.coeffs = jax.tree.map(_calc, y0, k)

        def evaluate(self, t0, t1=None, left=True):
            del left
            if t1 is not None:
                return jax.tree.map(lambda a, b: a - b, self.evaluate(t1), self.evaluate(t0))
            theta = (t0 - self.t0) / (self.t1 - self.t0)
            return jax.tree.map(lambda c: jnp.polyval(c, theta.astype(c.dtype)), self.coeffs)

    class _RK38Interpolation(_CubicInterpolation):
        """Kutta's 3/8 rule's extension: ``b1 = θ - 15θ²/8 + θ³``, ``b2 = 15θ²/8 - 3θ³/2``,
        ``b3 = 3θ²/8``, ``b4 = -3θ²/8 + θ³/2``, the unique cubic weights meeting the order-3
        conditions for every θ (the 3/8 rule's nodes 0, 1/3, 2/3, 1 fix them)."""

        weights: ClassVar[np.ndarray] = np.array(
            [
                [1.0, -3 / 2, 0.0, 1 / 2],  # θ³
                [-15 / 8, 15 / 8, 3 / 8, -3 / 8],  # θ²
                [1.0, 0.0, 0.0, 0.0],  # θ
            ]
        )

    class _RK4ClassicInterpolation(_CubicInterpolation):
        """The classical RK4's extension: ``b1 = θ - 3θ²/2 + 2θ³/3``,
        ``b2 = b3 = θ² - 2θ³/3``, ``b4 = -θ²/2 + 2θ³/3``."""

        weights: ClassVar[np.ndarray] = np.array(
            [
                [2 / 3, -2 / 3, -2 / 3, 2 / 3],  # θ³
                [-3 / 2, 1.0, 1.0, -1 / 2],  # θ²
                [1.0, 0.0, 0.0, 0.0],  # θ
            ]
        )

    class RK38(diffrax.AbstractERK):
        """Kutta's 3/8 rule (Kutta 1901), odebench's canonical ``rk4`` as torchdiffeq's:
        fourth order, 4 stages, not FSAL.

        Its embedded error estimate is the method minus the second-order
        ``b̂ = (1/4, 0, 3/4, 0)`` built from the same stages; odebench uses it with fixed
        steps only.
        """

        tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
            c=np.array([1 / 3, 2 / 3, 1.0]),
            b_sol=np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]),
            b_error=np.array([1 / 8 - 1 / 4, 3 / 8, 3 / 8 - 3 / 4, 1 / 8]),
            a_lower=(np.array([1 / 3]), np.array([-1 / 3, 1.0]), np.array([1.0, -1.0, 1.0])),
        )
        interpolation_cls: ClassVar[Callable[..., _RK38Interpolation]] = _RK38Interpolation

        def order(self, terms):
            del terms
            return 4

    class RK4Classic(diffrax.AbstractERK):
        """The classical fourth-order Runge–Kutta method (1/6, 1/3, 1/3, 1/6), odebench's
        ``rk4-classic``: 4 stages, not FSAL.

        Its embedded error estimate is RK4 minus the midpoint method built from the same
        stages (order 2); odebench uses it with fixed steps only.
        """

        tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
            c=np.array([0.5, 0.5, 1.0]),
            b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
            b_error=np.array([1 / 6, 1 / 3 - 1.0, 1 / 3, 1 / 6]),
            a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
        )
        interpolation_cls: ClassVar[Callable[..., _RK4ClassicInterpolation]] = _RK4ClassicInterpolation

        def order(self, terms):
            del terms
            return 4

    class _Field(eqx.Module):
        """``f(t, y)`` as diffrax's ``vf(t, y, args)``; ``f``'s array leaves become term leaves."""

        f: Any

        def __call__(self, t, y, args):
            del args
            return self.f(t, y)

    class _Tracked(diffrax.AbstractAdaptiveStepSizeController):
        """A pass-through around an adaptive controller that also counts, in its state,
        the rejected attempts before the first accepted step and whether the latest
        attempt was rejected with a non-finite candidate. Step decisions are unchanged."""

        inner: Any
        rtol: Any
        atol: Any
        norm: Callable = eqx.field(static=True)

        def __init__(self, inner):
            self.inner = inner
            self.rtol = inner.rtol
            self.atol = inner.atol
            self.norm = inner.norm

        def wrap(self, direction):
            return _Tracked(self.inner.wrap(direction))

        def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
            tnext, state = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
            extra = (jnp.array(0, dtype=jnp.int32), jnp.array(False), jnp.array(False))
            return tnext, (state, extra)

        def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
            inner_state, (retries, accepted_any, nonfinite) = controller_state
            keep, next_t0, next_t1, jump, inner_state, result = self.inner.adapt_step_size(
                t0, t1, y0, y1_candidate, args, y_error, error_order, inner_state
            )
            finite = jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(y1_candidate)])
            )
            retries = retries + jnp.where(keep | accepted_any, 0, 1).astype(jnp.int32)
            accepted_any = accepted_any | keep
            nonfinite = jnp.where(keep, False, ~finite)
            return keep, next_t0, next_t1, jump, (inner_state, (retries, accepted_any, nonfinite)), result

    ns = dict(
        diffrax=diffrax,
        eqx=eqx,
        jax=jax,
        jnp=jnp,
        RK38=RK38,
        RK4Classic=RK4Classic,
        Field=_Field,
        Tracked=_Tracked,
    )
    return type("_DiffraxParts", (), ns)


class DiffraxPlugin(JaxSolverPlugin):
    """diffrax's explicit and implicit Runge–Kutta solvers, in JAX.

    ``solve`` is the jittable core (status as an integer code, statistics as arrays);
    ``odeint`` is the protocol's Python-level call returning a :class:`Solution`.

    diffrax counts no evaluations, so ``SolveStats.nfe`` is a formula (``nfe_source =
    "formula"``, :func:`expected_nfe`) over ``sol.stats["num_steps"]`` and the wrapped
    controller's count of first-step retries: ``stages × num_steps`` for non-FSAL methods,
    ``(stages - 1) × num_steps + retries + 1`` for FSAL ones (see the module docstring); None
    for kvaerno5, whose Newton iterations make the count data-dependent.
    """

    name: ClassVar[str] = "diffrax"
    framework: ClassVar[str] = "jax"
    library: ClassVar[str] = "diffrax"
    requires: ClassVar[tuple[str, ...]] = ("jax", "diffrax", "equinox")
    extra: ClassVar[str] = "jax"
    methods: ClassVar[dict[str, str]] = dict(_NATIVE)
    grad_modes: ClassVar[tuple[str, ...]] = ("backprop", "checkpoint", "adjoint", "adjoint-seminorm")
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    # The batch is one state (no vmap over samples): one step size for all samples.
    batch_stepping: ClassVar[str] = "joint"
    fixed_step_methods: ClassVar[frozenset[str]] = frozenset(FIXED_METHODS)
    nfe_source: ClassVar[str] = "formula"

    @classmethod
    def unsupported_reason(cls, method: str, grad_mode: str, device: str = "cpu") -> str | None:
        reason = super().unsupported_reason(method, grad_mode, device)
        if reason is None and grad_mode == "adjoint-seminorm" and method in cls.fixed_step_methods:
            return (
                f"{cls.name}: adjoint-seminorm changes only the adaptive error norm of the backward "
                f"solve; fixed-step {method!r} has none (use 'adjoint')"
            )
        return reason

    # -- the jittable core -----------------------------------------------------------
    def build(
        self,
        method: str,
        ts: Any,
        *,
        rtol: float,
        atol: float,
        step_size: float | None,
        grad_mode: str,
        max_steps: int,
        dtmin: float | None = None,
    ) -> dict[str, Any]:
        """The diffrax objects for one solve: solver, controller, dt0, adjoint.

        Raises:
            UnsupportedError: for an undeclared method or grad mode.
        """
        self.check(method, grad_mode)
        P = _jax_parts()
        dfx, jnp = P.diffrax, P.jnp
        custom = {"rk4": P.RK38, "rk4-classic": P.RK4Classic}  # diffrax has neither
        solver = custom[method]() if method in custom else getattr(dfx, _NATIVE[method])()
        n_out = int(ts.shape[0])
        if self.is_fixed_step(method):
            direction = jnp.sign(ts[-1] - ts[0])
            if step_size is None:
                if n_out < 2:
                    raise ValueError("fixed steps on the output grid need at least two output times")
                controller, dt0 = dfx.StepTo(ts=ts), None
                n_steps = n_out - 1
                back_dt = -jnp.max(jnp.abs(jnp.diff(ts)))
            else:
                controller, dt0 = dfx.ConstantStepSize(), step_size * direction
                back_dt = -abs(step_size)
                try:  # concrete ts and step: the step count (+1 for rounding); traced: the budget
                    span = abs(float(ts[-1]) - float(ts[0]))
                    n_steps = math.ceil(span / float(step_size) * (1 - 1e-12)) + 1
                except Exception:
                    # Traced times (inside jit): the count is unknown when the loop is built.
                    # Sizing checkpoints by the budget would allocate max_steps states (3 GB
                    # per solve was measured), so diffrax's default checkpointing is used.
                    n_steps = None
            # diffrax solves in time * direction (always increasing), and the adjoint's
            # sub-solves run from each output time back to the previous one: dt0 < 0.
            back = dict(stepsize_controller=dfx.ConstantStepSize(), dt0=back_dt)
            tracked = False
            # The loop never runs longer than the grid, so size it (and diffrax's default
            # checkpoint count, ~sqrt(2 * max_steps)) by the grid, not by the budget.
            loop_steps = max_steps if n_steps is None else min(max_steps, n_steps)
            backprop_checkpoints = None if n_steps is None else loop_steps
        else:
            pid = dfx.PIDController(rtol=rtol, atol=atol, dtmin=dtmin, force_dtmin=dtmin is None)
            controller, dt0, back, tracked = P.Tracked(pid), None, {}, True
            loop_steps = max_steps
            backprop_checkpoints = None
            if grad_mode == "adjoint-seminorm":
                back = dict(
                    stepsize_controller=dfx.PIDController(
                        rtol=rtol, atol=atol, dtmin=dtmin, force_dtmin=dtmin is None,
                        norm=dfx.adjoint_rms_seminorm,
                    )
                )
        if grad_mode == "backprop":
            adjoint = dfx.RecursiveCheckpointAdjoint(checkpoints=backprop_checkpoints)
        elif grad_mode == "checkpoint":
            adjoint = dfx.RecursiveCheckpointAdjoint()
        else:
            adjoint = dfx.BacksolveAdjoint(**back)
        return dict(
            solver=solver, controller=controller, dt0=dt0, adjoint=adjoint, tracked=tracked, max_steps=loop_steps
        )

    def solve(
        self,
        f: Any,
        y0: Any,
        ts: Any,
        *,
        method: str,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        step_size: float | None = None,
        grad_mode: str = "backprop",
        max_steps: int = 100_000,
        dtmin: float | None = None,
    ) -> tuple[Any, Any, dict[str, Any]]:
        """Integrate ``dy/dt = f(t, y)``; traceable, so it can sit inside ``jax.jit``.

        Arguments: as :meth:`odeint`; ``method``, ``grad_mode``, ``step_size``, ``max_steps``
        and ``dtmin`` are static (Python values); the tolerances may be traced arrays, so one
        compiled program serves a tolerance sweep.

        Returns:
            ``(ys, code, stats)``: the trajectory at ``ts``; an int32 array indexing
            :data:`STATUS_CODES`; a dict of int arrays ``num_steps``, ``num_accepted_steps``,
            ``num_rejected_steps``, ``first_step_retries`` and ``nfe`` (absent for implicit
            methods).
        """
        P = _jax_parts()
        dfx, jnp = P.diffrax, P.jnp
        ts = jnp.asarray(ts)
        y0 = jnp.asarray(y0)
        parts = self.build(
            method, ts, rtol=rtol, atol=atol, step_size=step_size, grad_mode=grad_mode,
            max_steps=max_steps, dtmin=dtmin,
        )
        sol = dfx.diffeqsolve(
            dfx.ODETerm(P.Field(f)),
            parts["solver"],
            t0=ts[0],
            t1=ts[-1],
            dt0=parts["dt0"],
            y0=y0,
            saveat=dfx.SaveAt(ts=ts, controller_state=parts["tracked"]),
            stepsize_controller=parts["controller"],
            adjoint=parts["adjoint"],
            max_steps=parts["max_steps"],
            throw=False,
        )
        ys = sol.ys
        stats = {
            "num_steps": jnp.asarray(sol.stats["num_steps"], dtype=jnp.int32),
            "num_accepted_steps": jnp.asarray(sol.stats["num_accepted_steps"], dtype=jnp.int32),
            "num_rejected_steps": jnp.asarray(sol.stats["num_rejected_steps"], dtype=jnp.int32),
        }
        if parts["tracked"]:
            _, (retries, accepted_any, last_nonfinite) = sol.controller_state
        else:
            retries, accepted_any, last_nonfinite = (
                jnp.array(0, jnp.int32), stats["num_accepted_steps"] > 0, jnp.array(False)
            )
        stats["first_step_retries"] = retries
        if method in STAGES:
            s, fsal = STAGES[method]
            n = stats["num_steps"]
            if fsal:
                nfe = jnp.where(n > 0, (s - 1) * n + retries + accepted_any.astype(jnp.int32), 0)
            else:
                nfe = s * n
            stats["nfe"] = nfe.astype(jnp.int32)
        res = sol.result
        reached = jnp.isfinite(sol.ts)  # diffrax fills unreached outputs with inf
        finite = jnp.all(jnp.isfinite(ys).reshape(ys.shape[0], -1), axis=1)
        bad_values = jnp.any(reached & ~finite)
        R = dfx.RESULTS
        code = jnp.select(
            [
                res == R.dt_min_reached,
                bad_values | (res == R.nonfinite),
                (res == R.max_steps_reached) & last_nonfinite,
                res == R.max_steps_reached,
                res == R.successful,
            ],
            [_DT_UNDERFLOW, _NONFINITE, _NONFINITE, _MAX_STEPS, _OK],
            default=_ERROR,
        ).astype(jnp.int32)
        return ys, code, stats

    # -- the protocol's Python-level call ---------------------------------------------
    def odeint(
        self,
        f: Any,
        y0: Any,
        ts: Any,
        *,
        method: str,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        step_size: float | None = None,
        grad_mode: str = "backprop",
        max_steps: int = 100_000,
        dtmin: float | None = None,
    ) -> Solution:
        """Integrate ``dy/dt = f(t, y)`` and return a :class:`Solution` (see the protocol).

        Arguments:
            f: a JAX callable ``f(t, y)``; parameters to differentiate must be array leaves
                of it (an ``equinox.Module``), which every grad mode then differentiates.
            dtmin: optional smallest adaptive step; going below it ends the solve with
                status ``dt_underflow`` (diffrax's default, None, never underflows).
            others: as :meth:`SolverPlugin.odeint`.

        Returns:
            A :class:`Solution`. Called under a JAX trace (inside ``jax.jit``) the status
            cannot be read, so a failed solve raises at run time instead
            (``equinox.error_if``), and ``status`` is ok for the trace.

        Raises:
            UnsupportedError: for an undeclared method or grad mode.
        """
        P = _jax_parts()
        jax = P.jax
        ys, code, stats = self.solve(
            f, y0, ts, method=method, rtol=rtol, atol=atol, step_size=step_size,
            grad_mode=grad_mode, max_steps=max_steps, dtmin=dtmin,
        )
        try:
            concrete = int(code)
        except jax.errors.ConcretizationTypeError:
            concrete = None
        if concrete is None:
            ys = P.eqx.error_if(ys, code != _OK, "diffrax solve failed (see DiffraxPlugin.solve's code)")
            return Solution(
                ys,
                Status.OK,
                "",
                SolveStats(
                    stats["num_steps"], stats["num_accepted_steps"], stats["num_rejected_steps"],
                    stats.get("nfe"), {"traced": True},
                ),
            )
        status = STATUS_CODES[concrete]
        return Solution(ys, status, self.message(status, max_steps, dtmin), self.to_stats(stats))

    @staticmethod
    def to_stats(stats: dict[str, Any]) -> SolveStats:
        """Concrete :meth:`solve` statistics as a :class:`SolveStats`."""
        nfe = stats.get("nfe")
        return SolveStats(
            n_steps=int(stats["num_steps"]),
            n_accepted=int(stats["num_accepted_steps"]),
            n_rejected=int(stats["num_rejected_steps"]),
            nfe=None if nfe is None else int(nfe),
            extra={"first_step_retries": int(stats["first_step_retries"])},
        )

    @staticmethod
    def message(status: Status, max_steps: int, dtmin: float | None = None) -> str:
        return {
            Status.OK: "",
            Status.MAX_STEPS: f"diffrax reached max_steps={max_steps} before the last output time",
            Status.DT_UNDERFLOW: f"diffrax's step size fell below dtmin={dtmin}",
            Status.NONFINITE: "non-finite values (inf/nan) in the solution",
            Status.ERROR: "diffrax reported an unexpected result",
        }[status]

    @staticmethod
    def status(code: Any) -> Status:
        """The :class:`Status` of a concrete :meth:`solve` code."""
        return STATUS_CODES[int(code)]

    @staticmethod
    def counts_vjp(method: str) -> bool:
        """Whether the harness's counting wrapper (:func:`odebench.backends.jax.counted`) may count
        VJPs for ``method``: not for implicit ones, whose Jacobians need forward-mode autodiff
        through the field."""
        return method in STAGES


__all__ = ["STAGES", "STATUS_CODES", "DiffraxPlugin", "expected_nfe"]
