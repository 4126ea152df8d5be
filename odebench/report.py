"""Records → tidy DataFrame → ``results.csv`` (+ parquet), ``report.md`` and ``figures/``.

Everything here is rendered from ``records.jsonl`` alone, so ``odebench report RUN_DIR``
reproduces a report without re-running anything. The table's columns, the summary, the
figures and any extra sections come from the run's workload (:mod:`odebench.workloads`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odebench.runner import read_records
from odebench.workloads import get_workload

#: Columns every record has, whatever its workload; the workload's ``COLUMNS`` follow.
CASE_COLUMNS = ["suite", "workload", "profile", "case_id", "plugin", "framework", "plugin_version", "method",
                "grad_mode", "rtol", "atol", "seed", "device"]
OUTCOME_COLUMNS = ["status", "message", "case_wall_s"]


def workload_of(records: list[dict[str, Any]]):
    return get_workload(records[0].get("workload", "train"))


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: the case, the workload's axes, the outcome, the workload's columns."""
    workload = workload_of(records)
    columns = CASE_COLUMNS + list(workload.AXES) + OUTCOME_COLUMNS + list(workload.COLUMNS)
    df = pd.DataFrame([{c: r.get(c) for c in columns} for r in records], columns=columns)
    for col in ("rtol", "atol", "case_wall_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def fmt(x: Any, spec: str) -> str:
    """``format(x, spec)``, or an en dash for a missing or non-finite value."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return format(x, spec)


def groups(df: pd.DataFrame, keys: list[str]):
    """Yield ``(key, group, ok_rows, status_text)`` per group of ``keys`` (missing tolerances kept)."""
    keyed = df.assign(rtol=df["rtol"].fillna(-1), atol=df["atol"].fillna(-1))
    for key, g in keyed.groupby(keys, sort=False, dropna=False):
        ok = g[g["status"] == "ok"]
        status = ", ".join(f"{s}×{n}" if n > 1 else s for s, n in g["status"].value_counts().items())
        msg = next((m for m in g["message"] if isinstance(m, str) and m), "")
        if status != "ok" and msg:
            status += f" ({clip(msg, 70)})"
        yield key, g, ok, status


def clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters for display, cut at a word boundary with an ellipsis.

    Records keep the whole message; only tables shorten it. A single word longer than half the
    width (a path) is cut inside rather than dropped whole.

    Arguments:
        text: the message.
        width: the most characters to show, the ellipsis included.
    """
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    if space > width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + "…"


#: Statuses of cases that never ran: listed under "Not run", not in the summary table.
NOT_RUN = ("unsupported", "unavailable")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The run's summary table (the workload's ``summary``) over the cases that ran."""
    ran = df[~df["status"].isin(NOT_RUN)]
    if ran.empty:
        return ran
    return get_workload(ran["workload"].iloc[0] or "train").summary(ran)


def summary_markdown(df: pd.DataFrame) -> str:
    """The summary table as markdown, or, when no case ran, one line saying so and why (an empty
    table would print a bare header of the workload's columns)."""
    table = summary(df)
    if not table.empty:
        return table.to_markdown(index=False)
    why = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
    return f"No case ran: every selected case is unsupported or unavailable here ({why}); see Not run."


def not_run(df: pd.DataFrame) -> list[str]:
    """Markdown bullets: the cases that did not run, grouped by plugin and reason."""
    skipped = df[df["status"].isin(NOT_RUN)]
    lines = []
    for (plugin, status, message), g in skipped.groupby(["plugin", "status", "message"], sort=False,
                                                         dropna=False):
        combos = ", ".join(dict.fromkeys(f"{m}/{gm}" for m, gm in zip(g["method"], g["grad_mode"])))
        lines.append(f"- **{plugin}** {status}: {combos} — {message}")
    return lines


def render(run_dir: str | Path) -> Path:
    """Write ``results.csv`` (+ ``results.parquet``), ``figures/*.png`` and ``report.md``.

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: when the folder has no records.
    """
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    if not records:
        raise FileNotFoundError(f"no records in {run_dir / 'records.jsonl'}")
    workload = workload_of(records)
    df = to_frame(records)
    df.to_csv(run_dir / "results.csv", index=False)
    try:
        df.to_parquet(run_dir / "results.parquet", index=False)
    except ImportError:
        pass  # parquet needs pyarrow, an optional extra
    figures = workload.figures(records, run_dir / "figures")
    info = _read_json(run_dir / "run.json")
    env = _read_json(run_dir / "env.json")
    libs = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items() if v)
    lines = [f"# odebench report: {records[0].get('suite', '?')} ({info.get('profile', '?')} profile)", "",
             f"- run: `{run_dir.name}`, {len(records)} cases, {sum(r['status'] == 'ok' for r in records)} ok",
             f"- machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores; "
             f"python {env.get('python', '?')}; {libs}",
             f"- commit: `{env.get('git_commit') or 'unknown'}`; command: `{env.get('command', '')}`",
             f"- wall time of all cases: {sum(r.get('case_wall_s') or 0 for r in records):.1f} s", "",
             "## Summary", "", workload.SUMMARY_NOTE, "", summary_markdown(df), ""]
    skipped = not_run(df)
    if skipped:
        lines += ["### Not run", "", *skipped, ""]
    lines += workload.sections(records, _suite_config(info))
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _suite_config(info: dict[str, Any]) -> dict[str, Any]:
    """The run's suite settings, re-read from its suite file when it is still there."""
    from odebench.suite import SuiteError, load_suite

    try:
        return load_suite(info["suite_path"], info.get("profile")).config
    except (KeyError, SuiteError):
        return {}
