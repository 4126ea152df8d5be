"""odebench: which ODE solver and gradient method should a neural ODE use, and what does it cost?

The public API is small:

* :func:`load_suite` / :class:`Suite` / :class:`Case` — what to run;
* :func:`get_plugin`, :func:`plugin_names` — the registered solver plugins;
* :class:`SolverPlugin`, :class:`JaxSolverPlugin`, :class:`Solution`, :class:`SolveStats`,
  :class:`Status`, :class:`UnsupportedError`, :class:`SolveFailed` — the plugin contract;
* :class:`Workload`, :func:`get_workload`, :func:`workload_names` — the workload contract;
* :func:`render_report` — records → tables and figures.
"""

from odebench._version import __version__
from odebench.protocol import (
    GRAD_MODES,
    METHODS,
    JaxSolverPlugin,
    Solution,
    SolveFailed,
    SolverPlugin,
    SolveStats,
    Status,
    UnsupportedError,
)
from odebench.registry import get_plugin, get_workload, plugin_names, workload_names
from odebench.schema import SuiteError
from odebench.suite import Case, Suite, load_suite
from odebench.workload import Workload


def render_report(run_dir):
    """Re-render ``report.md``, ``results.csv`` and figures of a run folder (see :mod:`odebench.report`)."""
    from odebench.report import render

    return render(run_dir)


__all__ = [
    "GRAD_MODES", "METHODS", "Case", "JaxSolverPlugin", "Solution", "SolveFailed", "SolveStats", "SolverPlugin",
    "Status", "Suite", "SuiteError", "UnsupportedError", "Workload", "__version__", "get_plugin", "get_workload",
    "load_suite", "plugin_names", "render_report", "workload_names",
]
