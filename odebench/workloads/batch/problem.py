"""The batched problems of the ``batch`` workload, in numpy: samples, initial states, references.

A batch is ``N`` initial value problems that differ in one scalar per sample, its *parameter*:

- ``vdp``: Van der Pol oscillators ``y1' = y2, y2' = μ (1 - y1²) y2 - y1`` from the same
  initial state, the parameter being μ. A large μ is stiff: an explicit method's step is held
  to about ``1/μ`` by stability on the slow branch, whatever the tolerance.
- ``mlp``: one seeded MLP field ``f(y) = MLP(y)`` (:func:`odebench.models.mlp_weights`) started
  from ``scale · u``, ``u`` a seeded unit vector, the parameter being the scale.

The parameters are :func:`sample_values` of the case's ``spread``; the frameworks' vector fields
(:mod:`odebench.workloads.batch.drivers`) take them as data, so the batch is one call of ``f``.
Nothing here imports torch or JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from odebench.models import MLPSpec, mlp_weights
from odebench.problems.reference import reference_solution
from odebench.problems.vanderpol import VanDerPol


def sample_values(n: int, spread: float, layout: str) -> np.ndarray:
    """The per-sample parameters of a batch of ``n``, from 1 to ``spread``.

    Arguments:
        n: the batch size.
        spread: the largest parameter (the smallest is 1); 1 makes the samples identical.
        layout: ``"geometric"``: log-spaced from 1 to ``spread`` (a batch of one is the sample
            at 1); ``"outlier"``: every sample at 1 but the last, at ``spread``.

    Returns:
        float64 array of shape ``(n,)``.

    Raises:
        ValueError: for ``n < 1``, ``spread < 1`` or an unknown layout.
    """
    if n < 1:
        raise ValueError(f"batch size must be at least 1, got {n}")
    if not spread >= 1.0:
        raise ValueError(f"spread must be at least 1 (the smallest sample's parameter), got {spread!r}")
    if layout == "geometric":
        return np.geomspace(1.0, spread, n)
    if layout == "outlier":
        values = np.ones(n)
        values[-1] = spread
        return values
    raise ValueError(f"unknown layout {layout!r}; valid: geometric, outlier")


def mlp_numpy(weights: list[tuple[np.ndarray, np.ndarray]], activation: str) -> Callable[[float, np.ndarray], Any]:
    """``f(t, y) = MLP(y)`` in float64 numpy, for the reference (``y`` of shape ``(..., d)``).

    Raises:
        ValueError: for an unknown activation.
    """
    acts = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "softplus": lambda x: np.logaddexp(0.0, x)}
    if activation not in acts:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(acts)}")
    act, last = acts[activation], len(weights) - 1

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        h = np.asarray(y, dtype=np.float64)
        for i, (w, b) in enumerate(weights):
            h = h @ w.T + b
            if i < last:
                h = act(h)
        return h

    return rhs


@dataclass(frozen=True)
class BatchProblem:
    """One case's batch, as float64 numpy.

    Arguments:
        kind: ``"vdp"`` or ``"mlp"``.
        params: the per-sample parameter (μ or the initial-state scale), shape ``(N,)``.
        y0: initial states, shape ``(N, d)``.
        ts: output times, shape ``(T,)``, from 0.
        spec, weights: the MLP (None for vdp).
        seed: the case's seed (the MLP's weights and direction).
    """

    kind: str
    params: np.ndarray
    y0: np.ndarray
    ts: np.ndarray
    spec: MLPSpec | None = None
    weights: list[tuple[np.ndarray, np.ndarray]] | None = None
    seed: int = 0

    @property
    def n(self) -> int:
        return int(self.params.shape[0])


def build(kind: str, n: int, spread: float, config: dict[str, Any], seed: int) -> BatchProblem:
    """The batch of a case.

    Arguments:
        kind: one of :data:`odebench.workloads.batch.schema.PROBLEMS`.
        n, spread: the case's batch size and spread (see :func:`sample_values`).
        config: the suite's validated settings (``vdp``, ``mlp``, ``samples``, ``solve``).
        seed: the case's seed.

    Raises:
        ValueError: for an unknown problem, or a bad size, spread or layout.
    """
    params = sample_values(n, spread, config["samples"]["layout"])
    n_times = config["solve"]["n_times"]
    if kind == "vdp":
        v = config["vdp"]
        ts = np.linspace(0.0, v["t1"], n_times)
        return BatchProblem(kind, params, np.tile(np.asarray(v["y0"], dtype=np.float64), (n, 1)), ts, seed=seed)
    if kind == "mlp":
        m = config["mlp"]
        spec = MLPSpec(tuple(m["sizes"]), m["activation"], m["weight_std"], 0.0)
        # One direction for every sample: with spread 1 the samples are identical.
        u = np.random.default_rng([seed, 11]).standard_normal(spec.sizes[0])
        y0 = params[:, None] * (u / np.linalg.norm(u))[None, :]
        ts = np.linspace(0.0, m["t1"], n_times)
        return BatchProblem(kind, params, y0, ts, spec, mlp_weights(spec, seed), seed)
    raise ValueError(f"unknown problem {kind!r}; valid: vdp, mlp")


def reference(problem: BatchProblem, rtol: float, atol: float) -> np.ndarray:
    """Float64 reference of every sample at ``problem.ts``, each solved on its own and cached.

    Van der Pol: DOP853, or Radau with the analytic Jacobian for μ ≥ 100 (the cached
    :class:`~odebench.problems.vanderpol.VanDerPol` reference of that μ); MLP: DOP853. A
    parameter that repeats in the batch is solved once.

    Returns:
        float64 array of shape ``(T, N, d)``.
    """
    out = np.empty((len(problem.ts), *problem.y0.shape))
    solved: dict[float, np.ndarray] = {}
    for i, p in enumerate(problem.params):
        key = float(p)
        if key not in solved:
            solved[key] = _reference_one(problem, i, rtol, atol)
        out[:, i] = solved[key]
    return out


def _reference_one(problem: BatchProblem, i: int, rtol: float, atol: float) -> np.ndarray:
    """Sample ``i``'s cached reference at ``problem.ts``, shape ``(T, d)``."""
    ts, y0 = problem.ts, problem.y0[i]
    if problem.kind == "vdp":
        vdp = VanDerPol(mu=float(problem.params[i]), y0=tuple(float(x) for x in y0), t0=float(ts[0]),
                        t1=float(ts[-1]), n_points=len(ts))
        return reference_solution(vdp.rhs, y0, ts, params=vdp.params(), stiff=vdp.stiff, jac=vdp.jac,
                                  rtol=rtol, atol=atol)
    spec = problem.spec
    params = {"problem": "batch_mlp", "sizes": list(spec.sizes), "activation": spec.activation,
              "weight_std": spec.weight_std, "seed": problem.seed}
    return reference_solution(mlp_numpy(problem.weights, spec.activation), y0, ts, params=params, stiff=False,
                              rtol=rtol, atol=atol)
