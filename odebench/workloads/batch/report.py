"""The ``batch`` workload's report: its summary table, the inflation by spread, every case, and figures."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from odebench.records import NOT_RUN, to_frame
from odebench.tables import UNSTABLE, clip, fmt, unstable
from odebench.workloads.batch.analysis import LINE, at_largest, best_slice
from odebench.workloads.batch.schema import AXES, COLUMNS

#: The record layout :func:`odebench.records.to_frame` needs (the workload's axes and columns).
LAYOUT = SimpleNamespace(axes=AXES, columns=COLUMNS)

SUMMARY_NOTE = (
    "One row per case at the largest batch size N of each problem. Each case solves the batch jointly "
    "(one solve of all N samples) and sample by sample (N solves of one), through the same plugin, method "
    "and tolerances, forward only. stepping: the plugin's declared batch_stepping. steps: attempted steps "
    "per sample, mean/max over the samples (per-sample counts where the plugin reports them, as torchode "
    "does; otherwise every sample takes the batch's steps). inflation: joint steps per sample (mean) over "
    "the mean solo steps. NFE: vector-field calls counted by the harness; one joint call evaluates every "
    "sample, so the joint NFE is every sample's, and NFE × (joint NFE over mean solo NFE) is what the batch "
    "pays in evaluations, above 1 also for per-sample stepping, whose calls evaluate finished samples too. "
    "err: largest absolute error of a sample against its own float64 reference (scipy, tight tolerance), "
    "the worst sample. ms/sample: median time of a pass over N (warm-up first, GC off, device synced); "
    "compile s: compile time of both modes, never in a timing.")


def _row_status(r: pd.Series) -> str:
    """``ok``, or the status with the start of its message."""
    if r["status"] == "ok":
        return "ok"
    msg = r["message"] if isinstance(r["message"], str) else ""
    return f"{r['status']} ({clip(msg, 70)})" if msg else str(r["status"])


def _ms(median: Any, iqr: Any) -> str:
    """Seconds as milliseconds, marked unstable where the IQR is above half the median."""
    if median is None or pd.isna(median):
        return "–"
    mark = f" {UNSTABLE}" if unstable(float(median), None if pd.isna(iqr) else float(iqr)) else ""
    return fmt(float(median) * 1e3, ".3g") + mark


def _pair(a: Any, b: Any, spec: str) -> str:
    """``mean/max`` of a per-sample figure."""
    if a is None or pd.isna(a):
        return "–"
    return f"{fmt(float(a), spec)}/{fmt(float(b), '.0f')}"


def _num(x: Any, spec: str) -> str:
    """``x`` formatted, an en dash where missing."""
    return "–" if x is None or pd.isna(x) else fmt(float(x), spec)


def _compile(r: pd.Series) -> str:
    """Compile seconds of the joint and the solo mode, or an en dash for a plugin that compiles nothing."""
    parts = [r["compile_s_joint"], r["compile_s_solo"]]
    if all(p is None or pd.isna(p) for p in parts):
        return "–"
    return "/".join(_num(p, ".1f") for p in parts)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per case at each problem's largest batch size: steps, inflation, NFE, errors, times.

    Arguments:
        df: the rows of the cases that ran (:func:`odebench.records.to_frame` layout).

    Returns:
        The table, sorted by problem, plugin, method and spread.
    """
    top = at_largest(df, "batch").sort_values(LINE + ["spread"], kind="stable")
    rows = []
    for _, r in top.iterrows():
        rows.append({
            "problem": r["problem"], "plugin": r["plugin"], "method": r["method"],
            "stepping": r["batch_stepping"] if isinstance(r["batch_stepping"], str) else "–",
            "N": int(r["batch"]), "spread": f"{r['spread']:g}", "status": _row_status(r),
            "steps joint": _pair(r["steps_joint_mean"], r["steps_joint_max"], ".1f"),
            "steps solo": _pair(r["steps_solo_mean"], r["steps_solo_max"], ".1f"),
            "inflation": _num(r["step_inflation"], ".2f"),
            "NFE joint": _num(r["nfe_joint"], ".0f"),
            "NFE solo": _num(r["nfe_solo_mean"], ".1f"),
            "NFE ×": _num(r["nfe_inflation"], ".2f"),
            "err joint": _num(r["err_joint_max"], ".1e"),
            "err solo": _num(r["err_solo_max"], ".1e"),
            "ms/sample joint": _ms(r["s_per_sample_joint"], r["s_per_sample_joint_iqr"]),
            "ms/sample solo": _ms(r["s_per_sample_solo"], r["s_per_sample_solo_iqr"]),
            "compile s": _compile(r),
        })
    return pd.DataFrame(rows)


def inflation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Step inflation (NFE inflation in parentheses) by spread, at each problem's largest batch size.

    Arguments:
        df: the run's rows; only ok rows are used.

    Returns:
        One row per problem × plugin × method with its declared stepping, one column per spread.
    """
    ok = at_largest(df[df["status"] == "ok"], "batch")
    if ok.empty:
        return pd.DataFrame()
    spreads = sorted(ok["spread"].unique())
    rows = []
    for key, g in ok.groupby(LINE, sort=True):
        row = dict(zip(LINE, key))
        row["stepping"] = g["batch_stepping"].iloc[0]
        row["N"] = int(g["batch"].iloc[0])
        by = {float(s): r for s, r in zip(g["spread"], g.itertuples())}
        for s in spreads:
            r = by.get(float(s))
            row[f"spread {s:g}"] = "–" if r is None else \
                f"{_num(r.step_inflation, '.2f')} ({_num(r.nfe_inflation, '.2f')})"
        rows.append(row)
    return pd.DataFrame(rows)


def sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """The inflation by spread, every case that ran, and a flag where the library's NFE disagrees.

    Arguments:
        records: every record of the run.
        config: the run's suite settings (unused: the records carry what the tables show).

    Returns:
        Markdown lines.
    """
    df = to_frame(records, LAYOUT)
    df = df[~df["status"].isin(NOT_RUN)]
    out: list[str] = []
    table = inflation_table(df)
    if not table.empty:
        out += ["## Step inflation by spread", "",
                "Joint steps per sample over the mean solo steps, at each problem's largest batch size; in "
                "parentheses the same ratio of vector-field calls. stepping is what the plugin declares.", "",
                table.to_markdown(index=False), ""]
    ok = df[df["status"] == "ok"].sort_values(LINE + ["batch", "spread"], kind="stable")
    if not ok.empty:
        out += ["## Every case", "",
                "| problem | plugin | method | N | spread | steps joint | steps solo | inflation | NFE × | "
                "err joint | err solo | ms/sample joint | ms/sample solo |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in ok.iterrows():
            out.append(f"| {r['problem']} | {r['plugin']} | {r['method']} | {int(r['batch'])} | {r['spread']:g} | "
                       f"{_pair(r['steps_joint_mean'], r['steps_joint_max'], '.1f')} | "
                       f"{_pair(r['steps_solo_mean'], r['steps_solo_max'], '.1f')} | "
                       f"{_num(r['step_inflation'], '.2f')} | {_num(r['nfe_inflation'], '.2f')} | "
                       f"{_num(r['err_joint_max'], '.1e')} | {_num(r['err_solo_max'], '.1e')} | "
                       f"{_ms(r['s_per_sample_joint'], r['s_per_sample_joint_iqr'])} | "
                       f"{_ms(r['s_per_sample_solo'], r['s_per_sample_solo_iqr'])} |")
        out.append("")
        disagree = ok[ok["nfe_agree"].map(lambda v: v is False)]
        if not disagree.empty:
            out += ["**The library's own NFE differs from the harness's count** in: "
                    + ", ".join(sorted(set(disagree["case_id"]))), ""]
    return out


def _label(key: tuple, stepping: Any) -> str:
    """A line's legend: the plugin and its declared batch stepping."""
    return f"{key[1]} ({stepping})" if isinstance(stepping, str) else key[1]


def figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """``inflation_vs_spread.png`` (one line per plugin, at the largest batch size) and
    ``time_per_sample_vs_batch.png`` (one line per plugin × mode, at the spread with the most batch
    sizes); one panel per problem × method.

    Arguments:
        records: every record of the run (only ok ones are drawn).
        out: the figures folder (created when there is something to draw).

    Returns:
        The paths written; none when no case ran ok.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = to_frame(records, LAYOUT)
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return []
    out.mkdir(exist_ok=True)
    panels = sorted(ok.groupby(["problem", "method"]).groups)
    plugins = sorted(ok["plugin"].unique())
    colours = {p: f"C{i % 10}" for i, p in enumerate(plugins)}
    paths = []

    def grid():
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
        return fig, dict(zip(panels, axes[0]))

    fig, axes = grid()
    top = at_largest(ok, "batch")
    for (problem, method), ax in axes.items():
        g = top[(top["problem"] == problem) & (top["method"] == method)]
        for key, line in g.groupby(LINE, sort=True):
            line = line.sort_values("spread")
            ax.plot(line["spread"], line["step_inflation"], "o-", color=colours[key[1]], lw=1.4,
                    label=_label(key, line["batch_stepping"].iloc[0]))
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_xscale("log")
        n = int(g["batch"].iloc[0]) if len(g) else 0
        what = "μ_max" if problem == "vdp" else "largest initial-state scale"
        ax.set_xlabel(f"spread ({what}; smallest 1)")
        ax.set_ylabel("step inflation: joint steps / mean solo steps")
        ax.set_title(f"{problem}, {method}, N = {n}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "inflation_vs_spread.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = grid()
    chosen = best_slice(ok, "batch", "spread")
    reps = int(ok["repeats"].dropna().min()) if ok["repeats"].notna().any() else 0
    for (problem, method), ax in axes.items():
        g = chosen[(chosen["problem"] == problem) & (chosen["method"] == method)]
        for key, line in g.groupby(LINE, sort=True):
            line = line.sort_values("batch")
            for col, style, mode in (("s_per_sample_joint", "o-", "joint"), ("s_per_sample_solo", "s--", "solo")):
                ax.plot(line["batch"], line[col].astype(float) * 1e3, style, color=colours[key[1]], lw=1.3,
                        label=f"{key[1]} {mode}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size N")
        ax.set_ylabel("time per sample, median (ms)")
        spread = f"{g['spread'].iloc[0]:g}" if len(g) else "–"
        # One timed pass per point is noise, not a trend: the title says so.
        caveat = "1 repeat per point: noisy" if reps <= 1 else f"median of {reps} repeats"
        ax.set_title(f"{problem}, {method}, spread {spread} — {caveat}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "time_per_sample_vs_batch.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
