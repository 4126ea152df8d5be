"""Records → tidy DataFrame → ``results.csv`` (+ parquet), ``report.md`` and ``figures/``.

Everything here is rendered from ``records.jsonl`` alone, so ``odebench report RUN_DIR``
reproduces a report without re-running anything. The table's columns, the summary, the
figures and any extra sections come from the run's workload (:mod:`odebench.workloads`); the
Claims section is computed from the records by the suite's claim rules (:mod:`odebench.claims`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from odebench.records import NOT_RUN, in_case_order, not_run, read_records
from odebench.records import to_frame as records_frame
from odebench.registry import get_workload
from odebench.tables import UNSTABLE, UNSTABLE_NOTE, clip  # noqa: F401 - clip is part of the report API
from odebench.workload import Workload


def workload_of(records: list[dict[str, Any]]) -> Workload:
    """The workload that wrote ``records`` (``train`` for records older than the field)."""
    return get_workload(records[0].get("workload") or "train")


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record (see :func:`odebench.records.to_frame`), for the records' workload."""
    return records_frame(records, workload_of(records))


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
    info = _read_json(run_dir / "run.json")
    # A run on several workers appends records as cases finish: the tables follow the run's case order.
    records = in_case_order(records, info.get("cases") or [])
    workload = workload_of(records)
    df = to_frame(records)
    df.to_csv(run_dir / "results.csv", index=False)
    try:
        df.to_parquet(run_dir / "results.parquet", index=False)
    except ImportError:
        pass  # parquet needs pyarrow, an optional extra
    figures = workload.figures(records, run_dir / "figures")
    env = _read_json(run_dir / "env.json")
    libs = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items() if v)
    table = summary_markdown(df)
    lines = [f"# odebench report: {records[0].get('suite', '?')} ({info.get('profile', '?')} profile)", "",
             f"- run: `{run_dir.name}`, {len(records)} cases, {sum(r['status'] == 'ok' for r in records)} ok",
             f"- machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores; threads per case: "
             f"{_threads(records, env)}; "
             f"python {env.get('python', '?')}; {libs}",
             f"- commit: `{env.get('git_commit') or 'unknown'}`; command: `{env.get('command', '')}`",
             f"- wall time of all cases: {sum(r.get('case_wall_s') or 0 for r in records):.1f} s",
             *executor_lines(records, env), "",
             "## Summary", "", workload.summary_note, ""]
    note = concurrency_note(records)
    lines += [note, "", table, ""] if note else [table, ""]
    if UNSTABLE in table:
        lines += [UNSTABLE_NOTE, ""]
    skipped = not_run(df)
    if skipped:
        lines += ["### Not run", "", *skipped, ""]
    config = _suite_config(info)
    lines += claims_section(df, config, run_dir, info.get("profile", ""))
    lines += workload.sections_md(records, config)
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def claims_section(df: pd.DataFrame, config: dict[str, Any], run_dir: Path, profile: str) -> list[str]:
    """The report's Claims section, computed now from the run's table, and ``claims.json`` beside it.

    Arguments:
        df: the run's table.
        config: the run's suite settings (empty when the suite file cannot be read).
        run_dir: the run folder (its name is the run id the figures cite).
        profile: the profile the run used.

    Returns:
        Markdown lines: nothing for a suite without claims, one line when the suite file is gone.
    """
    from odebench import claims

    if not config:
        return ["## Claims", "", "Not computed: the suite file named in run.json cannot be read, and the claims "
                "live there.", ""]
    results = claims.evaluate(config.get("claims", {}), df, run=run_dir.name, profile=profile)
    if results:
        (run_dir / "claims.json").write_text(json.dumps([r.to_dict() for r in results], indent=1, default=str))
    return claims.markdown(results)


def concurrency_note(records: list[dict[str, Any]]) -> str | None:
    """The warning above a table whose cases shared a host with other cases, or None.

    A Dask run (``odebench run --jobs N`` / ``--dask``) records, per case, the most cases that ran
    on its host at once (``concurrent_cases``); a serial run records nothing and gets no note.
    """
    shared = [r for r in records if isinstance(r.get("concurrent_cases"), int) and r["concurrent_cases"] > 1]
    if not shared:
        return None
    ran = [r for r in records if r.get("concurrent_cases") is not None]
    most = max(r["concurrent_cases"] for r in shared)
    return (f"**{len(shared)} of {len(ran)} cases ran while other cases ran on the same host (up to {most} at "
            "once): their times and measured memory are not comparable with an exclusive run.** NFE, steps, "
            "errors and saved bytes are unaffected. For a timing table, run without --jobs, or on workers that "
            "run one case per host.")


def executor_lines(records: list[dict[str, Any]], env: dict[str, Any]) -> list[str]:
    """Report bullets: where the cases ran (a Dask run), and libraries the machines disagree on."""
    executor = env.get("executor") or {}
    if executor.get("kind") != "dask":
        return []
    hosts: dict[str, int] = {}
    for r in records:
        if r.get("worker_host"):
            hosts[r["worker_host"]] = hosts.get(r["worker_host"], 0) + 1
    where = "a local cluster" if executor.get("cluster") == "local" else f"the scheduler at {executor.get('scheduler', '?')}"
    on = ", ".join(f"{h} ({n} cases)" for h, n in hosts.items()) or "no host recorded"
    lines = [f"- executor: Dask, {where}, {len(env.get('workers', {}))} workers; cases ran on {on}"]
    for lib, versions in (env.get("library_disagreements") or {}).items():
        which = "; ".join(f"{v} on {', '.join(machines)}" for v, machines in versions.items())
        lines.append(f"- **the driver and workers disagree on {lib}**: {which} (see env.json)")
    return lines


def _threads(records: list[dict[str, Any]], env: dict[str, Any]) -> str:
    """The torch threads the cases ran with (from their records), else the run's setting."""
    seen = sorted({r["torch_threads"] for r in records if isinstance(r.get("torch_threads"), int)})
    if seen:
        return "torch " + "/".join(map(str, seen))
    return str(env.get("case_threads", "?"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _suite_config(info: dict[str, Any]) -> dict[str, Any]:
    """The run's suite settings (its profile and overrides), re-read from its suite file when it is still there."""
    from odebench.schema import SuiteError
    from odebench.suite import load_suite

    try:
        path = Path(info["suite_path"])
        if not path.is_absolute() and info.get("cwd"):  # relative to where `odebench run` ran
            path = Path(info["cwd"]) / path
        return load_suite(path, info.get("profile"), info.get("overrides") or None).config
    except (KeyError, TypeError, SuiteError):
        return {}
