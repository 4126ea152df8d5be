"""The ``train`` workload: fit an MLP vector field to a problem's trajectory, timing each iteration.

:class:`TrainWorkload` declares the suite sections and record columns; one case is run by
:mod:`.case`, the report's table, paper comparison and figures are drawn by :mod:`.report`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from odebench import swap
from odebench.schema import SuiteError, choices
from odebench.workload import Workload
from odebench.workloads.train import case, report
from odebench.workloads.train.checks import check_problem_fit

OPTIMIZERS = ("rmsprop", "adam", "sgd")
LOSSES = ("mse",)

SECTIONS: dict[str, dict[str, Any]] = {
    "problem": {"name": (str, None), "params": (dict, None)},
    "model": {"kind": (str, ("mlp",)), "sizes": ([int], "pos"), "activation": (str, None),
              "weight_std": (float, "nonneg"), "bias": (float, None)},
    "training": {"optimizer": (str, OPTIMIZERS), "lr": (float, "pos"), "iterations": (int, "pos"),
                 "batch_size": (int, "pos"), "batch_time": (int, "pos"), "loss": (str, LOSSES),
                 "snapshots": ([int], "nonneg")},
    # Optimiser steps the fairness gate checks against the reference before timing (0: off).
    "measure": {"fairness_steps": (int, "nonneg")},
} | swap.SECTION
DEFAULTS: dict[str, dict[str, Any]] = {
    "problem": {"params": {}},
    "model": {"kind": "mlp", "activation": "tanh", "weight_std": 0.1, "bias": 0.0},
    "training": {"optimizer": "rmsprop", "loss": "mse", "snapshots": []},
    "measure": {"fairness_steps": 3},
} | swap.defaults(rtol=1e-9, atol=1e-11)  # a 2-d MLP field: a tight float64 reference is cheap
REQUIRED = ("problem", "model", "training")
#: record fields of this workload, in the order results.csv shows them.
COLUMNS = ["iterations_done", "repeats", "train_s", "train_s_iqr", "s_per_iter", "s_per_iter_iqr", "fwd_s",
           "bwd_s", "fused", "compile_s", "end_to_end_s", "n_traces", "final_mse", "final_loss", "nfe_fwd", "nfe_bwd", "n_vjp",
           "nfe_native", "nfe_agree", "steps", "peak_rss_bytes", "peak_rss_iqr", "rss_method", "saved_bytes", "gate", "gate_max_rel", "gate_reference_plugin",
           "swap_solver", "swap_mse", "swap_mse_delta", "swap_message"]




class TrainWorkload(Workload):
    """Train an MLP neural ODE on a problem's trajectory through each plugin (the spiral suite).

    Sections: ``[problem]`` (a problem of :mod:`odebench.problems` and its parameters),
    ``[model]`` (the MLP), ``[training]`` (optimiser, iterations, minibatches of windows,
    snapshot iterations), ``measure.fairness_steps`` and ``[swap]`` (the reference solver of
    the solver-swap check, :mod:`odebench.swap`). See :func:`.case.run_case` for what
    one case measures.
    """

    name = "train"
    sections = SECTIONS
    defaults = DEFAULTS
    required = REQUIRED
    columns = COLUMNS
    summary_note = report.SUMMARY_NOTE

    def validate(self, config: dict[str, dict[str, Any]], where: str) -> None:
        """Problem name and parameters, model, and training settings that fit each other."""
        from odebench.models import ACTIVATIONS
        from odebench.problems import PROBLEMS

        prob = config["problem"]
        if "name" not in prob:
            raise SuiteError(f"{where}: [problem] has no 'name'; valid: {choices(PROBLEMS)}")
        if prob["name"] not in PROBLEMS:
            raise SuiteError(f"unknown problem {prob['name']!r}; valid: {choices(PROBLEMS)}")
        fields = [f.name for f in dataclasses.fields(PROBLEMS[prob["name"]]) if not f.name.startswith("_")]
        for key in prob["params"]:
            if key not in fields:
                raise SuiteError(f"unknown key {key!r} in problem.params for {prob['name']!r}; "
                                 f"valid: {choices(fields)}")
        if config["model"].get("activation") not in ACTIVATIONS:
            raise SuiteError(f"unknown value {config['model'].get('activation')!r} for model.activation; "
                             f"valid: {choices(ACTIVATIONS)}")
        if "sizes" not in config["model"]:
            raise SuiteError(f"{where}: [model] has no 'sizes'")
        train = config["training"]
        for key in ("lr", "iterations", "batch_size", "batch_time"):
            if key not in train:
                raise SuiteError(f"{where}: [training] has no {key!r}")
        for snap in train["snapshots"]:
            if snap > train["iterations"]:
                raise SuiteError(f"training.snapshots has {snap}, beyond training.iterations = "
                                 f"{train['iterations']}")
        check_problem_fit(config)

    # What one case does and how the report shows it live in their own modules.
    run_case = staticmethod(case.run_case)
    summary = staticmethod(report.summary)
    figures = staticmethod(report.figures)
    sections_md = staticmethod(report.sections)


__all__ = ["COLUMNS", "TrainWorkload"]
