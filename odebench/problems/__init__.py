"""Framework-neutral ODE problems with exact or reference solutions."""

from odebench.problems.spiral import LinearSpiral

PROBLEMS = {"linear_spiral": LinearSpiral}

__all__ = ["PROBLEMS", "LinearSpiral"]
