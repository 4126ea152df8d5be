"""The problem contract: a user's own ODE — vector field, initial state, output times, weights,
truth and loss — as a suite's input.

A problem declares, as data, which frameworks it provides a vector field for; the suite's
plugins of other frameworks give ``unsupported`` rows naming what is missing. Shared weights
(numpy arrays) are loaded into every framework's field, so that the frameworks start identical
and the fairness gate (:mod:`odebench.problemload`) can check that they compute the same field.

A problem is found by ``module:function`` (the function takes no arguments and returns a
:class:`Problem`) or by the name of an entry point in the ``odebench.problems`` group; see
:func:`odebench.problemload.load_problem`.

Example (a linear decay, numpy and torch)::

    import numpy as np
    from odebench import Problem

    class Decay(Problem):
        name = "decay"
        frameworks = ("numpy", "torch")

        def initial_state(self):
            return np.ones(3)

        def times(self):
            return np.linspace(0.0, 1.0, 5)

        def numpy_field(self, weights):
            return lambda t, y: -y

        def torch_field(self, weights):
            import torch
            class F(torch.nn.Module):
                def forward(self, t, y):
                    return -y
            return F()

        def exact(self, ts):
            return np.exp(-ts)[:, None] * self.initial_state()

    def make_problem():
        return Decay()
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

#: The frameworks a problem can provide a vector field for (scipy solves the numpy one).
FRAMEWORKS = ("torch", "jax", "numpy")


class ProblemError(ValueError):
    """A problem that cannot be used: one line naming what is wrong."""


class Problem(abc.ABC):
    """Base class of a user's problem. Subclasses set the class attributes and implement
    :meth:`initial_state`, :meth:`times` and the field of each framework they list.

    Attributes:
        name: the problem's name in the records' ``problem`` column (letters, digits, ``_-``).
        frameworks: the frameworks it provides a field for, a subset of :data:`FRAMEWORKS`.
        stiff: whether its scipy references are those of a stiff problem (Radau and BDF).
        max_steps: the step budget of every solve of it.

    Every array is float64; the state may have any shape (``(d,)``, ``(batch, d)``, ...).
    """

    name: ClassVar[str] = ""
    frameworks: ClassVar[tuple[str, ...]] = ()
    stiff: ClassVar[bool] = False
    max_steps: ClassVar[int] = 100_000

    @abc.abstractmethod
    def initial_state(self) -> np.ndarray:
        """The initial state ``y(times()[0])``, float64, finite."""

    @abc.abstractmethod
    def times(self) -> np.ndarray:
        """The output times, increasing, at least two; the solve starts at the first."""

    def weights(self) -> list[np.ndarray] | None:
        """The shared weights, as a list of numpy arrays in the order each framework's field lists
        its parameters (torch: ``module.parameters()``; JAX: the field's pytree leaves); None (the
        default) for a field without parameters. The gradient task differentiates with respect to
        these and ``y0``."""
        return None

    def torch_field(self, weights: list[np.ndarray] | None) -> Any:
        """A ``torch.nn.Module`` whose ``forward(t, y)`` is the field, with ``weights`` loaded as its
        parameters (in that order). Only called when ``frameworks`` lists ``torch``."""
        raise NotImplementedError(f"problem {self.name!r} provides no torch field")

    def jax_field(self, weights: list[np.ndarray] | None) -> Any:
        """A callable pytree ``f(t, y)`` (an equinox Module, or ``jax.tree_util.Partial(fn, params)``)
        whose leaves are ``weights``, in that order, as JAX arrays; nothing else may be a leaf.
        Only called when ``frameworks`` lists ``jax``."""
        raise NotImplementedError(f"problem {self.name!r} provides no JAX field")

    def numpy_field(self, weights: list[np.ndarray] | None) -> Any:
        """A callable ``f(t, y)`` on numpy arrays shaped like the state, for scipy; with
        ``weights`` it is also what the gradient's finite-difference check perturbs. Only
        called when ``frameworks`` lists ``numpy``."""
        raise NotImplementedError(f"problem {self.name!r} provides no numpy field")

    def exact(self, ts: np.ndarray) -> np.ndarray | None:
        """The exact solution at ``ts``, shape ``(len(ts), *y0.shape)``; None (the default) when
        there is none: the references are then computed (see :mod:`odebench.problemload`)."""
        return None

    def reference(self, ts: np.ndarray) -> np.ndarray | None:
        """A reference solution you trust at ``ts`` (e.g. a long solve of your own), shape
        ``(len(ts), *y0.shape)``, used when there is no :meth:`exact` one; None (the default): the
        references are computed."""
        return None

    def targets(self) -> np.ndarray | None:
        """The targets of the gradient task's loss ``Σ_i ‖y(t_i) - target_i‖²``, shape
        ``(len(times), *y0.shape)``; None (the default): the workload draws them from the seed."""
        return None


__all__ = ["FRAMEWORKS", "Problem", "ProblemError"]
