"""Guards of a run folder: where one may be created, what a resumable one holds, one writer at a time.

``odebench run`` and ``odebench report`` call these before they write anything, so a bad
``--results``, a damaged ``run.json`` or ``records.jsonl``, or a second process on the same
run folder is a one-line :class:`RunDirError` and nothing already written is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from odebench.records import RECORDS, RUN_INFO

LOCK = "run.lock"

#: What ``run.json`` must hold to be resumed, with the JSON type of each.
RUN_INFO_KEYS = {"suite_path": str, "profile": str, "filters": dict, "overrides": dict}


class RunDirError(ValueError):
    """A run folder cannot be created, resumed, reported or written (message is one line)."""


def check_results_root(results: str | Path) -> None:
    """Check that a run folder can be made under ``results`` (without creating anything).

    Arguments:
        results: the ``--results`` root, which may not exist yet.

    Raises:
        RunDirError: when it, or the nearest of its parents that exists, is a file or is not
            writable.
    """
    path = Path(results)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" ({str(existing)!r} is a file)"
        raise RunDirError(f"--results {str(results)!r} is not a folder{where}; valid: a folder, or a path to create one")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--results {str(results)!r} is not writable (no write permission on {str(existing)!r}); "
                          "valid: a folder you can write to")


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder, checked to hold what a resume needs.

    Raises:
        RunDirError: when it is missing, not valid JSON (e.g. cut off), not an object, or lacks
            a key of :data:`RUN_INFO_KEYS` (or has one of the wrong type).
    """
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise RunDirError(f"{str(run_dir)!r} is not a run folder (no {RUN_INFO}); valid: a folder made by "
                          "`odebench run`")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is not valid JSON (cut off?): {exc}; valid: the run.json `odebench run` "
                          "wrote") from None
    if not isinstance(info, dict):
        raise RunDirError(f"{path} is not a JSON object; valid: the run.json `odebench run` wrote")
    for key, typ in RUN_INFO_KEYS.items():
        if not isinstance(info.get(key), typ):
            raise RunDirError(f"{path} has no valid {key!r} (got {info.get(key)!r}); valid: a run.json with "
                              f"{', '.join(RUN_INFO_KEYS)}")
    return info


def check_records(run_dir: str | Path, *, need_one: bool = False) -> int:
    """Check every line of a run's ``records.jsonl``; returns the number of records.

    Only the last line may be unreadable, and only when it does not end the file with a
    newline: that is a record cut off by a kill, which readers skip and a resume drops.

    Arguments:
        run_dir: the run folder.
        need_one: fail when there is no complete record (a report needs one).

    Raises:
        RunDirError: naming the first line that is not a JSON object with a ``case_id`` and a
            ``status``, or saying there is no record.
    """
    from odebench.registry import workload_names

    workloads = workload_names()
    path = Path(run_dir) / RECORDS
    data = path.read_text(errors="replace") if path.is_file() else ""
    lines = data.splitlines()
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not data.endswith("\n"):
                break  # cut off by a kill: not a record
            raise RunDirError(f"line {number} of {path} is not JSON ({exc.msg}); valid: one record object "
                              "per line") from None
        if not isinstance(record, dict):
            raise RunDirError(f"line {number} of {path} is not a JSON object (a {type(record).__name__}); "
                              "valid: one record object per line")
        for key in ("case_id", "status"):
            if not isinstance(record.get(key), str):
                raise RunDirError(f"line {number} of {path} has no {key!r}; valid: records written by "
                                  "`odebench run`")
        workload = record.get("workload", "train")
        if workload not in workloads:
            raise RunDirError(f"line {number} of {path} has an unknown workload {workload!r}; valid: "
                              f"{', '.join(workloads)}")
        count += 1
    if need_one and not count:
        raise RunDirError(f"no record in {path} ({'empty' if not data.strip() else 'only a cut-off line'}); "
                          "valid: a run with at least one finished case")
    return count


_HELD: dict[Path, int] = {}  # run folders this process holds → nesting depth


@contextlib.contextmanager
def hold(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's writer lock for the block: one process writes a run folder at a time.

    The lock is ``fcntl.flock`` on ``run.lock`` in the folder, taken without waiting; the
    system drops it when its holder exits, however it exits, so a killed run never leaves
    a stale lock. Nested holds in one process (``odebench run`` holds the folder across the
    run and its report; :func:`odebench.runner.run` holds it too) are counted, not re-locked:
    two ``flock`` calls on separately opened files would exclude each other.

    Raises:
        RunDirError: when another process holds the lock (its pid is named).
    """
    key = Path(run_dir).resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fh = open(key / LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RunDirError(f"run folder {str(run_dir)!r} is in use by another odebench process (pid {holder}); "
                              "one writer at a time: wait for it to finish or stop it, then --resume") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        fh.close()  # closing the file releases the lock
