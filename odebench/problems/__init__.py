"""Framework-neutral ODE problems with exact or reference solutions."""

from odebench.problems.lorenz import Lorenz
from odebench.problems.robertson import Robertson
from odebench.problems.spiral import LinearSpiral
from odebench.problems.vanderpol import StiffVanDerPol, VanDerPol

PROBLEMS = {
    "linear_spiral": LinearSpiral,
    "vanderpol": VanDerPol,
    "vanderpol_stiff": StiffVanDerPol,
    "lorenz": Lorenz,
    "robertson": Robertson,
}

__all__ = ["PROBLEMS", "LinearSpiral", "Lorenz", "Robertson", "StiffVanDerPol", "VanDerPol"]
