"""asv benchmarks generated from a suite's own ``suite.toml``.

Each ``suites/<name>/asv_bench.py`` is a shim::

    from pathlib import Path
    from odebench.asvbench import make_benchmarks

    globals().update(make_benchmarks(Path(__file__).parent, __name__))

and gets, for every case of the suite's small profile (its ``asv`` profile, else ``smoke``, else
``quick``; see :func:`odebench.regress.pick_profile`), one parameter of each class below:

* ``track_*``: the deterministic figures — NFE-F, NFE-B, steps, final error, bytes saved
  for backward — and the harness's own s/iter and peak RSS, from one run of every case in
  the ``setup_cache`` of the suite (run once per asv run, shared by all ``track_`` classes);
* ``Case.time_case`` / ``Case.peakmem_case``: asv's own wall time and peak RSS of one case;
* ``GPUMemory.track_gpu_peak_bytes``: ``torch.cuda.max_memory_allocated`` of the case on
  ``cuda`` (skipped where there is no CUDA device or the plugin is not a torch one).

A case whose plugin is unavailable or that the plugin does not support raises
``NotImplementedError`` in ``setup`` (asv's skip); a case that fails is a failed benchmark.
``version`` is pinned (:data:`SCHEMA` plus a hash of the settings that define the figures),
so history stays comparable across code edits and resets only when the measured thing changes.

``ODEBENCH_ASV_CASES`` (a regular expression over case ids) narrows a run without changing
the parameters, e.g. ``ODEBENCH_ASV_CASES='^torchdiffeq/(euler|dopri5)/'`` for a smoke run.

``python -m odebench.asvbench machine NAME`` writes an asv machine entry with a fixed name
(and this machine's details) to ``$HOME/.asv-machine.json``; ``asv machine --machine NAME
--yes`` would store the name only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from odebench.records import METRICS, NOT_RUN, slim
from odebench.suite import pick_profile

#: bump when the meaning of a tracked figure changes (it is part of every benchmark's version).
SCHEMA = 1
#: settings that do not change any figure (left out of the version hash).
_NEUTRAL = {"suite": ("description", "reference", "default_profile"), "measure": ("timeout_s", "isolation"),
            "matrix": None, "paper": None, "claims": None,
            "swap": None}  # the solver-swap check runs after the tracked figures are measured


def settings_hash(config: dict[str, Any]) -> str:
    """A short hash of the settings that define the figures (everything but names, matrix, timeouts)."""
    kept = {}
    for section, values in config.items():
        drop = _NEUTRAL.get(section, ())
        if drop is None:
            continue
        kept[section] = {k: v for k, v in values.items() if k not in drop}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _selected(case_id: str) -> bool:
    pattern = os.environ.get("ODEBENCH_ASV_CASES")
    return not pattern or re.search(pattern, case_id) is not None


def _why_not(case) -> str | None:
    """Why a case cannot run here (unavailable plugin, unsupported combination, no device), or None."""
    from odebench import registry

    try:
        e = registry.entry(case.plugin)
    except registry.UnknownPluginError as exc:
        return str(exc)
    reason = e.available()
    if reason:
        return reason
    why = e.load().unsupported_reason(case.method, case.grad_mode, case.device)
    if why:
        return why
    if case.device == "cuda":
        try:
            import torch
        except ImportError:
            return "no torch to find a CUDA device"
        if not torch.cuda.is_available():
            return "no CUDA device"
    return None


def run_cases(suite, cases, isolation: str = "inline") -> dict[str, dict[str, Any]]:
    """Run ``cases`` through the runner; slim record by case id."""
    from odebench import runner
    from odebench.suite import load_suite

    suite = load_suite(suite.path, suite.profile, {"measure.isolation": isolation})
    with tempfile.TemporaryDirectory(prefix="odebench-asv-") as tmp:
        records = runner.run(suite, cases, Path(tmp), runner.RunSpec(str(suite.path), suite.profile),
                             progress=False)
    return {r["case_id"]: slim(r) for r in records}


def make_benchmarks(folder: str | Path, module: str) -> dict[str, type]:
    """The asv benchmark classes of the suite in ``folder``, for the shim module named ``module``."""
    from odebench.suite import load_suite

    folder = Path(folder)
    profile = pick_profile(folder)
    suite = load_suite(folder, profile)
    cases = suite.cases()
    ids = [c.id for c in cases]
    by_id = {c.id: c for c in cases}
    version = f"{SCHEMA}-{profile}-{settings_hash(suite.config)}"
    timeout = float(suite.config["measure"]["timeout_s"])
    common = {"params": [ids], "param_names": ["case"], "version": version, "timeout": timeout}

    def setup_cache(self):
        """Every selected, runnable case once; the slim records by case id."""
        todo = [c for c in cases if _selected(c.id) and _why_not(c) is None]
        return run_cases(load_suite(folder, profile), todo) if todo else {}

    # asv shares one setup_cache between the classes whose setup_cache has the same
    # "module:line" key: naming the shim module keeps suites apart and this suite together.
    setup_cache.__module__ = module
    setup_cache.__qualname__ = "setup_cache"
    setup_cache.timeout = timeout * max(1, len(ids))

    def record(cache: dict[str, Any], case_id: str) -> dict[str, Any]:
        if not _selected(case_id):
            raise NotImplementedError(f"{case_id} not selected by ODEBENCH_ASV_CASES")
        why = _why_not(by_id[case_id])
        if why:
            raise NotImplementedError(why)
        rec = cache.get(case_id)
        if rec is None:
            raise NotImplementedError(f"{case_id}: not in the cache")
        if rec["status"] in NOT_RUN:
            raise NotImplementedError(rec.get("message") or rec["status"])
        if rec["status"] != "ok":
            raise RuntimeError(f"{case_id}: {rec['status']}: {rec.get('message')}")
        return rec

    def tracker(metric: str):
        def setup(self, cache, case):
            if record(cache, case).get(metric) is None:
                raise NotImplementedError(f"{case}: no {metric} for this plugin")

        def track(self, cache, case):
            return record(cache, case)[metric]

        return setup, track

    # The figures this workload records (all of them if it does not say).
    columns = suite.workload.columns
    classes: dict[str, type] = {}
    for metric, (_kind, unit, cls_name) in METRICS.items():
        if metric not in columns:
            continue
        setup, track = tracker(metric)
        classes[cls_name] = type(cls_name, (), {
            **common, "unit": unit, "setup_cache": setup_cache, "setup": setup, f"track_{metric}": track,
            "__module__": module, "__doc__": f"{metric} of each case of suite {suite.name!r} ({profile})"})

    def case_setup(self, case):
        if not _selected(case):
            raise NotImplementedError(f"{case} not selected by ODEBENCH_ASV_CASES")
        why = _why_not(by_id[case])
        if why:
            raise NotImplementedError(why)
        _preload(by_id[case].plugin)

    def run_one(self, case):
        rec = _execute(folder, profile, by_id[case])
        if rec["status"] in NOT_RUN:
            raise NotImplementedError(rec.get("message"))
        if rec["status"] != "ok":
            raise RuntimeError(f"{case}: {rec['status']}: {rec.get('message')}")

    classes["Case"] = type("Case", (), {
        **common, "setup": case_setup, "time_case": run_one, "peakmem_case": run_one, "__module__": module,
        "number": 1, "repeat": 1, "rounds": 1, "warmup_time": 0.0,
        "__doc__": f"asv's wall time and peak RSS of one case of suite {suite.name!r} ({profile})"})

    gpu_cases = {}
    for c in cases:
        g = dataclasses.replace(c, device="cuda")
        gpu_cases.setdefault(g.id, g)

    def gpu_setup(self, case):
        c = gpu_cases[case]
        if not _selected(case):
            raise NotImplementedError(f"{case} not selected by ODEBENCH_ASV_CASES")
        why = _why_not(c)
        if why:
            raise NotImplementedError(why)
        from odebench import registry

        if registry.entry(c.plugin).load().backend_framework() != "torch":
            raise NotImplementedError("GPU memory is tracked for torch plugins")
        _preload(c.plugin)

    def track_gpu_peak_bytes(self, case):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        rec = _execute(folder, profile, gpu_cases[case])
        if rec["status"] != "ok":
            raise RuntimeError(f"{case}: {rec['status']}: {rec.get('message')}")
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    classes["GPUMemory"] = type("GPUMemory", (), {
        **common, "params": [list(gpu_cases)], "unit": "bytes", "setup": gpu_setup,
        "track_gpu_peak_bytes": track_gpu_peak_bytes, "__module__": module,
        "__doc__": f"peak CUDA memory of one case of suite {suite.name!r} ({profile}) run on cuda"})
    return classes


def _execute(folder: Path, profile: str, case) -> dict[str, Any]:
    from odebench.suite import load_suite
    from odebench.worker import execute

    return execute(case.to_dict(), load_suite(folder, profile).config)


def _preload(plugin: str) -> None:
    """Import the plugin's backend before the measured region (not part of time or memory deltas)."""
    from odebench import registry
    from odebench.backends import get_backend

    get_backend(registry.entry(plugin).load().backend_framework())
    if "torch" in sys.modules:
        import torch._dynamo  # noqa: F401 - torch's first optimiser imports it (seconds)


# ------------------------------------------------------------------------------ machine file

def write_machine(name: str, path: str | Path | None = None) -> Path:
    """Store this machine's details under the fixed name ``name`` in asv's machine file.

    Arguments:
        name: the machine name results are filed under (e.g. ``odebench-ci``).
        path: the machine file (default: ``$HOME/.asv-machine.json``, where asv reads it).
    """
    from asv.machine import Machine, MachineCollection

    info = Machine.get_defaults() | {"machine": name}
    target = Path(path or MachineCollection.get_machine_file_path())
    target.parent.mkdir(parents=True, exist_ok=True)
    MachineCollection.save(name, info, _path=str(target))
    return target


def _main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[0] != "machine":
        print("usage: python -m odebench.asvbench machine NAME [FILE]", file=sys.stderr)
        return 2
    print(write_machine(argv[1], argv[2] if len(argv) == 3 else None))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
