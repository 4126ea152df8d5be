"""odebench: which ODE solver and gradient method should a neural ODE use, and what does it cost?

The public API is small:

* :func:`load_suite` / :class:`Suite` / :class:`Case` — what to run;
* :func:`get_plugin`, :func:`plugin_names` — the registered solver plugins;
* :class:`SolverPlugin`, :class:`JaxSolverPlugin`, :class:`Solution`, :class:`SolveStats`,
  :class:`Status`, :class:`UnsupportedError`, :class:`SolveFailed` — the plugin contract;
* :class:`Workload`, :func:`get_workload`, :func:`workload_names` — the workload contract;
* :func:`render_report` — records → tables and figures;
* :class:`Problem`, :class:`ProblemError` — the contract of a problem of your own, and
  :func:`run` (:class:`RunResult`) — a suite on it (or on its own problems) from Python.
"""

from odebench._version import __version__
from odebench.problem import Problem, ProblemError
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


def run(suite, problem=None, **kwargs):
    """Run a suite as ``odebench run`` does and return a :class:`odebench.notebook.RunResult` (its tables and
    run folder); the arguments are :func:`odebench.notebook.run`'s (imported on call: it needs pandas)."""
    from odebench.notebook import run as _run

    return _run(suite, problem, **kwargs)


def render_report(run_dir):
    """Re-render ``report.md``, ``results.csv`` and figures of a run folder (see :mod:`odebench.report`)."""
    from odebench.report import render

    return render(run_dir)


__all__ = [
    "GRAD_MODES", "METHODS", "Case", "JaxSolverPlugin", "Problem", "ProblemError", "Solution", "SolveFailed",
    "SolveStats", "SolverPlugin", "Status", "Suite", "SuiteError", "UnsupportedError", "Workload", "__version__", "get_plugin", "get_workload",
    "load_suite", "plugin_names", "render_report", "run", "workload_names",
]
