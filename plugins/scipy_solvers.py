"""scipy's ``solve_ivp`` methods as an odebench plugin, with a black-box adjoint for training.

Forward solves drive scipy's ``OdeSolver`` classes (``RK45``, ``RK23``, ``DOP853``, ``Radau``,
``BDF``, ``LSODA``) one ``step()`` at a time, so odebench enforces its own step budget
(status ``max_steps`` instead of a hang), evaluates the output times with each step's dense
output exactly as ``solve_ivp(t_eval=...)`` does, and maps scipy's failures onto
:class:`~odebench.protocol.Status`.

Training uses the black-box adjoint (Algorithm 1 of Chen et al. 2018): when the vector field
is a ``torch.nn.Module`` (``y0`` a torch tensor), the forward solve runs in float64 numpy and
the backward pass integrates the augmented state ``[z, a, a_θ]`` backward in time with the
same scipy method and tolerances, evaluating the vector field and its vector-Jacobian
products with the module itself (``torch.autograd.grad``). Only the grad mode ``adjoint``
exists: scipy steps in numpy, outside any autodiff tape.

**NFE.** ``SolveStats.nfe`` counts every call of the vector field the solve made, so it equals
what a counting wrapper around ``f`` sees. For the explicit methods (bosh3, dopri5, dopri8)
and LSODA this *is* scipy's own ``nfev`` (``stats.extra["nfev"]``). Radau and BDF without a
Jacobian estimate it by finite differences, calling ``f`` once per state component per
Jacobian (and again for columns scipy finds badly scaled) outside scipy's ``nfev``; those calls are ``stats.extra["nfe_jac"]``, so there
``nfe == nfev + nfe_jac`` (LSODA's Fortran code counts its own Jacobian calls in ``nfev``).
DOP853's dense output costs 3 extra evaluations per step that contains an output time;
they are in ``nfev`` as in ``solve_ivp``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from odebench.protocol import FIXED_METHODS, Solution, SolverPlugin, SolveStats, Status

#: canonical name → scipy.integrate class name.
_METHODS = {
    "bosh3": "RK23",
    "dopri5": "RK45",
    "dopri8": "DOP853",
    "radau": "Radau",
    "bdf": "BDF",
    "lsoda": "LSODA",
}
_EXPLICIT_RK = frozenset({"RK23", "RK45", "DOP853"})

#: LSODA's ``istate`` on failure (ODEPACK documentation) → status and reason.
_LSODA_ISTATE = {
    -1: (Status.MAX_STEPS, "LSODA: excess work done on this call"),
    -2: (Status.ERROR, "LSODA: excess accuracy requested (tolerances too small)"),
    -3: (Status.ERROR, "LSODA: illegal input"),
    -4: (Status.DT_UNDERFLOW, "LSODA: repeated error test failures"),
    -5: (Status.DT_UNDERFLOW, "LSODA: repeated convergence failures"),
    -6: (Status.ERROR, "LSODA: an error weight became zero (pure relative error control on a zero component)"),
    -7: (Status.ERROR, "LSODA: work space insufficient"),
}


def _torch_module() -> Any:
    """The torch module when it has been imported (no tensor can exist otherwise)."""
    return sys.modules.get("torch")


def _is_tensor(x: Any) -> bool:
    torch = _torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


@dataclass
class _Result:
    """One scipy integration: ``ys`` of shape ``(len(ts), n)`` (None on failure)."""

    ys: np.ndarray | None
    status: Status
    message: str
    stats: SolveStats
    t_reached: float


class _NonFiniteLoop(RuntimeError):
    """Raised from inside a step that keeps evaluating a vector field returning NaN/inf."""


@dataclass
class _CountingField:
    """The flat float64 vector field handed to scipy; counts calls, watches for NaN/inf.

    scipy recovers from an occasional non-finite evaluation (the step is rejected and
    retried smaller), so one is only noted. A long unbroken run of them means the solver
    is stuck (e.g. a NaN step size, with which scipy's step loop never ends): after
    ``nonfinite_limit`` in a row the call raises, ending the solve with status nonfinite.
    """

    fun: Any
    nonfinite_limit: int = 1000
    calls: int = 0
    nonfinite: bool = False
    _run: int = 0

    def __call__(self, t: float, y: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = self.fun(t, y)
        if np.all(np.isfinite(out)):
            self._run = 0
        else:
            self.nonfinite = True
            self._run += 1
            if self._run > self.nonfinite_limit:
                raise _NonFiniteLoop(f"{self._run} non-finite vector field evaluations in a row")
        return out


class _LsodaWorkPool:
    """Work arrays for scipy's LSODA, reused from one solve to the next.

    scipy 1.17's C ``lsoda`` wrapper takes a reference to its ``rwork`` and ``iwork``
    arguments on every call and never releases it, so the work arrays of every LSODA solve
    stay allocated for the life of the process: ``8 (22 + 16 n + n²)`` bytes for an
    ``n``-dimensional state, which the black-box adjoint's augmented state ``[z, a, a_θ]``
    (``n`` = twice the state plus the parameters) turns into megabytes per training
    iteration. Each solve therefore runs on a pooled pair of its size, reinitialised from the
    fresh pair scipy made, so the references scipy keeps point at arrays the pool keeps
    anyway. A pair is in use by one solve at a time; the pool grows only with concurrency.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(rwork: np.ndarray, iwork: np.ndarray) -> tuple:
        return rwork.shape, rwork.dtype.str, iwork.shape, iwork.dtype.str

    def adopt(self, solver: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Give the new, not yet stepped LSODA ``solver`` a free pooled pair of work arrays
        (its fresh pair, when none is free, joins the pool on :meth:`release`).

        Returns:
            The pair the solver now uses, for :meth:`release`; None when scipy's internals
            are not the ones this works around (then nothing is changed).
        """
        integ = getattr(getattr(solver, "_lsoda_solver", None), "_integrator", None)
        args = getattr(integ, "call_args", None)
        if not isinstance(args, list) or len(args) < 6:
            return None
        rwork, iwork = args[4], args[5]
        if not (isinstance(rwork, np.ndarray) and isinstance(iwork, np.ndarray)
                and rwork is getattr(integ, "rwork", None) and iwork is getattr(integ, "iwork", None)):
            return None
        with self._lock:
            free = self._free.get(self._key(rwork, iwork))
            pair = free.pop() if free else None
        if pair is None:
            return rwork, iwork
        pair[0][...] = rwork  # scipy's initial contents: options, t_bound, zeroed state
        pair[1][...] = iwork
        integ.rwork, integ.iwork = pair
        args[4], args[5] = pair
        return pair

    def release(self, pair: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Return a pair from :meth:`adopt` to the pool once its solve has ended."""
        if pair is not None:
            with self._lock:
                self._free.setdefault(self._key(*pair), []).append(pair)


_LSODA_WORK = _LsodaWorkPool()


def _failure(solver: Any, native: str, message: str | None, field_: _CountingField) -> tuple[Status, str]:
    """Map a failed ``step()`` onto a status."""
    message = message or "scipy step failed"
    if field_.nonfinite:
        return Status.NONFINITE, f"{native}: the vector field returned NaN or inf ({message})"
    if native == "LSODA":
        istate = getattr(getattr(getattr(solver, "_lsoda_solver", None), "_integrator", None), "istate", None)
        if istate in _LSODA_ISTATE:
            status, reason = _LSODA_ISTATE[istate]
            return status, f"{reason} (istate {istate}) at t={float(solver.t)!r}"
    if "step size is less than spacing" in message or "step size" in message.lower():
        return Status.DT_UNDERFLOW, f"{native}: {message} (t={float(solver.t)!r})"
    return Status.ERROR, f"{native}: {message} (t={float(solver.t)!r})"


def integrate(
    fun: Any,
    y0: np.ndarray,
    ts: np.ndarray,
    *,
    native: str,
    rtol: float,
    atol: float,
    max_steps: int,
) -> _Result:
    """Integrate the flat system ``y' = fun(t, y)`` with scipy, reporting outputs at ``ts``.

    Arguments:
        fun: vector field on flat float64 arrays ``(n,)`` → ``(n,)``.
        y0: flat float64 initial state.
        ts: monotone float64 output times, ``ts[0]`` the initial time.
        native: the scipy class name (``"RK45"``, ``"Radau"`` ...).
        rtol, atol: tolerances.
        max_steps: budget of accepted steps (calls of ``OdeSolver.step``).

    Returns:
        A :class:`_Result`; failures are statuses, never exceptions.
    """
    import scipy.integrate

    counting = _CountingField(fun, nonfinite_limit=1000 + 2 * y0.size)
    n_t = len(ts)
    out = np.empty((n_t, y0.size), dtype=np.float64)
    out[0] = y0
    stats = SolveStats(n_steps=0, n_accepted=0, n_rejected=0 if native in _EXPLICIT_RK else None, nfe=0)
    stats.extra.update(native_method=native, nfev=0, njev=0, nlu=0, nfe_jac=0)

    def result(status: Status, message: str = "", t: float = float(ts[0]), solver: Any = None) -> _Result:
        if solver is not None:
            stats.extra.update(nfev=int(solver.nfev), njev=int(solver.njev), nlu=int(solver.nlu))
        else:  # no solver yet: every call so far was scipy's own (initial evaluations)
            stats.extra["nfev"] = counting.calls
        stats.nfe = counting.calls
        stats.extra["nfe_jac"] = counting.calls - int(stats.extra["nfev"])
        return _Result(out if status is Status.OK else None, status, message, stats, t)

    if not np.all(np.isfinite(y0)):
        return result(Status.NONFINITE, "the initial state contains NaN or inf")
    i = 1
    while i < n_t and ts[i] == ts[0]:
        out[i] = y0
        i += 1
    if i == n_t:
        return result(Status.OK)

    direction = 1.0 if ts[-1] > ts[0] else -1.0
    solver_cls = getattr(scipy.integrate, native)
    with warnings.catch_warnings(), contextlib.ExitStack() as cleanup:
        # LSODA reports failures through warnings as well as its istate; the status says it all.
        warnings.simplefilter("ignore")
        try:
            solver = solver_cls(counting, float(ts[0]), y0, float(ts[-1]), rtol=rtol, atol=atol)
        except Exception as err:  # the vector field raised at t0, or scipy rejected the input
            status = Status.NONFINITE if counting.nonfinite else Status.ERROR
            return result(status, f"{native} could not start: {type(err).__name__}: {err}")
        if native == "LSODA":  # scipy's LSODA leaks its work arrays: run on pooled ones
            cleanup.callback(_LSODA_WORK.release, _LSODA_WORK.adopt(solver))
        n_stages = getattr(solver, "n_stages", None)
        while i < n_t:
            if stats.n_accepted >= max_steps:
                return result(
                    Status.MAX_STEPS,
                    f"{native}: step budget of {max_steps} steps exhausted at t={float(solver.t)!r} "
                    f"(target {float(ts[-1])!r})",
                    float(solver.t),
                    solver,
                )
            h_abs = getattr(solver, "h_abs", 1.0)
            if not np.isfinite(h_abs):  # scipy would loop forever on a NaN step size
                return result(
                    Status.NONFINITE,
                    f"{native}: the step size became {h_abs} (the vector field returned NaN or inf "
                    f"at t={float(solver.t)!r})",
                    float(solver.t),
                    solver,
                )
            nfev_before = solver.nfev
            counting.nonfinite = False
            try:
                message = solver.step()
            except Exception as err:  # e.g. LU of a NaN matrix, or f raised
                status = Status.NONFINITE if counting.nonfinite else Status.ERROR
                return result(status, f"{native}: {type(err).__name__}: {err}", float(solver.t), solver)
            if native in _EXPLICIT_RK:
                attempts = (solver.nfev - nfev_before) // n_stages
                stats.n_steps += attempts
                stats.n_rejected += attempts - (solver.status != "failed")
            else:
                stats.n_steps += 1
            if solver.status == "failed":
                status, reason = _failure(solver, native, message, counting)
                return result(status, reason, float(solver.t), solver)
            stats.n_accepted += 1
            if not np.all(np.isfinite(solver.y)):
                return result(
                    Status.NONFINITE, f"{native}: the state became NaN or inf at t={float(solver.t)!r}",
                    float(solver.t), solver,
                )
            t_now = solver.t
            dense = None
            while i < n_t and direction * (ts[i] - t_now) <= 0:
                if ts[i] == t_now:
                    out[i] = solver.y
                else:
                    if dense is None:
                        dense = solver.dense_output()
                    out[i] = dense(ts[i])
                i += 1
    return result(Status.OK, "", float(solver.t), solver)


class ScipyPlugin(SolverPlugin):
    """``scipy.integrate``'s adaptive and stiff solvers (numpy, float64, CPU).

    ``odeint`` accepts either a numpy vector field ``f(t, y)`` on arrays shaped like ``y0``
    (problems; returns numpy), or a torch ``nn.Module`` / torch callable with torch ``y0`` and
    ``ts`` (training; returns a torch tensor differentiable by the black-box adjoint, which
    needs torch).

    ``SolveStats.nfe`` (``nfe_source = "counter"``) is the number of calls of ``f`` the solve
    made, counted by the wrapper handed to scipy: scipy's own ``nfev`` (in
    ``stats.extra["nfev"]``) plus, for Radau and BDF, the finite-difference Jacobian calls
    outside it (``stats.extra["nfe_jac"]``); see the module docstring.
    """

    name: ClassVar[str] = "scipy"
    framework: ClassVar[str] = "numpy"
    library: ClassVar[str] = "scipy"
    requires: ClassVar[tuple[str, ...]] = ("scipy",)
    extra: ClassVar[str] = "scipy"
    methods: ClassVar[dict[str, str]] = dict(_METHODS)
    grad_modes: ClassVar[tuple[str, ...]] = ("adjoint",)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    # The flattened batch is one system for scipy: one step size for all samples.
    batch_stepping: ClassVar[str] = "joint"
    fixed_step_methods: ClassVar[frozenset[str]] = frozenset()
    nfe_source: ClassVar[str] = "counter"
    # Models are trained in torch: the black-box adjoint takes a torch module.
    backend: ClassVar[str] = "torch"

    @classmethod
    def adjoint_available(cls) -> str | None:
        """None when training (the black-box adjoint) can run, else why not: it needs torch."""
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return (
                "the scipy plugin's black-box adjoint evaluates the vector field and its "
                "vector-Jacobian products with torch, which is not installed — "
                "`pip install odebench[torch]` (forward solves of numpy problems need only scipy)"
            )
        return None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        out = super().describe()
        out["notes"] = (
            "forward solves need only scipy; training (grad mode adjoint) needs torch"
            + ("" if cls.adjoint_available() is None else " (not installed)")
        )
        return out

    @classmethod
    def unsupported_reason(cls, method: str, grad_mode: str, device: str = "cpu") -> str | None:
        if method in FIXED_METHODS:
            return (
                f"scipy has no fixed-step methods, so no {method!r}: solve_ivp's methods are all "
                f"adaptive (has: {', '.join(sorted(cls.methods))})"
            )
        if method in cls.methods and grad_mode in ("backprop", "checkpoint"):
            return (
                f"scipy has no grad mode {grad_mode!r}: it steps in numpy, outside any autodiff tape, "
                "so gradients come only from the black-box adjoint (has: adjoint; needs torch)"
            )
        if method in cls.methods and grad_mode == "adjoint-seminorm":
            return (
                "scipy has no grad mode 'adjoint-seminorm': its error norm cannot be restricted to "
                "part of the augmented state (has: adjoint)"
            )
        return super().unsupported_reason(method, grad_mode, device)

    def odeint(
        self,
        f: Any,
        y0: Any,
        ts: Any,
        *,
        method: str,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        step_size: float | None = None,
        grad_mode: str = "adjoint",
        max_steps: int = 100_000,
    ) -> Solution:
        """Integrate ``dy/dt = f(t, y)`` from ``y0`` and return the solution at ``ts``.

        Arguments:
            f: a numpy callable ``f(t, y)`` on arrays shaped like ``y0``; or, for training, a
                ``torch.nn.Module`` (or torch callable) ``f(t, y)`` on tensors, with ``y0``
                and ``ts`` torch tensors.
            y0: initial state, shape ``(..., d)`` (flattened for scipy, reshaped back).
            ts: monotone output times, ``ts[0]`` the initial time.
            method: a key of :attr:`methods` (bosh3, dopri5, dopri8, radau, bdf, lsoda).
            rtol, atol: scipy's tolerances.
            step_size: ignored (all scipy methods are adaptive).
            grad_mode: ``"adjoint"``, the only one (the default here).
            max_steps: budget of accepted steps; exceeding it gives status ``max_steps``.

        Returns:
            A :class:`~odebench.protocol.Solution` with ``ys`` of shape ``(len(ts), *y0.shape)``
            (numpy in ``y0``'s float dtype, or a torch tensor in the torch case) and scipy's
            statistics; ``ys`` is None when the solve failed. In the torch case the backward
            solve's statistics appear in ``stats.extra["backward"]`` once it has run.

        Raises:
            UnsupportedError: for an undeclared method, grad mode or device.
            ValueError: when ``ts`` is not monotone or ``y0`` is empty.
            odebench.backends.base.SolveFailed: from ``backward()`` when the adjoint's reverse
                solve fails (autograd cannot return a status).
        """
        torch = _torch_module()
        use_torch = _is_tensor(y0) or (torch is not None and isinstance(f, torch.nn.Module))
        device = y0.device.type if _is_tensor(y0) else "cpu"
        self.check(method, grad_mode, device)
        if use_torch:
            return _odeint_torch(f, y0, ts, _METHODS[method], rtol, atol, max_steps)

        y0_arr = np.asarray(y0)
        out_dtype = y0_arr.dtype if np.issubdtype(y0_arr.dtype, np.floating) else np.dtype(np.float64)
        shape = y0_arr.shape
        ts_arr = _check_ts(ts)
        if y0_arr.size == 0:
            raise ValueError("y0 is empty")

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            return np.asarray(f(t, y.reshape(shape)), dtype=np.float64).reshape(-1)

        res = integrate(
            fun, y0_arr.astype(np.float64).reshape(-1), ts_arr,
            native=_METHODS[method], rtol=rtol, atol=atol, max_steps=max_steps,
        )
        ys = None if res.ys is None else res.ys.reshape(len(ts_arr), *shape).astype(out_dtype, copy=False)
        res.stats.extra["t_reached"] = res.t_reached
        return Solution(ys=ys, status=res.status, message=res.message, stats=res.stats)


def _check_ts(ts: Any) -> np.ndarray:
    if _is_tensor(ts):
        ts = ts.detach().cpu().to(dtype=_torch_module().float64).numpy()
    ts_arr = np.asarray(ts, dtype=np.float64).reshape(-1)
    if ts_arr.size == 0:
        raise ValueError("ts is empty")
    d = np.diff(ts_arr)
    if not (np.all(d >= 0) or np.all(d <= 0)):
        raise ValueError("ts must be monotone (non-decreasing or non-increasing)")
    if not np.all(np.isfinite(ts_arr)):
        raise ValueError("ts contains NaN or inf")
    return ts_arr


# -- black-box adjoint (torch) --------------------------------------------------------------------


@dataclass
class _AdjointContext:
    """What the backward pass needs, kept off autograd's saved tensors (it is all numpy)."""

    f: Any
    params: list[Any]
    ys: np.ndarray  # (T, n) float64 forward trajectory
    ts: np.ndarray
    shape: tuple[int, ...]
    dtype: Any  # dtype the vector field is evaluated in
    native: str
    rtol: float
    atol: float
    max_steps: int
    backward_stats: dict[str, Any] = field(default_factory=dict)


def _field_dtype(f: Any, y0: Any) -> Any:
    """Evaluate the field in its parameters' float dtype (float64 when it has none)."""
    import torch

    if isinstance(f, torch.nn.Module):
        for p in f.parameters():
            if p.is_floating_point():
                return p.dtype
    return y0.dtype if y0.is_floating_point() else torch.float64


def _odeint_torch(f: Any, y0: Any, ts: Any, native: str, rtol: float, atol: float, max_steps: int) -> Solution:
    import torch

    if y0.numel() == 0:
        raise ValueError("y0 is empty")
    ts_arr = _check_ts(ts)
    shape = tuple(y0.shape)
    dtype = _field_dtype(f, y0)
    params = [p for p in f.parameters() if p.requires_grad] if isinstance(f, torch.nn.Module) else []

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            tt = torch.tensor(t, dtype=dtype)
            out = f(tt, torch.as_tensor(y).view(shape).to(dtype))
        return np.array(out.detach().to(torch.float64).reshape(-1).numpy(), dtype=np.float64)

    y0_np = y0.detach().cpu().to(torch.float64).reshape(-1).numpy().copy()
    res = integrate(fun, y0_np, ts_arr, native=native, rtol=rtol, atol=atol, max_steps=max_steps)
    res.stats.extra["t_reached"] = res.t_reached
    if res.ys is None:
        return Solution(ys=None, status=res.status, message=res.message, stats=res.stats)
    ctx = _AdjointContext(f, params, res.ys, ts_arr, shape, dtype, native, rtol, atol, max_steps)
    res.stats.extra["backward"] = ctx.backward_stats
    ys = _black_box_adjoint().apply(y0, ts, ctx, *params)
    return Solution(ys=ys, status=res.status, message=res.message, stats=res.stats)


_ADJOINT_FN: Any = None


def _black_box_adjoint() -> Any:
    """The ``torch.autograd.Function`` (defined on first use, so importing needs no torch)."""
    global _ADJOINT_FN
    if _ADJOINT_FN is not None:
        return _ADJOINT_FN
    import torch
    from torch.autograd.function import once_differentiable

    class BlackBoxAdjoint(torch.autograd.Function):
        """Outputs the precomputed scipy trajectory; backward is Algorithm 1 of Chen et al."""

        @staticmethod
        def forward(fctx: Any, y0: Any, ts: Any, ctx: _AdjointContext, *params: Any) -> Any:
            fctx.adjoint = ctx
            fctx.y0_dtype = y0.dtype
            return torch.from_numpy(ctx.ys.reshape(len(ctx.ts), *ctx.shape).copy()).to(y0.dtype)

        @staticmethod
        @once_differentiable
        def backward(fctx: Any, grad_ys: Any) -> Any:
            ctx: _AdjointContext = fctx.adjoint
            grad_y0, grad_params = _adjoint_backward(ctx, grad_ys)
            return (grad_y0.to(fctx.y0_dtype), None, None, *grad_params)

    _ADJOINT_FN = BlackBoxAdjoint
    return _ADJOINT_FN


def _adjoint_backward(ctx: _AdjointContext, grad_ys: Any) -> tuple[Any, list[Any]]:
    """Integrate ``[z, a, a_θ]`` backward from ``ts[-1]`` to ``ts[0]`` (Algorithm 1).

    ``z' = f(t, z)``, ``a' = -aᵀ ∂f/∂z``, ``a_θ' = -aᵀ ∂f/∂θ``, solved with scipy between
    consecutive output times; at each output time ``t_i`` the state ``z`` is reset to the
    forward trajectory and ``∂L/∂z(t_i)`` is added to ``a``.
    """
    import torch

    from odebench.protocol import SolveFailed

    f, params, shape, dtype = ctx.f, ctx.params, ctx.shape, ctx.dtype
    n = ctx.ys.shape[1]
    sizes = [p.numel() for p in params]
    n_p = sum(sizes)
    g = grad_ys.detach().cpu().to(torch.float64).reshape(len(ctx.ts), n).numpy()
    counters = {"nfe": 0, "nfev": 0, "nfe_jac": 0, "njev": 0, "nlu": 0, "n_steps": 0, "n_accepted": 0,
                "n_vjp": 0, "n_segments": 0}

    def aug(t: float, s: np.ndarray) -> np.ndarray:
        counters["n_vjp"] += 1
        z = torch.as_tensor(s[:n]).view(shape).to(dtype).detach().requires_grad_(True)
        a = torch.as_tensor(s[n : 2 * n]).view(shape).to(dtype)
        with torch.enable_grad():
            fz = f(torch.tensor(t, dtype=dtype), z)
            grads = torch.autograd.grad(fz, (z, *params), grad_outputs=a.to(fz.dtype), allow_unused=True)
        out = np.empty_like(s)
        out[:n] = fz.detach().to(torch.float64).reshape(-1).numpy()
        gz = grads[0]
        out[n : 2 * n] = 0.0 if gz is None else -gz.detach().to(torch.float64).reshape(-1).numpy()
        k = 2 * n
        for gp, size in zip(grads[1:], sizes):
            out[k : k + size] = 0.0 if gp is None else -gp.detach().to(torch.float64).reshape(-1).numpy()
            k += size
        return out

    a = g[-1].copy()
    a_theta = np.zeros(n_p)
    for i in range(len(ctx.ts) - 1, 0, -1):
        if ctx.ts[i] != ctx.ts[i - 1]:
            state = np.concatenate([ctx.ys[i], a, a_theta])
            budget = ctx.max_steps - counters["n_accepted"]
            res = integrate(
                aug, state, np.array([ctx.ts[i], ctx.ts[i - 1]]),
                native=ctx.native, rtol=ctx.rtol, atol=ctx.atol, max_steps=max(budget, 0),
            )
            st = res.stats
            counters["n_segments"] += 1
            counters["nfe"] += st.nfe or 0
            counters["n_steps"] += st.n_steps or 0
            counters["n_accepted"] += st.n_accepted or 0
            for key in ("nfev", "nfe_jac", "njev", "nlu"):
                counters[key] += int(st.extra.get(key, 0))
            ctx.backward_stats.update(counters)
            if res.ys is None:
                raise SolveFailed(
                    res.status,
                    f"black-box adjoint: reverse solve from t={ctx.ts[i]!r} to t={ctx.ts[i - 1]!r} "
                    f"failed: {res.message}",
                )
            end = res.ys[-1]
            a = end[n : 2 * n]
            a_theta = end[2 * n :]
        a = a + g[i - 1]
    ctx.backward_stats.update(counters)

    grad_y0 = torch.from_numpy(a.reshape(shape).copy())
    grad_params = []
    k = 0
    for p, size in zip(params, sizes):
        grad_params.append(torch.from_numpy(a_theta[k : k + size].reshape(p.shape).copy()).to(p.dtype))
        k += size
    return grad_y0, grad_params
