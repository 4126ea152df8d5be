"""The ``mnist`` workload's rules: which points of the matrix are Table 1's (or the review's) models, and
the suite checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odebench.protocol import FIXED_METHODS
from odebench.schema import SuiteError, choices
from odebench.workloads.mnist.schema import MNIST_TEST, MNIST_TRAIN, MODELS


def validate(config: dict[str, Any], where: str) -> None:
    """Cross-checks: subsets fit MNIST, the batch fits the subset, the schedule ascends, the paper rows
    name models, and every model in the matrix has at least one case it can run (see
    :func:`not_applicable`)."""
    data, train = config["data"], config["training"]
    if data["train_subset"] > MNIST_TRAIN:
        raise SuiteError(f"{where}: data.train_subset {data['train_subset']} exceeds MNIST's {MNIST_TRAIN} "
                         "training images (0 = all)")
    if data["test_subset"] > MNIST_TEST:
        raise SuiteError(f"{where}: data.test_subset {data['test_subset']} exceeds MNIST's {MNIST_TEST} "
                         "test images (0 = all)")
    n_train = data["train_subset"] or MNIST_TRAIN
    if train["batch_size"] > n_train:
        raise SuiteError(f"{where}: training.batch_size {train['batch_size']} exceeds the {n_train} "
                         "training images")
    decay = train["lr_decay_epochs"]
    if any(b <= a for a, b in zip(decay, decay[1:])):
        raise SuiteError(f"{where}: training.lr_decay_epochs must increase, got {decay}")
    for i, row in enumerate(config["paper"]["rows"]):
        if row.get("model") not in MODELS:
            raise SuiteError(f"unknown value {row.get('model')!r} for paper.rows[{i}].model; "
                             f"valid: {choices(MODELS)}")
    cases = [c.to_dict() for c in _all_cases(config)]
    for model in dict.fromkeys(c["model"] for c in cases):
        mine = [c for c in cases if c["model"] == model]
        reasons = [not_applicable(c, config, cases) for c in mine]
        if all(reasons):
            raise SuiteError(f"{where}: matrix.model {model!r} has no case it can run: {reasons[0]}")


def _all_cases(config: dict[str, Any]):
    """Every case of the suite's matrix, unfiltered, in the suite's order."""
    from odebench.suite import Suite

    return Suite(config["suite"].get("name", "?"), Path("."), "", config).cases()


def not_applicable(case: dict[str, Any], config: dict[str, Any],
                   cases: list[dict[str, Any]] | None = None) -> str | None:
    """Why this point of the matrix is not one of Table 1's (or the review's) models (None: it runs). See the
    module doc of :mod:`odebench.workloads.mnist`.

    Arguments:
        case: the case's fields, with ``model``.
        config: the suite's validated settings.
        cases: the suite's unfiltered cases (computed from ``config`` when None); ResNet runs in
            the first of them with its seed and device.
    """
    model, method, grad = case["model"], case["method"], case["grad_mode"]
    if model == "odenet" and method in FIXED_METHODS:
        return (f"ODE-Net solves adaptively (Chen et al.: dopri5); fixed-step {method} is RK-Net "
                "(model = rknet)")
    if model == "review" and method not in FIXED_METHODS:
        return (f"the review's model takes fixed steps of model.step_size (Euler); {method} is adaptive "
                f"(use one of {choices(FIXED_METHODS)})")
    if model == "rknet":
        if method not in FIXED_METHODS:
            return (f"RK-Net takes fixed steps of model.step_size; {method} is adaptive "
                    f"(use one of {choices(FIXED_METHODS)})")
        if grad != "backprop":
            return f"RK-Net backpropagates through the solver's steps; grad mode {grad!r} is ODE-Net's"
    if model == "resnet":
        if cases is None:
            cases = [c.to_dict() for c in _all_cases(config)]
        home = next((c for c in cases if c["model"] == "resnet" and c["seed"] == case["seed"]
                     and c["device"] == case["device"]), None)
        if home is not None and home["case_id"] != case.get("case_id"):
            return (f"resnet has no ODE solve: measured once per seed and device, in case "
                    f"{home['plugin']}/{home['method']}/{home['grad_mode']}")
    return None


def _paper_rows(config: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The suite's ``[paper]`` rows by model."""
    rows = (config or {}).get("paper", {}).get("rows", [])
    return {r.get("model"): r for r in rows if r.get("model")}
