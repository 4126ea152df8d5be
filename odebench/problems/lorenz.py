"""The Lorenz system on a short span, where a reference is still meaningful."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from odebench.problems.reference import ReferenceProblem, stack


@dataclass(frozen=True)
class Lorenz(ReferenceProblem):
    """``x' = σ (y - x)``, ``y' = x (ρ - z) - y``, ``z' = x y - β z`` (chaotic).

    Errors grow like ``exp(0.9 t)`` (the largest Lyapunov exponent), so the span is kept
    short: on ``[0, 2]`` the 1e-12 reference stays accurate to about 1e-11 relative.

    Arguments:
        sigma, rho, beta: the classic parameters 10, 28, 8/3.
        y0: the initial state (default ``(1, 1, 1)``).
        t0, t1: the time span (default 0 to 2).
        n_points: number of equally spaced observation times (default 200).
    """

    name: ClassVar[str] = "lorenz"
    state_dim: ClassVar[int] = 3
    stiff: ClassVar[bool] = False
    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0
    y0: tuple[float, ...] = (1.0, 1.0, 1.0)
    t0: float = 0.0
    t1: float = 2.0
    n_points: int = 200

    def rhs(self, t: Any, y: Any) -> Any:
        """The vector field, for ``y`` of shape ``(..., 3)`` (numpy or torch)."""
        if not hasattr(y, "shape"):
            y = np.asarray(y, dtype=np.float64)
        x, v, z = y[..., 0], y[..., 1], y[..., 2]
        return stack([self.sigma * (v - x), x * (self.rho - z) - v, x * v - self.beta * z], y)

    def jac(self, t: float, y: np.ndarray) -> np.ndarray:
        """``d rhs / d y`` at one state ``y`` of shape ``(3,)``."""
        x, v, z = (float(c) for c in y)
        return np.array(
            [[-self.sigma, self.sigma, 0.0], [self.rho - z, -1.0, -x], [v, x, -self.beta]]
        )
