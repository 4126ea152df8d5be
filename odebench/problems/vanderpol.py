"""The Van der Pol oscillator, non-stiff (μ = 1) and stiff (μ = 1000)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from odebench.problems.reference import ReferenceProblem, stack


@dataclass(frozen=True)
class VanDerPol(ReferenceProblem):
    """``y1' = y2``, ``y2' = μ (1 - y1²) y2 - y1`` (a limit cycle; stiff for large μ).

    No closed form: the truth is a cached float64 reference (DOP853 at ``rtol = 1e-12``, or
    Radau with the analytic Jacobian for μ ≥ 100).

    Arguments:
        mu: the damping parameter μ (default 1).
        y0: the initial state (default ``(2, 0)``).
        t0, t1: the time span (default 0 to 10, about 1.5 periods).
        n_points: number of equally spaced observation times (default 200).
    """

    name: ClassVar[str] = "vanderpol"
    state_dim: ClassVar[int] = 2
    mu: float = 1.0
    y0: tuple[float, ...] = (2.0, 0.0)
    t0: float = 0.0
    t1: float = 10.0
    n_points: int = 200

    @property
    def stiff(self) -> bool:  # type: ignore[override]
        return self.mu >= 100.0

    def rhs(self, t: Any, y: Any) -> Any:
        """The vector field, for ``y`` of shape ``(..., 2)`` (numpy or torch)."""
        if not hasattr(y, "shape"):
            y = np.asarray(y, dtype=np.float64)
        y1, y2 = y[..., 0], y[..., 1]
        return stack([y2, self.mu * (1.0 - y1 * y1) * y2 - y1], y)

    def jac(self, t: float, y: np.ndarray) -> np.ndarray:
        """``d rhs / d y`` at one state ``y`` of shape ``(2,)``."""
        y1, y2 = float(y[0]), float(y[1])
        return np.array([[0.0, 1.0], [-2.0 * self.mu * y1 * y2 - 1.0, self.mu * (1.0 - y1 * y1)]])


@dataclass(frozen=True)
class StiffVanDerPol(VanDerPol):
    """Van der Pol with μ = 1000 on the classic span ``[0, 3000]`` (about two relaxation cycles).

    Explicit methods need of the order of 10⁵–10⁶ steps here; Radau, BDF and LSODA a few
    thousand at most.
    """

    name: ClassVar[str] = "vanderpol_stiff"
    mu: float = 1000.0
    t1: float = 3000.0
    n_points: int = 300
