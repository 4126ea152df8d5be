"""The fixed-step solves written to be traced whole: the forward loop, the adjoint's reverse loop,
and the autograd Function joining them (what :mod:`.compiled` hands to ``torch.compile``).

Each is the eager core's algorithm (:mod:`.rk`, :mod:`.adjoint`) on a fixed grid, with the Python
loop over the steps unrolled by dynamo: time is a tensor of the state's dtype, every stage is one
traced expression, and nothing in the loop reads a value back to Python.
"""

from __future__ import annotations

import torch

from .adjoint import SolverError


def comb(y, ks, nz, h):
    """``y + Σ_j (c_j h) k_j`` in the eager core's order (:func:`.rk.comb`), as one traced expression."""
    out = y
    for j, x in nz:
        out = out + (x * h) * ks[j]
    return out


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
    ys = [y0]
    y = y0
    for i in range(grid.shape[0] - 1):
        t0, t1 = grid[i], grid[i + 1]
        h = t1 - t0
        ks = [func(t0, y)]
        for s in range(1, method.s):
            yi = comb(y, ks, method.a_nz[s], h)
            ks.append(func(t1 if method.c_is_one[s] else t0 + method.c[s] * h, yi))
        y = comb(y, ks, method.b_nz, h)
        if i + 1 in outputs:
            ys.append(y)
    return torch.stack(ys)


def reverse_step(method, func, names: tuple[str, ...], params, z, a, g_params, t0, t1):
    """One step of the adjoint's reverse solve (see :func:`reverse_solve`) from ``t0`` to ``t1``.

    Returns:
        ``(z, a, g_params)`` at ``t1``.
    """
    def field(t, z, a):
        def call(zz, *pp):
            return torch.func.functional_call(func, dict(zip(names, pp)), (t, zz)) if names else func(t, zz)

        fz, vjp = torch.func.vjp(call, z, *params)
        g = vjp(-a)
        return fz, g[0], g[1:]

    h = t1 - t0
    kz, ka, kp = [], [], []
    zi, ai = z, a
    for s in range(method.s):
        if s:
            zi, ai = comb(z, kz, method.a_nz[s], h), comb(a, ka, method.a_nz[s], h)
        ts = t0 if s == 0 else t1 if method.c_is_one[s] else t0 + method.c[s] * h
        fz, ga, gp = field(ts, zi, ai)
        kz.append(fz)
        ka.append(ga)
        kp.append(gp)
    z, a = comb(z, kz, method.b_nz, h), comb(a, ka, method.b_nz, h)
    return z, a, [comb(g, [k[q] for k in kp], method.b_nz, h) for q, g in enumerate(g_params)]


def reverse_solve(method, func, names: tuple[str, ...], params, out, grad_out, grid,
                  jumps: tuple[tuple[int, int], ...], step=None):
    """The adjoint's reverse solve on a fixed grid: ``∂L/∂y0`` and ``∂L/∂θ`` from the forward states.

    It integrates ``dz/dt = f(t, z)``, ``da/dt = -aᵀ ∂f/∂z``, ``da_θ/dt = -aᵀ ∂f/∂θ`` from
    ``grid[0] = t_N`` back to ``grid[-1] = t_0`` with the method's steps, as the eager adjoint does
    (:class:`.adjoint.AdjointFunction`); at each output time ``z`` is reset to the stored forward
    state and that time's cotangent is added to ``a``. ``a_θ`` enters no stage of the augmented
    field, so only the steps' final combinations carry it. The VJPs are ``torch.func.vjp`` calls,
    which dynamo traces (``torch.autograd.grad`` would break the graph at every evaluation).

    Arguments:
        method: the prepared tableau (explicit, without FSAL).
        func: the vector field; an ``nn.Module`` when ``names`` is not empty.
        names: the names of the parameters in ``params`` (from ``func.named_parameters()``).
        params: the parameters the gradient is taken for.
        out: the forward states at the output times, shape ``(N + 1, *y0.shape)``.
        grad_out: ``∂L/∂out``, the same shape.
        grid: the reverse grid, from ``t_N`` to ``t_0``, of ``out``'s dtype.
        jumps: ``(grid index, output index)`` of every output time but ``t_N``.
        step: what takes one step, called as :func:`reverse_step` without its ``method`` (default:
            :func:`reverse_step` itself, traced with the loop when the loop is compiled; a
            compiled step when the loop runs in Python).

    Returns:
        ``(∂L/∂y0, [∂L/∂θ for θ in params])``.
    """
    if step is None:
        def step(*args):
            return reverse_step(method, *args)

    at = dict(jumps)
    z, a = out[-1], grad_out[-1]
    g_params = [torch.zeros_like(p) for p in params]
    for i in range(grid.shape[0] - 1):
        z, a, g_params = step(func, names, params, z, a, g_params, grid[i], grid[i + 1])
        if i + 1 in at:
            z, a = out[at[i + 1]], a + grad_out[at[i + 1]]
    return a, g_params


class AdjointJob:
    """One differentiable solve of :class:`AdjointFunction`: the programs, the grids, and the stats to fill.

    Arguments:
        forward: ``grid_solve`` bound to the method (compiled or not).
        reverse: ``reverse_solve`` bound to the method (compiled or not).
        func, names: the field and the names of the parameters passed to ``apply``.
        grid, outputs: the forward grid (tensor) and the grid indices of the output times.
        reverse_grid, jumps: the reverse grid (tensor) and its ``(grid index, output index)`` jumps.
        stats: the solve's :class:`~odebench.protocol.SolveStats`; the backward pass fills ``extra``.
        stages: evaluations per step.
        max_steps: the most steps the reverse solve may take.
    """

    def __init__(self, forward, reverse, func, names, grid, outputs, reverse_grid, jumps, stats, stages: int,
                 max_steps: int):
        self.forward, self.reverse, self.func, self.names = forward, reverse, func, names
        self.grid, self.outputs, self.reverse_grid, self.jumps = grid, outputs, reverse_grid, jumps
        self.stats, self.stages, self.max_steps = stats, stages, max_steps


class AdjointFunction(torch.autograd.Function):
    """``apply(job, y0, *params) -> ys``: the forward solve without a graph, gradients by :func:`reverse_solve`."""

    @staticmethod
    def forward(ctx, job: AdjointJob, y0, *params):
        out = job.forward(job.func, y0, job.grid, job.outputs)  # autograd runs this without a graph
        ctx.job = job
        ctx.save_for_backward(out, *params)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        job = ctx.job
        out, *params = ctx.saved_tensors
        n = job.reverse_grid.shape[0] - 1
        if n > job.max_steps:
            raise SolverError("max_steps", f"adjoint reverse solve (backward pass): {n} fixed steps > {job.max_steps}")
        g_y0, g_params = job.reverse(job.func, job.names, tuple(params), out, grad_out.contiguous(),
                                     job.reverse_grid, job.jumps)
        job.stats.extra.update(nfe_bwd=n * job.stages, n_vjp=n * job.stages, n_steps_bwd=n, n_accepted_bwd=n,
                               n_rejected_bwd=0)
        # One check over every gradient: one read of the device, not one per tensor.
        if not bool(torch.isfinite(torch.cat([g.reshape(-1) for g in (g_y0, *g_params)])).all()):
            raise SolverError("nonfinite", "adjoint reverse solve (backward pass) failed: non-finite adjoint state")
        return (None, g_y0, *g_params)
