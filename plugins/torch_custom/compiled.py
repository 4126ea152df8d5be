"""odebench's own fixed-step solvers with the whole solve compiled by ``torch.compile``.

The fixed-step loop of :mod:`.rk` unrolled over the step grid, one compiled program per method
(and per grid length, dtype and shapes): inductor fuses each stage's combination ``y + h Σ a_ij k_j``
and the field's elementwise work into a few kernels, forward and backward. The algorithm is that
of the eager plugin step for step: the same tableau, the same grid (the output times, or
:func:`.rk.fixed_grid` with ``step_size``), the same evaluations, so the NFE and the states agree
(to rounding: a fused kernel may associate the sums differently).
"""

from __future__ import annotations

from typing import Any, ClassVar

from odebench.protocol import FIXED_METHODS, Solution, SolveStats, Status, UnsupportedError

from .plugin import TorchCustomPlugin


def grid_solve(method, func, y0, grid, outputs: tuple[int, ...]):
    """The fixed-step RK solve over ``grid`` (a 1-d tensor), the states at the grid indices ``outputs``.

    Arguments:
        method: the prepared tableau (:class:`.rk.Method`, an explicit method without FSAL).
        func: the vector field ``func(t, y)``, ``t`` a 0-d tensor.
        y0: the state at ``grid[0]``.
        grid: the step grid, of ``y0``'s dtype.
        outputs: the indices of the grid points whose states are returned (0 first).

    Returns:
        The stacked states, shape ``(len(outputs), *y0.shape)``.
    """
    import torch

    ys = [y0]
    y = y0
    for i in range(grid.shape[0] - 1):
        t0, t1 = grid[i], grid[i + 1]
        h = t1 - t0
        ks = [func(t0, y)]
        yi = y
        for s in range(1, method.s):
            yi = _comb(y, ks, method.a_nz[s], h)
            ks.append(func(t1 if method.c_is_one[s] else t0 + method.c[s] * h, yi))
        y = _comb(y, ks, method.b_nz, h)
        if i + 1 in outputs:
            ys.append(y)
    return torch.stack(ys)


def _comb(y, ks, nz, h):
    """``y + Σ_j (c_j h) k_j`` in the eager core's order (:func:`.rk.comb`), as one traced expression."""
    out = y
    for j, x in nz:
        out = out + (x * h) * ks[j]
    return out


class TorchCustomCompiledPlugin(TorchCustomPlugin):
    """torch_custom's fixed-step methods with the whole solve compiled (``torch.compile``), backprop only.

    :meth:`prepare` compiles for the shapes, dtype and grid of the timed calls (one solve and its
    backward pass) and returns the seconds it took: the record's ``compile_s``, never part of a
    timing. The torch trainer runs timed passes with ``eager_on_recompile`` and its untimed
    instrumented pass eagerly (``force_eager``: the very code above, run op by op), where the
    harness counts NFE as for every torch plugin; ``SolveStats.nfe`` is the steps times the stages.

    A ``step_size`` whose grid misses an output time is unsupported (the eager plugin interpolates
    there; this one returns grid states only). The adjoint modes are the eager plugin's: their
    reverse solve lives in an ``autograd.Function`` that this variant does not compile.
    """

    name: ClassVar[str] = "torch_custom_compiled"
    methods: ClassVar[dict[str, str]] = {m: n for m, n in TorchCustomPlugin.methods.items() if m in FIXED_METHODS}
    grad_modes: ClassVar[tuple[str, ...]] = ("backprop",)
    compiled: ClassVar[bool] = True
    nfe_source: ClassVar[str] = "formula"  # stages × steps: the compiled code keeps no tally

    def __init__(self):
        self._compiled: dict[str, Any] = {}

    def _solver(self, method: str):
        """One compiled solve per method, kept for the plugin's life (dynamo's cache lives on it)."""
        if method not in self._compiled:
            import functools

            import torch

            from .api import _method

            self._compiled[method] = torch.compile(functools.partial(grid_solve, _method(self.methods[method])),
                                                   dynamic=False)
        return self._compiled[method]

    def odeint(self, f: Any, y0: Any, ts: Any, *, method: str, rtol: float = 1e-7, atol: float = 1e-9,
               step_size: float | None = None, grad_mode: str = "backprop", max_steps: int = 100_000) -> Solution:
        self.check(method, grad_mode)
        import torch

        from . import rk
        from .api import _method, _times

        times = _times(ts)
        if len(times) < 2:
            return Solution(y0.unsqueeze(0), Status.OK, "",
                            SolveStats(n_steps=0, n_accepted=0, n_rejected=0, nfe=0, extra={"nfe_bwd": 0}))
        grid = times if step_size is None else rk.fixed_grid(times[0], times[-1], step_size)
        where = {t: i for i, t in enumerate(grid)}
        if any(t not in where for t in times):
            raise UnsupportedError(f"{self.name}: step_size {step_size!r} gives a grid that misses an output time "
                                   "(the eager torch_custom interpolates there)")
        n = len(grid) - 1
        if n > max_steps:
            return Solution(None, Status.MAX_STEPS, f"max_num_steps exceeded: {n} fixed steps > {max_steps}")
        grid_t = torch.tensor(grid, dtype=y0.dtype, device=y0.device)
        ys = self._solver(method)(f, y0, grid_t, tuple(where[t] for t in times[1:]))
        stats = SolveStats(n_steps=n, n_accepted=n, n_rejected=0, nfe=n * _method(self.methods[method]).s,
                           extra={"nfe_bwd": 0})
        bad = rk.first_nonfinite(ys)
        if bad is not None:
            return Solution(None, Status.NONFINITE, f"non-finite state at t={times[bad]!r}", stats)
        return Solution(ys, Status.OK, "", stats)

    def prepare(self, f: Any, y0: Any, ts: Any, **solve_kw: Any) -> float | None:
        """Compile for these shapes and settings (see :func:`odebench.backends.torch.compile_by_running`)."""
        from odebench.backends.torch import compile_by_running

        return compile_by_running(self, f, y0, ts, **solve_kw)
