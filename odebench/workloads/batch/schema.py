"""What the ``batch`` workload adds to a suite: its sections, defaults, matrix axes and columns."""

from __future__ import annotations

from typing import Any

from odebench.models import ACTIVATIONS

#: The batched problems: Van der Pol oscillators with a per-sample μ, and one seeded MLP field
#: started from initial states of different scales.
PROBLEMS = ("vdp", "mlp")
#: How the samples' parameter (μ, or the initial-state scale) spreads over the batch:
#: ``geometric``: log-spaced from 1 to the spread; ``outlier``: every sample at 1 but the last,
#: which is at the spread (the stiffest instance alone).
LAYOUTS = ("geometric", "outlier")

SECTIONS: dict[str, dict[str, Any]] = {
    "vdp": {"t1": (float, "pos"), "y0": ([float], None)},
    "mlp": {"sizes": ([int], "pos"), "activation": (str, ACTIVATIONS), "weight_std": (float, "nonneg"),
            "t1": (float, "pos")},
    "samples": {"layout": (str, LAYOUTS)},
    "solve": {"n_times": (int, "pos")},
    "reference": {"rtol": (float, "pos"), "atol": (float, "pos")},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    # About one limit cycle at μ = 1; a stiff sample stays on its slow branch, where an explicit
    # method's step is held to ~1/μ by stability, not accuracy.
    "vdp": {"t1": 6.0, "y0": [2.0, 0.0]},
    "mlp": {"sizes": [2, 32, 2], "activation": "tanh", "weight_std": 1.0, "t1": 5.0},
    "samples": {"layout": "geometric"},
    "solve": {"n_times": 11},
    "reference": {"rtol": 1e-11, "atol": 1e-12},
}
REQUIRED: tuple[str, ...] = ()
#: ``spread``: the largest sample's parameter over the smallest's (μ_max for vdp, the largest
#: initial-state scale for mlp; the smallest is 1). 1 makes every sample identical.
AXES = {"problem": ([str], PROBLEMS), "batch": ([int], "pos"), "spread": ([float], "pos")}

#: Record fields of this workload, in the order ``results.csv`` shows them.
COLUMNS = ["steps_joint_mean", "steps_joint_max", "steps_solo_mean",
           "steps_solo_max", "step_inflation", "nfe_joint", "nfe_solo_mean", "nfe_solo_max", "nfe_inflation",
           "nfe_joint_native", "nfe_agree", "err_joint_mean", "err_joint_max", "err_solo_mean", "err_solo_max",
           "repeats", "s_per_sample_joint", "s_per_sample_joint_iqr", "s_per_sample_solo",
           "s_per_sample_solo_iqr", "compile_s_joint", "compile_s_solo", "per_sample"]
