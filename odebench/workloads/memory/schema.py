"""What the ``memory`` workload adds to a suite: its sections, defaults, matrix axes and columns."""

from __future__ import annotations

from typing import Any

from odebench.models import ACTIVATIONS

BLOCKS = ("convnet", "mlp")
LOSSES = ("sumsq",)

#: Thresholds of the class check (overridable in the suite's ``[classes]``).
DEFAULT_CLASSES: dict[str, Any] = {
    "adjoint_max_exponent": 0.1,       # adjoint: peak ∝ n^e with e below this
    "backprop_rel_tol": 0.2,           # backprop: |slope / saved-bytes slope - 1| within this
    "checkpoint_state_band": [0.5, 2.0],  # checkpoint: slope in states per step; above the top: not state-only
    "checkpoint_max_backprop_frac": 0.5,  # checkpoint: slope at most this fraction of backprop's
    "exponent_floor_bytes": 65536,     # peaks below this count as this in the log-log fit
}

SECTIONS: dict[str, dict[str, Any]] = {
    "solve": {"t0": (float, None), "t1": (float, None), "loss": (str, LOSSES)},
    "convnet": {"channels": (int, "pos"), "height": (int, "pos"), "width": (int, "pos"),
                "batch": (int, "pos")},
    "mlp": {"sizes": ([int], "pos"), "activation": (str, ACTIVATIONS), "weight_std": (float, "nonneg"),
            "batch": (int, "pos")},
    "memory": {"mmap_threshold": (int, "nonneg"), "passes": (int, "pos")},
    "classes": {"adjoint_max_exponent": (float, "pos"), "backprop_rel_tol": (float, "pos"),
                "checkpoint_state_band": ([float], "nonneg"), "checkpoint_max_backprop_frac": (float, "pos"),
                "exponent_floor_bytes": (int, "nonneg")},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "solve": {"t0": 0.0, "t1": 1.0, "loss": "sumsq"},
    "convnet": {"channels": 64, "height": 6, "width": 6, "batch": 128},
    "mlp": {"sizes": [64, 256, 64], "activation": "tanh", "weight_std": 0.1, "batch": 256},
    # 16 KiB: every tensor of the blocks above is a fresh mapping; 0 leaves glibc's default.
    "memory": {"mmap_threshold": 16384, "passes": 2},
    "classes": dict(DEFAULT_CLASSES),
}
REQUIRED: tuple[str, ...] = ()
AXES = {"block": ([str], BLOCKS), "n_steps": ([int], "pos")}
#: record fields of this workload, in the order results.csv shows them.
COLUMNS = ["batch", "state_bytes", "n_params", "loss", "repeats", "fwd_s", "fwd_s_iqr", "bwd_s", "bwd_s_iqr",
           "compile_s", "peak_bytes", "peak_source", "peak_passes", "peak_rss_bytes", "rss_method", "peak_gpu_bytes",
           "saved_bytes", "saved_source", "nfe_fwd", "nfe_bwd", "n_vjp", "nfe_native", "steps", "nfe_agree",
           "mmap_threshold", "class_params", "floor_s", "floor_ratio", "loop_s_per_step"]
