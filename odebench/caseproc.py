"""One case in a fresh process: ``python -m odebench.worker IN OUT``, its timeout and its kill.

The serial runner and the Dask executor's task on a worker both run a case through
:func:`run_case_process`, so a case's peak memory is its own process's and a timeout, a crash
or an out-of-memory kill becomes the same record wherever the case ran.
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
from typing import Any

from odebench.protocol import Status
from odebench.worker import PARENT_ENV, STARTED_ENV


class CaseCancelled(Exception):
    """The caller's ``poll`` asked for the running case to stop; its process group is killed."""


def log_name(case_id: str) -> str:
    """The file name of a case's log: its id with anything but ``[A-Za-z0-9_.=-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", case_id) + ".log"


def run_case_process(job: dict[str, Any], log: Path, timeout: float, *, poll: Callable[[], bool] | None = None,
                     poll_s: float = 0.5) -> dict[str, Any]:
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

    Returns:
        The worker's record fields; for a case killed by the timeout, by SIGKILL from elsewhere
        (the OOM killer) or that exited without a record, a ``status`` and a one-line ``message``.

    Raises:
        CaseCancelled: when ``poll`` returned True.
    """
    with tempfile.TemporaryDirectory(prefix="odebench-") as tmp:
        job_path, out = Path(tmp) / "job.json", Path(tmp) / "record.json"
        job_path.write_text(json.dumps(job))
        with open(log, "w") as fh:
            launched = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "odebench.worker", str(job_path), str(out)],
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=os.environ | {PARENT_ENV: str(os.getpid()), STARTED_ENV: repr(time.time())})
            try:
                code = _wait(proc, timeout, poll, poll_s)
                process_s = time.perf_counter() - launched
            except subprocess.TimeoutExpired:
                _stop(proc)
                return {"status": str(Status.TIMEOUT), "message": f"no result within {timeout:g} s (killed)"}
            except BaseException:
                # Ctrl-C or SIGTERM of the runner, or a cancelled task: the case, in its own
                # session, got neither signal.
                _stop(proc)
                raise
        if out.exists():
            # The whole process, interpreter start to exit: what the case cost in wall time.
            return json.loads(out.read_text()) | {"process_s": process_s}
        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        if code == -signal.SIGKILL:
            # Killed by someone else than us: on Linux that is almost always the OOM killer.
            return {"status": str(Status.OOM), "message": "worker killed by SIGKILL (out of memory?)"}
        return {"status": str(Status.ERROR),
                "message": f"worker exited with code {code}: {tail[0] if tail else 'no output'}"}


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
