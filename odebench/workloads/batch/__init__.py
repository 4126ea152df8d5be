"""The ``batch`` workload: what a shared step size costs a batch of different problems.

A solver that steps a batch jointly (one error norm, one step size for all samples) makes every
sample take the steps of the hardest one; a solver that steps samples apart (torchode) does not.
One case is one plugin × method × problem × batch size ``N`` × spread (see
:mod:`odebench.workloads.batch.problem` for the problems and how the spread sets the samples).
Per case, for each of the two modes — ``joint`` (the batch as one ``y0`` of shape ``(N, d)``, one
solve) and ``solo`` (each sample alone, ``N`` solves), through the same plugin and settings:

1. a compiling plugin (JAX, ``torchode_compiled``) compiles for the mode's shapes, timed apart
   (``compile_s_joint``, ``compile_s_solo``);
2. one untimed instrumented pass: the harness counts each solve's vector-field calls, and keeps
   the library's statistics and the trajectory. Steps per sample come from the statistics: the
   plugin's per-sample list where it reports one (torchode's ``stats.extra["n_steps"]``), else the
   batch's steps for every sample (a joint plugin). Errors per sample are against a float64
   reference of that sample alone (scipy DOP853, or Radau for a stiff Van der Pol; cached);
3. ``measure.warmup`` untimed passes, then ``measure.repeats`` timed passes, GC off and the
   device synchronised; the median pass over ``N`` is the time per sample.

Solves are forward only. The record carries the plugin's declared ``batch_stepping``, and the
step-inflation ratio: joint steps per sample over the mean solo steps
(:func:`odebench.workloads.batch.analysis.columns`).
"""

from __future__ import annotations

from typing import Any

from odebench.protocol import ADAPTIVE_METHODS
from odebench.schema import SuiteError
from odebench.workload import Workload
from odebench.workloads.batch import case, report
from odebench.workloads.batch.schema import AXES, COLUMNS, DEFAULTS, REQUIRED, SECTIONS


class BatchWorkload(Workload):
    """Joint against per-sample solves of a batch of different problems (the batch-coupling suite)."""

    name = "batch"
    sections = SECTIONS
    defaults = DEFAULTS
    required = REQUIRED
    axes = AXES
    columns = COLUMNS
    summary_note = report.SUMMARY_NOTE

    def validate(self, config: dict[str, Any], where: str) -> None:
        """Adaptive methods only; spreads of at least 1; an MLP that maps the state to itself; a 2-d vdp state."""
        matrix = config["matrix"]
        blocks = [matrix] + list(matrix["include"])

        def values(key):
            return [v for b in blocks if key in b for v in (b[key] if isinstance(b[key], list) else [b[key]])]

        bad = [m for m in values("method") if m not in ADAPTIVE_METHODS]
        if bad:
            raise SuiteError(f"{where}: the batch workload compares adaptive step counts; method {bad[0]!r} takes "
                             f"fixed steps; valid: {', '.join(ADAPTIVE_METHODS)}")
        low = [s for s in values("spread") if s < 1.0]
        if low:
            raise SuiteError(f"{where}: matrix.spread is the largest sample's parameter over the smallest's (1); "
                             f"got {low[0]!r}, valid: 1 or more")
        sizes = config["mlp"]["sizes"]
        if len(sizes) < 2 or sizes[0] != sizes[-1]:
            raise SuiteError(f"{where}: mlp.sizes must start and end with the state width, got {sizes}")
        if len(config["vdp"]["y0"]) != 2:
            raise SuiteError(f"{where}: vdp.y0 must be a 2-d state [y1, y2], got {config['vdp']['y0']}")
        if config["solve"]["n_times"] < 2:
            raise SuiteError(f"{where}: solve.n_times must be at least 2 (the start and the end), "
                             f"got {config['solve']['n_times']}")

    # What one case does and how the report shows it live in their own modules.
    run_case = staticmethod(case.run_case)
    summary = staticmethod(report.summary)
    figures = staticmethod(report.figures)
    sections_md = staticmethod(report.sections)


__all__ = ["BatchWorkload"]
