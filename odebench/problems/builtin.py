"""The built-in problems on the problem contract (:class:`odebench.Problem`): the same fields,
states and truths a user's problem declares, so that a workload reads both one way.

* :class:`Classic` wraps a problem of :mod:`odebench.problems` (linear spiral, Van der Pol, Lorenz,
  Robertson, stiff Van der Pol): its formula in numpy, torch and JAX, no weights;
* :class:`NeuralMLP` is an MLP vector field at weights drawn in numpy, shared by every framework.

:func:`classic` and :func:`neural` build them with a workload's settings.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from odebench.models import MLPSpec, mlp_weights
from odebench.problem import FRAMEWORKS, Problem
from odebench.problems.spiral import LinearSpiral


def pairs(leaves: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[W1, b1, W2, b2, ...]`` as ``[(W1, b1), (W2, b2), ...]`` (the layout of :func:`odebench.models.mlp_weights`)."""
    return list(zip(leaves[::2], leaves[1::2]))


class Classic(Problem):
    """A problem of :mod:`odebench.problems` on the contract.

    Arguments:
        name: its name in the records.
        base: the problem object (``LinearSpiral(...)``, ``VanDerPol(...)``, ...).
    """

    frameworks = FRAMEWORKS

    def __init__(self, name: str, base: Any):
        self.name = name  # an instance's name: one class serves every classic problem
        self.base = base
        self.stiff = bool(getattr(base, "stiff", False))

    def initial_state(self) -> np.ndarray:
        return np.asarray(self.base.y0, np.float64)

    def times(self) -> np.ndarray:
        return np.asarray(self.base.ts, np.float64)

    def numpy_field(self, weights: None) -> Any:
        return self.base.rhs

    def jacobian(self) -> Any:
        """``d f / d y`` of the flattened state, for scipy's implicit methods and references."""
        if isinstance(self.base, LinearSpiral):
            a = np.asarray(self.base.A, dtype=np.float64)
            return lambda t, y: a
        return self.base.jac

    def torch_field(self, weights: None) -> Any:
        import torch

        if isinstance(self.base, LinearSpiral):
            class LinearField(torch.nn.Module):
                """``f(t, y) = y Aᵀ`` (the spiral's own ``rhs`` is numpy-only)."""

                # It ignores t: a per-sample stepping plugin (torchode) may evaluate the batch in one call.
                autonomous = True

                def __init__(self, a: np.ndarray):
                    super().__init__()
                    self.register_buffer("a_t", torch.as_tensor(a, dtype=torch.float64).T.contiguous())

                def forward(self, t, y):
                    return y @ self.a_t

            return LinearField(np.asarray(self.base.A))
        field = self.base.torch_field()
        # The built-in problems' fields are autonomous (none reads t): say so, as MLPField does.
        field.autonomous = True
        return field

    def jax_field(self, weights: None) -> Any:
        return _jax_problem_field()(self.base)

    def exact(self, ts: np.ndarray) -> np.ndarray | None:
        return self.base.exact(ts) if isinstance(self.base, LinearSpiral) else None


@functools.cache
def _jax_problem_field() -> type:
    """The JAX field class of the classic problems, made once: two fields of one problem then have
    the same tree structure, so a compiled program of one serves the other."""
    import equinox as eqx

    class ProblemField(eqx.Module):
        """``f(t, y) = problem.rhs(t, y)``: the problem's own formula, traced by JAX."""

        problem: Any = eqx.field(static=True)

        def __call__(self, t, y):
            return self.problem.rhs(t, y)

    return ProblemField


class NeuralMLP(Problem):
    """``f(t, y) = W2 tanh(W1 y + b1) + b2`` (any depth) at weights shared by every framework.

    Arguments:
        name: its name in the records.
        spec: the MLP (tanh).
        weights: ``[(W, b), ...]`` as :func:`odebench.models.mlp_weights` draws them.
        y0: the initial state, ``(d,)`` or ``(batch, d)``.
        ts: the output times.
    """

    frameworks = FRAMEWORKS

    def __init__(self, name: str, spec: MLPSpec, weights: list[tuple[np.ndarray, np.ndarray]], y0: np.ndarray,
                 ts: np.ndarray):
        self.name, self.spec, self.y0, self.ts = name, spec, np.asarray(y0, np.float64), np.asarray(ts, np.float64)
        self.leaves = [np.asarray(x, np.float64) for layer in weights for x in layer]

    def initial_state(self) -> np.ndarray:
        return self.y0

    def times(self) -> np.ndarray:
        return self.ts

    def weights(self) -> list[np.ndarray]:
        return self.leaves

    def numpy_field(self, weights: list[np.ndarray]) -> Any:
        return NumpyMLP(self.spec, pairs(weights), self.y0.shape)

    def jacobian(self) -> Any:
        """``d f / d y`` of the flattened state at the shared weights (sparse block-diagonal for a batch)."""
        return NumpyMLP(self.spec, pairs(self.leaves), self.y0.shape).jac

    def torch_field(self, weights: list[np.ndarray]) -> Any:
        import torch

        from odebench.backends.torch import MLPField

        return MLPField(self.spec, pairs(weights), torch.float64)

    def jax_field(self, weights: list[np.ndarray]) -> Any:
        import jax.numpy as jnp

        from odebench.backends.jax import build_mlp

        return build_mlp(self.spec, pairs(weights), jnp.float64)


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


#: The MLP of each neural problem.
MLP_SPECS = {"neural_spiral": MLPSpec((2, 50, 2), "tanh", 0.1, 0.0),
             "neural_wide": MLPSpec((16, 64, 16), "tanh", 0.25, 0.0)}


def neural(name: str, seed: int = 0, *, t1: float | None = None, n_points: int = 9, batch: int = 64) -> NeuralMLP:
    """``neural_spiral`` (the spiral suite's 2-50-2 MLP from ``y0 = (2, 0)``, default ``t1`` 25) or
    ``neural_wide`` (16-64-16 on ``batch`` initial states drawn from the seed, default ``t1`` 5), with
    the weights :func:`odebench.models.mlp_weights` draws from ``seed``."""
    spec = MLP_SPECS[name]
    if name == "neural_spiral":
        y0 = np.array([2.0, 0.0])
    else:
        y0 = np.random.default_rng([seed, 11]).standard_normal((batch, spec.sizes[0]))
    ts = np.linspace(0.0, t1 if t1 is not None else (25.0 if name == "neural_spiral" else 5.0), n_points)
    return NeuralMLP(name, spec, mlp_weights(spec, seed), y0, ts)


def classic(name: str, **params: Any) -> Classic:
    """The problem ``name`` of :data:`odebench.problems.PROBLEMS` with ``params`` (``t1``, ``n_points``)."""
    from odebench.problems import PROBLEMS

    return Classic(name, PROBLEMS[name](**params))


__all__ = ["Classic", "MLP_SPECS", "NeuralMLP", "NumpyMLP", "classic", "neural", "pairs"]
