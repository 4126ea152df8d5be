"""The ``train`` workload: fit an MLP vector field to a problem's trajectory, timing each iteration.

:class:`TrainWorkload` declares the suite sections and record columns; one case is run by
:mod:`.case`, the report's table, paper comparison and figures are drawn by :mod:`.report`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from odebench import swap
from odebench.schema import SuiteError, choices
from odebench.workload import Workload
from odebench.workloads.train import case
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
#: The note under the summary table (odebench.workloads.train.report draws the table).
SUMMARY_NOTE = (
    "Median over seeds; s/iter is the median over iterations (IQR in brackets), forward and backward "
    "timed apart between device syncs with GC off. NFE-F / NFE-B are counted by the harness in untimed "
    "instrumented passes (mean over the snapshot iterations): NFE-B is every vector-field evaluation "
    "during the backward pass, for every plugin (0 for a backprop that stores its steps; \"recomputes\" "
    "marks a backprop that evaluates again, i.e. checkpoints). peak RSS is the largest peak over the "
    "training iterations minus the resident set at their start (the untimed snapshot passes and their "
    "compiles are outside the region); saved KB is what autograd keeps for backward (torch only). "
    "compile s is JAX compile time, or a compiled torch plugin's (torchode_compiled, torch_custom_compiled), never part of the timings; end-to-end s is compile plus training, "
    "what a user waits for the whole run; \"(cache)\" marks compiles read back from a cache: JAX's persistent "
    "cache ($ODEBENCH_JAX_CACHE) or inductor's ($ODEBENCH_TORCH_CACHE), both off by default (each case compiles cold; "
    "jax_cache and torch_cache in the CSV say off, cold, warm or mixed). floor ms is the eager floor, timed beside the solver: the vector field's "
    "evaluations of one iteration (recorded in an untimed pass) and their backward alone (through the parameters and, "
    "as in the solve, each evaluation's input state), no solver, loss or optimiser (torch plugins; a fused JAX step cannot be taken apart, nor torchode's adjoint, which evaluates the field inside a vmap); × floor is s/iter over it, loop µs/step "
    "the iteration's time beyond it per forward step (the torchode paper's loop time). swap ΔMSE is the solver-swap check (Ott et al. 2021): the trained "
    "model's final MSE solved with the suite's reference solver ([swap], dopri5 at a tight tolerance in float64, "
    "odebench's own for every plugin unless swap.plugin says otherwise; swap_solver in the CSV names it) "
    "minus its final MSE with the solver it was trained with, untimed after training (0 when they are the same).")
#: The parts of a case's wall time, in the order they happen: each apart from the others, so that with
#: ``startup_s`` they add up to no more than ``process_s`` (plus ``gate_s`` when ``gate_shared``: a JAX
#: plugin's cases are gated together in a process of their own before any of them runs).
#: ``compile_s`` (a column already) is one of them.
TIME_SPLIT = ["setup_s", "gate_s", "gate_shared", "warmup_s", "measured_s", "untimed_s", "swap_s"]
#: record fields of this workload, in the order results.csv shows them.
COLUMNS = ["iterations_done", "repeats", "train_s", "train_s_iqr", "s_per_iter", "s_per_iter_iqr", "fwd_s",
           "bwd_s", "fused", "compile_s", "end_to_end_s", "n_traces", "final_mse", "final_loss", "nfe_fwd", "nfe_bwd", "n_vjp",
           "nfe_native", "nfe_agree", "steps", "peak_rss_bytes", "peak_rss_iqr", "rss_method", "saved_bytes", "gate", "gate_max_rel", "gate_reference_plugin",
           "swap_solver", "swap_mse", "swap_mse_delta", "swap_message", "floor_s", "floor_ratio", "loop_s_per_step",
           # Where the case's wall time went (besides the common process_s and startup_s); see case.run_case.
           *TIME_SPLIT]




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
    summary_note = SUMMARY_NOTE

    def shared_work_key(self, case: dict[str, Any], config: dict[str, Any]) -> str | None:
        """A JAX plugin's cases share one gate process (its float64 needs a process apart from the
        timed float32 one); torch plugins gate in the case's own process, as cheap as a group's would be."""
        from odebench import registry

        if not config["measure"]["fairness_steps"] or case["plugin"] not in registry.plugin_names():
            return None
        return f"gate:{case['plugin']}" if registry.entry(case["plugin"]).load().framework == "jax" else None

    def shared_work(self, cases: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The fairness gate of every case given, in this process; ``gate_result`` and ``gate_s`` per case.

        ``gate_s`` is the case's share of this process's wall time: its own gate plus an equal
        part of the start-up and imports the group's cases share.
        """
        import time

        from odebench import registry
        from odebench.worker import STARTED_ENV

        started = float(os.environ.get(STARTED_ENV, time.time()))
        from odebench.backends.jax import CACHE_ENV, persistent_cache

        persistent_cache(os.environ.get(CACHE_ENV) or None)  # the group is a JAX plugin's (shared_work_key)
        out = {}
        for c in cases:
            gate = case.case_gate(c, config, registry.get_plugin(c["plugin"]), isolate=False)
            out[c["case_id"]] = {"gate_result": gate.record()}
        share = (time.time() - started) / max(len(cases), 1)
        return {k: v | {"gate_s": share} for k, v in out.items()}

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
    # The report (pandas, matplotlib) is imported when a report is made, never in a case's process.
    def summary(self, df):
        from odebench.workloads.train import report

        return report.summary(df)

    def figures(self, records, out):
        from odebench.workloads.train import report

        return report.figures(records, out)

    def sections_md(self, records, config):
        from odebench.workloads.train import report

        return report.sections(records, config)


__all__ = ["COLUMNS", "TrainWorkload"]
