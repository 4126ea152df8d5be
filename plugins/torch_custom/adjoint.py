"""Continuous adjoint (Chen et al. 2018, Algorithm 1) and its seminorm variant (Kidger et al. 2021).

The forward solve runs under ``no_grad`` and saves only the states at the output times.
The backward pass integrates the augmented state ``s = [z, a, a_θ]`` (flattened into one
tensor, so every RK kernel touches it once) from ``t_N`` back to ``t_0``, every step ending
on the output times in between, with

    dz/dt = f(t, z),   da/dt = -aᵀ ∂f/∂z,   da_θ/dt = -aᵀ ∂f/∂θ,

the vector-Jacobian products taken by the autograd engine (``torch.autograd.grad``) through
the user's own ``func`` object, one per evaluation. At each output time ``t_i`` the state
jumps: ``z`` is reset to the stored forward state and ``∂L/∂z(t_i)`` is added to ``a``; the
step size carries over. Memory is independent of the number of steps.

The error norm of the reverse solve is the maximum of the RMS norms of ``z``, ``a`` and
``a_θ`` ("mixed"), or of ``z`` and ``a`` only ("seminorm": ``a_θ`` never rejects a step).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from odebench.protocol import SolveFailed, Status

from . import rk


class SolverError(SolveFailed):
    """A solve failed (what torchdiffeq reports with an assertion).

    It is odebench's :class:`SolveFailed`, so a failure raised inside ``backward()`` (the
    adjoint's reverse solve), where no :class:`Solution` can carry it, still becomes the
    case's status (``max_steps``, ...) instead of a generic error.

    Arguments:
        status: ``"max_steps"``, ``"dt_underflow"``, ``"nonfinite"`` or ``"error"``.
        message: what failed.

    Attributes:
        status: the :class:`Status` (a ``str`` enum: equal to the string given).
    """

    def __init__(self, status: str, message: str):
        super().__init__(Status(status), message)


class Job:
    """One differentiable solve: what the autograd Functions need, and the stats they fill."""

    def __init__(self, func, ts, cfg, counters, params=(), bwd_cfg=None, stats=None, seminorm=False):
        self.func = func
        self.ts = ts
        self.cfg = cfg
        self.counters = counters
        self.params = params
        self.bwd_cfg = bwd_cfg
        self.stats = stats
        self.seminorm = seminorm
        self.result: rk.Result | None = None
        self.bwd_counters = rk.Counters()
        self.n_vjp = 0


def _safe_vjp(output, cotangent, inputs):
    return torch.autograd.grad(output, inputs, cotangent, allow_unused=True)


def _pick_vjp():
    """``torch.autograd.grad``'s own engine entry point, skipping its argument normalisation
    (tens of microseconds per call at this size); the public API when that is unavailable."""
    run = getattr(getattr(torch.autograd, "graph", None), "_engine_run_backward", None)
    if run is None:
        return _safe_vjp

    def fast_vjp(output, cotangent, inputs):
        return run((output,), (cotangent,), False, False, inputs, True, accumulate_grad=False)

    try:  # check the private entry point once against the public one
        x = torch.ones(2, dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            got = fast_vjp(x * 3.0, torch.ones(2, dtype=torch.float64), (x,))
        if len(got) == 1 and torch.equal(got[0], torch.full((2,), 3.0, dtype=torch.float64)):
            return fast_vjp
    except Exception:  # noqa: BLE001 - any failure means: use the public API
        pass
    return _safe_vjp


_VJP = None


def _pick_flatten():
    """``torch.cat`` of the tensors flattened, in one C++ call (the one DDP uses to bucket
    gradients) instead of a ``reshape`` per part; plain ``cat`` where it is unavailable."""
    flat = getattr(getattr(torch._C, "_nn", None), "flatten_dense_tensors", None)
    if flat is None:
        return lambda parts: torch.cat([q.reshape(-1) for q in parts])
    return flat


_FLATTEN = _pick_flatten()


class _Augmented:
    """``s = [z, a, a_θ] ↦ ds/dt`` on the flat augmented state, one VJP per call.

    It runs once per evaluation of the reverse solve, on a small state where each tensor op
    costs microseconds of dispatch, so the per-call work is kept to: one ``split`` into
    views, one ``neg``, the field and its VJP, and one flattening ``cat`` of the results.
    """

    def __init__(self, job: Job, shape, n: int):
        self.func = job.func
        self.params = job.params
        self.shape = shape
        self.n = n
        self.sizes = (n, n, sum(p.numel() for p in job.params))
        self.zeros = [torch.zeros_like(p) for p in job.params]
        self.job = job
        self.checked = False
        global _VJP
        if _VJP is None:
            _VJP = _pick_vjp()
        self.vjp = _VJP

    def __call__(self, t, s):
        shape = self.shape
        z, a, _ = s.split_with_sizes(self.sizes)  # (not Tensor.split: its Python wrapper costs more)
        z = z.view(shape).detach().requires_grad_(True)
        with torch.enable_grad():
            fz = self.func(t, z)
            if not self.checked:
                if not isinstance(fz, torch.Tensor) or fz.shape != z.shape or fz.dtype != z.dtype:
                    raise ValueError(f"func(t, y) must return a tensor shaped like y {tuple(z.shape)}, "
                                     f"got {getattr(fz, 'shape', type(fz))}")
                self.checked = True
            if not fz.requires_grad:  # f independent of z and the parameters
                vjps = (None,) * (1 + len(self.params))
            else:
                vjps = self.vjp(fz, a.view(shape).neg(), (z, *self.params))
        self.job.n_vjp += 1
        # called under no_grad (the reverse solve): the result is a plain tensor
        # (not ``None in vjps``: that compares tensors with ``==``, tens of µs each)
        if any(g is None for g in vjps):  # unused z or parameters: their derivative is zero
            zeros = self.zeros
            vjps = [torch.zeros_like(fz) if i == 0 else zeros[i - 1] if g is None else g
                    for i, g in enumerate(vjps)]
        return _FLATTEN([fz, *vjps])


def _mixed_norm(n: int, p: int, seminorm: bool):
    root_n = math.sqrt(max(n, 1))
    root_p = math.sqrt(max(p, 1))

    def norm(r) -> float:
        za = torch.linalg.vector_norm(r[:2 * n].view(2, n), dim=1)
        if p and not seminorm:
            za = torch.cat([za, torch.linalg.vector_norm(r[2 * n:]).mul_(root_n / root_p).view(1)])
        return za.max().item() / root_n

    return norm


class AdjointFunction(torch.autograd.Function):
    """``apply(job, y0, *params) -> ys``; on a failed forward solve returns an empty tensor and
    leaves the failure in ``job.result``."""

    @staticmethod
    def forward(ctx, job, y0, *params):
        with torch.no_grad():
            res = rk.integrate(job.cfg, job.func, y0, job.ts, job.counters)
            job.result = res
            if res.status != rk.OK:
                ctx.failed = True
                return y0.new_empty((0,))
            out = torch.stack(res.ys)
            res.ys = None  # keep only the stacked copy
        ctx.failed = False
        ctx.job = job
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.failed:
            raise SolverError("error", "backward through a failed solve")
        job = ctx.job
        (out,) = ctx.saved_tensors
        ts = job.ts
        shape = out.shape[1:]
        n = out[0].numel()
        params = job.params
        p = sum(q.numel() for q in params)
        cfg = dataclasses.replace(job.bwd_cfg, norm=_mixed_norm(n, p, job.seminorm))
        aug = _Augmented(job, shape, n)
        counters = rk.Counters()
        T = len(ts)

        def jump(j, s):
            # at forward output i: reset z to the stored state, add dL/dz(t_i) to a
            i = T - 1 - j
            return torch.cat([out[i].reshape(-1), s[n:2 * n] + grad_out[i].reshape(-1), s[2 * n:]])

        with torch.no_grad():
            s0 = torch.cat([out[-1].reshape(-1), grad_out[-1].reshape(-1), out.new_zeros(p)])
            res = rk.integrate(cfg, aug, s0, ts[::-1], counters, jump=jump)
            if res.status == rk.OK and not bool(torch.isfinite(res.y_end).all()):
                res = rk.Result(None, rk.NONFINITE, "non-finite adjoint state")
            if res.status != rk.OK:
                _update_stats(job, counters)
                raise SolverError(res.status, f"adjoint reverse solve (backward pass) failed: {res.message}")
            s = res.y_end
        _update_stats(job, counters)
        grads = []
        offset = 2 * n
        for q in params:
            grads.append(s[offset:offset + q.numel()].view_as(q))
            offset += q.numel()
        return (None, s[n:2 * n].view(shape), *grads)


def _update_stats(job: Job, counters: rk.Counters) -> None:
    c = job.bwd_counters
    c.n_steps += counters.n_steps
    c.n_accepted += counters.n_accepted
    c.n_rejected += counters.n_rejected
    c.nfe += counters.nfe
    if job.stats is None:
        return
    extra = job.stats.extra
    extra["nfe_bwd"] = c.nfe
    extra["n_vjp"] = job.n_vjp
    extra["n_steps_bwd"] = c.n_steps
    extra["n_accepted_bwd"] = c.n_accepted
    extra["n_rejected_bwd"] = c.n_rejected
