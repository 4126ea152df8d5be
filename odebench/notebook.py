"""Running a suite from Python (a notebook): :func:`run`, the command line's ``odebench run`` as a
function that returns its tables.

It goes through the very code ``odebench run`` does — the suite's checks, a fresh process per
case where the suite asks for one, ``records.jsonl``, ``report.md`` and the figures in a new run
folder — and only replaces the printed summary by the returned :class:`RunResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        table: the tidy table, one row per case (``results.csv``).
        summary: the suite's summary table (the workprecision suite's: the matched-error table).
        run_dir: the run folder (records, report, figures).
        report: its ``report.md``.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    run_dir: Path
    report: Path


def run(suite: str | Path, problem: str | None = None, *, profile: str | None = None,
        plugins: Sequence[str] | None = None, methods: Sequence[str] | None = None,
        grad_modes: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
        repeats: int | None = None, timeout: float | None = None, results: str | Path = "results",
        progress: bool = False) -> RunResult:
    """Run a suite, as ``odebench run`` does, and return its tables.

    Arguments:
        suite: a suite folder (``"suites/workprecision"``) or its ``suite.toml``.
        problem: a problem of yours, ``"module:function"`` or an ``odebench.problems`` entry
            point (see :class:`odebench.Problem`); the module is found on ``sys.path``, in the
            current folder or in the suite's folder. None (default): the suite's own problems.
        profile: the suite's profile (None: its default).
        plugins, methods, grad_modes, seeds: narrow the suite's matrix (None: all of it), as
            ``--plugin``, ``--method``, ``--grad`` and ``--seed`` do.
        repeats, timeout: override ``measure.repeats`` and ``measure.timeout_s`` (None: the suite's).
        results: the results root; the run folder is ``results/<suite>/<run-id>`` (default ``results``).
        progress: print a line per finished case on stderr (default False).

    Returns:
        The :class:`RunResult`.

    Raises:
        ValueError: for bad input (a suite, profile, filter or problem that is not right), with
            the one-line message the command line prints, before any case runs.
    """
    from odebench import report
    from odebench.cli import UsageError, build_parser, execute_run

    argv = ["run", str(suite), "--results", str(results)]
    for flag, value in (("--profile", profile), ("--problem", problem), ("--repeats", repeats),
                        ("--timeout", timeout)):
        if value is not None:
            argv += [flag, str(value)]
    for flag, values in (("--plugin", plugins), ("--method", methods), ("--grad", grad_modes), ("--seed", seeds)):
        if values is not None:
            argv += [flag, ",".join(str(v) for v in values)]
    if not progress:
        argv.append("--no-progress")
    try:
        records, path = execute_run(build_parser().parse_args(argv))
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    table = report.to_frame(records)
    return RunResult(table, report.summary(table), path.parent, path)


__all__ = ["RunResult", "run"]
