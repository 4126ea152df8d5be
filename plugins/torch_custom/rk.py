"""The explicit Runge–Kutta core: one stepping loop for every tableau.

Time is kept as Python floats (float64) throughout; the vector field receives 0-d tensors
of the state's dtype (as torchdiffeq passes them), made in one ``torch.tensor`` call per
solve on fixed grids and per step on adaptive ones. Coefficients times ``h`` are Python
floats fed to ``torch.add(..., alpha=)`` (chained out of place under autograd, in place
with ``add_`` without it), so a stage costs one kernel per nonzero tableau entry and
nothing else.

The core never raises on solver failure: it returns a :class:`Result` whose ``status`` is
one of ``"ok"``, ``"max_steps"``, ``"dt_underflow"``, ``"nonfinite"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .tableaus import Tableau

OK = "ok"
MAX_STEPS = "max_steps"
DT_UNDERFLOW = "dt_underflow"
NONFINITE = "nonfinite"

_EPS = 2.220446049250313e-16


@dataclass
class Counters:
    """What one integration did (accumulated across calls that share it)."""

    n_steps: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    nfe: int = 0


@dataclass
class Trace:
    """The accepted steps of a solve, for recomputation (checkpointing).

    ``steps[n] = (t0, t1, y0)``; ``outs[i] = (n, theta)``: output ``i`` (``i >= 1``)
    is the state of step ``n`` at ``t0 + theta * (t1 - t0)``, ``theta == 1.0`` meaning
    exactly the step's end.
    """

    steps: list = field(default_factory=list)
    outs: list = field(default_factory=list)


@dataclass
class Result:
    """``ys``: states at the output times (None on failure); ``y_end``: the final state
    after the last jump; ``h_next``: the controller's next step size."""

    ys: list | None
    status: str = OK
    message: str = ""
    h_next: float | None = None
    y_end: object = None


class Method:
    """A tableau prepared for stepping: nonzero coefficients as ``(index, value)`` tuples.

    Arguments:
        tab: the tableau.
    """

    def __init__(self, tab: Tableau):
        self.tab = tab
        self.name = tab.name
        self.s = len(tab.c)
        self.c = tab.c
        self.c_is_one = tuple(ci == 1.0 for ci in tab.c)
        self.a_nz = tuple(tuple((j, x) for j, x in enumerate(row) if x != 0.0) for row in tab.a)
        self.b_nz = tuple((j, x) for j, x in enumerate(tab.b) if x != 0.0)
        self.e_nz = tuple((j, x) for j, x in enumerate(tab.e) if x != 0.0) if tab.e else ()
        self.fsal = tab.fsal
        self.dense = tab.dense
        self.adaptive = tab.adaptive
        # controller exponent uses err ∝ h^(q+1); fixed methods never use it
        self.k = (tab.error_order + 1) if tab.error_order else tab.order

    def stage_times(self, t0: float, t1: float, h: float) -> list[float]:
        return [t1 if one else t0 + ci * h for ci, one in zip(self.c, self.c_is_one)]


def comb(y, ks, nz, h):
    """``y + h Σ_j c_j k_j`` over the nonzero ``(j, c_j)`` in ``nz``, one kernel per term."""
    if not nz:
        return y
    if not torch.is_grad_enabled():  # no graph: accumulate in place into one new tensor
        j, x = nz[0]
        out = torch.add(y, ks[j], alpha=x * h)
        for j, x in nz[1:]:
            out.add_(ks[j], alpha=x * h)
        return out
    # Out of place under autograd: an in-place add_ on a graph tensor costs more, forward
    # (version counter, history rebase) and backward, than a fresh ``add``.
    for j, x in nz:
        y = torch.add(y, ks[j], alpha=x * h)
    return y


def step(m: Method, func, tt, y, k0, h):
    """One RK step from ``y`` with ``k0 = f(t0, y)``. Returns ``(ks, y1)``.

    ``tt`` holds the stage times as 0-d tensors. Evaluates ``f`` ``s - 1`` times.
    """
    ks = [k0]
    a_nz = m.a_nz
    yi = y
    for i in range(1, m.s):
        yi = comb(y, ks, a_nz[i], h)
        ks.append(func(tt[i], yi))
    y1 = yi if m.fsal else comb(y, ks, m.b_nz, h)
    return ks, y1


def hermite(y0, y1, f0, f1, h, theta):
    """Cubic Hermite interpolation on one step (3 kernels)."""
    u = 1.0 - theta
    out = torch.lerp(y0, y1, theta * theta * (3.0 - 2.0 * theta))
    out.add_(f0, alpha=h * theta * u * u)
    out.add_(f1, alpha=-h * theta * theta * u)
    return out


def dense_eval(m: Method, y, ks, h, theta):
    """The method's own continuous extension at ``theta`` (needs the FSAL stage)."""
    w = m.dense(theta)
    return comb(y, ks, tuple((j, x) for j, x in enumerate(w) if x != 0.0), h)


def rms_norm(r) -> float:
    return torch.linalg.vector_norm(r).item() / math.sqrt(max(r.numel(), 1))


def fixed_grid(t0: float, t1: float, step_size: float) -> list[float]:
    """Grid from ``t0`` to ``t1`` with steps ``step_size`` (the last one possibly shorter)."""
    span = t1 - t0
    step_size = abs(step_size)
    if step_size == 0.0:
        raise ValueError("step_size must be nonzero")
    # like torchdiffeq: ceil(span / h + 1) points, the last one moved onto t1
    n = max(int(math.ceil(abs(span) / step_size + 1.0)), 2)
    sgn = 1.0 if span >= 0 else -1.0
    grid = [t0 + sgn * k * step_size for k in range(n)]
    grid[-1] = t1
    return grid


def grid_through(ts: list[float], step_size: float | None) -> list[float]:
    """The fixed-step grid of a solve whose steps end on every output time in ``ts``: ``ts`` itself
    when ``step_size`` is None, else :func:`fixed_grid` over each output interval in turn (the
    grid of a reverse solve that jumps at the output times)."""
    if step_size is None:
        return list(ts)
    grid = [ts[0]]
    for a, b in zip(ts, ts[1:]):
        grid.extend(fixed_grid(a, b, step_size)[1:])
    return grid


@dataclass
class Config:
    """Everything an integration needs besides the vector field and the data.

    Arguments:
        method: the prepared tableau.
        rtol, atol: tolerances (adaptive only).
        step_size: fixed step; None steps on the output grid (fixed methods) or adaptively.
        first_step: initial step of adaptive solves (None: Hairer's heuristic).
        max_steps: budget of attempted steps for the whole solve.
        interp: ``"cubic"`` (Hermite / the method's own) or ``"linear"``, for fixed grids.
        safety, ifactor, dfactor: controller safety factor and step growth/shrink limits.
        pi_beta: the PI controller's ``β`` (Hairer's dopri5 default 0.04; 0 = I-controller).
        max_step: largest allowed ``|h|``.
        norm: ``r -> float`` on the scaled error ``err / (atol + rtol max(|y0|, |y1|))``.
    """

    method: Method
    rtol: float = 1e-7
    atol: float = 1e-9
    step_size: float | None = None
    first_step: float | None = None
    max_steps: int = 2**31 - 1
    interp: str = "cubic"
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pi_beta: float = 0.04
    max_step: float = math.inf
    norm: Callable = rms_norm

    @property
    def is_fixed(self) -> bool:
        return self.step_size is not None or not self.method.adaptive


def _times(values, like):
    return torch.tensor(values, dtype=like.dtype, device=like.device).unbind(0)


def integrate(cfg: Config, func, y0, ts: list[float], counters: Counters, trace: Trace | None = None,
              jump=None) -> Result:
    """Integrate ``dy/dt = func(t, y)`` from ``y0`` at ``ts[0]``; the states at ``ts``.

    Arguments:
        cfg: method and controller settings.
        func: called ``func(t, y)`` with ``t`` a 0-d tensor of ``y``'s dtype.
        y0: initial state.
        ts: strictly monotonic output times as Python floats.
        counters: incremented with steps and evaluations.
        trace: filled with the accepted steps when given (checkpointing).
        jump: ``(j, y) -> y`` applied to the state at each output time ``ts[j]``, ``j >= 1``,
            after it is recorded (the adjoint's reset and cotangent injection). Steps then
            end exactly on every output time and restart with a fresh ``f(t, y)``.

    Returns:
        A :class:`Result`: ``ys`` the list of states at ``ts`` (None on failure).
    """
    if len(ts) == 1:
        return Result([y0], y_end=y0)
    if cfg.is_fixed:
        return _integrate_fixed(cfg, func, y0, ts, counters, trace, jump)
    return _integrate_adaptive(cfg, func, y0, ts, counters, trace, jump)


def first_nonfinite(out) -> int | None:
    """Index of the first non-finite state in the stacked trajectory ``out``, or None."""
    with torch.no_grad():
        if bool(torch.isfinite(out).all()):
            return None
        flags = torch.isfinite(out.reshape(out.shape[0], -1)).all(1)
        return int((~flags).nonzero()[0, 0])


def _integrate_fixed(cfg, func, y0, ts, counters, trace, jump):
    m = cfg.method
    s = m.s
    on_grid = cfg.step_size is None
    if on_grid:
        grid = ts
    elif jump is None:
        grid = fixed_grid(ts[0], ts[-1], cfg.step_size)
    else:
        grid = grid_through(ts, cfg.step_size)
    n = len(grid) - 1
    if n > cfg.max_steps:
        return Result(None, MAX_STEPS, f"max_num_steps exceeded: {n} fixed steps > {cfg.max_steps}")
    flat = []
    for i in range(n):
        a, b = grid[i], grid[i + 1]
        flat.extend(m.stage_times(a, b, b - a))
    flat.append(grid[-1])
    tt = _times(flat, y0)
    direction = 1.0 if ts[-1] > ts[0] else -1.0
    T = len(ts)
    ys = [y0]
    y = y0
    k0 = None
    j = 1
    fsal = m.fsal
    linear = cfg.interp == "linear"
    nfe = 0
    record = trace is not None
    for i in range(n):
        t0 = grid[i]
        t1 = grid[i + 1]
        h = t1 - t0
        tti = tt[i * s:(i + 1) * s]
        if k0 is None:
            k0 = func(tti[0], y)
            nfe += 1
        if record:
            trace.steps.append((t0, t1, y))
        ks, y1 = step(m, func, tti, y, k0, h)
        nfe += s - 1
        if on_grid:
            ys.append(y1)
            if record:
                trace.outs.append((i, 1.0))
            k0 = ks[-1] if fsal else None
            if jump is not None:
                y1 = jump(i + 1, y1)
                k0 = None
        else:
            k_next = ks[-1] if fsal else None
            while j < T and (ts[j] - t1) * direction <= 0.0:
                tj = ts[j]
                if tj == t1:
                    ys.append(y1)
                    theta = 1.0
                    if jump is not None:
                        y1 = jump(j, y1)
                        k_next = None
                else:
                    theta = (tj - t0) / h
                    if linear:
                        ys.append(torch.lerp(y, y1, theta))
                    elif m.dense is not None and fsal:
                        ys.append(dense_eval(m, y, ks, h, theta))
                    else:
                        if k_next is None:
                            k_next = func(tt[(i + 1) * s], y1)
                            nfe += 1
                        ys.append(hermite(y, y1, k0, k_next, h, theta))
                if record:
                    trace.outs.append((i, theta))
                j += 1
            k0 = k_next
        y = y1
    counters.n_steps += n
    counters.n_accepted += n
    counters.nfe += nfe
    return Result(ys, y_end=y)


def initial_step(cfg: Config, func, t0: float, y0, f0, direction: float, span: float, counters: Counters) -> float:
    """Hairer, Nørsett & Wanner (II.4) starting step; one evaluation of ``func``."""
    norm = cfg.norm
    with torch.no_grad():
        scale = y0.abs().mul_(cfg.rtol).add_(cfg.atol)
        d0 = norm(y0 / scale)
        d1 = norm(f0 / scale)
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        h0 = min(h0, span)
        y1 = torch.add(y0, f0, alpha=direction * h0)
        f1 = func(_times([t0 + direction * h0], y0)[0], y1)
        counters.nfe += 1
        d2 = norm((f1 - f0).div_(scale)) / h0
    dmax = max(d1, d2)
    if not (math.isfinite(d0) and math.isfinite(dmax)):
        return math.nan  # non-finite state or derivative: the caller reports it
    if dmax <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dmax) ** (1.0 / cfg.method.k)
    return min(100.0 * h0, h1, span)


def _integrate_adaptive(cfg, func, y0, ts, counters, trace, jump):
    m = cfg.method
    s = m.s
    t = ts[0]
    t_end = ts[-1]
    span = abs(t_end - t)
    direction = 1.0 if t_end > t else -1.0
    rtol, atol, norm = cfg.rtol, cfg.atol, cfg.norm
    safety, ifactor, dfactor = cfg.safety, cfg.ifactor, cfg.dfactor
    beta = cfg.pi_beta
    alpha = 1.0 / m.k - 0.75 * beta
    max_step = cfg.max_step
    max_steps = cfg.max_steps
    e_nz = m.e_nz
    fsal = m.fsal
    record = trace is not None
    dtype, device = y0.dtype, y0.device

    y = y0
    k0 = func(_times([t], y0)[0], y)
    counters.nfe += 1
    if cfg.first_step is None:
        h = initial_step(cfg, func, t, y0, k0, direction, span, counters)
    else:
        h = min(abs(cfg.first_step), span)
    h = min(h, max_step) * direction

    ys = [y0]
    T = len(ts)
    j = 1
    prev = 1.0  # neutral first PI term (dopri5.f starts at 1e-4, which damps the first growth)
    rejected_last = False
    last_bad = False
    n_steps = n_acc = n_rej = 0
    nfe = 0
    status, message = OK, ""
    while j < T:
        if n_steps >= max_steps:
            status, message = MAX_STEPS, f"max_num_steps exceeded ({max_steps} steps) at t={t!r}"
            break
        if not abs(h) > 4.0 * _EPS * max(abs(t), span):  # also true for a NaN step
            if last_bad or h != h:
                status, message = NONFINITE, f"non-finite state or derivative at t={t!r}"
            else:
                status, message = DT_UNDERFLOW, f"underflow in dt (h={h!r}) at t={t!r}"
            break
        t1 = t + h
        t_stop = t_end if jump is None else ts[j]
        h_free = h
        clipped = (t1 - t_stop) * direction >= 0.0
        if clipped:  # never step past the end (or, with jumps, past the next output time)
            t1 = t_stop
            h = t1 - t
        tt = torch.tensor(m.stage_times(t, t1, h), dtype=dtype, device=device).unbind(0)
        ks, y1 = step(m, func, tt, y, k0, h)
        nfe += s - 1
        n_steps += 1
        with torch.no_grad():
            err = torch.mul(ks[e_nz[0][0]], e_nz[0][1] * h)
            for jj, x in e_nz[1:]:
                err.add_(ks[jj], alpha=x * h)
            tol = torch.maximum(y.abs(), y1.abs()).mul_(rtol).add_(atol)
            ratio = norm(err.div_(tol))
        if ratio <= 1.0:
            n_acc += 1
            last_bad = False
            if record:
                trace.steps.append((t, t1, y))
            while j < T and (ts[j] - t1) * direction <= 0.0:
                tj = ts[j]
                if tj == t1:
                    ys.append(y1)
                    theta = 1.0
                else:
                    theta = (tj - t) / h
                    ys.append(dense_eval(m, y, ks, h, theta))
                if record:
                    trace.outs.append((len(trace.steps) - 1, theta))
                j += 1
            t = t1
            y = y1
            if jump is not None and clipped:
                y = jump(j - 1, y)
                if j < T:
                    k0 = func(tt[-1] if m.c_is_one[-1] else _times([t], y)[0], y)
                    nfe += 1
            elif fsal:
                k0 = ks[-1]
            else:
                k0 = func(tt[-1] if m.c_is_one[-1] else _times([t], y)[0], y)
                nfe += 1
            if ratio == 0.0:
                factor = ifactor
            else:
                factor = safety * ratio ** (-alpha) * prev**beta
                factor = min(ifactor, max(dfactor, factor))
            if rejected_last:
                factor = min(factor, 1.0)
            prev = max(ratio, 1e-4)
            rejected_last = False
            if clipped and factor >= 1.0 and abs(h * factor) < abs(h_free):
                h = h_free  # a step cut short to land on a stop time says nothing about the next one
                factor = 1.0
        else:
            n_rej += 1
            rejected_last = True
            if math.isfinite(ratio):
                last_bad = False
                factor = max(dfactor, safety * ratio ** (-alpha))
            else:
                last_bad = True
                factor = dfactor
        h = h * factor
        if abs(h) > max_step:
            h = max_step * direction
    counters.n_steps += n_steps
    counters.n_accepted += n_acc
    counters.n_rejected += n_rej
    counters.nfe += nfe
    if status != OK:
        return Result(None, status, message, abs(h))
    return Result(ys, OK, "", abs(h), y)
