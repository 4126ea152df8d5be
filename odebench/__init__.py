"""odebench: which ODE solver and gradient method should a neural ODE use, and what does it cost?

The public API is small:

* :func:`load_suite` / :class:`Suite` / :class:`Case` — what to run;
* :func:`get_plugin`, :func:`plugin_names` — the registered solver plugins;
* :class:`SolverPlugin`, :class:`Solution`, :class:`SolveStats`, :class:`Status` — the contract;
* :func:`render_report` — records → tables and figures.
"""

from odebench._version import __version__
from odebench.protocol import GRAD_MODES, METHODS, Solution, SolverPlugin, SolveStats, Status
from odebench.registry import get_plugin, plugin_names
from odebench.suite import Case, Suite, SuiteError, load_suite


def render_report(run_dir):
    """Re-render ``report.md``, ``results.csv`` and figures of a run folder (see :mod:`odebench.report`)."""
    from odebench.report import render

    return render(run_dir)


__all__ = [
    "GRAD_MODES", "METHODS", "Case", "Solution", "SolveStats", "SolverPlugin", "Status", "Suite",
    "SuiteError", "__version__", "get_plugin", "load_suite", "plugin_names", "render_report",
]
