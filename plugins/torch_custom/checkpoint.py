"""Recompute-per-step gradients ("checkpoint").

The forward solve runs under ``no_grad`` and keeps only the state at the start of each
accepted step (saved through ``ctx.save_for_backward``, so saved-tensor hooks see them).
The backward pass walks the steps in reverse, rebuilds each step's graph from its saved
state (with the same step size, stage times and output interpolation as the forward pass)
and pulls the cotangent through it with ``torch.autograd.grad``. The result is the exact
gradient of the discrete solution, as ``backprop`` gives, with memory of one state per
step plus one step's graph.
"""

from __future__ import annotations

import torch

from . import rk
from .adjoint import Job, SolverError, _update_stats


class CheckpointFunction(torch.autograd.Function):
    """``apply(job, y0, *params) -> ys``; like :class:`~.adjoint.AdjointFunction`."""

    @staticmethod
    def forward(ctx, job: Job, y0, *params):
        trace = rk.Trace()
        with torch.no_grad():
            res = rk.integrate(job.cfg, job.func, y0, job.ts, job.counters, trace)
            job.result = res
            if res.status != rk.OK:
                ctx.failed = True
                return y0.new_empty((0,))
            out = torch.stack(res.ys)
            res.ys = None
        ctx.failed = False
        ctx.job = job
        ctx.times = [(t0, t1) for t0, t1, _ in trace.steps]
        ctx.outs = trace.outs
        ctx.save_for_backward(*[y for _, _, y in trace.steps])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.failed:
            raise SolverError("error", "backward through a failed solve")
        job = ctx.job
        m = job.cfg.method
        func = job.func
        params = job.params
        states = ctx.saved_tensors
        by_step: dict[int, list] = {}
        for i, (n, theta) in enumerate(ctx.outs, start=1):
            by_step.setdefault(n, []).append((i, theta))
        linear = job.cfg.interp == "linear"
        counters = rk.Counters()
        adj = torch.zeros_like(grad_out[0])
        pgrads = [None] * len(params)
        nfe = 0
        for n in range(len(states) - 1, -1, -1):
            t0, t1 = ctx.times[n]
            h = t1 - t0
            y = states[n].detach().requires_grad_(True)
            tt = torch.tensor(m.stage_times(t0, t1, h) + [t1], dtype=y.dtype, device=y.device).unbind(0)
            with torch.enable_grad():
                k0 = func(tt[0], y)
                ks, y1 = rk.step(m, func, tt, y, k0, h)
                nfe += m.s
                outputs = [y1]
                cots = [adj]
                f1 = None
                for i, theta in by_step.get(n, ()):
                    if theta == 1.0:
                        cots[0] = cots[0] + grad_out[i]
                        continue
                    if linear:
                        v = torch.lerp(y, y1, theta)
                    elif m.dense is not None and m.fsal:
                        v = rk.dense_eval(m, y, ks, h, theta)
                    else:
                        if f1 is None:
                            f1 = func(tt[-1], y1)
                            nfe += 1
                        v = rk.hermite(y, y1, k0, f1, h, theta)
                    outputs.append(v)
                    cots.append(grad_out[i])
                grads = torch.autograd.grad(outputs, (y, *params), cots, allow_unused=True)
            adj = grads[0] if grads[0] is not None else torch.zeros_like(adj)
            for q, g in enumerate(grads[1:]):
                if g is not None:
                    pgrads[q] = g if pgrads[q] is None else pgrads[q] + g
        counters.nfe = nfe
        counters.n_steps = counters.n_accepted = len(states)
        job.n_vjp += nfe
        _update_stats(job, counters)
        grad_y0 = adj + grad_out[0]
        return (None, grad_y0, *pgrads)
