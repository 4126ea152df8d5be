"""The ``workprecision`` workload: which solver and gradient method is cheapest at the accuracy I need?

One case is one point of a work-precision curve: a plugin × method on a ``problem``, at one
tolerance pair (adaptive methods, ``n_steps = 0``) or one step count (fixed-step methods,
``n_steps`` steps of ``(t1 - t0) / n_steps``), in float64. The ``task`` axis says what it measures:

``solve``: the forward solve.
    1. the problem and its truth (:mod:`.problems`): the exact solution, or two independent
       scipy references (cached), whose disagreement is recorded (``ref_*``);
    2. a first solve (its status: a failure ends the case as a row with that status), then
       ``measure.warmup - 1`` more, untimed; JAX compiles before any of them (``compile_s``),
       once per curve in a process (``compile_reused`` on the later points: the tolerances are
       the compiled program's arguments);
    3. ``measure.repeats`` timed solves (GC off), fewer once they have taken
       ``measure.repeat_budget_s``: median, IQR and minimum (``time_s*``; ``repeats`` ran);
    4. the errors of the last timed solve against the reference: ``final``, ``l2``, ``L∞``
       (:func:`.analysis.error_measures`);
    5. an untimed instrumented solve: NFE counted by the backend's counter, the library's
       steps (accepted, rejected), and every state at which the field was evaluated;
    6. the vector field alone at those states, one evaluation after another, timed the same
       way (``field_s``): ``loop_s_per_step = max(min solve - min field, 0) / steps`` is the
       solver's own time per step beyond the field's.

``gradient`` (the neural problems): ``loss = Σ_i ‖y(t_i) - target_i‖²`` over the output times,
its gradient with respect to the MLP's parameters and ``y0`` through the case's grad mode.
    1. the reference gradient (:mod:`.gradref`: backprop through two plugins at rtol 1e-12 and
       central differences, cached); 2. a first forward+backward (status); 3. the peak
    resident set over one more (glibc's mmap threshold pinned so freed buffers leave the
    process); 4. repeated timed forward+backward passes; 5. the gradient's relative L2 error
    (``grad_err``; parameters and ``y0`` apart); 6. the backend's instrumented pass: NFE-F,
    NFE-B, VJPs, bytes saved for backward (torch).

The report (:mod:`.report`) interpolates each curve at target errors (the matched-error table,
first in the report), draws error against time and against NFE per problem, flags walls, and
compares the adjoint with backprop and the seminorm adjoint with the plain one.
"""

from __future__ import annotations

from typing import Any

from odebench.protocol import FIXED_METHODS
from odebench.schema import SuiteError, check_value, choices
from odebench.workload import Workload
from odebench.workloads.workprecision import case, report
from odebench.workloads.workprecision.schema import (
    AXES,
    COLUMNS,
    DEFAULTS,
    NEURAL,
    PROBLEM_DEFAULTS,
    PROBLEM_KEYS,
    SECTIONS,
)


def _blocks(matrix: dict[str, Any]) -> list[dict[str, list[Any]]]:
    """The matrix's base block and each ``include`` block over it, every value a list."""
    base = {k: v for k, v in matrix.items() if k not in ("include", "tolerances")}
    return [base] + [base | {k: v if isinstance(v, list) else [v] for k, v in inc.items() if k != "tolerances"}
                     for inc in matrix["include"]]


class WorkPrecisionWorkload(Workload):
    """Error against cost for every plugin × method (× grad mode) over a tolerance or step sweep."""

    name = "workprecision"
    sections = SECTIONS
    defaults = DEFAULTS
    axes = AXES
    columns = COLUMNS
    summary_note = report.SUMMARY_NOTE
    takes_problem = True

    def validate(self, config: dict[str, Any], where: str) -> None:
        """Float64 on the CPU; each block pairs adaptive methods with ``n_steps = 0`` and fixed-step
        methods with step counts whose grid holds the output times; gradients on neural problems
        only; one atol/rtol ratio; the ``[problems]`` entries well-formed.

        Raises:
            SuiteError: one line naming the bad value and the valid choices.
        """
        if config["measure"]["dtype"] != "float64":
            raise SuiteError(f"{where}: the workprecision workload measures errors down to 1e-10, so "
                             f"measure.dtype must be float64, got {config['measure']['dtype']!r}")
        for name, entry in config["problems"].items():
            for key, value in entry.items():
                if key not in PROBLEM_DEFAULTS[name]:
                    raise SuiteError(f"unknown key {key!r} in problems.{name}; valid: "
                                     f"{choices(PROBLEM_DEFAULTS[name])}")
                check_value(f"problems.{name}.{key}", value, *PROBLEM_KEYS[key])
        m = config["matrix"]
        if any(d != "cpu" for b in _blocks(m) for d in b["device"]):
            raise SuiteError(f"{where}: the workprecision workload measures on the CPU; matrix.device must be "
                             "['cpu']")
        sweeps = [m["tolerances"]] + [inc["tolerances"] for inc in m["include"] if "tolerances" in inc]
        ratios = {round(t["atol"] / t["rtol"], 12) for tols in sweeps for t in tols}
        if len(ratios) > 1:
            raise SuiteError(f"{where}: a curve sweeps one parameter, so matrix.tolerances (and an include's) must "
                             f"keep atol/rtol constant; got ratios {sorted(ratios)}")
        for i, block in enumerate(_blocks(m)):
            what = "matrix" if i == 0 else f"matrix.include[{i - 1}]"
            self._check_block(block, what, config, where)
        for item in config["gradient"]["reference"]:
            if ":" not in item:
                raise SuiteError(f"{where}: gradient.reference entry {item!r} must be plugin:method, "
                                 "e.g. torch_custom:dopri5")
        if len(config["report"]["targets"]) == 0:
            raise SuiteError(f"{where}: report.targets must list at least one target error")
        if config["report"]["wall_points"] < 2:
            raise SuiteError(f"{where}: report.wall_points must be at least 2, got {config['report']['wall_points']}")

    @staticmethod
    def _check_block(block: dict[str, list[Any]], what: str, config: dict[str, Any], where: str) -> None:
        fixed = [x for x in block["method"] if x in FIXED_METHODS]
        adaptive = [x for x in block["method"] if x not in FIXED_METHODS]
        steps = block["n_steps"]
        if fixed and any(n <= 0 for n in steps):
            raise SuiteError(f"{where}: {what} pairs fixed-step {fixed[0]!r} with n_steps {steps}; a fixed-step "
                             "method needs step counts > 0 (put adaptive methods in a block with n_steps = [0])")
        if adaptive and any(n != 0 for n in steps):
            raise SuiteError(f"{where}: {what} pairs adaptive {adaptive[0]!r} with n_steps {steps}; an adaptive "
                             "method sweeps matrix.tolerances with n_steps = [0] (put fixed-step methods in "
                             "an include block)")
        if "gradient" in block["task"]:
            bad = [p for p in block["problem"] if p not in NEURAL]
            if bad:
                raise SuiteError(f"{where}: {what} asks for gradients on {bad[0]!r}; the gradient task needs a "
                                 f"neural vector field (valid: {', '.join(NEURAL)})")
        if not fixed:
            return
        for name in block["problem"]:
            if name == "robertson":
                continue  # log-spaced outputs: no grid holds them, and explicit steps fail there anyway
            n_points = (PROBLEM_DEFAULTS[name] | config["problems"].get(name, {}))["n_points"]
            off = [n for n in steps if n % max(n_points - 1, 1)]
            if off:
                raise SuiteError(f"{where}: {what}: n_steps {off[0]} does not put a step on each of {name}'s "
                                 f"{n_points} output times; use multiples of {n_points - 1}")

    def process_group_key(self, case: dict[str, Any], config: dict[str, Any]) -> str | None:
        """One process per plugin × problem × task under ``measure.isolation = "group"``: the points
        of its curves share the framework's import and, in JAX, one compiled program per curve
        (the tolerances are the program's arguments). Each case measures its peak resident set
        over its own region (``VmHWM`` reset), so a shared process does not lend it another's."""
        return f"{case['plugin']}-{case['problem']}-{case['task']}"

    def use_problem(self, config: dict[str, Any], problem: dict[str, Any]) -> None:
        """Every block of the matrix on the user's problem instead of the suite's (``--problem``):
        its name replaces every ``problem`` of the matrix and of its include blocks, and the problem
        travels to the cases as ``config["user_problem"]``. A case in a framework the problem does
        not provide, or a fixed-step case whose grid misses an output time, is an ``unsupported``
        row (:func:`.case.unsupported_reason`)."""
        m = config["matrix"]
        m["problem"] = [problem["name"]]
        for inc in m["include"]:
            if "problem" in inc:
                inc["problem"] = [problem["name"]]
        config["user_problem"] = problem

    # What one case does and how the report shows it live in their own modules.
    run_case = staticmethod(case.run_case)
    unsupported_reason = staticmethod(case.unsupported_reason)
    summary = staticmethod(report.summary)
    figures = staticmethod(report.figures)
    sections_md = staticmethod(report.sections)


__all__ = ["WorkPrecisionWorkload"]
