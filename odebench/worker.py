"""Runs one case, in whatever process calls it; ``python -m odebench.worker IN OUT`` for isolation.

The runner starts this module in a fresh process per case, so each case's peak memory is
its own and a hung or crashed case can be killed without losing the run. The case and
suite settings come in as JSON in ``IN``; the record goes out as JSON to ``OUT``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from odebench.failures import failure_fields
from odebench.protocol import Status


def execute(case: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Measure one case and return its workload's record fields (never raises for a failed case)."""
    from odebench import registry

    try:
        plugin = registry.get_plugin(case["plugin"])
    except Exception as exc:  # noqa: BLE001 - reported as a row
        return {"status": str(Status.UNAVAILABLE), "message": str(exc)}
    try:
        threads = config["measure"].get("threads", 0)
        if threads and plugin.backend_framework() == "torch":
            import torch

            torch.set_num_threads(threads)
        record = registry.get_workload(config["suite"]["workload"]).run_case(case, config, plugin)
        if "torch" in sys.modules:  # what the case really ran with, not the driver's setting
            record.setdefault("torch_threads", sys.modules["torch"].get_num_threads())
        return record
    except Exception as exc:  # noqa: BLE001 - a workload that raises anyway still gives a row
        return failure_fields(exc)


def main(argv: list[str]) -> int:
    in_path, out_path = argv
    with open(in_path) as fh:
        job = json.load(fh)
    record = execute(job["case"], job["config"])
    with open(out_path, "w") as fh:
        json.dump(record, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
