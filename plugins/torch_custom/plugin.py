"""odebench's own PyTorch solvers as a plugin (DESIGN §5). Importable without torch."""

from __future__ import annotations

from typing import Any, ClassVar

from odebench.protocol import GRAD_MODES, Solution, SolverPlugin

_METHODS = ("euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5")
# canonical name → tableau name where they differ (tableau names are Python identifiers)
_NATIVE = {"rk4-classic": "rk4_classic"}


class TorchCustomPlugin(SolverPlugin):
    """Butcher-tableau explicit RK solvers with a PI controller, dense output and four
    gradient modes (``backprop``, ``adjoint``, ``adjoint-seminorm``, ``checkpoint``).

    ``rk4`` is Kutta's 3/8 rule, as torchdiffeq's ``rk4``; ``rk4-classic`` is the classical
    RK4 (tableau ``rk4_classic``). For adaptive methods a given
    ``step_size`` is the first step (diffrax's ``dt0``). Solver failures come back as
    ``Solution.status``; after a backward pass ``Solution.stats.extra`` holds ``nfe_bwd``
    and ``n_vjp`` (adjoint / checkpoint).

    ``SolveStats.nfe`` (``nfe_source = "counter"``) is the RK core's own tally of the calls of
    ``f`` it makes in the forward solve: the stages of every attempted step, the first
    evaluation, the first-step heuristic's one, and any made for cubic Hermite output.
    """

    name: ClassVar[str] = "torch_custom"
    framework: ClassVar[str] = "torch"
    library: ClassVar[str] = "torch"
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    extra: ClassVar[str] = "torch"
    methods: ClassVar[dict[str, str]] = {m: m for m in _METHODS} | _NATIVE
    grad_modes: ClassVar[tuple[str, ...]] = GRAD_MODES
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    nfe_source: ClassVar[str] = "counter"
    batch_stepping: ClassVar[str] = "joint"  # one error norm over the whole batch

    def odeint(self, f: Any, y0: Any, ts: Any, *, method: str, rtol: float = 1e-7, atol: float = 1e-9,
               step_size: float | None = None, grad_mode: str = "backprop",
               max_steps: int = 100_000) -> Solution:
        self.check(method, grad_mode)
        from .api import solve

        fixed = self.is_fixed_step(method)
        return solve(
            f, y0, ts, method=self.methods[method], rtol=rtol, atol=atol,
            step_size=step_size if fixed else None,
            first_step=None if fixed else step_size,
            max_steps=max_steps, grad_mode=grad_mode,
        )
