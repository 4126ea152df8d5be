"""The ``workprecision`` report: the matched-error table (the summary, first in the report),
the references and walls, the gradient comparisons, the loop times, and the figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from odebench.records import NOT_RUN, to_frame
from odebench.tables import clip, fmt
from odebench.workloads.workprecision.analysis import (
    Curve,
    below_floor,
    check_references,
    cost_at_error,
    curves,
    detect_wall,
    error_at_cost,
    median_ratio,
    ranks,
)
from odebench.workloads.workprecision.schema import AXES, COLUMNS, DEFAULTS, ERRORS

#: The record layout :func:`odebench.records.to_frame` needs (the workload's axes and columns).
LAYOUT = SimpleNamespace(axes=AXES, columns=COLUMNS)
#: The reference disagreement column of each error measure.
REF_COLUMN = {"final": "ref_final", "l2": "ref_l2", "L∞": "ref_linf"}

SUMMARY_NOTE = (
    "Matched-error table: the cost of each plugin × method (and grad mode, for gradients) at each target "
    "error, interpolated log-log between the two neighbouring points of its sweep that bracket the target "
    "(tolerances 1e-3 … 1e-10 with a fixed atol/rtol ratio, or doubling step counts). ms: median wall time of "
    "one solve (gradient rows: one forward+backward) with (#rank), cheapest first within the problem and "
    "target; NFE: forward evaluations (gradient rows: forward + backward). '≤' marks a target already met by "
    "the first successful point of the sweep (an upper bound); 'not reached': the curve never gets there; "
    "'below ref.': the target is below what the references can vouch for. The error is the one named in the "
    "title (solve rows) or the gradient's relative L2 error (gradient rows); 'best' is the smallest reached "
    "above the reference floor. Timings from a shared machine are indicative only.")


def _params(df: pd.DataFrame) -> dict[str, Any]:
    """The report settings the records carry (the defaults where none does)."""
    for text in df.get("report_params", pd.Series(dtype=object)).dropna():
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            continue
    return dict(DEFAULTS["report"], margin=10.0)


def _floors(df: pd.DataFrame, params: dict[str, Any]) -> dict[tuple[str, str], float]:
    """Per (problem, task): the smallest error that may be shown (margin × the references' disagreement)."""
    col = REF_COLUMN[params["error"]]
    out = {}
    for (problem, task), g in df.groupby(["problem", "task"], sort=False):
        which = "grad_ref_xcheck" if task == "gradient" else col
        dis = pd.to_numeric(g[which], errors="coerce").dropna()
        out[(problem, task)] = params["margin"] * float(dis.iloc[0]) if len(dis) else 0.0
    return out


def _ran(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["status"].isin(NOT_RUN)]


def _shown(df: pd.DataFrame, params: dict[str, Any]) -> tuple[dict[tuple, Curve], dict[tuple, float]]:
    """The curves with every point below its problem's floor removed, and the floors."""
    floors = _floors(df, params)
    raw = curves(df, ERRORS[params["error"]])
    return {k: below_floor(c, floors.get((k[0], k[1]), 0.0)) for k, c in raw.items()}, floors


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The matched-error table: per problem × task × plugin × method (× grad mode), the cost at each target."""
    df = _ran(df)
    params = _params(df)
    shown, floors = _shown(df, params)
    targets = sorted(params["targets"], reverse=True)
    cells: dict[tuple, dict[float, tuple]] = {}
    for key, c in shown.items():
        floor = floors.get((key[0], key[1]), 0.0)
        cells[key] = {t: (None, None) if t < floor else (cost_at_error(c.error, c.time, t),
                                                          cost_at_error(c.error, c.nfe, t)) for t in targets}
    rank_of: dict[tuple, dict[float, int]] = {}
    for group in {(k[0], k[1]) for k in shown}:
        keys = [k for k in shown if (k[0], k[1]) == group]
        for t in targets:
            r = ranks({k: cells[k][t][0].cost for k in keys if cells[k][t][0] is not None})
            for k, v in r.items():
                rank_of.setdefault(k, {})[t] = v
    rows = []
    for key, c in shown.items():
        problem, task, plugin, method, grad = key
        row = {"problem": problem, "task": task, "plugin": plugin, "method": method,
               "grad": grad if task == "gradient" else "–", "points": _status_text(c)}
        best = np.nanmin(c.error) if np.isfinite(c.error).any() else math.nan
        row["best"] = fmt(best, ".1e")
        for t in targets:
            time_match, nfe_match = cells[key][t]
            row[f"@{t:.0e} ms"] = _cell(time_match, 1e3, rank_of.get(key, {}).get(t))
            row[f"@{t:.0e} NFE"] = _cell(nfe_match, 1.0, None)
        reached = [t for t in targets if cells[key][t][0] is not None and cells[key][t][0].reached]
        tightest = reached[-1] if reached else None
        # Order within a problem: solves before gradients, then the lines that reach the tightest
        # target first, cheapest first there.
        row.update(_task=task != "solve", _reached=-len(reached),
                   _cost=cells[key][tightest][0].cost if tightest else math.inf)
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    problems = list(dict.fromkeys(out["problem"]))
    out["_p"] = out["problem"].map(problems.index)
    out = out.sort_values(["_p", "_task", "_reached", "_cost"], kind="stable")
    out = out.rename(columns={"best": f"best ({params['error']})"})
    return out.drop(columns=["_p", "_task", "_reached", "_cost"]).reset_index(drop=True)


def _cell(match, scale: float, rank: int | None) -> str:
    if match is None:
        return "below ref."
    if not match.reached:
        return "not reached"
    text = f"{match.cost * scale:.3g}" if scale != 1.0 else f"{match.cost:.0f}"
    if match.kind == "bound":
        text = "≤ " + text
    return text + (f" (#{rank})" if rank else "")


def _status_text(c: Curve) -> str:
    counts = pd.Series(c.status).value_counts()
    return ", ".join(f"{s}×{n}" for s, n in counts.items())


# --------------------------------------------------------------------------- sections
def sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """References and walls, gradient comparisons, loop times, and failed points."""
    df = _ran(to_frame(records, LAYOUT))
    if df.empty:
        return []
    params = _params(df)
    raw = curves(df, ERRORS[params["error"]])
    floors = _floors(df, params)
    out = ["## References and walls", ""]
    for problem, g in df.groupby("problem", sort=False):
        for task, gt in g.groupby("task", sort=False):
            keys = [k for k in raw if k[0] == problem and k[1] == task]
            errs = np.concatenate([raw[k].error for k in keys]) if keys else np.array([])
            if task == "gradient":
                dis = pd.to_numeric(gt["grad_ref_xcheck"], errors="coerce").dropna()
                kinds = gt["grad_ref_kind"].dropna()
                fd = pd.to_numeric(gt["grad_ref_fd"], errors="coerce").dropna()
                what = f"**{problem}**, gradient ({kinds.iloc[0] if len(kinds) else 'no reference'})"
                if len(fd):
                    what += f"; central differences agree to {fd.iloc[0]:.1e}"
            else:
                dis = pd.to_numeric(gt[REF_COLUMN[params["error"]]], errors="coerce").dropna()
                kinds = gt["ref_kind"].dropna()
                what = f"**{problem}** ({kinds.iloc[0] if len(kinds) else 'no reference'})"
            if task == "solve" and len(kinds) and str(kinds.iloc[0]).startswith("exact"):
                out.append(f"- {what}: exact solution; no floor.")
            elif len(dis):
                out.append("- " + check_references(float(dis.iloc[0]), errs, params["margin"]).sentence(what))
            elif len(kinds):  # a user's own reference, or one plugin's: nothing independent to compare
                out.append(f"- {what}: one reference, with no independent second one; no floor.")
            for k in keys:
                wall = detect_wall(raw[k].error, floors.get((problem, task)), params["flat_decades"],
                                   params["wall_points"])
                if wall:
                    out.append(f"  - ⚠ wall: {raw[k].label} {wall.sentence()}")
    if "gate_note" in df:  # a user's problem: whether its frameworks compute the same field
        for problem, note in df.dropna(subset=["gate_note"]).groupby("problem", sort=False)["gate_note"].first().items():
            out.append(f"- **{problem}**, fairness gate: {note}.")
    out.append("")
    out += _gradient_lines(df, raw)
    out += _loop_table(df)
    out += _failures(df)
    return out


def _gradient_lines(df: pd.DataFrame, raw: dict[tuple, Curve]) -> list[str]:
    """Per problem: seminorm against plain adjoint backward NFE; adjoint against backprop at equal cost."""
    grad = df[(df["task"] == "gradient") & (df["status"] == "ok")]
    if grad.empty:
        return []
    out = ["## Gradients", ""]
    for problem, g in grad.groupby("problem", sort=False):
        parts, all_pairs = [], []
        for (plugin, method), gm in g.groupby(["plugin", "method"], sort=False):
            plain = gm[gm["grad_mode"] == "adjoint"].set_index("rtol")["nfe_bwd"]
            semi = gm[gm["grad_mode"] == "adjoint-seminorm"].set_index("rtol")["nfe_bwd"]
            pairs = [(float(semi[r]), float(plain[r])) for r in semi.index.intersection(plain.index)]
            if pairs:
                all_pairs += pairs
                parts.append(f"{plugin} {method} {median_ratio(pairs) - 1:+.0%} ({len(pairs)} tolerances)")
        if parts:
            out.append(f"- **{problem}**: adjoint-seminorm's backward NFE against the plain adjoint's at the same "
                       f"tolerance: median reduction {1 - median_ratio(all_pairs):.0%} over {len(all_pairs)} pairs "
                       "(change per plugin × method: " + "; ".join(parts) + ").")
        parts = []
        for (plugin, method), _gm in g.groupby(["plugin", "method"], sort=False):
            bp = raw.get((problem, "gradient", plugin, method, "backprop"))
            adj = raw.get((problem, "gradient", plugin, method, "adjoint"))
            if bp is None or adj is None:
                continue
            pairs = [(e, error_at_cost(bp.time, bp.error, t)) for t, e in zip(adj.time, adj.error)]
            pairs = [(a, b) for a, b in pairs if np.isfinite(a) and np.isfinite(b)]
            if pairs:
                parts.append(f"{plugin} {method}: {median_ratio(pairs):.2g}× backprop's ({len(pairs)} points)")
            else:
                parts.append(f"{plugin} {method}: no overlapping cost range")
        if parts:
            out.append(f"- **{problem}**: the adjoint's gradient error at the forward+backward time of backprop "
                       "(interpolated on backprop's curve), median: " + "; ".join(parts) + ".")
    return out + [""]


def _loop_table(df: pd.DataFrame) -> list[str]:
    """Median loop time per step and field time per evaluation, per plugin × method and problem."""
    ok = df[(df["task"] == "solve") & (df["status"] == "ok")].copy()
    if ok.empty:
        return []
    ok["loop_us"] = pd.to_numeric(ok["loop_s_per_step"], errors="coerce") * 1e6
    ok["field_us"] = pd.to_numeric(ok["field_s"], errors="coerce") / pd.to_numeric(ok["nfe_fwd"], errors="coerce") * 1e6
    problems = list(dict.fromkeys(ok["problem"]))
    out = ["## Loop time", "",
           "The solver's own time per step beyond the vector field's (µs, median over the sweep): the solve's "
           "fastest repeat minus the field evaluated alone at the solve's states, per attempted step; in "
           "brackets the field's µs per evaluation.", "",
           "| plugin | method | " + " | ".join(problems) + " |", "|---|---|" + "---|" * len(problems)]
    for (plugin, method), g in ok.groupby(["plugin", "method"], sort=False):
        cells = []
        for p in problems:
            gp = g[g["problem"] == p]
            loop, field = gp["loop_us"].median(), gp["field_us"].median()
            cells.append(f"{fmt(loop, '.3g')} ({fmt(field, '.3g')})" if len(gp) else "–")
        out.append(f"| {plugin} | {method} | " + " | ".join(cells) + " |")
    return out + [""]


def _failures(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return []
    out = ["## Failed points", "", "Gaps in the figures; a result, not a crash.", ""]
    for (problem, task, plugin, method, grad, status), g in bad.groupby(
            ["problem", "task", "plugin", "method", "grad_mode", "status"], sort=False):
        where = ", ".join(f"n={int(n)}" if n else f"rtol={r:g}" for n, r in zip(g["n_steps"].fillna(0), g["rtol"]))
        msg = next((m for m in g["message"] if isinstance(m, str) and m), "")
        label = f"{plugin} {method}" + (f" {grad}" if task == "gradient" else "")
        out.append(f"- {problem} {task}: {label}: {status} at {where} — {clip(msg, 120)}")
    return out + [""]


# --------------------------------------------------------------------------- figures
_MARKERS = "osD^v<>phX*P8"
_GRAD_MARKERS = {"backprop": "o", "adjoint": "s", "adjoint-seminorm": "D", "checkpoint": "^"}


def _plottable(c: Curve, max_error: float, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, error)`` with NaN where the point failed or its error is meaningless (above max_error)."""
    e = np.where(np.isfinite(c.error) & (c.error <= max_error), c.error, np.nan)
    return np.where(np.isfinite(e), x, np.nan), e


#: Legend entries (fontsize 7) that fit one column of a 5.5-inch-high figure.
LEGEND_ROWS = 26


def legend_columns(entries: int) -> int:
    """Columns a figure's legend needs for ``entries`` lines to fit its height (at least 1)."""
    return max(1, math.ceil(entries / LEGEND_ROWS))


def figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per problem: error against time and against NFE (log-log, a line per plugin × method, failed points
    as gaps); per neural problem: the gradient's error against forward+backward time (a marker per grad mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    df = _ran(to_frame(records, LAYOUT))
    if df.empty or not (df["status"] == "ok").any():
        return []
    params = _params(df)
    shown, floors = _shown(df, params)
    raw = curves(df, ERRORS[params["error"]])
    out.mkdir(exist_ok=True)
    plugins = list(dict.fromkeys(df["plugin"]))
    colour = {p: f"C{i % 10}" for i, p in enumerate(plugins)}
    methods = list(dict.fromkeys(df["method"]))
    marker = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(methods)}
    paths = []
    for problem in dict.fromkeys(df["problem"]):
        for task in ("solve", "gradient"):
            keys = [k for k in shown if k[0] == problem and k[1] == task]
            if not keys or not any(np.isfinite(shown[k].error).any() for k in keys):
                continue
            floor = floors.get((problem, task), 0.0)
            ncols = 2 if task == "solve" else 1
            # A gradient figure has a line per plugin × method × grad mode (40 for the default
            # profile): the legend takes as many columns as it needs to stay on the canvas.
            legend_cols = legend_columns(len(keys))
            fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols + 3 * legend_cols, 5.5), squeeze=False)
            panels = [("time", "median time per solve (ms)"), ("nfe", "NFE (forward)")] if task == "solve" else \
                [("time", "median forward+backward time (ms)")]
            for ax, (what, xlabel) in zip(axes[0], panels):
                for k in keys:
                    c = shown[k]
                    x = c.time * 1e3 if what == "time" else c.nfe
                    xs, es = _plottable(c, params["max_error"], x)
                    wall = detect_wall(raw[k].error, floor, params["flat_decades"], params["wall_points"])
                    label = c.label + (f" ({c.failed} failed)" if c.failed else "") + (" [wall]" if wall else "")
                    style = dict(color=colour[k[2]], lw=1.3, ms=5, label=label,
                                 ls="--" if c.fixed else "-",
                                 marker=_GRAD_MARKERS.get(k[4], "o") if task == "gradient" else marker[k[3]])
                    ax.plot(xs, es, **style)
                if floor > 0:
                    ax.axhline(floor, color="grey", ls=":", lw=1)
                    ax.annotate("reference floor", (0.01, floor), xycoords=("axes fraction", "data"), fontsize=7,
                                color="grey", va="bottom")
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short range
                ax.set_xlabel(xlabel)
                ax.set_ylabel("gradient relative L2 error" if task == "gradient" else f"{params['error']} error")
                ax.grid(alpha=0.3, which="both")
            axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=legend_cols)
            title = f"{problem}: {'gradient ' if task == 'gradient' else ''}work-precision"
            fig.suptitle(title + " (dashed: fixed steps; gaps: failed points; nothing below the floor)", fontsize=10)
            fig.tight_layout()
            paths.append(out / f"workprecision_{problem}{'_gradient' if task == 'gradient' else ''}.png")
            fig.savefig(paths[-1], dpi=100)
            plt.close(fig)
    return paths
