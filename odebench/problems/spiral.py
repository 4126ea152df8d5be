"""The linear spiral of torchdiffeq's ode_demo and Capell et al. 2023."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg


@dataclass(frozen=True)
class LinearSpiral:
    """``y' = A y`` with the exact solution ``y(t) = expm(A t) y0``.

    Arguments:
        A: the 2×2 system matrix (default ``[[-0.1, 2], [-2, -0.1]]``).
        y0: the initial state (default ``(2, 0)``).
        t0, t1: the time span (default 0 to 25).
        n_points: number of equally spaced observation times (default 500).
    """

    A: tuple[tuple[float, ...], ...] = ((-0.1, 2.0), (-2.0, -0.1))
    y0: tuple[float, ...] = (2.0, 0.0)
    t0: float = 0.0
    t1: float = 25.0
    n_points: int = 500
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def ts(self) -> np.ndarray:
        return np.linspace(self.t0, self.t1, self.n_points)

    @property
    def state_dim(self) -> int:
        """The dimension of the state: ``A`` is ``state_dim × state_dim``."""
        return len(self.A)

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """The true vector field, for ``y`` of shape ``(..., 2)``."""
        return y @ np.asarray(self.A).T

    def reference(self, ts: np.ndarray | None = None, y0: np.ndarray | None = None) -> np.ndarray:
        """The reference solution every problem has; here the exact one."""
        return self.exact(ts, y0)

    def exact(self, ts: np.ndarray | None = None, y0: np.ndarray | None = None) -> np.ndarray:
        """Exact states at ``ts`` (default: the observation times), shape ``(len(ts), ..., 2)``."""
        ts = self.ts if ts is None else np.asarray(ts, dtype=np.float64)
        y0 = np.asarray(self.y0 if y0 is None else y0, dtype=np.float64)
        A = np.asarray(self.A, dtype=np.float64)
        # One batched expm over every time point: the same exponentials as one call per point
        # (bit for bit), without a Python-level call each (500 of them took seconds per case).
        mats = scipy.linalg.expm(A[None] * (ts - ts[0])[:, None, None])
        return np.einsum("...j,tij->t...i", y0, mats)
