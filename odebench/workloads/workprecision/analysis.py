"""Pure functions of the work-precision analysis: error measures, reference agreement, walls,
and interpolation along a curve. Nothing here runs a solver or draws; the report and the
tests call these on plain arrays (and, for :func:`curves`, on the records' DataFrame).

A *curve* is one plugin × method (× grad mode) on one problem, its points in sweep order:
adaptive methods from the loosest tolerance to the tightest, fixed-step methods from the
fewest steps to the most. A failed point stays in the curve with a NaN error, so that
interpolation never bridges it and a figure shows it as a gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


# --------------------------------------------------------------------------- error measures
def error_measures(ys: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The three errors of a trajectory against a reference, each relative to the reference's size.

    Arguments:
        ys: the solution at the output times, shape ``(T, ...)``.
        ref: the reference at the same times, same shape.

    Returns:
        ``final``: ``‖y(t_N) - y*(t_N)‖ / ‖y*(t_N)‖`` (2-norms over the state and batch);
        ``l2``: the RMS of ``y - y*`` over the output times after ``t_0`` and every component,
        over the RMS of ``y*`` there; ``L∞``: the largest ``|y - y*|`` there over the largest
        ``|y*|``. Infinite where the solution is not finite (the names are SciMLBenchmarks').

    Raises:
        ValueError: when the shapes differ.
    """
    ys, ref = np.asarray(ys, np.float64), np.asarray(ref, np.float64)
    if ys.shape != ref.shape:
        raise ValueError(f"solution shape {ys.shape} differs from the reference's {ref.shape}")
    if not np.all(np.isfinite(ys)):
        return {"final": math.inf, "l2": math.inf, "L∞": math.inf}
    # t_0 is the initial state itself: it has no error and would only dilute the trajectory's.
    d, r = (ys[1:], ref[1:]) if len(ys) > 1 else (ys, ref)
    diff = d - r
    return {"final": _ratio(np.linalg.norm(ys[-1] - ref[-1]), np.linalg.norm(ref[-1])),
            "l2": _ratio(math.sqrt(float(np.mean(diff ** 2))), math.sqrt(float(np.mean(r ** 2)))),
            "L∞": _ratio(float(np.max(np.abs(diff))), float(np.max(np.abs(r))))}


def _ratio(num: float, den: float) -> float:
    """``num / den``, with a zero reference falling back to the absolute error."""
    return float(num / den) if den > 0 else float(num)


def relative_l2(x: np.ndarray, ref: np.ndarray) -> float:
    """``‖x - ref‖ / ‖ref‖`` over every element (the gradient's error); inf where ``x`` is not finite."""
    x, ref = np.asarray(x, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    if not np.all(np.isfinite(x)):
        return math.inf
    return _ratio(float(np.linalg.norm(x - ref)), float(np.linalg.norm(ref)))


# --------------------------------------------------------------------------- reference agreement
@dataclass(frozen=True)
class RefCheck:
    """Whether two references agree well enough for the errors shown.

    Attributes:
        disagreement: the error of the second reference measured against the first.
        floor: the smallest error that may be shown: ``margin × disagreement``.
        smallest: the smallest error the run reached (NaN when none).
        ok: True when the smallest error reached is at or above the floor.
    """

    disagreement: float
    floor: float
    smallest: float
    ok: bool

    def sentence(self, what: str) -> str:
        """One line for the report."""
        if self.ok:
            return (f"{what}: the references agree to {self.disagreement:.1e}; every error reached "
                    f"(smallest {self.smallest:.1e}) is above the floor {self.floor:.1e}.")
        return (f"{what}: the references agree only to {self.disagreement:.1e}, not well below the smallest "
                f"error reached ({self.smallest:.1e}): nothing below {self.floor:.1e} is plotted or matched.")


def check_references(disagreement: float | None, errors: Any, margin: float) -> RefCheck:
    """Check that two independent references agree to well below every error reached.

    Arguments:
        disagreement: the second reference's error against the first, in the measure used
            (None or 0 for an exact solution).
        errors: the errors the run reached (non-finite ones are ignored).
        margin: how far below the smallest error the references must agree.

    Returns:
        A :class:`RefCheck`; its ``floor`` is where figures and the matched-error table stop.
    """
    arr = np.asarray([e for e in np.ravel(np.asarray(errors, dtype=np.float64)) if np.isfinite(e) and e > 0])
    smallest = float(arr.min()) if arr.size else math.nan
    dis = float(disagreement or 0.0)
    floor = margin * dis
    return RefCheck(dis, floor, smallest, bool(not arr.size or smallest >= floor))


# --------------------------------------------------------------------------- walls
@dataclass(frozen=True)
class Wall:
    """An error curve that stops falling: its tail from ``start`` on stays within a band.

    Attributes:
        start: index (in sweep order, over the finite points) where the flat tail begins.
        points: how many points the tail has.
        level: the geometric mean of the tail's errors.
        at_reference: True when the level is within ten times the reference floor (the curve
            meets the reference's own accuracy), False when above it (round-off or the
            solver's limit), None when the floor is unknown.
    """

    start: int
    points: int
    level: float
    at_reference: bool | None

    def sentence(self) -> str:
        where = {True: "at the reference's accuracy", False: "above the reference's accuracy "
                 "(round-off or the solver's own limit)", None: ""}[self.at_reference]
        return f"flattens at {self.level:.1e} over its last {self.points} points {where}".rstrip()


def detect_wall(errors: Any, floor: float | None = None, flat_decades: float = 0.3,
                min_points: int = 3) -> Wall | None:
    """Find the flat tail of an error curve (sweep order, loosest first), if it has one.

    A tail is flat when, from its first point on, no error is more than ``flat_decades``
    below that first one while the sweep tightens over at least ``min_points`` points; a curve
    that is flat from its very first point is not a wall (it never converged, nothing to hit).

    Arguments:
        errors: the curve's errors in sweep order; non-finite (failed) points are skipped.
        floor: the reference floor (see :func:`check_references`); None when unknown.
        flat_decades: the band, in decades, within which a tail counts as flat.
        min_points: the fewest points a flat tail must have.

    Returns:
        A :class:`Wall`, or None for a curve that keeps falling.
    """
    e = np.asarray([x for x in np.asarray(errors, np.float64) if np.isfinite(x) and x > 0])
    if e.size < min_points + 1:
        return None
    logs = np.log10(e)
    start = None
    for j in range(e.size - min_points, 0, -1):
        if np.all(logs[j] - logs[j:] < flat_decades):
            start = j
        else:
            break
    if start is None or logs[start - 1] - logs[start] < flat_decades:
        return None  # no flat tail, or a curve that was flat before it (a plateau, not a wall)
    level = float(10 ** np.mean(logs[start:]))
    at_ref = None if floor is None else bool(floor > 0 and level <= 10.0 * floor)
    return Wall(start, int(e.size - start), level, at_ref)


# --------------------------------------------------------------------------- interpolation
@dataclass(frozen=True)
class Match:
    """The cost of a curve at a target error.

    Attributes:
        cost: the interpolated cost, an upper bound (``bound``), or NaN (not reached).
        kind: ``"interpolated"`` (log-log between the neighbouring sweep points on either side
            of the target), ``"bound"`` (the first point that reaches the target has no
            successful looser neighbour: its cost is an upper bound) or ``"not reached"``.
    """

    cost: float
    kind: str

    @property
    def reached(self) -> bool:
        return self.kind != "not reached"


def cost_at_error(errors: Any, costs: Any, target: float) -> Match:
    """The cost at which a curve first reaches ``target`` (log-log between sweep neighbours).

    Arguments:
        errors: the curve's errors in sweep order; NaN marks a failed point (never bridged).
        costs: the costs of the same points (time or NFE).
        target: the error wanted.

    Returns:
        A :class:`Match`. Exact for a power law ``cost = a · error^-k`` between the points.
    """
    e, c = np.asarray(errors, np.float64), np.asarray(costs, np.float64)
    good = np.isfinite(e) & np.isfinite(c) & (e > 0) & (c > 0)
    for i in range(len(e)):
        if not good[i] or e[i] > target:
            continue
        if i > 0 and good[i - 1] and e[i - 1] > target:
            le0, le1 = math.log(e[i - 1]), math.log(e[i])
            w = (le0 - math.log(target)) / (le0 - le1)
            return Match(float(math.exp(math.log(c[i - 1]) + w * (math.log(c[i]) - math.log(c[i - 1])))),
                         "interpolated")
        return Match(float(c[i]), "bound")
    return Match(math.nan, "not reached")


def error_at_cost(costs: Any, errors: Any, cost: float) -> float:
    """A curve's error at ``cost``: log-log between the two points that bracket it; NaN outside.

    Arguments:
        costs, errors: the curve's successful points (any order; non-finite ones are dropped).
        cost: the cost to read the error at.
    """
    c, e = np.asarray(costs, np.float64), np.asarray(errors, np.float64)
    keep = np.isfinite(c) & np.isfinite(e) & (c > 0) & (e > 0)
    c, e = c[keep], e[keep]
    if c.size < 2 or not (c.min() <= cost <= c.max()):
        return math.nan
    order = np.argsort(c)
    return float(np.exp(np.interp(math.log(cost), np.log(c[order]), np.log(e[order]))))


def ranks(costs: dict[Any, float]) -> dict[Any, int]:
    """1 for the cheapest finite cost, 2 for the next, ...; lines without a cost get none."""
    finite = sorted((v, k) for k, v in costs.items() if v is not None and math.isfinite(v))
    return {k: i + 1 for i, (_, k) in enumerate(finite)}


# --------------------------------------------------------------------------- curves from records
@dataclass
class Curve:
    """One line of a work-precision figure, in sweep order.

    Attributes:
        key: ``(problem, task, plugin, method, grad_mode)``.
        sweep: ``rtol`` (adaptive) or the step count (fixed), per point.
        fixed: whether the sweep is a step count.
        time, nfe, error: per point; NaN where the point failed.
        status: per point.
    """

    key: tuple
    sweep: np.ndarray
    fixed: bool
    time: np.ndarray
    nfe: np.ndarray
    error: np.ndarray
    status: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        _, task, plugin, method, grad = self.key
        return f"{plugin} {method}" + (f" {grad}" if task == "gradient" else "")

    @property
    def failed(self) -> int:
        return sum(s != "ok" for s in self.status)


CURVE_KEY = ["problem", "task", "plugin", "method", "grad_mode"]


def curves(df: pd.DataFrame, error: str) -> dict[tuple, Curve]:
    """The curves of a run's rows (those that ran), in sweep order.

    Arguments:
        df: the records' frame (the workload's columns, ``rtol`` and ``n_steps``).
        error: the record column of the solve task's error (``err_l2``, ...); the gradient
            task's is always ``grad_err``.

    Returns:
        Curve by key ``(problem, task, plugin, method, grad_mode)``. Cost is the solve's median
        time and forward NFE (solve task) or forward+backward time and NFE-F + NFE-B (gradient).
    """
    out: dict[tuple, Curve] = {}
    for key, g in df.groupby(CURVE_KEY, sort=False, dropna=False):
        fixed = bool((pd.to_numeric(g["n_steps"], errors="coerce").fillna(0) > 0).all())
        if fixed:
            g = g.assign(_s=pd.to_numeric(g["n_steps"], errors="coerce")).sort_values("_s")
            sweep = g["_s"].to_numpy(float)
        else:
            g = g.assign(_s=pd.to_numeric(g["rtol"], errors="coerce")).sort_values("_s", ascending=False)
            sweep = g["_s"].to_numpy(float)
        ok = (g["status"] == "ok").to_numpy()
        col = "grad_err" if key[1] == "gradient" else error
        err = np.where(ok, pd.to_numeric(g[col], errors="coerce").to_numpy(float), np.nan)
        nfe = pd.to_numeric(g["nfe_fwd"], errors="coerce").fillna(0).to_numpy(float)
        if key[1] == "gradient":
            nfe = nfe + pd.to_numeric(g["nfe_bwd"], errors="coerce").fillna(0).to_numpy(float)
        nfe = np.where(ok & (nfe > 0), nfe, np.nan)
        time = np.where(ok, pd.to_numeric(g["time_s"], errors="coerce").to_numpy(float), np.nan)
        out[tuple(key)] = Curve(tuple(key), sweep, fixed, time, nfe, err, list(g["status"]))
    return out


def below_floor(curve: Curve, floor: float) -> Curve:
    """The curve with every error below ``floor`` (and its costs) set to NaN: not shown, not matched."""
    cut = np.isfinite(curve.error) & (curve.error < floor)
    if not cut.any():
        return curve
    nan = lambda a: np.where(cut, np.nan, a)  # noqa: E731
    return Curve(curve.key, curve.sweep, curve.fixed, nan(curve.time), nan(curve.nfe), nan(curve.error),
                 curve.status)


def median_ratio(pairs: list[tuple[float, float]]) -> float:
    """The median of ``a / b`` over the pairs where both are finite and ``b > 0``; NaN when none."""
    r = [a / b for a, b in pairs if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
         and b > 0]
    return float(np.median(r)) if r else math.nan
