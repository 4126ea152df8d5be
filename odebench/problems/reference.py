"""Float64 reference solutions for problems without a closed form, cached on disk.

A reference is an independent, tight-tolerance scipy solve (DESIGN §4, *Error*): DOP853 for
non-stiff problems, Radau for stiff ones, at ``rtol = 1e-12`` by default. The solver is made to
stop exactly on every output time, so each output is a step endpoint of the method, not a
dense-output interpolant (Radau's is only of order 3). Results are cached as ``.npz`` files
under :func:`cache_dir`, keyed by a hash of the problem's class, parameters, output times,
initial state, method and tolerances, so changing any of them computes a new reference.

:class:`ReferenceProblem` is the mixin the reference problems (Van der Pol, Lorenz,
Robertson) share: observation times, ``reference(ts)`` and ``torch_field()``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

#: Bumped when the cache format or the way references are computed changes.
CACHE_FORMAT = 1
#: scipy's implicit solvers, the ones that take a Jacobian.
_IMPLICIT = ("Radau", "BDF", "LSODA")


def cache_dir() -> Path:
    """Where references are cached: ``$ODEBENCH_CACHE/references``, else the user cache.

    The user cache is ``$XDG_CACHE_HOME/odebench/references`` (``~/.cache/odebench/references``
    when ``XDG_CACHE_HOME`` is unset). The folder is not created here.
    """
    root = os.environ.get("ODEBENCH_CACHE")
    if root:
        return Path(root).expanduser() / "references"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "odebench" / "references"


def cache_key(params: dict[str, Any], ts: np.ndarray, y0: np.ndarray) -> str:
    """A hex digest of the problem parameters (JSON-able), output times and initial state."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, **params}, sort_keys=True, default=repr).encode())
    for arr in (ts, y0):
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        h.update(repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def solve_reference(
    rhs: Callable[[float, np.ndarray], np.ndarray],
    y0: np.ndarray,
    ts: np.ndarray,
    *,
    stiff: bool,
    jac: Callable[[float, np.ndarray], np.ndarray] | None = None,
    rtol: float = 1e-12,
    atol: float | Sequence[float] = 1e-12,
    method: str | None = None,
) -> np.ndarray:
    """Solve ``y' = rhs(t, y)`` from ``y0`` to every ``ts`` with scipy, uncached.

    Arguments:
        rhs: the vector field on one state of shape ``(d,)``.
        y0: initial state(s), shape ``(d,)`` or ``(..., d)`` (each row solved independently).
        ts: monotone output times; ``ts[0]`` is the initial time.
        stiff: Radau when true, else DOP853.
        jac: the Jacobian ``d rhs / d y`` of one state (implicit methods only; finite differences
            when None).
        rtol, atol: tolerances.
        method: a ``scipy.integrate`` solver class name that replaces the one ``stiff`` picks
            (e.g. ``"BDF"`` for a second, independent reference of a stiff problem).

    Returns:
        float64 array of shape ``(len(ts), *y0.shape)``.

    Raises:
        RuntimeError: when scipy fails before reaching an output time.
    """
    ts = np.asarray(ts, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    rows = y0.reshape(-1, y0.shape[-1])
    out = np.empty((len(ts), *rows.shape))
    method = method or ("Radau" if stiff else "DOP853")
    kwargs: dict[str, Any] = {"rtol": rtol, "atol": atol}
    if method in _IMPLICIT and jac is not None:
        kwargs["jac"] = jac
    import scipy.integrate  # here: a case whose problem has an exact solution never pays for its import

    solver_cls = getattr(scipy.integrate, method)
    for r, y in enumerate(rows):
        out[:, r] = y
        i = 1
        while i < len(ts) and ts[i] == ts[0]:
            i += 1
        if i == len(ts):
            continue
        solver = solver_cls(rhs, ts[0], y, ts[i], **kwargs)
        while i < len(ts):
            if ts[i] != solver.t:
                # Stop exactly on the next output time: move the solver's boundary there and
                # let it continue (its step-size history is kept, unlike a restart).
                solver.t_bound = ts[i]
                solver.status = "running"
                while solver.status == "running":
                    message = solver.step()
                if solver.status != "finished" or solver.t != ts[i]:
                    raise RuntimeError(f"reference solve ({method}) failed at t={solver.t}: {message}")
            out[i, r] = solver.y
            i += 1
    return out.reshape(len(ts), *y0.shape)


def reference_solution(
    rhs: Callable[[float, np.ndarray], np.ndarray],
    y0: np.ndarray,
    ts: np.ndarray,
    *,
    params: dict[str, Any],
    stiff: bool,
    jac: Callable[[float, np.ndarray], np.ndarray] | None = None,
    rtol: float = 1e-12,
    atol: float | Sequence[float] = 1e-12,
    use_cache: bool = True,
    method: str | None = None,
) -> np.ndarray:
    """:func:`solve_reference`, read from / written to the disk cache.

    Arguments:
        params: what identifies the problem (class name and parameters); hashed with ``ts``,
            ``y0``, the method and the tolerances into the cache key. Must be JSON-able.
        use_cache: False to always solve and never touch the cache.
        method: a scipy solver class name replacing the one ``stiff`` picks (part of the key).
        (the rest as in :func:`solve_reference`)

    Returns:
        float64 array of shape ``(len(ts), *y0.shape)``.
    """
    ts = np.asarray(ts, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    if not use_cache:
        return solve_reference(rhs, y0, ts, stiff=stiff, jac=jac, rtol=rtol, atol=atol, method=method)
    full = {
        **params,
        "method": method or ("Radau" if stiff else "DOP853"),
        "rtol": rtol,
        "atol": np.asarray(atol, dtype=np.float64).tolist(),
    }
    key = cache_key(full, ts, y0)
    name = str(params.get("problem", "problem"))
    path = cache_dir() / f"{name}-{key[:24]}.npz"
    cached = _read(path, ts, y0)
    if cached is not None:
        return cached
    ys = solve_reference(rhs, y0, ts, stiff=stiff, jac=jac, rtol=rtol, atol=atol, method=method)
    write_npz_atomic(path, ys=ys, meta=np.array(json.dumps(full, sort_keys=True, default=repr)), key=np.array(key))
    return ys


def _read(path: Path, ts: np.ndarray, y0: np.ndarray) -> np.ndarray | None:
    """The cached ``ys``, or None when missing, unreadable or of the wrong shape."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ys = np.array(data["ys"], dtype=np.float64)
    except (OSError, KeyError, ValueError, EOFError):
        return None
    if ys.shape != (len(ts), *y0.shape):
        return None
    return ys


def write_npz_atomic(path: Path, **arrays: Any) -> None:
    """Save ``arrays`` to the ``.npz`` cache file ``path`` atomically (a temporary file renamed), so
    that a concurrent reader never sees half a file; a cache folder that cannot be written is skipped
    (it only costs recomputation).

    Arguments:
        path: the file to write.
        arrays: the named arrays (``numpy.savez``'s keywords).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide a shared cache from other users
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


def stack(parts: Sequence[Any], like: Any) -> Any:
    """Stack the components of a vector field along the last axis, in ``like``'s framework.

    Lets one formula serve numpy (problems, references, the scipy plugin), torch
    (``torch_field()``) and JAX (traced inside ``jax.jit``), so they can never disagree.
    """
    root = type(like).__module__.split(".")[0]
    if root == "torch":
        import torch

        return torch.stack(list(parts), dim=-1)
    if root in ("jax", "jaxlib"):  # a tracer lives in jax._src, a concrete array in jaxlib
        import jax.numpy as jnp

        return jnp.stack(list(parts), axis=-1)
    return np.stack(parts, axis=-1)


class ReferenceProblem:
    """Mixin of the frozen-dataclass problems whose truth is a cached scipy reference.

    A subclass is a frozen dataclass with fields ``y0``, ``t0``, ``t1``, ``n_points`` and its
    parameters, and defines ``rhs(t, y)`` (numpy or torch, any leading batch shape) and
    ``jac(t, y)`` (numpy, one state). The class attributes below describe it.
    """

    #: registry name, also the prefix of the cache files.
    name: ClassVar[str] = ""
    #: the dimension of the state ``rhs`` acts on (``y0`` must have this length).
    state_dim: ClassVar[int] = 0
    #: stiff problems get a Radau reference, the others DOP853.
    stiff: ClassVar[bool] = False
    reference_rtol: ClassVar[float] = 1e-12
    reference_atol: ClassVar[float | tuple[float, ...]] = 1e-12

    y0: tuple[float, ...]
    t0: float
    t1: float
    n_points: int

    @property
    def ts(self) -> np.ndarray:
        """The observation times (default: ``n_points`` equally spaced on ``[t0, t1]``)."""
        return np.linspace(self.t0, self.t1, self.n_points)

    @property
    def dim(self) -> int:
        return len(self.y0)

    def rhs(self, t: Any, y: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def jac(self, t: float, y: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """What identifies this problem in the reference cache (class and compared fields)."""
        out: dict[str, Any] = {"problem": self.name or type(self).__name__, "class": type(self).__qualname__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.compare:
                out[f.name] = getattr(self, f.name)
        return out

    def reference(
        self, ts: np.ndarray | None = None, y0: np.ndarray | None = None, *, use_cache: bool = True
    ) -> np.ndarray:
        """The float64 reference solution at ``ts`` (default: the observation times).

        Arguments:
            ts: monotone output times, ``ts[0]`` the initial time.
            y0: initial state(s), shape ``(d,)`` or ``(..., d)`` (default: the problem's ``y0``).
            use_cache: False to skip the disk cache.

        Returns:
            float64 array of shape ``(len(ts), *y0.shape)``.
        """
        ts = self.ts if ts is None else np.asarray(ts, dtype=np.float64)
        y0 = np.asarray(self.y0 if y0 is None else y0, dtype=np.float64)
        return reference_solution(
            self.rhs,
            y0,
            ts,
            params=self.params(),
            stiff=self.stiff,
            jac=self.jac,
            rtol=self.reference_rtol,
            atol=self.reference_atol,
            use_cache=use_cache,
        )

    def torch_field(self) -> Any:
        """The vector field as a ``torch.nn.Module`` ``f(t, y)`` (no trainable parameters).

        It evaluates the very same formula as :meth:`rhs`, in the dtype and device of ``y``,
        so torch plugins can solve the problem through the plugin contract. Imports torch.
        """
        return _torch_field_class()(self)


_FIELD_CLASS: Any = None


def _torch_field_class() -> Any:
    global _FIELD_CLASS
    if _FIELD_CLASS is None:
        import torch

        class ProblemField(torch.nn.Module):
            """``f(t, y) = problem.rhs(t, y)`` evaluated with torch operations."""

            def __init__(self, problem: ReferenceProblem):
                super().__init__()
                self.problem = problem

            def forward(self, t: Any, y: Any) -> Any:
                return self.problem.rhs(t, y)

            def extra_repr(self) -> str:
                return repr(self.problem)

        _FIELD_CLASS = ProblemField
    return _FIELD_CLASS
