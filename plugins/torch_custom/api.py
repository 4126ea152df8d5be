"""Public API: :func:`solve` (status and statistics, never raises on solver failure) and the
torchdiffeq drop-ins :func:`odeint` and :func:`odeint_adjoint` (raise :class:`SolverError`).

Differences from torchdiffeq, all documented here:

- the state is one tensor (no tuples); gradients with respect to ``t`` are not computed;
- ``max_num_steps`` budgets the whole solve (torchdiffeq: each output interval);
- adaptive steps never go past ``t[-1]`` (the last step is shortened onto it), and use a
  PI controller (``pi_beta``; 0 gives torchdiffeq's I-controller);
- with ``step_size``, output times between grid points use cubic Hermite interpolation
  (torchdiffeq's default is linear: pass ``interp="linear"`` to reproduce it), and an
  adaptive method given ``step_size`` takes fixed steps with its own tableau.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from odebench.protocol import Solution, SolveStats, Status

from . import rk, tableaus
from .adjoint import AdjointFunction, Job, SolverError
from .checkpoint import CheckpointFunction

GRAD_MODES = ("backprop", "adjoint", "adjoint-seminorm", "checkpoint")

#: torchdiffeq option names accepted in ``options`` (``dtype`` is accepted and ignored:
#: time is always float64 here).
OPTIONS = (
    "step_size", "first_step", "max_num_steps", "interp", "safety", "ifactor", "dfactor",
    "max_step", "pi_beta", "dtype",
)

_STATUS = {
    rk.OK: Status.OK,
    rk.MAX_STEPS: Status.MAX_STEPS,
    rk.DT_UNDERFLOW: Status.DT_UNDERFLOW,
    rk.NONFINITE: Status.NONFINITE,
}

_METHODS: dict[str, rk.Method] = {}


def _method(name: str) -> rk.Method:
    m = _METHODS.get(name)
    if m is None:
        m = _METHODS[name] = rk.Method(tableaus.get(name))
    return m


def _times(t) -> list[float]:
    if isinstance(t, torch.Tensor):
        if t.dim() != 1:
            raise ValueError(f"t must be one-dimensional, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"t must be a floating point tensor, got {t.dtype}")
        ts = t.detach().tolist()
    else:
        ts = [float(x) for x in t]
    if not ts:
        raise ValueError("t must hold at least one time")
    if len(ts) > 1:
        inc = all(b > a for a, b in zip(ts, ts[1:]))
        dec = all(b < a for a, b in zip(ts, ts[1:]))
        if not (inc or dec):
            raise ValueError("t must be strictly increasing or strictly decreasing")
    if not all(math.isfinite(x) for x in ts):
        raise ValueError("t must be finite")
    return ts


def _tol(name, x) -> float:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(f"{name} must be a scalar (per-component tolerances are not supported)")
        return float(x)
    if isinstance(x, Sequence):
        raise ValueError(f"{name} must be a scalar (tuple states are not supported)")
    return float(x)


def _config(method: str, rtol, atol, *, step_size=None, first_step=None, max_steps=2**31 - 1,
            interp="cubic", safety=0.9, ifactor=10.0, dfactor=0.2, max_step=math.inf,
            pi_beta=0.04) -> rk.Config:
    if interp not in ("cubic", "linear"):
        raise ValueError(f"unknown interp {interp!r}; valid: cubic, linear")
    if step_size is not None and not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    return rk.Config(
        method=_method(method), rtol=_tol("rtol", rtol), atol=_tol("atol", atol),
        step_size=None if step_size is None else float(step_size),
        first_step=None if first_step is None else float(first_step),
        max_steps=int(max_steps), interp=interp, safety=float(safety), ifactor=float(ifactor),
        dfactor=float(dfactor), max_step=float(max_step), pi_beta=float(pi_beta),
    )


def solve(
    func,
    y0: torch.Tensor,
    t,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: float | None = None,
    first_step: float | None = None,
    max_steps: int = 2**31 - 1,
    grad_mode: str = "backprop",
    interp: str = "cubic",
    adjoint_params=None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_step_size: float | None = None,
    **controller,
) -> Solution:
    """Integrate ``dy/dt = func(t, y)``; the trajectory, a status and the solver's statistics.

    Arguments:
        func: the vector field, called ``func(t, y)`` with ``t`` a 0-d tensor of ``y0``'s
            dtype. For the adjoint modes it is the very object whose VJPs are taken.
        y0: initial state (any shape, floating point).
        t: strictly increasing or decreasing output times (tensor or sequence), ``t[0]``
            the initial time.
        method: one of :data:`tableaus.TABLEAUS` (euler, midpoint, heun, rk4 (3/8 rule, as
            torchdiffeq), rk4_classic, bosh3, dopri5, tsit5).
        rtol, atol: tolerances of adaptive steps (mixed RMS norm).
        step_size: fixed step; None steps on ``t`` (fixed methods) or adaptively.
        first_step: first adaptive step (None: Hairer's heuristic).
        max_steps: budget of attempted steps for the forward solve (and for the reverse one).
        grad_mode: ``backprop`` | ``adjoint`` | ``adjoint-seminorm`` | ``checkpoint``.
        interp: ``cubic`` or ``linear`` interpolation between fixed grid points.
        adjoint_params: tensors the adjoint differentiates (default: ``func.parameters()``
            that require grad, when ``func`` is an ``nn.Module``).
        adjoint_rtol, adjoint_atol, adjoint_method, adjoint_step_size: settings of the
            reverse solve (default: those of the forward one).
        controller: ``safety``, ``ifactor``, ``dfactor``, ``max_step``, ``pi_beta``.

    Returns:
        A :class:`~odebench.protocol.Solution`: ``ys`` of shape ``(len(t), *y0.shape)``
        (None unless ``status`` is ok) and ``stats`` (``n_steps``, ``n_accepted``,
        ``n_rejected``, ``nfe``; after a backward pass ``extra`` holds ``nfe_bwd``,
        ``n_vjp`` and the reverse solve's step counts).

    Raises:
        ValueError, TypeError: for invalid arguments (unknown method, grad mode, ...).
    """
    if grad_mode not in GRAD_MODES:
        raise ValueError(f"unknown grad_mode {grad_mode!r}; valid: {', '.join(GRAD_MODES)}")
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a tensor, got {type(y0).__name__} (tuple states are not supported)")
    if not (y0.is_floating_point() or y0.is_complex()):
        raise TypeError(f"y0 must be a floating point tensor, got {y0.dtype}")
    unknown = set(controller) - {"safety", "ifactor", "dfactor", "max_step", "pi_beta"}
    if unknown:
        raise TypeError(f"unexpected arguments {sorted(unknown)}; controller options: "
                        "safety, ifactor, dfactor, max_step, pi_beta")
    ts = _times(t)
    cfg = _config(method, rtol, atol, step_size=step_size, first_step=first_step,
                  max_steps=max_steps, interp=interp, **controller)
    counters = rk.Counters()
    stats = SolveStats(extra={"nfe_bwd": 0} if grad_mode == "backprop" else {})

    if grad_mode == "backprop":
        res = rk.integrate(cfg, func, y0, ts, counters)
        out = torch.stack(res.ys) if res.status == rk.OK else None
    else:
        if adjoint_params is None:
            params = tuple(func.parameters()) if isinstance(func, torch.nn.Module) else ()
        else:
            params = tuple(adjoint_params)
        params = tuple(p for p in params if p.requires_grad)
        bwd_cfg = None
        if grad_mode != "checkpoint":
            bwd_cfg = _config(
                adjoint_method or method,
                rtol if adjoint_rtol is None else adjoint_rtol,
                atol if adjoint_atol is None else adjoint_atol,
                step_size=step_size if adjoint_step_size is None else adjoint_step_size,
                first_step=first_step, max_steps=max_steps, interp=interp, **controller,
            )
        job = Job(func, ts, cfg, counters, params, bwd_cfg, stats, seminorm=grad_mode == "adjoint-seminorm")
        fn = CheckpointFunction if grad_mode == "checkpoint" else AdjointFunction
        out = fn.apply(job, y0, *params)
        res = job.result
        if res.status != rk.OK:
            out = None

    stats.n_steps = counters.n_steps
    stats.n_accepted = counters.n_accepted
    stats.n_rejected = counters.n_rejected
    stats.nfe = counters.nfe
    status, message = res.status, res.message
    if out is not None:
        bad = rk.first_nonfinite(out)
        if bad is not None:
            status, message, out = rk.NONFINITE, f"non-finite state at t={ts[bad]!r}", None
    return Solution(out, _STATUS[status], message, stats)


def _options(options) -> dict:
    options = dict(options or {})
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unexpected options {sorted(unknown)}; valid: {', '.join(OPTIONS)}")
    options.pop("dtype", None)
    if "max_num_steps" in options:
        options["max_steps"] = options.pop("max_num_steps")
    return options


def _raise_on_failure(sol: Solution) -> torch.Tensor:
    if not sol.ok:
        raise SolverError(sol.status.value, sol.message)  # its text is "<status>: <message>"
    return sol.ys


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None):
    """torchdiffeq's ``odeint``: backpropagation through the solver's steps.

    Arguments:
        func: ``func(t, y)``, any callable.
        y0: initial state tensor.
        t: 1-D tensor of strictly increasing or decreasing times.
        rtol, atol: tolerances.
        method: see :func:`solve` (default ``dopri5``).
        options: dict with keys from :data:`OPTIONS`.

    Returns:
        The solution at ``t``, shape ``(len(t), *y0.shape)``.

    Raises:
        SolverError: when the solve fails (max steps, dt underflow, non-finite state).
    """
    if event_fn is not None:
        raise NotImplementedError("event_fn is not supported by torch_custom")
    sol = solve(func, y0, t, rtol=rtol, atol=atol, method=method or "dopri5",
                grad_mode="backprop", **_options(options))
    return _raise_on_failure(sol)


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None,
                   adjoint_params=None):
    """torchdiffeq's ``odeint_adjoint``: gradients by the continuous adjoint.

    ``adjoint_options={"norm": "seminorm"}`` selects the seminorm (Kidger et al. 2021);
    its other keys (``step_size`` only) set the reverse solve.

    Raises:
        ValueError: ``func`` is no ``nn.Module`` and ``adjoint_params`` is not given.
        SolverError: when the forward solve fails (the reverse solve raises it in backward).
    """
    if event_fn is not None:
        raise NotImplementedError("event_fn is not supported by torch_custom")
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError("func must be a torch.nn.Module when adjoint_params is not given "
                         "(pass adjoint_params=() if it has no parameters)")
    adjoint_options = dict(adjoint_options or {})
    norm = adjoint_options.pop("norm", None)
    if norm not in (None, "seminorm", "mixed"):
        raise ValueError(f"unknown adjoint norm {norm!r}; valid: 'seminorm', 'mixed'")
    unknown = set(adjoint_options) - {"step_size"}
    if unknown:
        raise ValueError(f"unexpected adjoint_options {sorted(unknown)}; valid: norm, step_size")
    sol = solve(func, y0, t, rtol=rtol, atol=atol, method=method or "dopri5",
                grad_mode="adjoint-seminorm" if norm == "seminorm" else "adjoint",
                adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
                adjoint_method=adjoint_method, adjoint_step_size=adjoint_options.get("step_size"),
                **_options(options))
    return _raise_on_failure(sol)
