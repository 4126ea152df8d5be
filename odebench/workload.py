"""The workload contract: what a suite's cases do, and how its report shows them.

A workload is one kind of experiment (train a neural ODE, measure memory against depth,
train an MNIST classifier, ...). It declares, as class attributes, the suite sections,
defaults and matrix axes it adds to the common ones, and the record columns it produces;
it implements :meth:`Workload.run_case` (one case → one record) and
:meth:`Workload.summary` (the report's table). Workloads are found through the
``odebench.workloads`` entry-point group, exactly like solver plugins, or registered in
a running process with :func:`odebench.registry.register_workload`.

A minimal workload::

    class Decay(Workload):
        name = "decay"
        sections = {"problem": {"rate": (float, "pos")}}
        defaults = {"problem": {"rate": 1.0}}
        columns = ["y1"]

        def run_case(self, case, config, plugin):
            import torch
            sol = plugin.odeint(lambda t, y: -config["problem"]["rate"] * y, torch.ones(1),
                                torch.linspace(0, 1, 5), method=case["method"])
            return {"status": str(sol.status), "message": sol.message, "y1": float(sol.ys[-1])}

        def summary(self, df):
            return df[["plugin", "method", "status", "y1"]]
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from odebench.protocol import SolverPlugin

if TYPE_CHECKING:  # a case's process loads its workload without pandas (seconds of its start-up)
    import pandas as pd

#: A field spec as :mod:`odebench.schema` reads it: ``(type, constraint)``.
FieldSpec = tuple[Any, Any]


class Workload(abc.ABC):
    """Base class of every workload. Subclasses set the class attributes.

    Class attributes (the workload's suite schema and record layout, as data):
        name: the value of ``suite.workload`` that selects it (``"train"``).
        sections: section → key → field spec, added to the common sections (a common
            section such as ``measure`` may gain keys, e.g. ``measure.fairness_steps``).
        defaults: section → key → default value.
        required: sections a suite of this workload must have.
        axes: extra matrix axes (name → field spec of its list), e.g. memory's ``n_steps``.
        columns: the record fields this workload writes, in the order ``results.csv`` shows them.
        summary_note: a paragraph above the report's table saying what each column measures.
    """

    name: ClassVar[str] = ""
    sections: ClassVar[dict[str, dict[str, FieldSpec]]] = {}
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    axes: ClassVar[dict[str, FieldSpec]] = {}
    columns: ClassVar[list[str]] = []
    summary_note: ClassVar[str] = ""
    #: Whether a user's problem can be the suite's problem input (``--problem``; :meth:`use_problem`).
    takes_problem: ClassVar[bool] = False

    def validate(self, config: dict[str, dict[str, Any]], where: str) -> None:
        """Cross-checks the schema cannot express (e.g. snapshots within the iterations).

        Arguments:
            config: the merged, schema-checked settings, section by section.
            where: the suite file (and profile) for the message.

        Raises:
            odebench.schema.SuiteError: one line naming the bad value and the valid choices.
        """
        return  # the schema's checks are enough unless a workload says otherwise

    def preflight(self, config: dict[str, dict[str, Any]]) -> None:
        """Check the inputs the cases will read (a dataset's files), once, before any case runs.

        ``odebench run`` calls it before it creates the run folder, so bad input ends there
        with one line and exit code 2 instead of a run of ``error`` rows.

        Raises:
            odebench.schema.SuiteError: one line naming the file and what is wrong with it.
        """
        return  # nothing to read beyond the suite file

    def shared_work_key(self, case: dict[str, Any], config: dict[str, Any]) -> str | None:
        """The group whose cases share untimed work done once, in one process, before any of them runs.

        Called in the runner's process (cheaply: no framework import). None (the default): the
        case does all its work in its own process. Cases with the same key are given together to
        :meth:`shared_work` in one fresh process; the train workload gates all of a JAX plugin's
        cases there instead of starting a gate interpreter per case.
        """
        return None

    def shared_work(self, cases: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Do the shared untimed work of one group; ``{case_id: fields}`` added to each case's fields.

        Runs in a fresh process of its own, never in a timed case's. A case missing from the
        result (the group's process failed, or timed out) does the work itself in its own process.
        """
        return {}

    def process_group_key(self, case: dict[str, Any], config: dict[str, Any]) -> str | None:
        """The group of cases that may share one process when ``measure.isolation = "group"``.

        Called in the runner's process (cheaply: no framework import). Cases with the same key run
        one after another in one fresh process, in the run's order, each with its own timeout;
        None (the default) gives the case a process of its own. Group only cases whose figures do
        not depend on a clean process (no process-wide peak, no flag one case sets for the next):
        the work-precision workload groups the points of one curve, which then share the imports
        and the compiled programs of their framework.
        """
        return None

    def use_problem(self, config: dict[str, dict[str, Any]], problem: dict[str, Any]) -> None:
        """Make a user's problem the suite's problem input (``odebench run --problem``), in place.

        Arguments:
            config: the validated settings, changed in place.
            problem: what :func:`odebench.problemload.check` returned for it (JSON-able: it
                travels to the cases in ``config``).

        Raises:
            odebench.schema.SuiteError: when the suite's settings do not fit the problem.
            NotImplementedError: in a workload that does not declare :attr:`takes_problem`.
        """
        raise NotImplementedError(f"the {self.name} workload takes no problem of the user's")

    def unsupported_reason(self, case: dict[str, Any], config: dict[str, Any], plugin: type) -> str | None:
        """Why a case cannot run, known before it starts (the runner then records ``unsupported``
        without starting its process); None (the default) when it can.

        Arguments:
            case: the case's fields, with the axes.
            config: the suite's validated settings.
            plugin: the case's plugin class (installed).
        """
        return None

    @abc.abstractmethod
    def run_case(self, case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin) -> dict[str, Any]:
        """Measure one case and return its record fields.

        Arguments:
            case: the case's fields (:meth:`odebench.suite.Case.to_dict`), with the axes.
            config: the suite's validated settings.
            plugin: an instance of the case's plugin.

        Returns:
            At least ``status`` and ``message``, and the workload's :attr:`columns`. A failed
            solve or any exception is a status (see :func:`odebench.failures.classify`),
            never raised.
        """

    @abc.abstractmethod
    def summary(self, df: pd.DataFrame) -> pd.DataFrame:
        """The report's summary table, from the rows of the cases that ran."""

    def figures(self, records: list[dict[str, Any]], out: Path) -> list[Path]:
        """Draw the report's figures into ``out``; returns their paths (default: none)."""
        return []

    def sections_md(self, records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
        """Extra markdown lines for the report after the summary (default: none).

        Arguments:
            records: every record of the run.
            config: the run's suite settings (empty when the suite file is gone).
        """
        return []


__all__ = ["FieldSpec", "Workload"]
