"""Pure analysis of the ``memory`` workload: fits of memory against depth and the class checks.

No framework, no I/O: numbers in, a :class:`Fit` or a :class:`Verdict` out, so each rule is
tested on constructed data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from odebench.workloads.memory.schema import DEFAULT_CLASSES


@dataclass
class Fit:
    """Least-squares fits of memory ``y`` against the number of steps ``n``.

    ``slope``/``intercept``: ``y ≈ intercept + slope · n`` (bytes per step); ``exponent``:
    the slope of ``log y`` against ``log n`` (``y`` floored, see :func:`fit_memory`);
    ``r2``: of the linear fit. NaN where fewer than two distinct ``n``.
    """

    n_points: int
    slope: float = float("nan")
    intercept: float = float("nan")
    exponent: float = float("nan")
    r2: float = float("nan")


def fit_memory(n: Any, y: Any, floor: float = 1.0) -> Fit:
    """Fit ``y`` (bytes) against ``n`` (steps): linear slope and log-log exponent.

    Arguments:
        n, y: equal-length sequences; pairs with a missing or non-finite value are dropped.
        floor: values below it count as ``floor`` in the log-log fit (a peak of a few pages
            is allocator granularity, and ``log 0`` is undefined).
    """
    n = np.asarray(n, dtype=np.float64)
    y = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)
    keep = np.isfinite(n) & np.isfinite(y) & (n > 0)
    n, y = n[keep], y[keep]
    fit = Fit(int(n.size))
    if np.unique(n).size < 2:
        return fit
    slope, intercept = np.polyfit(n, y, 1)
    resid = y - (intercept + slope * n)
    ss = float(((y - y.mean()) ** 2).sum())
    fit.slope, fit.intercept = float(slope), float(intercept)
    fit.r2 = 1.0 - float((resid ** 2).sum()) / ss if ss > 0 else 1.0
    fit.exponent = float(np.polyfit(np.log(n), np.log(np.maximum(y, max(floor, 1.0))), 1)[0])
    return fit


#: The memory class each grad mode belongs to (DESIGN §6).
EXPECTED_CLASS = {
    "backprop": "O(n) activations",
    "adjoint": "O(1)",
    "adjoint-seminorm": "O(1)",
    "checkpoint": "O(n) states only, or sub-linear",
}


@dataclass
class Verdict:
    """The outcome of :func:`check_class`.

    ``ok``: True (in its class), False (left it: a flag), None (cannot tell: too few
    depths, or a grad mode without a class). ``observed``: a short description of what
    the fit shows; ``reason``: why it passes or fails, with the numbers; ``note``: what
    kind of member of its class it is, where that says more (e.g. "sub-linear").
    """

    grad_mode: str
    ok: bool | None
    expected: str
    observed: str
    reason: str
    note: str = ""
    fit: Fit = field(default_factory=lambda: Fit(0))
    saved_fit: Fit | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_class(grad_mode: str, n_steps: Any, peak_bytes: Any, *, saved_bytes: Any = None,
                state_bytes: float | None = None, backprop_slope: float | None = None,
                params: dict[str, Any] | None = None) -> Verdict:
    """Check that a grad mode's peak memory against depth stays in its class.

    Pure: arrays in, verdict out. The classes (thresholds in ``params``, defaults
    :data:`DEFAULT_CLASSES`):

    - ``backprop`` — O(n) activations: the slope of peak memory against ``n`` is within
      ``backprop_rel_tol`` of the slope of the bytes saved for backward (both bytes per
      step). Without saved bytes: a positive slope and an exponent of at least 0.5.
    - ``adjoint`` / ``adjoint-seminorm`` — O(1): the log-log exponent is below
      ``adjoint_max_exponent``.
    - ``checkpoint`` — state-only: the slope is at most ``checkpoint_state_band[1]`` states
      per step (``state_bytes`` each) and at most ``checkpoint_max_backprop_frac`` of
      ``backprop_slope`` (when given, and when that backprop keeps activations, i.e. more
      than ``checkpoint_state_band[1]`` states per step). At least ``checkpoint_state_band[0]``
      states per step reads "one state per step", below it "sub-linear" (e.g. binomial
      checkpointing).

    Arguments:
        grad_mode: the grad mode whose class to check.
        n_steps: the depths.
        peak_bytes: peak memory at each depth (bytes).
        saved_bytes: bytes saved for backward at each depth (None or missing values allowed).
        state_bytes: bytes of one ODE state.
        backprop_slope: bytes per step of backprop for the same plugin, block and device.
        params: thresholds; missing keys take :data:`DEFAULT_CLASSES`.

    Returns:
        A :class:`Verdict`.
    """
    p = DEFAULT_CLASSES | (params or {})
    fit = fit_memory(n_steps, peak_bytes, floor=p["exponent_floor_bytes"])
    expected = EXPECTED_CLASS.get(grad_mode, "unknown")
    saved_fit = None
    if saved_bytes is not None and any(v is not None for v in np.atleast_1d(saved_bytes)):
        saved_fit = fit_memory(n_steps, saved_bytes, floor=p["exponent_floor_bytes"])
    verdict = Verdict(grad_mode, None, expected, "", "", "", fit, saved_fit)
    if grad_mode not in EXPECTED_CLASS:
        verdict.reason = f"no memory class for grad mode {grad_mode!r}"
        return verdict
    if not np.isfinite(fit.slope):
        verdict.reason = f"needs at least two depths (has {fit.n_points} point(s))"
        return verdict
    mb = fit.slope / 2**20
    per_state = fit.slope / state_bytes if state_bytes else float("nan")
    verdict.observed = (f"{mb:.3g} MB/step, exponent {fit.exponent:.2f}"
                        + (f", {per_state:.2f} states/step" if np.isfinite(per_state) else ""))
    if grad_mode == "backprop":
        if saved_fit is not None and np.isfinite(saved_fit.slope) and saved_fit.slope > 0:
            ratio = fit.slope / saved_fit.slope
            tol = p["backprop_rel_tol"]
            verdict.ok = bool(abs(ratio - 1.0) <= tol)
            verdict.reason = (f"slope / saved-for-backward slope = {ratio:.2f} "
                              f"({'within' if verdict.ok else 'outside'} 1 ± {tol:g})")
            if np.isfinite(per_state) and per_state <= p["checkpoint_state_band"][1]:
                # Consistent with what it saves, but what it saves is states, not activations.
                verdict.note = "states only: the library recomputes each step in backward"
        else:
            verdict.ok = bool(fit.slope > 0 and fit.exponent >= 0.5)
            verdict.reason = (f"no saved bytes to compare; slope {mb:.3g} MB/step, exponent {fit.exponent:.2f} "
                              f"({'linear growth' if verdict.ok else 'not growing linearly'})")
    elif grad_mode in ("adjoint", "adjoint-seminorm"):
        limit = p["adjoint_max_exponent"]
        verdict.ok = bool(fit.exponent < limit)
        verdict.reason = f"exponent {fit.exponent + 0.0:.3f} {'<' if verdict.ok else '>='} {limit:g}".replace(
            "-0.000", "0.000")
    else:  # checkpoint
        lo, hi = p["checkpoint_state_band"]
        frac = p["checkpoint_max_backprop_frac"]
        problems, notes = [], []
        if np.isfinite(per_state):
            notes.append(f"{per_state:.2f} states/step")
            if per_state > hi:
                problems.append(f"more than {hi:g} states per step: not state-only")
        if backprop_slope is not None and np.isfinite(backprop_slope) and backprop_slope > 0:
            if state_bytes and backprop_slope <= hi * state_bytes:
                # That backprop keeps states only itself (diffrax): "well below" it says nothing.
                notes.append("backprop keeps states only here: not compared")
            else:
                share = fit.slope / backprop_slope
                notes.append(f"{share:.2f} × backprop's slope")
                if share > frac:
                    problems.append(f"above {frac:g} × backprop's slope")
        if not notes:
            verdict.reason = "needs the state size or backprop's slope to compare with"
            return verdict
        verdict.ok = not problems
        if verdict.ok:
            verdict.note = "one state per step" if not np.isfinite(per_state) or per_state >= lo else "sub-linear"
        verdict.reason = "; ".join(notes + problems)
    return verdict


def _class_params(frame: pd.DataFrame) -> dict[str, Any]:
    for text in frame.get("class_params", pd.Series(dtype=object)).dropna():
        try:
            return DEFAULT_CLASSES | json.loads(text)
        except (TypeError, ValueError):
            continue
    return dict(DEFAULT_CLASSES)


_GROUP = ["plugin", "method", "grad_mode", "block", "device"]


def verdicts(df: pd.DataFrame) -> dict[tuple, Verdict]:
    """:func:`check_class` for every plugin × method × grad mode × block × device with ok rows."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return {}
    params = _class_params(ok)

    def arrays(g):
        g = g.sort_values("n_steps")
        saved = g["saved_bytes"]
        return (g["n_steps"].to_numpy(float), g["peak_bytes"].to_numpy(float),
                None if saved.isna().all() else saved.to_numpy(float),
                float(g["state_bytes"].dropna().iloc[0]) if g["state_bytes"].notna().any() else None)

    backprop = {}
    for key, g in ok[ok["grad_mode"] == "backprop"].groupby(_GROUP, sort=False):
        n, peak, _, _ = arrays(g)
        backprop[(key[0], key[1], key[3], key[4])] = fit_memory(n, peak).slope
    out = {}
    for key, g in ok.groupby(_GROUP, sort=False):
        n, peak, saved, state = arrays(g)
        out[key] = check_class(key[2], n, peak, saved_bytes=saved, state_bytes=state,
                               backprop_slope=backprop.get((key[0], key[1], key[3], key[4])), params=params)
    return out
