"""torchode (Lienen & Günnemann 2022) as an odebench plugin.

torchode steps every sample of a batch with its own step size: ``y0`` of shape
``(B, ...)`` is ``B`` independent initial value problems (the first axis; the rest of
each sample is flattened into torchode's ``(batch, features)`` layout and reshaped back
for ``f``), each with its own accepted/rejected steps and status. Nothing here imports
torch or torchode at module import time.

Methods (canonical → torchode class), checked against odebench's tableaus in
``tests/test_torchode_plugin.py``:

- ``euler`` → ``Euler``; ``heun`` → ``Heun`` (2 stages, ``b = (1/2, 1/2)``): fixed steps.
- ``dopri5`` → ``Dopri5``: the same nodes, stages and 5th-order weights as odebench's, but
  torchode's embedded error weights are Shampine's (``b̂ = 1951/21600, …, 1/60``, as
  torchdiffeq's ``dopri5``), not Hairer's (``5179/57600, …``) that ``torch_custom`` uses: the
  same solution formula, a different error estimate and so different adaptive steps.
- ``tsit5`` → ``Tsit5``: the same tableau; its error weights have the opposite sign, which
  no norm can see.

torchode has no midpoint, Kutta-3/8 ``rk4``, bosh3 or dopri8; its ``Heun`` carries an
embedded Euler error estimate, but the canonical ``heun`` is a fixed-step method.

Fixed steps (euler, heun) on the output grid or on ``step_size``: torchode advances time
as ``t + dt`` in the time dtype, so a constant ``dt = 0.1`` on ``[0, 1]`` ends a hair short
of 1 and takes an eleventh step of ~1e-16. The plugin therefore solves in step units
``s = (t - t0) / h``, where every step is exactly 1, and evaluates ``f`` at ``t0 + s h``
scaled by ``h`` — the same Runge–Kutta step up to rounding, with exactly ``len(ts) - 1``
steps on an equally spaced grid. A fixed-step solve on unequally spaced ``ts`` without
``step_size`` is a ``ValueError``: torchode's ``FixedStepController`` has one step size.

Adaptive steps (dopri5, tsit5) use torchode's ``IntegralController(atol, rtol)``: safety
0.9, step factors clipped to [0.2, 10], exponent 1/5 — torchdiffeq's defaults — with
torchode's per-sample RMS error norm. A given ``step_size`` is the first step (``dt0``).

Grad modes:

- ``backprop`` → ``AutoDiffAdjoint(..., backprop_through_step_size_control=False)``:
  autograd through the steps. The step-size controller is not differentiated, as in
  torchdiffeq and torch_custom, so ``backprop`` means the same gradient everywhere.
- ``adjoint`` → ``BacksolveAdjoint``: Algorithm 1 of Chen et al. between consecutive
  output times, per sample (each sample carries its own copy of the parameter adjoint
  and takes its own steps backward). It finds the parameters as the ``nn.Module``
  parameters of the ODE term, so ``f`` must be an ``nn.Module``. torchode ignores the
  status of its reverse solves; they get no step budget here, so they cannot stop early
  and silently return a partial gradient (a runaway reverse solve hits the case timeout).

Not offered: ``adjoint-seminorm`` (``BacksolveAdjoint`` has no norm option of its own) and
``checkpoint``. ``JointBacksolveAdjoint`` is Algorithm 1 too, but on the whole batch as one
system with a shared step size — odebench's ``adjoint`` with ``"joint"`` batch stepping,
not another grad mode — so it is not mapped.

Time passed to ``f``: odebench's ``f(t, y)`` takes one time for the whole ``y``, while
torchode calls its term with one time per sample. Fixed steps keep all samples on the same
time (shared grid, no rejections), so ``f`` gets that time; an adaptive solve calls ``f``
once on the whole batch when ``f`` declares ``autonomous = True`` (as odebench's
``MLPField`` does; ``t`` is then ignored), otherwise through ``torch.func.vmap`` over the
samples, each with its own time — exact, but slower, and autograd hooks on ``f``'s output
do not fire inside ``vmap``.

Statuses: torchode reports a status code per sample, and stops the whole batch at the
first failure. Codes map ``SUCCESS`` → ok, ``REACHED_MAX_STEPS`` → max_steps,
``REACHED_DT_MIN`` → dt_underflow, ``INFINITE_NORM`` → nonfinite, ``GENERAL_ERROR`` →
error; the solve's status is the worst sample's (:data:`_SEVERITY`) and the message counts
the failed samples by status and the ones left unfinished. A fixed-step solve has no error
estimate, so torchode reports success for NaN states: the plugin checks the trajectory and
returns nonfinite then. torchode marks a sample at
``n_steps >= max_steps`` even when that step finished it, so it gets ``max_steps + 1``:
a solve needing exactly ``max_steps`` steps is ok, as in the other plugins.

Statistics: see :func:`_stats` for how torchode's per-sample counts become
:class:`~odebench.protocol.SolveStats`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

from odebench.protocol import Solution, SolverPlugin, SolveStats, Status

#: Canonical name → torchode class name.
_NATIVE = {"euler": "Euler", "heun": "Heun", "dopri5": "Dopri5", "tsit5": "Tsit5"}

#: torchode's status codes (``torchode.status_codes``) → odebench statuses.
_STATUS = {
    0: Status.OK,  # SUCCESS
    1: Status.ERROR,  # GENERAL_ERROR
    2: Status.DT_UNDERFLOW,  # REACHED_DT_MIN
    3: Status.MAX_STEPS,  # REACHED_MAX_STEPS
    4: Status.NONFINITE,  # INFINITE_NORM: the error ratio was inf or NaN
}
#: Least to most severe: the batch's status is its worst sample's. A budget running out is
#: the mildest failure, an unexplained error the worst.
_SEVERITY = (Status.OK, Status.MAX_STEPS, Status.DT_UNDERFLOW, Status.NONFINITE, Status.ERROR)


def batch_status(codes: list[int], n_initialized: list[int], n_times: int) -> tuple[Status, str]:
    """The status of a batch from torchode's per-sample status codes, and its message.

    Arguments:
        codes: ``solution.status`` as a list, one torchode code per sample.
        n_initialized: ``solution.stats["n_initialized"]``: output times each sample reached.
        n_times: the number of output times.

    Returns:
        The worst sample's status and a one-line message ("" when every sample is ok).

    Raises:
        ValueError: for a code torchode does not define.
    """
    unknown = sorted({c for c in codes if c not in _STATUS})
    if unknown:
        raise ValueError(f"unknown torchode status code(s) {unknown}; valid: {sorted(_STATUS)}")
    statuses = [_STATUS[c] for c in codes]
    worst = max(statuses, key=_SEVERITY.index)
    if worst is Status.OK:
        return worst, ""
    failed = {s: statuses.count(s) for s in _SEVERITY[1:] if s in statuses}
    n_failed = sum(failed.values())
    unfinished = sum(1 for s, n in zip(statuses, n_initialized) if s is Status.OK and n < n_times)
    how = ", ".join(f"{n} {s.value}" for s, n in failed.items())
    message = f"{n_failed} of {len(codes)} samples failed ({how})"
    if unfinished:
        message += f"; torchode stops the whole batch there, leaving {unfinished} other samples unfinished"
    return worst, message


def _stats(stats: dict[str, Any]) -> SolveStats:
    """torchode's per-sample statistics as :class:`SolveStats`.

    torchode keeps, per sample, ``n_f_evals``, ``n_steps`` (attempts while the sample was
    running), ``n_accepted`` and ``n_initialized`` (output times reached). Its term adds 1
    to *every* sample's ``n_f_evals`` on each call of the vector field — one call evaluates
    the whole batch, running and finished samples alike — so every entry equals the number
    of vector-field calls, and that is ``nfe`` (the count the harness's counting field
    sees; summing over samples would count each call ``B`` times). Adaptive solves include
    the two evaluations of torchode's initial-step selection, the first of which is reused
    as the first FSAL stage: ``nfe = 2 + (s - 1) · max n_steps`` for dopri5 and tsit5
    (``s = 7``), ``1 + 6 · max n_steps`` when ``dt0`` is given; fixed steps cost
    ``s · n_steps`` (euler 1, heun 2).

    ``n_steps`` is the number of batched step attempts (the longest-running sample's
    ``n_steps``); ``n_accepted`` and ``n_rejected`` are that sample's. ``extra`` holds the
    per-sample lists (``n_f_evals``, ``n_steps``, ``n_accepted``, ``n_rejected``,
    ``n_initialized``).
    """
    per = {k: [int(v) for v in stats[k].tolist()] for k in ("n_f_evals", "n_steps", "n_accepted", "n_initialized")}
    per["n_rejected"] = [s - a for s, a in zip(per["n_steps"], per["n_accepted"])]
    slowest = max(range(len(per["n_steps"])), key=per["n_steps"].__getitem__)
    return SolveStats(n_steps=per["n_steps"][slowest], n_accepted=per["n_accepted"][slowest],
                      n_rejected=per["n_rejected"][slowest], nfe=max(per["n_f_evals"]), extra=per)


def _unit_grid(ts, step_size: float | None):
    """Step units for a fixed-step solve: ``(t0, h, s_eval)`` with ``t = t0 + s h``.

    ``s_eval`` are the output times in units of the step ``h``: ``0, 1, …, T-1`` when
    stepping on ``ts`` (which must be equally spaced up to rounding), else
    ``(ts - t0) / step_size``, snapped to the nearest integer where within rounding of one
    so that an output time on the step grid ends a step exactly.

    Raises:
        ValueError: for unequally spaced ``ts`` without ``step_size``, or ``step_size <= 0``.
    """
    import torch

    times = ts.detach().to("cpu", torch.float64).tolist()
    t0, n = times[0], len(times) - 1
    eps = torch.finfo(ts.dtype).eps
    scale = max(abs(t) for t in times)
    if step_size is None:
        h = (times[-1] - t0) / n
        worst = max(abs(t - (t0 + k * h)) for k, t in enumerate(times))
        if worst > 16 * eps * scale:
            raise ValueError(
                f"torchode steps fixed-step methods with one constant step: ts must be equally spaced "
                f"(off by up to {worst:.3g}) or step_size given")
        return t0, h, torch.arange(n + 1, dtype=ts.dtype, device=ts.device)
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    h = math.copysign(step_size, times[-1] - t0)
    s = [(t - t0) / h for t in times]
    tol = 16 * eps * max(1.0, scale / abs(h))
    s = [float(round(x)) if abs(x - round(x)) <= tol else x for x in s]
    return t0, h, torch.tensor(s, dtype=ts.dtype, device=ts.device)


@functools.cache
def _field_class():
    """The adapter from odebench's ``f(t, y)`` to torchode's term (built once, on first use: imports torch).

    One class for the process: a compiled solve guards on the field's type, so a class built
    per call would recompile on every call.
    """
    import torch
    from torch import nn

    class _Field(nn.Module):
        """torchode's ``f(t, y)`` (``t`` of shape ``(batch,)``, ``y`` of ``(batch, features)``) over odebench's.

        Arguments:
            f: odebench's vector field (a submodule, so torchode's adjoint finds its parameters).
            state_shape: one sample's shape in odebench's layout (``y0.shape[1:]``).
            shared_time: every sample is at the same time in every call (fixed steps).
            t0, h: for fixed steps, torchode's time is in step units ``s`` and ``f`` sees
                ``t = t0 + s h``, scaled by ``h`` (``dy/ds = h f``); None otherwise.
            dtype, device: of ``t0`` and ``h`` (those of ``ts``).
        """

        def __init__(self, f, state_shape: tuple[int, ...], shared_time: bool,
                     t0: float | None = None, h: float | None = None, dtype=None, device=None):
            super().__init__()
            self.f = f
            self.state_shape = state_shape
            # An autonomous field ignores t, so one call covers samples at different times.
            self.one_call = shared_time or bool(getattr(f, "autonomous", False))
            # Tensors, not Python floats: a compiled solve would guard (and recompile) on floats.
            self.t0 = None if t0 is None else torch.tensor(t0, dtype=dtype, device=device)
            self.h = None if h is None else torch.tensor(h, dtype=dtype, device=device)

        def _f(self, t, y):
            if self.h is None:
                return self.f(t, y)
            return self.f(self.t0 + t * self.h, y) * self.h

        def _one(self, t, y):
            return self._f(t, y.reshape(1, *self.state_shape)).reshape(-1)

        def forward(self, t, y):
            if t.ndim == 0:  # one sample: BacksolveAdjoint vmaps its VJP over samples
                return self._one(t, y)
            if self.one_call:
                return self._f(t[0], y.reshape(-1, *self.state_shape)).reshape(y.shape[0], -1)
            return torch.func.vmap(self._one)(t, y)

    return _Field


class TorchodePlugin(SolverPlugin):
    """torchode's per-sample parallel solvers (see the module docstring for every mapping)."""

    name: ClassVar[str] = "torchode"
    framework: ClassVar[str] = "torch"
    library: ClassVar[str] = "torchode"
    requires: ClassVar[tuple[str, ...]] = ("torch", "torchode")
    extra: ClassVar[str] = "torch"
    methods: ClassVar[dict[str, str]] = dict(_NATIVE)
    grad_modes: ClassVar[tuple[str, ...]] = ("backprop", "adjoint")
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    fixed_step_methods: ClassVar[frozenset[str]] = frozenset({"euler", "heun"})
    batch_stepping: ClassVar[str] = "per-sample"
    # torchode's n_f_evals is a counter its term increments on every call (see odeint).
    nfe_source: ClassVar[str] = "counter"

    def _solver(self, method: str, grad_mode: str, rtol: float, atol: float, max_steps: int, term):
        """The torchode solver object for one solve (``AutoDiffAdjoint`` or ``BacksolveAdjoint``)."""
        import torchode

        step = getattr(torchode, self.methods[method])(term=term)
        if self.is_fixed_step(method):
            controller = torchode.FixedStepController()
        else:
            controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
        # torchode flags n_steps >= max_steps, even on the step that finishes: + 1 allows
        # exactly max_steps steps, as odebench's other plugins do.
        budget = max_steps + 1
        if grad_mode == "backprop":
            return torchode.AutoDiffAdjoint(step, controller, max_steps=budget,
                                            backprop_through_step_size_control=False)
        solver = torchode.BacksolveAdjoint(term, step, controller)
        # BacksolveAdjoint builds its forward loop without a budget; the reverse loop keeps
        # none on purpose (its status is never checked, see the module docstring).
        solver.forward_adjoint.max_steps = budget
        return solver

    def _problem(self, f, y0, ts, method: str, step_size: float | None):
        """torchode's term, initial value problem and ``dt0`` for odebench's arguments."""
        import torch
        import torchode

        batch = y0.shape[0] if y0.ndim > 1 else 1
        state_shape = tuple(y0.shape[1:]) if y0.ndim > 1 else tuple(y0.shape)
        if self.is_fixed_step(method):
            t0, h, times = _unit_grid(ts, step_size)
            field = _field_class()(f, state_shape, shared_time=True, t0=t0, h=h, dtype=ts.dtype,
                                   device=ts.device)
            dt0 = torch.ones(batch, dtype=ts.dtype, device=ts.device)
        else:
            times = ts
            field = _field_class()(f, state_shape, shared_time=False)
            dt0 = None if step_size is None else torch.full((batch,), step_size, dtype=ts.dtype, device=ts.device)
        term = torchode.ODETerm(field)
        # Contiguous start and end times: the solver's time becomes a fresh (stride 1) tensor
        # after the first step, and a compiled step would recompile for the expanded start.
        t_start, t_end = (times[i].expand(batch).contiguous() for i in (0, -1))
        problem = torchode.InitialValueProblem(y0=y0.reshape(batch, -1), t_start=t_start, t_end=t_end,
                                               t_eval=times.expand(batch, -1))
        return term, problem, dt0

    def _solve(self, solver, problem, term, dt0):
        """Run one solve (the compiled variant overrides this)."""
        return solver.solve(problem, dt0=dt0)

    def odeint(self, f, y0, ts, *, method, rtol=1e-7, atol=1e-9, step_size=None,
               grad_mode="backprop", max_steps=100_000) -> Solution:
        """Solve with torchode (see :meth:`SolverPlugin.odeint` for the contract).

        Arguments:
            f: odebench's ``f(t, y)``; an ``nn.Module`` for ``adjoint``. Declaring
                ``f.autonomous = True`` lets adaptive solves evaluate the batch in one call.
            y0: shape ``(B, ...)``: ``B`` samples, each stepped on its own.
            ts: output times shared by the samples, increasing or decreasing.
            method, rtol, atol, grad_mode: as declared; tolerances apply to adaptive methods.
            step_size: the fixed step of euler/heun (None: step on ``ts``), the first step
                of dopri5/tsit5.
            max_steps: the step budget of each sample.

        Returns:
            A :class:`Solution` with ``ys`` of shape ``(len(ts), *y0.shape)``, the worst
            sample's status and :func:`_stats`' statistics.

        Raises:
            UnsupportedError: for an undeclared method or grad mode.
            ValueError: for a fixed-step method on unequally spaced ``ts`` without ``step_size``.
            TypeError: for ``adjoint`` with an ``f`` that is not an ``nn.Module``.
        """
        self.check(method, grad_mode)
        import torch

        if len(ts) < 2:
            return Solution(y0.unsqueeze(0), Status.OK, "", SolveStats(0, 0, 0, 0))
        if grad_mode == "adjoint" and not isinstance(f, torch.nn.Module):
            raise TypeError(f"torchode's BacksolveAdjoint needs f to be a torch.nn.Module, got {type(f).__name__}")
        term, problem, dt0 = self._problem(f, y0, ts, method, step_size)
        solver = self._solver(method, grad_mode, rtol, atol, max_steps, term)
        sol = self._solve(solver, problem, term, dt0)
        stats = _stats(sol.stats)
        status, message = batch_status(sol.status.tolist(), stats.extra["n_initialized"], len(ts))
        if status is not Status.OK:
            return Solution(None, status, message, stats)
        # Fixed steps have no error estimate, so torchode reports success for a NaN solve.
        finite = torch.isfinite(sol.ys.detach()).reshape(len(sol.ys), -1).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            return Solution(None, Status.NONFINITE,
                            f"{bad} of {len(finite)} samples reached non-finite values", stats)
        # torchode's (batch, time, features) → odebench's (time, *y0.shape)
        ys = sol.ys.transpose(0, 1).reshape(len(ts), *y0.shape)
        return Solution(ys, Status.OK, "", stats)


class TorchodeCompiledPlugin(TorchodePlugin):
    """torchode's ``AutoDiffAdjoint.solve`` compiled with ``torch.compile``.

    torchode 1.0.1 documents ``torch.compile(solver)`` followed by ``.solve(...)``, but a
    compiled module only compiles ``forward``: ``.solve`` on it is the eager method. This
    variant compiles the bound ``solve`` itself, once per plugin instance and settings; the
    term is an argument, so a new vector field of the same structure reuses the compiled
    code. :meth:`prepare` runs one forward and one backward solve for the given shapes so
    that compilation (dynamo and inductor, forward and backward graphs) happens before any
    timer, and returns the seconds it took.

    Compiling takes tens of seconds to minutes per method, dtype and batch shape on a small
    CPU (less when inductor's on-disk cache already holds the kernels). torchode's output
    evaluation has data-dependent sizes, so a later solve can need another graph (dynamo
    specialises a step that passes exactly one output time); the torch trainer runs timed
    passes with ``torch.compiler.set_stance("eager_on_recompile")``, so such a frame runs
    eagerly instead of compiling inside a timer.

    Only ``backprop``: ``BacksolveAdjoint`` wraps its loops in an ``autograd.Function``
    whose reverse solve vmaps a ``torch.func.vjp``; compiling that is not what torchode
    documents. torchode's other compilation path, ``torch.jit.script``, fails inside
    TorchScript (an internal assert) with torch 2.13.
    """

    name: ClassVar[str] = "torchode_compiled"
    grad_modes: ClassVar[tuple[str, ...]] = ("backprop",)
    compiled: ClassVar[bool] = True

    def __init__(self):
        self._compiled: dict[tuple, Any] = {}

    def _solver(self, method, grad_mode, rtol, atol, max_steps, term):
        # One solver per settings, built without a term (the term is passed to solve), so
        # that dynamo's cache, which lives on the compiled function, is reused across calls.
        key = (method, grad_mode, rtol, atol, max_steps)
        if key not in self._compiled:
            import torch

            solver = super()._solver(method, grad_mode, rtol, atol, max_steps, None)
            self._compiled[key] = torch.compile(solver.solve)
        return self._compiled[key]

    def _solve(self, solver, problem, term, dt0):
        return solver(problem, term=term, dt0=dt0)

    def prepare(self, f, y0, ts, **solve_kw) -> float | None:
        """Compile for these shapes (see :func:`odebench.backends.torch.compile_by_running`)."""
        from odebench.backends.torch import compile_by_running

        return compile_by_running(self, f, y0, ts, **solve_kw)
