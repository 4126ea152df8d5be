"""Robertson's stiff chemical kinetics (Robertson 1966; Hairer & Wanner, problem ROBER)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from odebench.problems.reference import ReferenceProblem, stack


@dataclass(frozen=True)
class Robertson(ReferenceProblem):
    """Three species, rate constants spanning nine orders of magnitude::

        y1' = -k1 y1 + k3 y2 y3
        y2' =  k1 y1 - k3 y2 y3 - k2 y2²
        y3' =  k2 y2²

    The mass ``y1 + y2 + y3 = 1`` is conserved. ``y2`` stays below 4e-5, so the reference
    uses a per-component absolute tolerance (1e-20 on ``y2``). Explicit methods are stuck at
    step sizes of about 1e-3 by stability while the solution evolves on a scale of 1e5.

    Arguments:
        k1, k2, k3: rate constants (default 0.04, 3e7, 1e4).
        y0: the initial state (default ``(1, 0, 0)``).
        t0, t1: the time span (default 0 to 1e5).
        n_points: number of observation times: ``t0`` then ``n_points - 1`` times
            log-spaced from 1e-6 to ``t1`` (default 41).
    """

    name: ClassVar[str] = "robertson"
    state_dim: ClassVar[int] = 3
    stiff: ClassVar[bool] = True
    reference_atol: ClassVar[tuple[float, ...]] = (1e-16, 1e-20, 1e-16)
    k1: float = 0.04
    k2: float = 3e7
    k3: float = 1e4
    y0: tuple[float, ...] = (1.0, 0.0, 0.0)
    t0: float = 0.0
    t1: float = 1e5
    n_points: int = 41

    @property
    def ts(self) -> np.ndarray:
        """``t0`` followed by ``n_points - 1`` log-spaced times from ``t0 + 1e-6`` to ``t1``."""
        rest = self.t0 + np.logspace(-6.0, np.log10(self.t1 - self.t0), self.n_points - 1)
        return np.concatenate([[self.t0], rest])

    def rhs(self, t: Any, y: Any) -> Any:
        """The vector field, for ``y`` of shape ``(..., 3)`` (numpy or torch)."""
        if not hasattr(y, "shape"):
            y = np.asarray(y, dtype=np.float64)
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        r1 = self.k1 * y1
        r2 = self.k2 * y2 * y2
        r3 = self.k3 * y2 * y3
        return stack([-r1 + r3, r1 - r3 - r2, r2], y)

    def jac(self, t: float, y: np.ndarray) -> np.ndarray:
        """``d rhs / d y`` at one state ``y`` of shape ``(3,)``."""
        _, y2, y3 = (float(c) for c in y)
        k1, k2, k3 = self.k1, self.k2, self.k3
        return np.array(
            [
                [-k1, k3 * y3, k3 * y2],
                [k1, -k3 * y3 - 2.0 * k2 * y2, -k3 * y2],
                [0.0, 2.0 * k2 * y2, 0.0],
            ]
        )
