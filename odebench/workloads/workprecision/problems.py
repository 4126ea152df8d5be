"""The work-precision problems, framework-neutral: output times, initial state, the numpy
vector field and its Jacobian, and the float64 references every error is measured against.

Every problem is an :class:`odebench.Problem` — a user's (``--problem``, ``config["user_problem"]``)
or a built-in one of :data:`~.schema.PROBLEMS` (:mod:`odebench.problems.builtin`) — read into one
:class:`Problem` record that the drivers, references and the reference gradient use:

* ``linear_spiral``: ``y' = A y`` (:class:`odebench.problems.LinearSpiral`), exact solution;
* ``vanderpol`` (μ = 1), ``lorenz`` (a short span, where a float64 reference is meaningful),
  ``robertson`` and ``vanderpol_stiff`` (μ = 1000): the problems of :mod:`odebench.problems`;
* ``neural_spiral``: the spiral suite's 2-50-2 tanh MLP (weight std 0.1) at the weights
  :func:`odebench.models.mlp_weights` draws from the case's seed, from ``y0 = (2, 0)``;
* ``neural_wide``: a 16-64-16 tanh MLP (weight std 0.25, so that the tanh layer works in its
  non-linear range) on a batch of initial states drawn from the seed: the evaluation of the
  network, not the solver's own loop, dominates the cost of a step.

Without an exact solution the truth is two independent scipy solves at ``reference.rtol``
(:func:`odebench.problems.reference.reference_solution`, cached on disk for the built-in
problems): DOP853 and Radau, or Radau and BDF for the stiff problems (an explicit reference
there would take millions of steps). Errors are measured against the first; how far the second
is from it is the accuracy the report may claim. A user's problem without a numpy field is
measured against tight solves through two plugins of its frameworks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from odebench.models import MLPSpec
from odebench.problems import builtin
from odebench.problems.builtin import MLP_SPECS, NumpyMLP  # noqa: F401 - the workload's names for them
from odebench.problems.reference import reference_solution
from odebench.workloads.workprecision.schema import NEURAL, PROBLEM_DEFAULTS

#: The reference methods (primary, secondary) of non-stiff and stiff problems, as ``(scipy
#: method, rtol, atol)``; None takes ``reference.rtol`` / ``reference.atol``.
REFERENCE_METHODS = {False: (("DOP853", None, None), ("Radau", None, None)),
                     True: (("Radau", None, None), ("BDF", None, None))}
#: Problems whose second reference cannot reach ``reference.rtol``: scipy's BDF stops with a
#: step-size underflow in the fast transitions of Van der Pol at μ = 1000 below rtol 1e-10
#: (atol 1e-11; LSODA takes minutes), so its second reference is BDF there, and the report's
#: floor is what that reference can vouch for.
REFERENCE_OVERRIDES = {"vanderpol_stiff": (("Radau", None, None), ("BDF", 1e-10, 1e-11))}


@dataclass
class Parts:
    """What a case reads of an :class:`odebench.Problem`.

    Attributes:
        problem: the :class:`odebench.Problem`.
        weights: its shared weights (float64), or None.
        frameworks: the frameworks it provides a field for.
        exact: its exact solution at the output times, or None.
        targets: its loss targets, or None (drawn from the seed).
        reference: its own reference solution at the output times, or None.
    """

    problem: Any
    weights: list[np.ndarray] | None
    frameworks: tuple[str, ...]
    exact: np.ndarray | None
    targets: np.ndarray | None
    reference: np.ndarray | None = None


@dataclass
class Problem:
    """One problem as a case solves it, in numpy.

    Attributes:
        name: a key of :data:`~.schema.PROBLEMS`, or the user's problem's name.
        ts: output times, float64, ``ts[0] = 0``.
        y0: the initial state, float64, shape ``(d,)`` or ``(batch, d)``.
        rhs: the vector field ``f(t, y)`` on arrays shaped like ``y0`` (None: no numpy field).
        jac: ``d rhs / d y`` of the flattened state (dense, or sparse block-diagonal for a batch).
        stiff: whether the references are those of a stiff problem.
        max_steps: the step budget of the solves of this problem.
        explicit_max_steps: the budget of explicit adaptive methods (smaller on stiff problems,
            where they cannot finish: they then fail in seconds).
        parts: the :class:`odebench.Problem` and what was read of it (:class:`Parts`).
        user: whether it is the user's problem.
        base: the :mod:`odebench.problems` object (None for the neural and the user's problems).
        mlp: ``(spec, weights)`` of a built-in neural problem, else None.
        cache_params: what identifies the problem in the reference cache (None: never cached).
    """

    name: str
    ts: np.ndarray
    y0: np.ndarray
    rhs: Callable[[float, np.ndarray], np.ndarray] | None
    jac: Callable[[float, np.ndarray], Any] | None
    stiff: bool
    max_steps: int
    explicit_max_steps: int
    parts: Parts
    user: bool = False
    base: Any = None
    mlp: tuple[MLPSpec, list[tuple[np.ndarray, np.ndarray]]] | None = None
    cache_params: dict[str, Any] | None = None

    @property
    def exact(self) -> bool:
        """Whether the problem has a closed-form solution."""
        return self.parts.exact is not None

    @property
    def uniform(self) -> bool:
        """Whether the output times are equally spaced (fixed steps can then land on them)."""
        return bool(np.allclose(np.diff(self.ts), self.ts[1] - self.ts[0], rtol=1e-12, atol=0))

    @property
    def frameworks(self) -> tuple[str, ...]:
        """The frameworks with a vector field of this problem."""
        return self.parts.frameworks

    def leaves(self) -> list[np.ndarray] | None:
        """The parameters the gradient task differentiates, in order (None: the field has none)."""
        return self.parts.weights

    def numpy_field(self, leaves: list[np.ndarray] | None) -> Callable[[float, np.ndarray], np.ndarray] | None:
        """The numpy field with the parameters ``leaves`` (finite differences perturb them), or None."""
        return self.parts.problem.numpy_field(leaves) if "numpy" in self.frameworks else None


def settings(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The problem's settings: its defaults, then the suite's ``[problems]`` entry over them."""
    return PROBLEM_DEFAULTS[name] | config.get("problems", {}).get(name, {})


def read(problem: Any, max_steps: int, explicit_max_steps: int, **extra: Any) -> Problem:
    """The :class:`Problem` record of an :class:`odebench.Problem`.

    Arguments:
        problem: the :class:`odebench.Problem`.
        max_steps, explicit_max_steps: the step budgets.
        extra: the record's ``user``, ``base``, ``mlp`` and ``cache_params``.
    """
    ts = np.asarray(problem.times(), np.float64)
    w = problem.weights()
    weights = None if w is None else [np.asarray(x, np.float64) for x in w]
    fws = tuple(problem.frameworks)
    exact, targets, ref = (None if x is None else np.asarray(x, np.float64)
                           for x in (problem.exact(ts), problem.targets(), problem.reference(ts)))
    parts = Parts(problem, weights, fws, exact, targets, ref)
    rhs = problem.numpy_field(weights) if "numpy" in fws else None
    jac = problem.jacobian() if hasattr(problem, "jacobian") else None  # the built-in ones know theirs
    return Problem(problem.name, ts, np.asarray(problem.initial_state(), np.float64), rhs, jac, bool(problem.stiff),
                   max_steps, explicit_max_steps, parts, **extra)


def build_user(info: dict[str, Any]) -> Problem:
    """The user's problem ``config["user_problem"]`` (loaded again, in this process, from its spec).

    Its references are never cached on disk: the field's code is the user's, and may change
    under the same name.
    """
    from odebench.problemload import load_problem

    user, _, _ = load_problem(info["spec"], search=[info["path"]] if info["path"] else [])
    return read(user, int(user.max_steps), int(user.max_steps), user=True)


def build(name: str, config: dict[str, Any], seed: int) -> Problem:
    """The problem ``name`` with the suite's settings and the case's seed (the user's problem when
    the suite runs one).

    Arguments:
        name: a key of :data:`~.schema.PROBLEMS`.
        config: the suite's validated settings (its ``[problems]`` section is read).
        seed: the case's seed (the neural problems' weights and initial states).

    Returns:
        The :class:`Problem`.

    Raises:
        KeyError: for an unknown name (the suite's schema refuses one first).
    """
    if config.get("user_problem"):
        return build_user(config["user_problem"])
    s = settings(name, config)
    budgets = (s["max_steps"], s.get("explicit_max_steps", s["max_steps"]))
    if name in NEURAL:
        mlp = builtin.neural(name, seed, t1=s["t1"], n_points=s["n_points"], batch=s.get("batch", 64))
        params = {"problem": f"wp-{name}", "sizes": list(mlp.spec.sizes), "weight_std": mlp.spec.weight_std,
                  "seed": seed, "batch": list(mlp.y0.shape)}
        return read(mlp, *budgets, mlp=(mlp.spec, builtin.pairs(mlp.leaves)), cache_params=params)
    classic = builtin.classic(name, t1=s["t1"], n_points=s["n_points"])
    params = {} if name == "linear_spiral" else classic.base.params()
    return read(classic, *budgets, base=classic.base, cache_params=params)


@dataclass
class References:
    """The truth a case's errors are measured against.

    Attributes:
        ys: the primary reference (or the exact solution) at the output times.
        second: the independent second reference, None for an exact solution.
        kind: what they are, e.g. ``"DOP853 vs Radau at rtol 1e-13"`` or ``"exact"``.
    """

    ys: np.ndarray
    second: np.ndarray | None
    kind: str


def references(problem: Problem, config: dict[str, Any]) -> References:
    """The exact solution; else the problem's own reference; else the two scipy references of its numpy
    field (computed once, then read from the cache for a built-in problem); else tight solves through
    two plugins of its frameworks.

    Arguments:
        problem: the problem.
        config: the suite's settings (``reference.rtol``, ``reference.atol``).

    Raises:
        RuntimeError: when a reference solve fails.
    """
    if problem.exact:
        return References(problem.parts.exact, None, "exact (the problem's own)" if problem.user
                          else "exact (matrix exponential)")
    if problem.parts.reference is not None:
        return References(problem.parts.reference, None, "the problem's own reference")
    if problem.rhs is None:
        return _plugin_references(problem, config)
    ref = config["reference"]
    own = getattr(problem.base, "reference_atol", None)
    # A per-component atol of the problem (Robertson's 1e-20 on y2) is kept: a scalar would be too loose.
    atol = own if isinstance(own, tuple) else ref["atol"]
    shape = problem.y0.shape
    # One system of the flattened state: the batch of the wide MLP is one scipy solve with a
    # sparse block-diagonal Jacobian instead of 64 Python-level solves.
    def flat_rhs(t, y):
        return np.asarray(problem.rhs(t, y.reshape(shape)), np.float64).reshape(-1)

    pair = REFERENCE_OVERRIDES.get(problem.name, REFERENCE_METHODS[problem.stiff])
    out = []
    for method, rtol, own_atol in pair:
        ys = reference_solution(flat_rhs, problem.y0.reshape(-1), problem.ts, params=problem.cache_params or {},
                                stiff=problem.stiff, jac=problem.jac, rtol=rtol or ref["rtol"],
                                atol=own_atol or atol, method=method, use_cache=problem.cache_params is not None)
        out.append(ys.reshape(len(problem.ts), *shape))
    kind = " vs ".join(f"{m} (rtol {r or ref['rtol']:g})" for m, r, _ in pair)
    return References(out[0], out[1], kind)


def _plugin_references(problem: Problem, config: dict[str, Any]) -> References:
    """The references of a user's problem without a numpy field: tight solves (``reference.rtol``)
    through the first two of ``gradient.reference`` whose framework the problem provides.

    Raises:
        ValueError: when no such plugin is installed.
        odebench.SolveFailed: when a reference solve fails.
    """
    from odebench import registry
    from odebench.workloads.workprecision.drivers import make_driver

    ref = config["reference"]
    pair = pick_plugins(config["gradient"]["reference"], problem.frameworks)
    out = []
    for name, method in pair:
        kw = dict(method=method, grad_mode="backprop", rtol=ref["rtol"], atol=ref["atol"], max_steps=10**6)
        driver = make_driver(registry.get_plugin(name), problem, kw, task="solve", threads=config["measure"]["threads"])
        out.append(driver.trajectory(driver.solve()))
    kind = " vs ".join(f"{n} {m}" for n, m in pair) + f" (rtol {ref['rtol']:g}; the problem has no exact solution " \
        "nor numpy field)"
    return References(out[0], out[1] if len(out) > 1 else None, kind)


def pick_plugins(wanted: list[str], frameworks: tuple[str, ...]) -> list[tuple[str, str]]:
    """The first two ``plugin:method`` of ``wanted`` that are installed, backprop, and compute in one
    of ``frameworks``.

    Raises:
        ValueError: for a malformed entry, or when none is left.
    """
    from odebench import registry

    out = []
    for item in wanted:
        name, _, method = item.partition(":")
        if not method:
            raise ValueError(f"gradient.reference entry {item!r} must be plugin:method, e.g. torch_custom:dopri5")
        try:
            entry = registry.entry(name)
        except registry.UnknownPluginError:
            continue
        if entry.available() is None:
            cls = entry.load()
            if cls.framework in frameworks and cls.unsupported_reason(method, "backprop") is None:
                out.append((name, method))
        if len(out) == 2:
            return out
    if not out:
        raise ValueError(f"the references need a backprop computation in {', '.join(frameworks)}; none of "
                         f"{', '.join(wanted)} is installed and computes there")
    return out


def loss_targets(problem: Problem, seed: int, scale: float) -> np.ndarray:
    """The fixed targets of the gradient task's loss, one per output time, shape ``(T, *y0.shape)``.

    Standard normal draws times ``scale`` times the RMS of ``y0``: of the size of the state, so
    the loss is neither dominated by the targets nor blind to them.
    """
    rng = np.random.default_rng([seed, 23])
    size = float(np.sqrt(np.mean(problem.y0 ** 2))) or 1.0
    return rng.standard_normal((len(problem.ts), *problem.y0.shape)) * scale * size
