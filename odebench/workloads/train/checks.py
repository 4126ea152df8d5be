"""Checks of a ``train`` suite's values against its problem, made when the suite is loaded.

A setting no case can run with (a window longer than the data, a model that does not map the
problem's state to itself) fails at load, before the first case starts, with one line.
"""

from __future__ import annotations

import math
from typing import Any

from odebench.problems import PROBLEMS
from odebench.schema import SuiteError
from odebench.workloads.train.case import make_problem


def check_problem_fit(config: dict[str, dict[str, Any]]) -> None:
    """Cross-checks of the ``train`` workload's values against its problem, made when the suite
    is loaded so that a setting no case can run with fails before the first case starts.

    Arguments:
        config: the settings, with a known problem name and the model and training keys present.

    Raises:
        SuiteError: for a problem parameter of the wrong type or not finite, ``t1 <= t0``, fewer
            than two observation times, an initial state or matrix whose size is not the
            problem's state dimension, model sizes that do not start and end with that
            dimension, a window of fewer than two points, or more windows per batch than the
            observation times hold.
    """
    name, params = config["problem"]["name"], config["problem"]["params"]
    defaults = PROBLEMS[name]()
    for key, value in params.items():
        _check_param(f"problem.params.{key}", value, getattr(defaults, key))
    problem = make_problem(config)
    if not problem.t1 > problem.t0:
        raise SuiteError(f"problem.params.t1 = {problem.t1!r} must be greater than t0 = {problem.t0!r}")
    n = problem.n_points
    if n < 2:
        raise SuiteError(f"problem.params.n_points must be at least 2, got {n}")
    dim = problem.state_dim
    for key, value in params.items():  # a matrix parameter (the spiral's A) acts on the state
        if isinstance(getattr(defaults, key), tuple) and value and isinstance(value[0], list) and \
                any(len(row) != dim for row in value):
            raise SuiteError(f"problem.params.{key} must be a square {dim}x{dim} matrix, got rows of length "
                             f"{', '.join(str(len(row)) for row in value)}")
    if len(problem.y0) != dim:
        raise SuiteError(f"problem.params.y0 has {len(problem.y0)} values; the state of {name!r} has {dim}")
    sizes = config["model"]["sizes"]
    if len(sizes) < 2:
        raise SuiteError(f"model.sizes {sizes} needs at least an input and an output size (both {dim})")
    if sizes[0] != dim or sizes[-1] != dim:
        raise SuiteError(f"model.sizes {sizes} must start and end with {dim}, the state dimension of {name!r}")
    bt, bs = config["training"]["batch_time"], config["training"]["batch_size"]
    if bt < 2:
        raise SuiteError(f"training.batch_time must be at least 2 (a window is a start and an end point), got {bt}")
    windows = n - bt  # a window starts at one of the first n - batch_time observations
    if windows < 1:
        raise SuiteError(f"training.batch_time = {bt} leaves no window in the problem's {n} observation times; "
                         f"valid: 2 to {n - 1}")
    if bs > windows:
        raise SuiteError(f"training.batch_size = {bs} is more than the {windows} windows of batch_time {bt} in "
                         f"{n} observation times (problem.params.n_points); valid: 1 to {windows}")


def _check_param(where: str, value: Any, default: Any) -> None:
    """Check a problem parameter against the type of its default: an integer, a finite number, a
    list of finite numbers (a state) or a list of such lists (a matrix).

    Raises:
        SuiteError: naming the parameter, the expected kind and the value.
    """
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    def numbers(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(number(x) for x in v)

    if isinstance(default, int) and not isinstance(default, bool):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = number(value), "a finite number"
    elif isinstance(default, tuple) and default and isinstance(default[0], tuple):
        ok = isinstance(value, list) and bool(value) and all(numbers(row) for row in value)
        kind = "a matrix (a list of lists) of finite numbers"
    elif isinstance(default, tuple):
        ok, kind = numbers(value), "a non-empty list of finite numbers"
    else:
        return
    if not ok:
        raise SuiteError(f"{where} must be {kind}, got {value!r}")
