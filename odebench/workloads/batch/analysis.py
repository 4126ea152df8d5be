"""Pure analysis of the ``batch`` workload: per-sample steps and errors, the inflation ratios, and
the choice of rows the report shows.

No framework, no I/O: numbers in, numbers out, so each rule is tested on constructed data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from odebench.measure import summarize


def per_sample_steps(n_steps: int | None, extra: dict[str, Any], n: int, batch_stepping: str) -> list[int]:
    """The steps each sample of one solve took (attempted steps: accepted and rejected).

    Arguments:
        n_steps: the solve's :attr:`~odebench.protocol.SolveStats.n_steps`.
        extra: its ``extra``; a plugin that steps samples apart reports a list ``extra["n_steps"]``.
        n: the number of samples in the solve.
        batch_stepping: the plugin's declaration (:data:`odebench.protocol.BATCH_STEPPING`).

    Returns:
        ``n`` counts: the plugin's per-sample list where it reports one, else — a joint
        plugin steps the batch as one system — the solve's steps for every sample.

    Raises:
        ValueError: when the solve reports no steps, when a per-sample list has the wrong
            length, or when a plugin that does not step jointly reports no per-sample list.
    """
    listed = extra.get("n_steps")
    if isinstance(listed, list | tuple):
        if len(listed) != n:
            raise ValueError(f"the plugin reports steps for {len(listed)} samples in a solve of {n}")
        return [int(s) for s in listed]
    if batch_stepping != "joint":
        raise ValueError(f"a plugin declaring batch_stepping {batch_stepping!r} must report per-sample steps "
                         "in stats.extra['n_steps']; valid without them: joint")
    if n_steps is None:
        raise ValueError("the plugin reports no step count (SolveStats.n_steps is None)")
    return [int(n_steps)] * n


def sample_errors(ys: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each sample's largest absolute error against the reference, over output times and components.

    Arguments:
        ys, ref: trajectories of shape ``(T, n, d)``.

    Returns:
        float64 array of shape ``(n,)``.

    Raises:
        ValueError: when the shapes differ.
    """
    ys, ref = np.asarray(ys, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ys.shape != ref.shape or ys.ndim != 3:
        raise ValueError(f"trajectory of shape {ys.shape} against a reference of shape {ref.shape}; "
                         "both must be (times, samples, state)")
    return np.abs(ys - ref).max(axis=(0, 2))


def ratio(num: float, den: float) -> float:
    """``num / den``, NaN when either is missing or the denominator is not positive."""
    if num is None or den is None or not np.isfinite(num) or not np.isfinite(den) or den <= 0:
        return float("nan")
    return float(num) / float(den)


@dataclass
class ModeResult:
    """One mode's measurements (all per sample except ``nfe`` and ``times``).

    Arguments:
        steps: steps per sample.
        nfe: vector-field calls counted by the harness, per solve (joint: one; solo: one per sample).
        nfe_native: the library's own NFE per solve (None where it reports none).
        errors: largest absolute error per sample.
        times: seconds per timed pass (every solve of the mode).
        compile_s: compile time of the mode (None for plugins that do not compile).
    """

    steps: list[int]
    nfe: list[int]
    nfe_native: list[int | None] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    compile_s: float | None = None


def columns(joint: ModeResult, solo: ModeResult) -> dict[str, Any]:
    """A case's record columns from its two modes.

    ``step_inflation`` is the joint steps per sample (mean) over the mean of the samples' solo
    steps: 1 when sharing the batch costs a sample nothing. ``nfe_inflation`` is the joint solve's
    vector-field calls (each evaluates every sample) over the mean solo calls: what a batch pays in
    evaluations, which stays above 1 for per-sample stepping too, as every call evaluates the
    samples that are already done. Times are per sample: the median pass over the batch size.

    Raises:
        ValueError: when the modes disagree on the number of samples, or the joint mode is not one solve.
    """
    n = len(joint.steps)
    if len(solo.steps) != n or len(solo.nfe) != n:
        raise ValueError(f"the joint mode has {n} samples, the solo mode {len(solo.steps)} with {len(solo.nfe)} solves")
    if len(joint.nfe) != 1:
        raise ValueError(f"the joint mode must be one solve, got {len(joint.nfe)}")
    sj, ss = np.asarray(joint.steps, float), np.asarray(solo.steps, float)
    nfe_solo = np.asarray(solo.nfe, float)
    tj, ts = summarize(joint.times), summarize(solo.times)
    natives = [(c, m) for c, m in zip(joint.nfe + solo.nfe, joint.nfe_native + solo.nfe_native) if m is not None]
    err_j, err_s = np.asarray(joint.errors, float), np.asarray(solo.errors, float)
    return {
        "steps_joint_mean": float(sj.mean()), "steps_joint_max": int(sj.max()),
        "steps_solo_mean": float(ss.mean()), "steps_solo_max": int(ss.max()),
        "step_inflation": ratio(sj.mean(), ss.mean()),
        "nfe_joint": int(joint.nfe[0]), "nfe_solo_mean": float(nfe_solo.mean()), "nfe_solo_max": int(nfe_solo.max()),
        "nfe_inflation": ratio(joint.nfe[0], nfe_solo.mean()),
        "nfe_joint_native": joint.nfe_native[0] if joint.nfe_native else None,
        "nfe_agree": all(c == m for c, m in natives) if natives else None,
        "err_joint_mean": float(err_j.mean()) if err_j.size else None,
        "err_joint_max": float(err_j.max()) if err_j.size else None,
        "err_solo_mean": float(err_s.mean()) if err_s.size else None,
        "err_solo_max": float(err_s.max()) if err_s.size else None,
        "repeats": min(tj["n"], ts["n"]),
        "s_per_sample_joint": tj["median"] / n, "s_per_sample_joint_iqr": tj["iqr"] / n,
        "s_per_sample_solo": ts["median"] / n, "s_per_sample_solo_iqr": ts["iqr"] / n,
        "compile_s_joint": joint.compile_s, "compile_s_solo": solo.compile_s,
    }


def per_sample_json(params: Any, joint: ModeResult, solo: ModeResult) -> str:
    """The per-sample figures of a case as one JSON string (the record's ``per_sample``)."""
    return json.dumps({"param": [float(p) for p in params], "steps_joint": list(joint.steps),
                       "steps_solo": list(solo.steps), "nfe_solo": list(solo.nfe),
                       "err_joint": [float(e) for e in joint.errors], "err_solo": [float(e) for e in solo.errors]})


#: What identifies one line of a figure or one group of the tables.
LINE = ["problem", "plugin", "method"]


def at_largest(df: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The rows at the largest value of ``axis`` (``batch`` or ``spread``) per problem.

    Arguments:
        df: the run's rows with the workload's axes.
        axis: the axis to take the top of.

    Returns:
        The rows of each problem at that problem's largest ``axis`` value that has a row.
    """
    if df.empty:
        return df
    top = df.groupby("problem")[axis].transform("max")
    return df[df[axis] == top]


def best_slice(df: pd.DataFrame, along: str, at: str) -> pd.DataFrame:
    """Per problem, the rows of the ``at`` value with the most distinct ``along`` values (ties: the largest).

    A figure of time against batch size is drawn at one spread; a profile may run some spreads at a
    few batch sizes only, so the spread with the most batch sizes (the largest of those) is chosen.

    Arguments:
        df: the rows (usually the ok ones).
        along: the x axis of the figure (``batch``).
        at: the axis held fixed (``spread``).
    """
    parts = []
    for _problem, g in df.groupby("problem", sort=False):
        counts = g.groupby(at)[along].nunique()
        best = max(counts.index, key=lambda v: (counts[v], v))
        parts.append(g[g[at] == best])
    return pd.concat(parts) if parts else df
