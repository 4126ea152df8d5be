"""The work-precision problems, framework-neutral: output times, initial state, the numpy
vector field and its Jacobian, and the float64 references every error is measured against.

A problem is one of :data:`~.schema.PROBLEMS`:

* ``linear_spiral``: ``y' = A y`` (:class:`odebench.problems.LinearSpiral`), exact solution;
* ``vanderpol`` (μ = 1), ``lorenz`` (a short span, where a float64 reference is meaningful),
  ``robertson`` and ``vanderpol_stiff`` (μ = 1000): the problems of :mod:`odebench.problems`;
* ``neural_spiral``: the spiral suite's 2-50-2 tanh MLP (weight std 0.1) at the weights
  :func:`odebench.models.mlp_weights` draws from the case's seed, from ``y0 = (2, 0)``;
* ``neural_wide``: a 16-64-16 tanh MLP (weight std 0.25, so that the tanh layer works in its
  non-linear range) on a batch of initial states drawn from the seed: the evaluation of the
  network, not the solver's own loop, dominates the cost of a step.

Without an exact solution the truth is two independent scipy solves at ``reference.rtol``
(:func:`odebench.problems.reference.reference_solution`, cached on disk): DOP853 and Radau,
or Radau and BDF for the stiff problems (an explicit reference there would take millions of
steps). Errors are measured against the first; how far the second is from it is the
accuracy the report may claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from odebench.models import MLPSpec, mlp_weights
from odebench.problems import PROBLEMS as BASE_PROBLEMS
from odebench.problems import LinearSpiral
from odebench.problems.reference import reference_solution
from odebench.workloads.workprecision.schema import NEURAL, PROBLEM_DEFAULTS

#: The MLP of each neural problem.
MLP_SPECS = {"neural_spiral": MLPSpec((2, 50, 2), "tanh", 0.1, 0.0),
             "neural_wide": MLPSpec((16, 64, 16), "tanh", 0.25, 0.0)}
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
class Problem:
    """One problem as a case solves it, in numpy.

    Attributes:
        name: a key of :data:`~.schema.PROBLEMS`.
        ts: output times, float64, ``ts[0] = 0``.
        y0: the initial state, float64, shape ``(d,)`` or ``(batch, d)``.
        rhs: the vector field ``f(t, y)`` on arrays shaped like ``y0``.
        jac: ``d rhs / d y`` of the flattened state (dense, or sparse block-diagonal for a batch).
        stiff: whether the references are those of a stiff problem.
        max_steps: the step budget of the solves of this problem.
        explicit_max_steps: the budget of explicit adaptive methods (smaller on stiff problems,
            where they cannot finish: they then fail in seconds).
        base: the :mod:`odebench.problems` object (None for the neural problems).
        mlp: ``(spec, weights)`` of a neural problem, else None.
        cache_params: what identifies the problem in the reference cache.
    """

    name: str
    ts: np.ndarray
    y0: np.ndarray
    rhs: Callable[[float, np.ndarray], np.ndarray]
    jac: Callable[[float, np.ndarray], Any] | None
    stiff: bool
    max_steps: int
    explicit_max_steps: int
    base: Any = None
    mlp: tuple[MLPSpec, list[tuple[np.ndarray, np.ndarray]]] | None = None
    cache_params: dict[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        """Whether the problem has a closed-form solution."""
        return isinstance(self.base, LinearSpiral)

    @property
    def uniform(self) -> bool:
        """Whether the output times are equally spaced (fixed steps can then land on them)."""
        return bool(np.allclose(np.diff(self.ts), self.ts[1] - self.ts[0], rtol=1e-12, atol=0))


def settings(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The problem's settings: its defaults, then the suite's ``[problems]`` entry over them."""
    return PROBLEM_DEFAULTS[name] | config.get("problems", {}).get(name, {})


class NumpyMLP:
    """``f(t, y) = W2 tanh(W1 y + b1) + b2`` (any depth) in numpy, with its Jacobian.

    Arguments:
        spec: the MLP (its activation must be tanh).
        weights: ``[(W, b), ...]`` as :func:`odebench.models.mlp_weights` draws them.
        shape: the state's shape, ``(d,)`` or ``(batch, d)``.

    Raises:
        ValueError: for an activation other than tanh.
    """

    def __init__(self, spec: MLPSpec, weights: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]):
        if spec.activation != "tanh":
            raise ValueError(f"the numpy MLP is tanh only, got {spec.activation!r}")
        self.weights = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in weights]
        self.shape = shape

    def __call__(self, t: float, y: np.ndarray) -> np.ndarray:
        h = y
        for i, (w, b) in enumerate(self.weights):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.tanh(h)
        return h

    def jac(self, t: float, y_flat: np.ndarray) -> Any:
        """The Jacobian of the flattened state: one block per batch row (sparse when batched)."""
        rows = np.asarray(y_flat).reshape(-1, self.shape[-1])
        blocks = []
        for y in rows:
            j = np.eye(len(y))
            h = y
            for i, (w, b) in enumerate(self.weights):
                h = h @ w.T + b
                j = w @ j
                if i < len(self.weights) - 1:
                    h = np.tanh(h)
                    j = (1.0 - h * h)[:, None] * j
            blocks.append(j)
        if len(blocks) == 1:
            return blocks[0]
        import scipy.sparse

        return scipy.sparse.block_diag(blocks, format="csc")


def build(name: str, config: dict[str, Any], seed: int) -> Problem:
    """The problem ``name`` with the suite's settings and the case's seed.

    Arguments:
        name: a key of :data:`~.schema.PROBLEMS`.
        config: the suite's validated settings (its ``[problems]`` section is read).
        seed: the case's seed (the neural problems' weights and initial states).

    Returns:
        The :class:`Problem`.

    Raises:
        KeyError: for an unknown name (the suite's schema refuses one first).
    """
    s = settings(name, config)
    explicit = s.get("explicit_max_steps", s["max_steps"])
    if name in NEURAL:
        spec = MLP_SPECS[name]
        weights = mlp_weights(spec, seed)
        if name == "neural_spiral":
            y0 = np.array([2.0, 0.0])
        else:
            y0 = np.random.default_rng([seed, 11]).standard_normal((s["batch"], spec.sizes[0]))
        ts = np.linspace(0.0, s["t1"], s["n_points"])
        mlp = NumpyMLP(spec, weights, y0.shape)
        params = {"problem": f"wp-{name}", "sizes": list(spec.sizes), "weight_std": spec.weight_std,
                  "seed": seed, "batch": list(y0.shape)}
        return Problem(name, ts, y0, mlp, mlp.jac, False, s["max_steps"], explicit, None, (spec, weights), params)
    cls = LinearSpiral if name == "linear_spiral" else BASE_PROBLEMS[name]
    base = cls(t1=s["t1"], n_points=s["n_points"])
    y0 = np.asarray(base.y0, dtype=np.float64)
    if name == "linear_spiral":
        a = np.asarray(base.A, dtype=np.float64)
        return Problem(name, base.ts, y0, base.rhs, lambda t, y: a, False, s["max_steps"], explicit, base)
    return Problem(name, np.asarray(base.ts, np.float64), y0, base.rhs, base.jac, bool(base.stiff),
                   s["max_steps"], explicit, base, None, base.params())


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
    """The exact solution, or the two scipy references (computed once, then read from the cache).

    Arguments:
        problem: the problem.
        config: the suite's settings (``reference.rtol``, ``reference.atol``).

    Raises:
        RuntimeError: when a reference solve fails.
    """
    if problem.exact:
        return References(problem.base.exact(problem.ts), None, "exact (matrix exponential)")
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
        ys = reference_solution(flat_rhs, problem.y0.reshape(-1), problem.ts, params=problem.cache_params,
                                stiff=problem.stiff, jac=problem.jac, rtol=rtol or ref["rtol"],
                                atol=own_atol or atol, method=method)
        out.append(ys.reshape(len(problem.ts), *shape))
    kind = " vs ".join(f"{m} (rtol {r or ref['rtol']:g})" for m, r, _ in pair)
    return References(out[0], out[1], kind)


def loss_targets(problem: Problem, seed: int, scale: float) -> np.ndarray:
    """The fixed targets of the gradient task's loss, one per output time, shape ``(T, *y0.shape)``.

    Standard normal draws times ``scale`` times the RMS of ``y0``: of the size of the state, so
    the loss is neither dominated by the targets nor blind to them.
    """
    rng = np.random.default_rng([seed, 23])
    size = float(np.sqrt(np.mean(problem.y0 ** 2))) or 1.0
    return rng.standard_normal((len(problem.ts), *problem.y0.shape)) * scale * size
