"""The records of a run: the files, reading and appending them, and the tables built on them.

A run folder holds ``run.json`` (what the run is), ``env.json`` (where it ran) and
``records.jsonl``, one JSON object per finished case, appended and flushed as each case
ends. The runner writes records; the report, ``regress`` and the asv bridge read them.
This module is what they share, so none of them imports another: the file names, the
reader and writer, the columns every record has, the statuses of cases that never ran, and
the table of tracked figures (:data:`METRICS`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

RECORDS = "records.jsonl"
RUN_INFO = "run.json"

#: Columns every record has, whatever its workload; the workload's ``columns`` follow.
CASE_COLUMNS = ["suite", "workload", "profile", "case_id", "plugin", "framework", "plugin_version", "nfe_source",
                "batch_stepping", "method", "grad_mode", "rtol", "atol", "seed", "device"]
#: ``process_s``: the case process's wall time, launch to exit; ``startup_s``: of that, the part before its
#: workload began (interpreter start, imports of odebench, the plugin and its framework).
#: ``jax_cache``: for a JAX case, whether its compiles were cold or read from the persistent cache
#: (``$ODEBENCH_JAX_CACHE``; ``off`` without it), see :class:`odebench.backends.jax.CacheWatch`;
#: ``torch_cache`` the same for a compiling torch plugin's case and inductor's caches
#: (``$ODEBENCH_TORCH_CACHE``), see :class:`odebench.backends.torch.InductorCache`.
#: ``group_size`` / ``group_index``: under ``measure.isolation = "group"``, how many cases the case's
#: process ran and which of them it was (its ``process_s`` is then from the previous record to its own).
#: ``launch``: how a case's fresh process began (``exec``: a new interpreter; ``fork``: forked from
#: a pre-imported launcher, whose own start-up is in the ``startup_s`` of the first case it served).
OUTCOME_COLUMNS = ["status", "message", "case_wall_s", "process_s", "startup_s", "launch", "group_size",
                   "group_index", "jax_cache", "jax_cache_hits", "jax_cache_misses", "torch_cache", "torch_cache_hits",
                   "torch_cache_misses"]

#: Statuses of cases that never ran (they cannot run here; nothing broke): listed under
#: "Not run" in a report, skipped by regress and asv.
NOT_RUN = ("unsupported", "unavailable")

#: record field → (kind, unit, asv class name), for every workload: a figure a workload does not
#: record is left out. Kinds ``count``, ``bytes`` and ``error`` are gated; ``timing`` (timings and
#: measured memory) is only reported.
METRICS: dict[str, tuple[str, str, str]] = {
    "nfe_fwd": ("count", "evaluations", "NFEForward"),
    "nfe_bwd": ("count", "evaluations", "NFEBackward"),
    "steps": ("count", "steps", "Steps"),
    "final_mse": ("error", "mse", "FinalError"),            # train workload (spiral)
    "test_error_pct": ("error", "percent", "TestError"),    # mnist workload
    "saved_bytes": ("bytes", "bytes", "SavedBytes"),
    "s_per_iter": ("timing", "seconds", "SecondsPerIteration"),
    "s_per_batch": ("timing", "seconds", "SecondsPerBatch"),
    "peak_rss_bytes": ("timing", "bytes", "PeakRSS"),
    "peak_bytes": ("timing", "bytes", "PeakBytes"),         # memory workload (GPU where run on one)
    # batch workload: steps and vector-field calls per sample, the batch solved jointly and sample by sample
    "steps_joint_mean": ("count", "steps", "JointStepsPerSample"),
    "steps_solo_mean": ("count", "steps", "SoloStepsPerSample"),
    "nfe_joint": ("count", "evaluations", "JointNFE"),
    "nfe_solo_mean": ("count", "evaluations", "SoloNFEPerSample"),
    "err_joint_max": ("error", "abs error", "JointMaxError"),
    "s_per_sample_joint": ("timing", "seconds", "JointSecondsPerSample"),
    "s_per_sample_solo": ("timing", "seconds", "SoloSecondsPerSample"),
    "err_final": ("error", "relative", "FinalStateError"),  # workprecision workload
    "err_l2": ("error", "relative", "TrajectoryError"),
    "grad_err": ("error", "relative", "GradientError"),
    "steps_rejected": ("count", "steps", "RejectedSteps"),
    "time_s": ("timing", "seconds", "SecondsPerSolve"),
}
#: The fields of a record that regress and asv compare.
SLIM_KEYS = ("case_id", "status", "message", "case_wall_s", *METRICS)


def slim(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record that regress and asv compare (drops histories and snapshots)."""
    return {k: record.get(k) for k in SLIM_KEYS}


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete record of a run; a final line cut off by a kill is ignored."""
    path = Path(run_dir) / RECORDS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a partial line written when the process was killed
    return records


def in_case_order(records: list[dict[str, Any]], case_ids: list[str]) -> list[dict[str, Any]]:
    """``records`` sorted by their case's place in ``case_ids`` (a run's ``cases``); others last, as they were.

    Cases run on several workers finish, and are appended, in any order.
    """
    place = {case_id: i for i, case_id in enumerate(case_ids)}
    return sorted(records, key=lambda r: place.get(r.get("case_id"), len(place)))


def repair_records(path: Path) -> None:
    """Drop a trailing partial line so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data[: data.rfind(b"\n") + 1]
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(keep)
        os.replace(tmp, path)


def append_record(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=jsonable) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def to_frame(records: list[dict[str, Any]], workload: Any) -> pd.DataFrame:
    """One row per record: the case, the workload's axes, the outcome, the workload's columns.

    Arguments:
        records: the run's records.
        workload: the run's :class:`~odebench.workload.Workload` (its ``axes`` and ``columns``).
    """
    columns = CASE_COLUMNS + list(workload.axes) + OUTCOME_COLUMNS + list(workload.columns)
    df = pd.DataFrame([{c: r.get(c) for c in columns} for r in records], columns=columns)
    for col in ("rtol", "atol", "case_wall_s", "process_s", "startup_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def not_run(df: pd.DataFrame) -> list[str]:
    """Markdown bullets: the cases that did not run, grouped by plugin and reason."""
    skipped = df[df["status"].isin(NOT_RUN)]
    lines = []
    for (plugin, status, message), g in skipped.groupby(["plugin", "status", "message"], sort=False,
                                                         dropna=False):
        combos = ", ".join(dict.fromkeys(f"{m}/{gm}" for m, gm in zip(g["method"], g["grad_mode"])))
        lines.append(f"- **{plugin}** {status}: {combos} — {message}")
    return lines
