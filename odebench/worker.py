"""Runs one case, in whatever process calls it; ``python -m odebench.worker IN OUT`` for isolation
(or a group of cases, one after another, when ``IN`` lists several: ``measure.isolation = "group"``).

The runner starts this module in a fresh process per case, so each case's peak memory is
its own and a hung or crashed case can be killed without losing the run. The case and
suite settings come in as JSON in ``IN``; the record goes out as JSON to ``OUT``.

A worker never outlives the runner that started it (see :func:`tie_to_parent`): a killed
runner's case must not keep computing beside the run that resumes it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from odebench.failures import failure_fields
from odebench.protocol import Status

#: The environment variable through which the runner gives its pid to the worker it starts.
PARENT_ENV = "ODEBENCH_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


#: The environment variable through which the runner gives the worker its start time (``time.time()``).
STARTED_ENV = "ODEBENCH_CASE_STARTED"


def thread_env(config: dict[str, Any]) -> dict[str, str]:
    """Environment variables that hold a case's process to ``measure.threads`` beyond torch's own
    setting (which :func:`execute` makes): numpy's and scipy's OpenBLAS start a pool of one
    thread per core when imported, before any case code runs, so only the environment of the
    process can size it. Empty for ``threads = 0`` (the libraries' defaults)."""
    threads = config["measure"].get("threads", 0)
    return {"OPENBLAS_NUM_THREADS": str(threads)} if threads else {}


def execute(case: dict[str, Any], config: dict[str, Any], started: float | None = None) -> dict[str, Any]:
    """Measure one case and return its workload's record fields (never raises for a failed case).

    Arguments:
        case, config: the case's fields and the suite's settings.
        started: ``time.time()`` when the case's process was launched; the record's ``startup_s``
            is the wall time from then until the case's plugin and framework are imported and its
            workload begins. None (a case run in the caller's process): no ``startup_s``.
    """
    import importlib

    from odebench import registry

    try:
        plugin = registry.get_plugin(case["plugin"])
    except Exception as exc:  # noqa: BLE001 - reported as a row
        return {"status": str(Status.UNAVAILABLE), "message": str(exc)}
    try:
        framework = plugin.backend_framework()
        if framework in ("torch", "jax"):  # imported here so that startup_s holds its import
            importlib.import_module(framework)
        threads = config["measure"].get("threads", 0)
        if threads and framework == "torch":
            import torch

            torch.set_num_threads(threads)
        cache = None
        if framework == "jax":  # before anything compiles; its state travels with the record
            from odebench.backends.jax import CACHE_ENV, persistent_cache

            cache = persistent_cache(os.environ.get(CACHE_ENV) or None)
        elif framework == "torch" and plugin.compiled:
            from odebench.backends.torch import CACHE_ENV, inductor_cache

            cache = inductor_cache(os.environ.get(CACHE_ENV) or None)
        startup = {} if started is None else {"startup_s": max(time.time() - started, 0.0)}
        try:
            record = startup | registry.get_workload(config["suite"]["workload"]).run_case(case, config, plugin)
            if cache is not None:
                record.update(cache.record())
        finally:
            if cache is not None:
                cache.close()
        if "torch" in sys.modules:  # what the case really ran with, not the driver's setting
            record.setdefault("torch_threads", sys.modules["torch"].get_num_threads())
        return record
    except Exception as exc:  # noqa: BLE001 - a workload that raises anyway still gives a row
        return failure_fields(exc)


def tie_to_parent(parent: int, poll_s: float = 0.5) -> None:
    """Make this process die when ``parent`` (the runner) is gone, by two means, because
    neither covers every case alone:

    * ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker the moment its parent
      dies, even while it is deep in a long C call. Linux only; it fires when the parent
      *thread* that started the worker ends (the runner waits for the worker on that very
      thread, so it never ends first); and it misses a parent that died before the call.
    * a daemon thread that polls ``os.getppid()``, which changes when an orphan is re-parented:
      portable (macOS has no PDEATHSIG), catches a parent that died before the prctl, and kills
      the worker's whole process group, children included (the JAX fairness gate's process),
      within ``poll_s``.

    Arguments:
        parent: the pid the worker must keep as its parent.
        poll_s: seconds between the thread's checks.
    """
    set_parent_death_signal()
    if os.getppid() != parent:
        _die()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        _die()

    threading.Thread(target=watch, name="odebench-parent-watch", daemon=True).start()


def set_parent_death_signal() -> bool:
    """Ask the kernel to SIGKILL this process when the thread that started it ends (Linux's
    ``PR_SET_PDEATHSIG``); False where that is not available (the caller must watch by other means)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False  # no usable libc


def _die() -> None:
    """SIGKILL this worker, and its process group when it leads one (the runner starts it in a
    session of its own; run by hand it does not, and a shell's group must not be killed)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    parent = os.environ.get(PARENT_ENV)
    if parent:
        tie_to_parent(int(parent))
    in_path, out_path = argv
    with open(in_path) as fh:
        job = json.load(fh)
    if "shared" in job:  # untimed work a group of cases shares (Workload.shared_work)
        from odebench import registry

        record = registry.get_workload(job["config"]["suite"]["workload"]).shared_work(job["shared"], job["config"])
    elif "cases" in job:  # a group of cases sharing this process (measure.isolation = "group")
        run_group(job["cases"], job["config"], out_path)
        return 0
    else:
        started = os.environ.get(STARTED_ENV)
        record = execute(job["case"], job["config"], float(started) if started else None)
    with open(out_path, "w") as fh:
        json.dump(record, fh)
    return 0


def run_group(cases: list[dict[str, Any]], config: dict[str, Any], out_path: str) -> None:
    """Run ``cases`` one after another in this process, appending ``{"case_id", "record"}`` to
    ``out_path`` as one JSON line per case, flushed as each ends (the runner reads them as they come).

    The first case's ``startup_s`` is the process's start-up; the others' is 0.0, since they started
    none. Each record says which process it shared (``group_size``, ``group_index``).
    """
    started = os.environ.get(STARTED_ENV)
    with open(out_path, "a") as fh:
        for i, case in enumerate(cases):
            fields = {k: v for k, v in case.items() if k != "case_id"}
            record = execute(fields, config, float(started) if started and i == 0 else None)
            record.setdefault("startup_s", 0.0)
            record.update(group_size=len(cases), group_index=i)
            fh.write(json.dumps({"case_id": case["case_id"], "record": record, "written": time.time()}) + "\n")
            fh.flush()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # The record is written and closed: skip the interpreter's finalisation, whose teardown of torch
    # (with torch._dynamo loaded by any optimiser) took over a second per case on a 2-core machine.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
