"""odebench's own fixed-step solvers with the whole solve compiled by ``torch.compile``.

The fixed-step loop of :mod:`.rk` unrolled over the step grid, one compiled program per method
(and per grid length, dtype and shapes): inductor fuses each stage's combination ``y + h Σ a_ij k_j``
and the field's elementwise work into a few kernels, forward and backward. The algorithm is that
of the eager plugin step for step: the same tableau, the same grid (the output times, or
:func:`.rk.fixed_grid` with ``step_size``), the same evaluations, so the NFE and the states agree
(to rounding: a fused kernel may associate the sums differently).

The adjoint is the eager plugin's continuous adjoint on fixed grids, compiled in two programs: the
forward solve without a graph, and the reverse solve of the augmented state ``[z, a, a_θ]``
(:func:`.unrolled.reverse_solve`), whose vector-Jacobian products are ``torch.func.vjp`` calls that dynamo
traces into the one graph, unrolled over the reverse grid like the forward loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

from odebench.protocol import FIXED_METHODS, Solution, SolveStats, Status, UnsupportedError

from .plugin import TorchCustomPlugin


class TorchCustomCompiledPlugin(TorchCustomPlugin):
    """torch_custom's fixed-step methods with the whole solve compiled (``torch.compile``): backprop
    and the continuous adjoint.

    :meth:`prepare` compiles for the shapes, dtype, grid and grad mode of the timed calls (one solve
    and its backward pass) and returns the seconds it took: the record's ``compile_s``, never part of
    a timing. The torch trainer runs timed passes with ``eager_on_recompile`` and its untimed
    instrumented pass eagerly (``force_eager``: the very code of :mod:`.unrolled`, run op by op),
    where the harness counts NFE as for every torch plugin; ``SolveStats.nfe`` is the steps times
    the stages, and after an adjoint's backward pass ``extra["nfe_bwd"]`` is the reverse solve's.

    A ``step_size`` whose grid misses an output time is unsupported (the eager plugin interpolates
    there; this one returns grid states only). ``adjoint`` is the eager plugin's adjoint, step for
    step: its reverse grid is :func:`.rk.grid_through` of the reversed output times, compiled whole
    up to :attr:`unroll_steps` steps and as one compiled step in a Python loop beyond. On a fixed grid
    the seminorm changes nothing (no step is rejected), so ``adjoint-seminorm`` is not offered apart;
    neither is ``checkpoint``.
    """

    name: ClassVar[str] = "torch_custom_compiled"
    methods: ClassVar[dict[str, str]] = {m: n for m, n in TorchCustomPlugin.methods.items() if m in FIXED_METHODS}
    grad_modes: ClassVar[tuple[str, ...]] = ("backprop", "adjoint")
    compiled: ClassVar[bool] = True
    nfe_source: ClassVar[str] = "formula"  # stages × steps: the compiled code keeps no tally
    #: The longest reverse grid (in steps) whose solve is compiled whole. Unrolled, each reverse step
    #: adds ~10 s of compiling on a 2-core CPU (its four VJPs, forward and backward of the field), but
    #: runs without a call per step: at the spiral's 9 steps the whole solve took 1.9 ms after 91 s of
    #: compiling, one compiled step called 9 times 3.9 ms after 16 s. Longer grids get the latter.
    unroll_steps: ClassVar[int] = 16

    def __init__(self):
        self._compiled: dict[tuple[str, str], Any] = {}

    def _program(self, kind: str, method: str):
        """One compiled program per kind and method, kept for the plugin's life (dynamo's cache of
        traced graphs lives on it): ``"forward"`` (:func:`.unrolled.grid_solve`), ``"reverse"``
        (:func:`.unrolled.reverse_solve`, the loop unrolled) or ``"reverse_step"``
        (:func:`.unrolled.reverse_step`, for a loop in Python)."""
        key = (kind, method)
        if key not in self._compiled:
            import functools

            import torch

            from . import unrolled
            from .api import _method

            fn = {"forward": unrolled.grid_solve, "reverse": unrolled.reverse_solve,
                  "reverse_step": unrolled.reverse_step}[kind]
            self._compiled[key] = torch.compile(functools.partial(fn, _method(self.methods[method])), dynamic=False)
        return self._compiled[key]

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
        stages = _method(self.methods[method]).s
        stats = SolveStats(n_steps=n, n_accepted=n, n_rejected=0, nfe=n * stages, extra={"nfe_bwd": 0})
        grid_t = torch.tensor(grid, dtype=y0.dtype, device=y0.device)
        outputs = tuple(where[t] for t in times[1:])
        if grad_mode == "backprop":
            ys = self._program("forward", method)(f, y0, grid_t, outputs)
        else:
            ys = self._adjoint(f, y0, times, step_size, method, grid_t, outputs, stats, stages, max_steps)
        bad = rk.first_nonfinite(ys)
        if bad is not None:
            return Solution(None, Status.NONFINITE, f"non-finite state at t={times[bad]!r}", stats)
        return Solution(ys, Status.OK, "", stats)

    def _adjoint(self, f, y0, times, step_size, method, grid_t, outputs, stats, stages, max_steps):
        """The adjoint's differentiable solve: the reverse grid and its jumps, the reverse program
        (whole or stepwise, see :attr:`unroll_steps`), and :class:`.unrolled.AdjointFunction` over
        ``f``'s parameters that require grad."""
        import functools

        import torch

        from . import rk, unrolled
        from .api import _method

        named = list(f.named_parameters()) if isinstance(f, torch.nn.Module) else []
        named = [(k, p) for k, p in named if p.requires_grad]
        back = rk.grid_through(times[::-1], step_size)
        at = {t: i for i, t in enumerate(back)}
        T = len(times)
        jumps = tuple((at[times[T - 1 - j]], T - 1 - j) for j in range(1, T))
        if len(back) - 1 <= self.unroll_steps:
            reverse = self._program("reverse", method)
        else:  # the loop in Python around one compiled step
            reverse = functools.partial(unrolled.reverse_solve, _method(self.methods[method]),
                                        step=self._program("reverse_step", method))
        job = unrolled.AdjointJob(
            self._program("forward", method), reverse, f, tuple(k for k, _ in named),
            grid_t, outputs, torch.tensor(back, dtype=y0.dtype, device=y0.device), jumps, stats, stages, max_steps)
        return unrolled.AdjointFunction.apply(job, y0, *(p for _, p in named))

    def prepare(self, f: Any, y0: Any, ts: Any, **solve_kw: Any) -> float | None:
        """Compile for these shapes and settings (see :func:`odebench.backends.torch.compile_by_running`)."""
        from odebench.backends.torch import compile_by_running

        return compile_by_running(self, f, y0, ts, **solve_kw)
