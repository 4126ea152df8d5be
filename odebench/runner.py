"""Runs a suite's cases and appends one record per case to ``records.jsonl``.

The runner owns isolation, timeouts, failure capture and resumption:

* every case runs in a fresh process (``measure.isolation = "process"``) so its peak
  memory is its own and a timeout or crash is contained (a fresh interpreter, or with
  ``measure.launch = "fork"`` a child forked from a pre-imported launcher, :mod:`odebench.launcher`);
  ``"group"`` runs the cases the
  workload groups (:meth:`~odebench.workload.Workload.process_group_key`) one after another
  in one fresh process per group; ``"inline"`` runs in-process;
  with an executor (:mod:`odebench.executors`) the fresh processes run on Dask workers,
  several at once, and this process still writes every record;
* each finished case is appended to ``records.jsonl`` and flushed at once, so a run
  killed at any moment keeps every case it finished, and ``resume`` runs only the rest;
* unsupported combinations, unavailable plugins, solver failures, timeouts and crashes
  are records with a status, never an aborted run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odebench import registry
from odebench.caseproc import log_name, run_case_process, run_group_process
from odebench.launcher import LauncherPool, supported
from odebench.protocol import Status
from odebench.records import RECORDS, RUN_INFO, append_record, in_case_order, read_records, repair_records
from odebench.suite import Case, Suite
from odebench.swap import reference_modules
from odebench.worker import thread_env

if TYPE_CHECKING:
    from odebench.executors import DaskExecutor


class RunError(ValueError):
    """A run directory cannot be created or resumed (message is one line)."""


@dataclass
class RunSpec:
    """What a run is: the suite, profile, filters and overrides (stored as ``run.json``)."""

    suite_path: str
    profile: str
    filters: dict[str, list[Any] | None] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    cwd: str = field(default_factory=os.getcwd)  # where a relative suite_path is relative to
    problem: str | None = None  # the user's problem (--problem), as given

    def to_dict(self) -> dict[str, Any]:
        return {"suite_path": self.suite_path, "profile": self.profile, "filters": self.filters,
                "overrides": self.overrides, "cwd": self.cwd, "problem": self.problem}


def new_run_dir(results: Path, suite_name: str) -> Path:
    """A fresh ``results/<suite>/<run-id>`` (run-id = UTC time, suffixed if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = results / suite_name
    for i in range(1000):
        candidate = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise RunError(f"could not create a run directory under {base}")


def _device_reason(device: str) -> str | None:
    """Why a device cannot be used here, or None."""
    if device == "cpu":
        return None
    try:
        import torch
    except ImportError:
        return f"device {device!r} needs torch to detect it"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device on this machine"
    return None


def _static_outcome(case: Case, suite: Suite) -> dict[str, Any] | None:
    """The record fields for a case that need not (or cannot) run: unavailable or unsupported."""
    try:
        e = registry.entry(case.plugin)
    except registry.UnknownPluginError as exc:
        return {"status": str(Status.UNAVAILABLE), "message": str(exc)}
    reason = e.available()
    if reason:
        return {"status": str(Status.UNAVAILABLE), "message": reason}
    cls = e.load()
    why = (cls.unsupported_reason(case.method, case.grad_mode, case.device) or _device_reason(case.device)
           or suite.workload.unsupported_reason(case.to_dict(), suite.config, cls))
    if why:
        return {"status": str(Status.UNSUPPORTED), "message": why}
    return None


def _plugin_meta(name: str) -> dict[str, Any]:
    try:
        cls = registry.entry(name).load()
    except registry.UnknownPluginError:
        cls = None
    if cls is None:
        return {"framework": None, "plugin_version": None, "nfe_source": None, "batch_stepping": None}
    # What the plugin's own NFE figure is, and how it steps a batch, travel with each record.
    return {"framework": cls.framework, "plugin_version": cls.version(), "nfe_source": cls.nfe_source,
            "batch_stepping": cls.batch_stepping}


def _run_isolated(case: Case, config: dict[str, Any], log_dir: Path, timeout: float,
                  shared: dict[str, Any] | None = None, launchers: LauncherPool | None = None) -> dict[str, Any]:
    log_dir.mkdir(exist_ok=True)
    launcher = None if launchers is None else launchers.for_plugin(case.plugin)
    try:
        return run_case_process({"case": case.to_dict() | (shared or {}), "config": config},
                                log_dir / log_name(case.id), timeout, launcher=launcher)
    finally:
        if launchers is not None:
            launchers.notice()


def _shared_work(cases: list[Case], config: dict[str, Any], log_dir: Path, timeout: float) -> dict[str, dict[str, Any]]:
    """The workload's shared untimed work (:meth:`~odebench.workload.Workload.shared_work`), one fresh
    process per group of cases, before any case of the run is timed; ``{case_id: fields}``.

    A group whose process fails or times out gives nothing: its cases then do the work themselves.
    """
    workload = registry.get_workload(config["suite"]["workload"])
    groups: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        d = case.to_dict()
        key = workload.shared_work_key(d, config)
        if key is not None:
            groups.setdefault(key, []).append(d | {"case_id": case.id})
    out: dict[str, dict[str, Any]] = {}
    for key, group in groups.items():
        log_dir.mkdir(exist_ok=True)
        result = run_case_process({"shared": group, "config": config}, log_dir / log_name(key),
                                  timeout * len(group))
        out.update({k: v for k, v in result.items() if isinstance(v, dict)})
    return out


def _run_grouped(cases: list[Case], suite: Suite, log_dir: Path, timeout: float,
                 finish: Any) -> None:
    """Run ``cases`` in one fresh process per group (:meth:`~odebench.workload.Workload.process_group_key`),
    calling ``finish(case, fields)`` as each record arrives.

    A group whose process times out, crashes or is killed records its running case's failure and
    starts again, in a fresh process, from the case after it.
    """
    config = suite.config
    groups: dict[str, list[Case]] = {}
    for case in cases:
        key = suite.workload.process_group_key(case.to_dict(), config)
        groups.setdefault(case.id if key is None else key, []).append(case)
    log_dir.mkdir(exist_ok=True)
    for key, group in groups.items():
        by_id = {c.id: c for c in group}
        got: set[str] = set()

        def arrived(cid: str, fields: dict[str, Any], by_id=by_id, got=got) -> None:
            got.add(cid)
            finish(by_id[cid], fields)

        pending = list(group)
        while pending:
            failed = run_group_process([c.to_dict() | {"case_id": c.id} for c in pending], config,
                                       log_dir / log_name(key), timeout, arrived)
            if failed is not None:
                arrived(failed.pop("case_id"), failed)
            pending = [c for c in pending if c.id not in got]


def _run_inline(case: Case, config: dict[str, Any]) -> dict[str, Any]:
    from odebench.worker import execute

    return execute(case.to_dict(), config)


class _Progress:
    """tqdm on a terminal; one plain line per finished case otherwise (CI logs)."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.tty = sys.stderr.isatty()
        self.enabled = enabled
        self.total, self.done = total, done
        self.bar = None
        if enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="case", file=sys.stderr, dynamic_ncols=True)

    def start(self, case: Case) -> None:
        if self.bar is not None:
            self.bar.set_description_str(case.id)

    def finish(self, case: Case, record: dict[str, Any]) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(record["status"])
            self.bar.update(1)
        elif self.enabled:
            took = record.get("case_wall_s")
            extra = f" {took:.1f}s" if isinstance(took, float) else ""
            msg = f" ({record['message']})" if record["status"] != "ok" and record.get("message") else ""
            print(f"[{self.done}/{self.total}] {case.id}: {record['status']}{extra}{msg}", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(suite: Suite, cases: list[Case], run_dir: Path, spec: RunSpec, *, resume: bool = False,
        progress: bool = True, argv: list[str] | None = None,
        executor: DaskExecutor | None = None) -> list[dict[str, Any]]:
    """Run ``cases`` into ``run_dir`` and return all of the run's records.

    Arguments:
        suite: the loaded suite (its settings go to every case).
        cases: the cases to run, in order.
        run_dir: the run's folder; created by the caller (see :func:`new_run_dir`).
        spec: what the run is, written to ``run.json`` (checked against it on resume).
        resume: skip cases that already have a record in ``run_dir``.
        progress: show progress on stderr.
        argv: the command line for ``env.json``.
        executor: run the cases on this Dask cluster (each still in a fresh process, on a worker);
            None: one after the other in this process's children, as ``measure.isolation`` says.

    Raises:
        odebench.rundir.RunDirError: when another process is writing ``run_dir``.
        odebench.executors.ExecutorError: when the executor's scheduler is lost mid-run.
    """
    from odebench.rundir import hold

    with hold(run_dir):
        return _run(suite, cases, run_dir, spec, resume=resume, progress=progress, argv=argv,
                    executor=executor)


def _run(suite: Suite, cases: list[Case], run_dir: Path, spec: RunSpec, *, resume: bool, progress: bool,
         argv: list[str] | None, executor: DaskExecutor | None) -> list[dict[str, Any]]:
    from odebench.measure import environment

    run_dir = Path(run_dir)
    info_path, rec_path = run_dir / RUN_INFO, run_dir / RECORDS
    if resume:
        if not info_path.exists():
            raise RunError(f"{run_dir} is not an odebench run (no {RUN_INFO}); valid: a folder made by "
                           "`odebench run`")
        repair_records(rec_path)
    else:
        info_path.write_text(json.dumps(spec.to_dict() | {"suite": suite.name,
                                                          "cases": [c.id for c in cases]}, indent=2))
        env = environment(argv)
        # The driver's own thread count is not what the cases use: record the setting they run under
        # (each record also carries the torch threads its process really had).
        env["case_threads"] = suite.config["measure"]["threads"] or "framework default"
        env["executor"] = {"kind": "serial", "case_isolation": suite.config["measure"]["isolation"],
                           "case_launch": suite.config["measure"]["launch"]}
        (run_dir / "env.json").write_text(json.dumps(env, indent=2))
    if executor is not None:
        executor.record_environment(run_dir / "env.json")
    done = {r["case_id"] for r in read_records(run_dir)}
    todo = [c for c in cases if c.id not in done]
    bar = _Progress(len(cases), len(cases) - len(todo), progress)
    timeout = suite.config["measure"]["timeout_s"]
    isolation = suite.config["measure"]["isolation"]

    def finish(case: Case, outcome: dict[str, Any]) -> None:
        record = (case.to_dict() | _plugin_meta(case.plugin)
                  | {"workload": suite.config["suite"]["workload"], "profile": suite.profile} | outcome)
        append_record(rec_path, record)
        bar.finish(case, record)

    launchers = None
    try:
        shared: dict[str, dict[str, Any]] = {}
        if isolation == "process" and executor is None:
            runnable_here = [c for c in todo if _static_outcome(c, suite) is None]
            shared = _shared_work(runnable_here, suite.config, run_dir / "logs", timeout)
            if suite.config["measure"]["launch"] == "fork" and supported() is None:
                launchers = LauncherPool([c.plugin for c in runnable_here], suite.config["suite"]["workload"],
                                         run_dir / "logs", env=thread_env(suite.config),
                                         warn=lambda line: print(line, file=sys.stderr),
                                         modules=reference_modules(suite.config.get("swap")))
        runnable = []
        for case in todo:
            bar.start(case)
            started = time.perf_counter()
            outcome = _static_outcome(case, suite)
            if outcome is None and (executor is not None or isolation == "group"):
                runnable.append(case)  # a worker, or its group's process, runs it
                continue
            if outcome is None:
                if isolation == "process":
                    outcome = _run_isolated(case, suite.config, run_dir / "logs", timeout, shared.get(case.id),
                                            launchers)
                else:
                    outcome = _run_inline(case, suite.config)
            outcome.setdefault("case_wall_s", time.perf_counter() - started)
            finish(case, outcome)
        if runnable and executor is not None:
            # Each case in a fresh process on a worker, whatever measure.isolation says.
            executor.run(runnable, suite.config, timeout, run_dir / "logs", finish)
        elif runnable:
            _run_grouped(runnable, suite, run_dir / "logs", timeout, lambda case, fields: (
                bar.start(case), finish(case, fields)))
    finally:
        if launchers is not None:
            launchers.close()
        bar.close()
    return in_case_order(read_records(run_dir), [c.id for c in cases])
