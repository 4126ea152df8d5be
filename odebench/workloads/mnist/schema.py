"""What the ``mnist`` workload adds to a suite: its sections, defaults, matrix axis and columns."""

from __future__ import annotations

from typing import Any

from odebench import swap

#: The models of Table 1 (kept in sync with ``odebench.backends.torch_convnets.MODEL_KINDS``,
#: repeated here so loading a suite does not import torch).
MODELS = ("odenet", "rknet", "resnet", "review")
#: sgd: with ``momentum`` (Chen et al.); adam: torch's defaults but the rate (the review).
OPTIMIZERS = ("sgd", "adam")
#: The learning rate is ``lr × batch_size / LR_BATCH_DENOM`` (torchdiffeq's example) unless
#: ``training.scale_lr`` is false.
LR_BATCH_DENOM = 128
MNIST_TRAIN, MNIST_TEST = 60_000, 10_000

SECTIONS: dict[str, dict[str, Any]] = {
    "data": {"train_subset": (int, "nonneg"), "test_subset": (int, "nonneg"), "subset_seed": (int, "nonneg"),
             "data_dir": (str, None), "augment": (bool, None), "test_batch_size": (int, "pos")},
    "model": {"step_size": (float, "pos")},
    "training": {"optimizer": (str, OPTIMIZERS), "lr": (float, "pos"), "momentum": (float, "nonneg"),
                 "batch_size": (int, "pos"), "epochs": (int, "pos"), "lr_decay_epochs": ([float], "nonneg"),
                 "scale_lr": (bool, None),
                 "lr_decay": (float, "pos"), "evals_per_epoch": (int, "pos"), "max_batches": (int, "nonneg")},
} | swap.SECTION
DEFAULTS: dict[str, dict[str, Any]] = {
    # 0 = the whole split; data_dir "" = $ODEBENCH_DATA, then the user cache.
    "data": {"train_subset": 0, "test_subset": 0, "subset_seed": 0, "data_dir": "", "augment": True,
             "test_batch_size": 1000},
    "model": {"step_size": 0.1},
    "training": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 128, "epochs": 160,
                 "lr_decay_epochs": [60.0, 100.0, 140.0], "lr_decay": 0.1, "evals_per_epoch": 1, "scale_lr": True,
                 "max_batches": 0},
} | swap.defaults(rtol=1e-6, atol=1e-6)  # 1000x tighter than ODE-Net's 1e-3; a conv net's test pass
REQUIRED = ("training",)
AXES = {"model": ([str], MODELS)}
#: record fields of this workload, in the order results.csv shows them.
COLUMNS = ["params", "test_acc", "test_error_pct", "best_test_acc", "epochs_done", "batches_done",
           "batches_per_epoch", "batch_size", "train_images", "test_images", "repeats", "s_per_epoch",
           "s_per_epoch_iqr", "s_per_batch", "s_per_batch_iqr", "fwd_s", "bwd_s", "train_s", "ms_per_image",
           "final_loss", "nfe_fwd", "nfe_bwd", "nfe_fwd_first_epoch", "nfe_fwd_last_epoch",
           "nfe_bwd_first_epoch", "nfe_bwd_last_epoch", "probe_nfe_fwd_start", "probe_nfe_fwd_end",
           "probe_nfe_bwd_start", "probe_nfe_bwd_end", "n_vjp", "nfe_native", "nfe_agree", "steps",
           "peak_rss_bytes", "rss_method", "peak_gpu_bytes", "saved_bytes", "paper_test_error_pct",
           "paper_params_m", "not_applicable", "swap_solver", "swap_test_acc", "swap_acc_delta", "swap_message"]
