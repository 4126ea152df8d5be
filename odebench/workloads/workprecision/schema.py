"""What the ``workprecision`` workload adds to a suite: its sections, defaults, matrix axes and columns."""

from __future__ import annotations

from typing import Any

#: The problems a case can solve (the matrix axis ``problem``); see :mod:`.problems`.
PROBLEMS = ("linear_spiral", "vanderpol", "lorenz", "neural_spiral", "neural_wide", "robertson",
            "vanderpol_stiff")
#: Problems whose vector field is a neural network: the ones the ``gradient`` task runs on.
NEURAL = ("neural_spiral", "neural_wide")
#: What one case measures: a forward solve, or the gradient of a loss through the solve.
TASKS = ("solve", "gradient")
#: The error measures, named as SciMLBenchmarks names them, and their record columns.
ERRORS = {"final": "err_final", "l2": "err_l2", "L∞": "err_linf"}

#: Per-problem settings a suite may override under ``[problems]`` (``lorenz = { t1 = 1.0 }``):
#: the end of the span (``t0`` is 0), the number of output times and the step budget. On the
#: stiff problems the explicit adaptive methods get a small budget of their own
#: (``explicit_max_steps``), so that they end as a ``max_steps`` row within seconds instead of
#: grinding through 10⁶ steps; the implicit ones need up to ~2 000 steps at rtol 1e-10.
PROBLEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "linear_spiral": {"t1": 25.0, "n_points": 9, "max_steps": 100_000},
    "vanderpol": {"t1": 10.0, "n_points": 9, "max_steps": 100_000},
    "lorenz": {"t1": 2.0, "n_points": 9, "max_steps": 100_000},
    "neural_spiral": {"t1": 25.0, "n_points": 9, "max_steps": 100_000},
    "neural_wide": {"t1": 5.0, "n_points": 9, "max_steps": 100_000, "batch": 64},
    "robertson": {"t1": 1e5, "n_points": 17, "max_steps": 20_000, "explicit_max_steps": 2_000},
    "vanderpol_stiff": {"t1": 3000.0, "n_points": 9, "max_steps": 20_000, "explicit_max_steps": 2_000},
}
#: The type and constraint of each per-problem key (as :mod:`odebench.schema` reads them).
PROBLEM_KEYS: dict[str, tuple[Any, Any]] = {"t1": (float, "pos"), "n_points": (int, "pos"),
                                            "max_steps": (int, "pos"), "explicit_max_steps": (int, "pos"),
                                            "batch": (int, "pos")}

SECTIONS: dict[str, dict[str, Any]] = {
    "problems": {name: (dict, None) for name in PROBLEMS},
    "reference": {"rtol": (float, "pos"), "atol": (float, "pos"), "margin": (float, "pos")},
    "gradient": {"rtol": (float, "pos"), "atol": (float, "pos"), "reference": ([str], None),
                 "fd_directions": (int, "pos"), "fd_step": (float, "pos"), "target_scale": (float, "nonneg")},
    "report": {"error": (str, tuple(ERRORS)), "targets": ([float], "pos"), "max_error": (float, "pos"),
               "flat_decades": (float, "pos"), "wall_points": (int, "pos")},
    "memory": {"mmap_threshold": (int, "nonneg")},
    # Timed repeats stop once they have taken this many seconds in all (0: every repeat runs).
    "measure": {"repeat_budget_s": (float, "nonneg")},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "problems": {},
    # Two independent scipy references (DOP853 and Radau; Radau and BDF for stiff problems)
    # at this tolerance; they must agree to `margin` times below any error shown.
    "reference": {"rtol": 1e-13, "atol": 1e-14, "margin": 10.0},
    # The reference gradient: backprop through two plugins (plugin:method, the first two
    # available) at this tolerance, checked by central differences along random directions.
    "gradient": {"rtol": 1e-12, "atol": 1e-12, "reference": ["torch_custom:dopri5", "torchdiffeq:dopri5",
                                                             "diffrax:dopri8"],
                 "fd_directions": 3, "fd_step": 1e-4, "target_scale": 1.0},
    "report": {"error": "l2", "targets": [1e-3, 1e-6, 1e-9], "max_error": 1.0, "flat_decades": 0.3,
               "wall_points": 3},
    # glibc's mmap threshold while a gradient case measures its peak (see odebench.measure).
    "memory": {"mmap_threshold": 16384},
    "measure": {"repeat_budget_s": 0.0},
}
AXES = {"problem": ([str], PROBLEMS), "task": ([str], TASKS), "n_steps": ([int], "nonneg")}

#: record fields of this workload, in the order results.csv shows them.
COLUMNS = [
    "n_outputs", "state_size", "max_steps_used",
    "err_final", "err_l2", "err_linf",
    "time_s", "time_s_min", "time_s_iqr", "repeats", "compile_s", "compile_reused",
    "nfe_fwd", "nfe_bwd", "n_vjp", "nfe_native", "steps", "steps_accepted", "steps_rejected",
    "field_s", "loop_s_per_step",
    "grad_err", "grad_err_params", "grad_err_y0", "loss", "peak_bytes", "peak_source", "saved_bytes",
    "ref_kind", "ref_final", "ref_l2", "ref_linf", "grad_ref_kind", "grad_ref_xcheck", "grad_ref_fd",
    "gate", "gate_max_rel", "gate_note", "report_params",
]
