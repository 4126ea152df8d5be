"""The built-in claim rules: pure functions of a run's ok rows and their parameters.

Each rule groups the rows (per plugin × method × grad mode × device, and model where the
workload has one; medians over seeds), checks every group it can measure and holds only
when every measured group holds (:func:`~odebench.claims.core.decide`); the figures it read
travel with the verdict, with their case ids. A rule never sees a row that did not end ok.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from odebench.claims.core import NOT_MEASURED, Figure, Outcome, _g, case_ids, decide, groups, median, rule
from odebench.protocol import ADAPTIVE_METHODS, GRAD_MODES, METHODS

_GROUP = ["model", "plugin", "method", "grad_mode", "device"]


@rule("cost_vs_gain", workloads=("train",),
      params={"slow": (str, METHODS), "fast": (str, METHODS), "min_time_ratio": (float, "pos"),
              "max_error_gain": (float, None)},
      defaults={"slow": "dopri5", "fast": "rk4", "min_time_ratio": 2.0, "max_error_gain": 0.1})
def cost_vs_gain(rows: pd.DataFrame, p: dict[str, Any]) -> Outcome:
    """The slow method trains more than min_time_ratio × as long as the fast one for at most a max_error_gain
    relative decrease in final MSE, per plugin × grad mode × device (medians over seeds).

    Arguments:
        rows: the run's ok train rows that pass the claim's filters.
        p: ``slow`` and ``fast`` (methods), ``min_time_ratio``, ``max_error_gain`` (a fraction).

    Returns:
        The verdict, with per group the training-time ratio and the relative MSE decrease.
    """
    checks, figures = [], []
    for label, g in groups(rows, ["plugin", "grad_mode", "device"]):
        slow, fast = g[g["method"] == p["slow"]], g[g["method"] == p["fast"]]
        t_slow, t_fast = median(slow, "train_s"), median(fast, "train_s")
        e_slow, e_fast = median(slow, "final_mse"), median(fast, "final_mse")
        if not np.isfinite([t_slow, t_fast, e_slow, e_fast]).all() or t_fast <= 0 or e_fast <= 0:
            continue
        ratio, gain = t_slow / t_fast, (e_fast - e_slow) / e_fast
        held = ratio > p["min_time_ratio"] and gain <= p["max_error_gain"]
        ids = case_ids(slow, fast)
        figures += [Figure(f"{label}: {p['slow']}/{p['fast']} training time", ratio,
                           f"{t_slow:.3g} s / {t_fast:.3g} s", ids),
                    Figure(f"{label}: final MSE decrease {p['fast']} → {p['slow']} (relative)", gain,
                           f"({e_fast:.4g} − {e_slow:.4g}) / {e_fast:.4g}", ids)]
        change = f"{abs(gain):.1%} {'lower' if gain >= 0 else 'higher'}"
        checks.append((f"{label} (time ×{ratio:.2f}, needs > {p['min_time_ratio']:g}; MSE {change}, needs at most "
                       f"{p['max_error_gain']:.0%} lower)", held))
    return decide(checks, figures, f"plugin × grad mode with both {p['slow']} and {p['fast']} ok")


@rule("accuracy_reached", workloads=("mnist",),
      params={"accuracy_pct": (float, "pos"), "tolerance_pct": (float, "nonneg"),
              "paper_min_per_epoch": (float, "nonneg")},
      defaults={"tolerance_pct": 0.0, "paper_min_per_epoch": 0.0})
def accuracy_reached(rows: pd.DataFrame, p: dict[str, Any]) -> Outcome:
    """Final test accuracy at least accuracy_pct − tolerance_pct in every group; time per epoch is reported
    beside the paper's, never judged (it depends on the machine).

    Arguments:
        rows: the run's ok mnist rows that pass the claim's filters (its ``only`` names the model).
        p: ``accuracy_pct``, ``tolerance_pct`` (percentage points), ``paper_min_per_epoch`` (0: none).

    Returns:
        The verdict, with per group the test accuracy and the training minutes per epoch.
    """
    checks, figures = [], []
    floor = p["accuracy_pct"] - p["tolerance_pct"]
    for label, g in groups(rows, _GROUP):
        acc = 100 * median(g, "test_acc")
        if not np.isfinite(acc):
            continue
        minutes = median(g, "s_per_epoch") / 60
        ids = case_ids(g)
        figures.append(Figure(f"{label}: test accuracy %", acc, f"after {_g(median(g, 'epochs_done'))} epochs", ids))
        paper = f"; the paper: {p['paper_min_per_epoch']:g} min on its machine" if p["paper_min_per_epoch"] else ""
        figures.append(Figure(f"{label}: training minutes per epoch", minutes, f"timed region only{paper}", ids))
        checks.append((f"{label} ({acc:.2f} % {'≥' if acc >= floor else '<'} {floor:.2f} %)", acc >= floor))
    return decide(checks, figures, "model with a test accuracy")


@rule("memory_class", workloads=("memory",),
      params={"constant": ([str], GRAD_MODES), "growing": ([str], GRAD_MODES)},
      defaults={"constant": ["adjoint"], "growing": ["backprop"]})
def memory_class(rows: pd.DataFrame, p: dict[str, Any]) -> Outcome:
    """The constant grad modes' peak memory stays O(1) in the number of steps and the growing ones' grows
    O(n), by the memory workload's fits and class checks, per plugin × method × block × device.

    Arguments:
        rows: the run's ok memory rows that pass the claim's filters.
        p: ``constant`` and ``growing``: grad modes.

    Returns:
        The verdict (not measured without a constant grad mode at two depths or more), with per
        group the log-log exponent and the slope of peak memory against the number of steps.
    """
    from odebench.workloads.memory.analysis import verdicts

    checks, figures = [], []
    constant_seen = False
    found = verdicts(rows)
    for key, v in found.items():
        plugin, method, grad, block, device = key
        if grad not in p["constant"] + p["growing"] or v.ok is None:
            continue
        label = f"{plugin} {method} {grad} {block} {device}"
        g = rows[(rows["plugin"] == plugin) & (rows["method"] == method) & (rows["grad_mode"] == grad)
                 & (rows["block"] == block) & (rows["device"] == device)]
        ns = sorted(int(n) for n in g["n_steps"])
        span = f"n = {ns[0]}…{ns[-1]} ({len(ns)} depths)"
        figures.append(Figure(f"{label}: log-log exponent of peak memory against steps", v.fit.exponent,
                              f"{span}; expected {v.expected}", case_ids(g)))
        figures.append(Figure(f"{label}: peak memory slope, MB per step", v.fit.slope / 2**20, span, case_ids(g)))
        checks.append((f"{label}: {v.expected}, {v.reason}", bool(v.ok)))
        constant_seen |= grad in p["constant"]
    if not constant_seen:  # backprop alone says nothing about the adjoint
        return Outcome(NOT_MEASURED, f"no {'/'.join(p['constant'])} rows with two or more depths in this run",
                       figures)
    return decide(checks, figures, "grad mode with a memory class")


@rule("nfe_ratio", workloads=("train", "mnist"),
      params={"methods": ([str], METHODS), "grad_modes": ([str], GRAD_MODES), "low": (float, "nonneg"),
              "high": (float, "pos")},
      defaults={"methods": ["dopri5"], "grad_modes": ["adjoint"], "low": 0.25, "high": 0.75})
def nfe_ratio(rows: pd.DataFrame, p: dict[str, Any]) -> Outcome:
    """NFE-B / NFE-F (medians over seeds) lies in [low, high] in every group of the listed methods and grad modes.

    Arguments:
        rows: the run's ok train or mnist rows that pass the claim's filters.
        p: ``methods``, ``grad_modes``, ``low``, ``high``.

    Returns:
        The verdict, with the ratio per group.
    """
    checks, figures = [], []
    chosen = rows[rows["method"].isin(p["methods"]) & rows["grad_mode"].isin(p["grad_modes"])]
    for label, g in groups(chosen, _GROUP):
        fwd, bwd = median(g, "nfe_fwd"), median(g, "nfe_bwd")
        if not np.isfinite([fwd, bwd]).all() or fwd <= 0:
            continue
        ratio = bwd / fwd
        held = p["low"] <= ratio <= p["high"]
        figures.append(Figure(f"{label}: NFE-B / NFE-F", ratio, f"{bwd:.1f} / {fwd:.1f}", case_ids(g)))
        checks.append((f"{label} ({ratio:.2f} {'in' if held else 'outside'} [{p['low']:g}, {p['high']:g}])", held))
    return decide(checks, figures, f"{'/'.join(p['grad_modes'])} rows of {'/'.join(p['methods'])} with NFE counts")


def _per_model(rows: pd.DataFrame, expected: dict[str, float]) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """The models of ``expected`` absent from the rows, and the rows of each present one."""
    have = {m: rows[rows["model"] == m] for m in expected if "model" in rows and (rows["model"] == m).any()}
    return [m for m in expected if m not in have], have


@rule("parameter_count", workloads=("mnist",),
      params={"expected": (dict, "pos"), "rel_tolerance": (float, "nonneg")}, defaults={"rel_tolerance": 0.1})
def parameter_count(rows: pd.DataFrame, p: dict[str, Any]) -> Outcome:
    """Each model's trainable parameters (millions) within rel_tolerance of the expected count.

    Arguments:
        rows: the run's ok mnist rows that pass the claim's filters.
        p: ``expected`` (model → millions), ``rel_tolerance`` (a fraction).

    Returns:
        The verdict over the models the run has (the others named), with each model's count.
    """
    missing, have = _per_model(rows, p["expected"])
    checks, figures = [], []
    for model, g in have.items():
        measured, paper = median(g, "params") / 1e6, p["expected"][model]
        rel = measured / paper - 1
        held = abs(rel) <= p["rel_tolerance"]
        figures.append(Figure(f"{model}: parameters (M)", measured, f"paper {paper:g} M ({rel:+.1%})", case_ids(g)))
        checks.append((f"{model} ({measured:.3f} M vs {paper:g} M, {rel:+.1%}, tolerance ±{p['rel_tolerance']:.0%})",
                       held))
    out = decide(checks, figures, "model of " + ", ".join(p["expected"]))
    if missing and checks:
        out.why += f"; not in this run: {', '.join(missing)}"
    return out


@rule("test_error", workloads=("mnist",),
      params={"expected": (dict, "nonneg"), "tolerance_pct": (float, "nonneg")}, defaults={"tolerance_pct": 0.1})
def test_error(rows: pd.DataFrame, p: dict[str, Any]) -> Outcome:
    """Each model's final test error (%) at most the expected error + tolerance_pct, in every group.

    Arguments:
        rows: the run's ok mnist rows that pass the claim's filters.
        p: ``expected`` (model → test error %), ``tolerance_pct`` (percentage points).

    Returns:
        The verdict over the models the run has (the others named), with each group's error.
    """
    missing, have = _per_model(rows, p["expected"])
    checks, figures = [], []
    for model, rows_m in have.items():
        for label, g in groups(rows_m, _GROUP):
            err, paper = median(g, "test_error_pct"), p["expected"][model]
            if not np.isfinite(err):
                continue
            held = err <= paper + p["tolerance_pct"]
            figures.append(Figure(f"{label}: test error %", err, f"paper {paper:g} %", case_ids(g)))
            checks.append((f"{label} ({err:.2f} % {'≤' if held else '>'} {paper:g} + {p['tolerance_pct']:g} %)", held))
    out = decide(checks, figures, "model of " + ", ".join(p["expected"]) + " with a test error")
    if missing and checks:
        out.why += f"; not in this run: {', '.join(missing)}"
    return out


@rule("seminorm_saving", workloads=("train", "workprecision"),
      params={"plain": (str, GRAD_MODES), "seminorm": (str, GRAD_MODES), "min_reduction": (float, "nonneg")},
      defaults={"plain": "adjoint", "seminorm": "adjoint-seminorm", "min_reduction": 0.4})
def seminorm_saving(rows: pd.DataFrame, p: dict[str, Any]) -> Outcome:
    """The seminorm adjoint's backward NFE is at least min_reduction lower than the plain adjoint's (median
    over seeds of the per-seed ratio), per plugin × adaptive method × tolerance × device (and problem, in a
    work-precision run).

    Arguments:
        rows: the run's ok train or work-precision gradient rows that pass the claim's filters.
        p: ``plain`` and ``seminorm`` (grad modes), ``min_reduction`` (a fraction).

    Returns:
        The verdict, with the reduction per group; without seminorm rows, not measured, with the
        plain adjoint's NFE-B as the figures (what such a run gives).
    """
    checks, figures, plain_only = [], [], []
    adaptive = rows[rows["method"].isin(ADAPTIVE_METHODS)]  # a fixed-step solve has no error norm to change
    # A work-precision run holds several problems: a plain and a seminorm row pair only on the same one.
    for label, g in groups(adaptive, ["problem", "plugin", "method", "rtol", "device"]):
        plain, semi = g[g["grad_mode"] == p["plain"]], g[g["grad_mode"] == p["seminorm"]]
        if plain.empty:
            continue
        if semi.empty:
            nfe = median(plain, "nfe_bwd")
            plain_only.append(Figure(f"{label}: {p['plain']} NFE-B (no {p['seminorm']} row to compare)", nfe,
                                     f"NFE-F {median(plain, 'nfe_fwd'):.1f}", case_ids(plain)))
            continue
        pairs = plain.merge(semi, on="seed", suffixes=("_p", "_s"))
        ratios = (pd.to_numeric(pairs["nfe_bwd_s"]) / pd.to_numeric(pairs["nfe_bwd_p"])).dropna()
        if ratios.empty:
            continue
        cut = 1 - float(ratios.median())
        held = cut >= p["min_reduction"]
        figures.append(Figure(f"{label}: NFE-B reduction {p['plain']} → {p['seminorm']}", cut,
                              f"1 − median NFE-B ratio over {len(ratios)} seed(s): {median(semi, 'nfe_bwd'):.1f} / "
                              f"{median(plain, 'nfe_bwd'):.1f}", case_ids(plain, semi)))
        checks.append((f"{label} ({cut:.0%} {'≥' if held else '<'} {p['min_reduction']:.0%})", held))
    if not checks:
        why = (f"no {p['seminorm']} rows beside {p['plain']} ones; the {p['plain']}'s NFE-B alone is "
               + ", ".join(f"{f.name.split(':')[0]} {f.value:.1f}" for f in plain_only) if plain_only else
               f"no {p['plain']} rows of an adaptive method with NFE counts")
        return Outcome(NOT_MEASURED, why, plain_only)
    return decide(checks, figures + plain_only, "pair")


@rule("solver_swap", workloads=("train", "mnist"),
      params={"methods": ([str], METHODS), "min_change": (float, "nonneg")}, defaults={"min_change": 0.0})
def solver_swap(rows: pd.DataFrame, p: dict[str, Any]) -> Outcome:
    """A model trained with one of the methods loses accuracy when evaluated with the reference solver (the
    solver-swap check): its final MSE rises by more than min_change (relative), or its test accuracy falls by
    more than min_change percentage points, in every group.

    Arguments:
        rows: the run's ok train rows (``swap_mse_delta``) or mnist rows (``swap_acc_delta``) that
            pass the claim's filters.
        p: ``methods`` (the training methods judged), ``min_change``.

    Returns:
        The verdict, with the relative MSE increase or the accuracy drop (pp) per group.
    """
    checks, figures = [], []
    mse = "swap_mse_delta" in rows
    chosen = rows[rows["method"].isin(p["methods"])]
    for label, g in groups(chosen, _GROUP):
        if mse:
            delta, after = median(g, "swap_mse_delta"), median(g, "swap_mse")
            if not np.isfinite([delta, after]).all():
                continue
            before = after - delta
            loss = delta / before if before > 0 else float("inf") if delta > 0 else 0.0
            detail, shown = f"final MSE {before:.4g} → {after:.4g}", f"MSE {100 * loss:+.3g} %"
            figures.append(Figure(f"{label}: relative final-MSE increase on the swap", loss, detail, case_ids(g)))
        else:
            delta, after = median(g, "swap_acc_delta"), median(g, "swap_test_acc")
            if not np.isfinite([delta, after]).all():
                continue
            loss = -100 * delta + 0.0  # + 0.0: no negative zero
            detail = f"test accuracy {100 * (after - delta):.2f} % → {100 * after:.2f} %"
            shown = f"accuracy {100 * delta:+.2f} pp"
            figures.append(Figure(f"{label}: test-accuracy drop on the swap (pp)", loss, detail, case_ids(g)))
        solver = next((s for s in g.get("swap_solver", pd.Series(dtype=object)) if isinstance(s, str) and s), "?")
        held = loss > p["min_change"]
        limit = f"{100 * p['min_change']:g} %" if mse else f"{p['min_change']:g} pp"
        checks.append((f"{label} → {solver} ({shown}; loses {'more' if held else 'no more'} than {limit})", held))
    return decide(checks, figures, f"model trained with {'/'.join(p['methods'])} with a swap figure")


__all__ = ["accuracy_reached", "cost_vs_gain", "memory_class", "nfe_ratio", "parameter_count",
           "seminorm_saving", "solver_swap", "test_error"]
