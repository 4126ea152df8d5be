"""Workloads: what a suite's cases do, one module each.

A workload module declares, as data, the suite sections and matrix axes it adds to the
common ones (``SECTIONS``, ``DEFAULTS``, ``REQUIRED``, ``AXES``, ``COLUMNS``) and provides:

* ``validate(config, where)`` — cross-checks beyond the schema (raise ``SuiteError``);
* ``run_case(case, config, plugin) -> dict`` — the record fields of one case; a failure
  is a status in the record, never an exception;
* ``summary(df) -> DataFrame`` — the report's table;
* ``figures(records, out_dir) -> list[Path]`` and ``sections(records, config) -> list[str]``
  — the report's figures and extra markdown.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: workload name → module (imported on first use).
WORKLOADS = {"train": "odebench.workloads.train", "memory": "odebench.workloads.memory",
             "mnist": "odebench.workloads.mnist"}


def get_workload(name: str) -> ModuleType:
    """The workload module called ``name``.

    Raises:
        KeyError: for an unknown workload.
    """
    return importlib.import_module(WORKLOADS[name])
