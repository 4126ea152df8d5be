"""One case in a fresh process: ``python -m odebench.worker IN OUT``, its timeout and its kill.

The serial runner and the Dask executor's task on a worker both run a case through
:func:`run_case_process`, so a case's peak memory is its own process's and a timeout, a crash
or an out-of-memory kill becomes the same record wherever the case ran. A group of cases that
the workload lets share one process (``measure.isolation = "group"``) runs through
:func:`run_group_process`, which hands back each record as it is written.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odebench.protocol import Status
from odebench.worker import PARENT_ENV, STARTED_ENV, thread_env

if TYPE_CHECKING:
    from odebench.launcher import Launcher


class CaseCancelled(Exception):
    """The caller's ``poll`` asked for the running case to stop; its process group is killed."""


def log_name(case_id: str) -> str:
    """The file name of a case's log: its id with anything but ``[A-Za-z0-9_.=-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", case_id) + ".log"


def run_case_process(job: dict[str, Any], log: Path, timeout: float, *, poll: Callable[[], bool] | None = None,
                     poll_s: float = 0.5, launcher: Launcher | None = None) -> dict[str, Any]:
    """Run one case in a fresh ``odebench.worker`` process and return its record fields.

    The process runs in a session of its own (a terminal's Ctrl-C does not reach it) and is
    tied to this process (it dies when this process dies, see :func:`odebench.worker.tie_to_parent`).
    Its whole process group is killed on a timeout, on any exception here (Ctrl-C, SIGTERM), and
    when ``poll`` asks for it.

    Arguments:
        job: ``{"case": Case.to_dict(), "config": the suite's settings}``.
        log: the file that receives the process's stdout and stderr (overwritten).
        timeout: seconds the case may take; then it is killed and recorded as ``timeout``.
        poll: called about every ``poll_s`` seconds while the case runs; when it returns True the
            case is killed and :class:`CaseCancelled` raised. None: wait without waking up.
        poll_s: seconds between calls of ``poll``.
        launcher: fork the process from this pre-imported launcher (:mod:`odebench.launcher`,
            ``measure.launch = "fork"``) instead of starting an interpreter; where it refuses, the
            case starts an interpreter after all. None: start an interpreter.

    Returns:
        The worker's record fields, with ``launch`` (``fork`` or ``exec``: how its process began);
        for a case killed by the timeout, by SIGKILL from elsewhere (the OOM killer) or that
        exited without a record, a ``status`` and a one-line ``message``.

    Raises:
        CaseCancelled: when ``poll`` returned True.
    """
    with tempfile.TemporaryDirectory(prefix="odebench-") as tmp:
        job_path, out = Path(tmp) / "job.json", Path(tmp) / "record.json"
        job_path.write_text(json.dumps(job))
        with open(log, "w") as fh:
            launched = time.perf_counter()
            proc, how = _start(job_path, out, fh, log, launcher, job["config"])
            try:
                code = _wait(proc, timeout, poll, poll_s)
                process_s = time.perf_counter() - launched
            except subprocess.TimeoutExpired:
                _stop(proc)
                return _failure(None, log, timeout, timed_out=True) | how
            except BaseException:
                # Ctrl-C or SIGTERM of the runner, or a cancelled task: the case, in its own
                # session, got neither signal.
                _stop(proc)
                raise
        if out.exists():
            # The whole process, launch to exit (with a launcher's start-up, for the first case it
            # served): what the case cost in wall time.
            return json.loads(out.read_text()) | how | {"process_s": process_s}
        return _failure(code, log, timeout, timed_out=False) | how


def _start(job_path: Path, out: Path, fh: Any, log: Path, launcher: Launcher | None,
           config: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The case's process, forked by ``launcher`` where it can, else a fresh interpreter; with
    the record's ``launch`` field saying which."""
    if launcher is not None:
        from odebench.launcher import LauncherRefused

        fh.flush()
        try:
            # The time before the launcher's own start, if this case starts it: its startup_s holds it.
            return launcher.start_case(job_path, out, log, time.time()), {"launch": "fork"}
        except LauncherRefused:
            pass  # the runner said why once, when the launcher first refused
    return _launch(job_path, out, fh, time.time(), config), {"launch": "exec"}


def _launch(job_path: Path, out: Path, fh: Any, started: float, config: dict[str, Any]) -> subprocess.Popen:
    """Start ``python -m odebench.worker JOB OUT`` in a session of its own, tied to this process,
    its output to ``fh``; ``started`` (``time.time()``) is its launch time for ``startup_s``;
    ``config`` the suite's settings (its thread count, :func:`odebench.worker.thread_env`)."""
    return subprocess.Popen([sys.executable, "-m", "odebench.worker", str(job_path), str(out)],
                            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                            env=os.environ | thread_env(config) | {PARENT_ENV: str(os.getpid()),
                                                                   STARTED_ENV: repr(started)})


def _failure(code: int | None, log: Path, timeout: float, *, timed_out: bool) -> dict[str, Any]:
    """The ``status`` and one-line ``message`` of a worker that gave no record: killed by the timeout,
    by SIGKILL from elsewhere, or exited with ``code``."""
    if timed_out:
        return {"status": str(Status.TIMEOUT), "message": f"no result within {timeout:g} s (killed)"}
    if code == -signal.SIGKILL:
        # Killed by someone else than us: on Linux that is almost always the OOM killer.
        return {"status": str(Status.OOM), "message": "worker killed by SIGKILL (out of memory?)"}
    tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    return {"status": str(Status.ERROR),
            "message": f"worker exited with code {code}: {tail[0] if tail else 'no output'}"}


def run_group_process(cases: list[dict[str, Any]], config: dict[str, Any], log: Path, timeout: float,
                      on_record: Callable[[str, dict[str, Any]], None], *, poll_s: float = 0.2) -> dict[str, Any] | None:
    """Run ``cases`` one after another in one fresh ``odebench.worker`` process.

    Each record is handed to ``on_record(case_id, fields)`` as soon as the worker has written it,
    with ``process_s``: the wall time from the previous record (or the process's launch) to this
    one, which is what the case cost. Every case gets ``timeout`` seconds of its own: the process
    is killed when no record arrives within ``timeout`` of the previous one.

    Arguments:
        cases: the cases' fields, each with its ``case_id``.
        config: the suite's settings.
        log: the file that receives the process's stdout and stderr (appended to: a group that is
            restarted after a failure keeps the earlier attempt's log).
        timeout: seconds each case may take.
        on_record: called in this thread for every record, in the order the cases ran.
        poll_s: seconds between looks at the worker's output.

    Returns:
        None when every case gave a record; else the fields of the first case that gave none (the
        one running when the process timed out, crashed or was killed), whose ``case_id`` names it.
        The cases after it did not run: the caller starts them again.
    """
    with tempfile.TemporaryDirectory(prefix="odebench-") as tmp:
        job_path, out = Path(tmp) / "job.json", Path(tmp) / "records.jsonl"
        job_path.write_text(json.dumps({"cases": cases, "config": config}))
        out.touch()
        pending = [c["case_id"] for c in cases]
        with open(log, "a") as fh, open(out) as records:
            mark, written = time.perf_counter(), time.time()
            proc = _launch(job_path, out, fh, written, config)
            buffer, timed_out = "", False

            def drain() -> None:
                nonlocal buffer, mark, written
                buffer += records.read()
                while "\n" in buffer:
                    line, buffer = buffer.split("\n", 1)
                    item = json.loads(line)
                    # From the worker's own clock (when it wrote each record), not from when this
                    # loop looked: the look comes every poll_s.
                    on_record(item["case_id"], item["record"] | {"process_s": max(item["written"] - written, 0.0)})
                    pending.remove(item["case_id"])
                    mark, written = time.perf_counter(), item["written"]

            try:
                while True:
                    try:
                        code = proc.wait(timeout=poll_s)
                        break
                    except subprocess.TimeoutExpired:
                        drain()
                        if time.perf_counter() - mark > timeout:
                            _stop(proc)
                            code, timed_out = proc.returncode, True
                            break
                drain()
            except BaseException:
                _stop(proc)  # Ctrl-C or SIGTERM of the runner: the group, in its own session, got neither
                raise
    if not pending:
        return None
    return {"case_id": pending[0]} | _failure(code, log, timeout, timed_out=timed_out)


def _wait(proc: subprocess.Popen, timeout: float, poll: Callable[[], bool] | None, poll_s: float) -> int:
    """The process's exit code, within ``timeout`` (else ``TimeoutExpired``), asking ``poll`` meanwhile."""
    if poll is None:
        return proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        try:
            return proc.wait(timeout=min(poll_s, remaining))
        except subprocess.TimeoutExpired:
            if poll():
                raise CaseCancelled() from None


def _stop(proc: subprocess.Popen) -> None:
    """Kill a case's process group (the worker and anything it started) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone
    proc.wait()
