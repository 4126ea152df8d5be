"""Measurement primitives (DESIGN §4): timers, peak memory, NFE counters, saved bytes, env.

Nothing here knows about suites or plugins; the runner and the trainers use these.
torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


# --------------------------------------------------------------------------- timing
@contextlib.contextmanager
def gc_off() -> Iterator[None]:
    """Disable the garbage collector for a measured region (a collection is noise)."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> tuple[Any, float]:
    """Run ``fn`` between two device syncs; return its result and the seconds it took.

    ``sync`` runs before the start is read (so queued work is not billed to ``fn``) and
    before the end is read (so asynchronous device work is).
    """
    sync()
    t0 = time.perf_counter_ns()
    out = fn()
    sync()
    return out, (time.perf_counter_ns() - t0) * 1e-9


def summarize(values: list[float] | np.ndarray) -> dict[str, float]:
    """Median, interquartile range and count of ``values`` (NaN-safe, empty-safe)."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"median": float("nan"), "iqr": float("nan"), "n": 0}
    q25, q50, q75 = np.percentile(arr, [25, 50, 75])
    return {"median": float(q50), "iqr": float(q75 - q25), "n": int(arr.size)}


class Phases:
    """Wall seconds spent in named phases of a case, for the record's ``<phase>_s`` columns.

    ``with phases("gate"): ...`` adds the block's wall time to ``gate``; a phase entered
    twice accumulates. Only untimed bookkeeping: the measured work keeps its own timers.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def start(self, name: str) -> None:
        """Open phase ``name`` until :meth:`stop` (for a phase that a ``with`` block cannot wrap)."""
        self._open = (name, time.perf_counter())

    def stop(self) -> None:
        """Close the phase :meth:`start` opened, adding its wall time."""
        name, start = self._open
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def record(self) -> dict[str, float]:
        """``{"<phase>_s": seconds}`` for every phase entered."""
        return {f"{name}_s": s for name, s in self.seconds.items()}


def loop_s_per_step(solve_s: float | None, field_s: float | None, n_steps: float | None) -> float | None:
    """The solver's own time per step beyond its vector field's cost (the torchode paper's loop time).

    Arguments:
        solve_s: seconds of the solve (or of a whole training iteration).
        field_s: seconds of the vector field's evaluations alone (and their backward where
            ``solve_s`` includes one), at the same states: the eager floor.
        n_steps: the steps the solve took (forward and reverse, where both are in ``solve_s``).

    Returns:
        ``max(solve_s - field_s, 0) / n_steps``: clipped at 0 where the difference is inside
        the timer's noise; None when a figure is missing or there are no steps.
    """
    if solve_s is None or field_s is None or not n_steps:
        return None
    if not (math.isfinite(solve_s) and math.isfinite(field_s)):
        return None
    return max(solve_s - field_s, 0.0) / n_steps


#: Timed replays of the eager floor per case (after one untimed): the median is the floor.
FLOOR_ROUNDS = 10


def floor_fields(floor: tuple[Callable[[], Any], int] | None, sync: Callable[[], None],
                 iter_s: float) -> dict[str, Any]:
    """The eager floor of one iteration (or solve), timed beside the solver, and the solver's gap to it.

    Arguments:
        floor: ``(replay, n_steps)``: a callable evaluating the field alone at the states one
            iteration evaluated it, with their backward (:func:`odebench.backends.torch.floor_replay`),
            and the forward steps of that iteration; None where the backend has none (a fused JAX step).
        sync: the device sync around each timed replay.
        iter_s: the case's median seconds per iteration (solve, loss, gradient and, in training, the update).

    Returns:
        ``floor_s`` (median seconds of the replay over :data:`FLOOR_ROUNDS`), ``floor_ratio``
        (``iter_s / floor_s``) and ``loop_s_per_step`` (:func:`loop_s_per_step` per forward step);
        empty when ``floor`` is None.
    """
    if floor is None:
        return {}
    replay, n_steps = floor
    replay()  # warm-up
    with gc_off():
        times = [timed(replay, sync)[1] for _ in range(FLOOR_ROUNDS)]
    median = summarize(times)["median"]
    return {"floor_s": median, "floor_ratio": iter_s / median if median > 0 else None,
            "loop_s_per_step": loop_s_per_step(iter_s, median, n_steps)}


# --------------------------------------------------------------------------- memory
def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak resident set over a region, minus the resident set just before it.

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current
    RSS, so the kernel's high-water mark at the end is the peak of the region alone
    (:attr:`method` ``"VmHWM"``). Where that reset is not permitted, a background thread
    samples ``VmRSS`` every :attr:`period_s` seconds over the region (:attr:`method`
    ``"sampled VmRSS every 1 ms (...)"``): it can miss a spike shorter than the period, never
    reports one from before the region. Where neither exists (no ``/proc``), :attr:`peak` and
    :attr:`delta` are NaN and :attr:`method` is ``"unavailable: <reason>"``. The process-
    lifetime ``ru_maxrss`` is never used: it is a peak of another region.

    Arguments:
        period_s: sampling period of the fallback, in seconds.
    """

    def __init__(self, period_s: float = 1e-3) -> None:
        self.period_s = period_s
        self.baseline: int | float = 0
        self.peak: int | float = 0
        self.method = ""
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0

    def __enter__(self) -> PeakRSS:
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            reset_error = None
        except OSError as err:
            reset_error = f"{type(err).__name__}: {err}"
        baseline = _proc_status_kb("VmRSS")
        if baseline is None:
            self.baseline = self.peak = float("nan")
            self.method = "unavailable: /proc/self/status has no VmRSS (not Linux?)"
            return self
        self.baseline = baseline * 1024
        if reset_error is None:
            self.method = "VmHWM"
            return self
        self.method = f"sampled VmRSS every {self.period_s * 1e3:g} ms (clear_refs not writable: {reset_error})"
        self._sampled = self.baseline
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, name="PeakRSS-sampler", daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            kb = _proc_status_kb("VmRSS")
            if kb is not None and kb * 1024 > self._sampled:
                self._sampled = kb * 1024

    def __exit__(self, *exc: object) -> None:
        if self.method.startswith("unavailable"):
            return
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sampler = None
            kb = _proc_status_kb("VmRSS")  # the end of the region is part of it
            self.peak = max(self._sampled, 0 if kb is None else kb * 1024)
            return
        kb = _proc_status_kb("VmHWM")
        if kb is None:
            self.peak = float("nan")
            self.method = "unavailable: VmHWM could not be read at the end of the region"
        else:
            self.peak = kb * 1024

    @property
    def delta(self) -> int | float:
        """Bytes the region added at its peak (never negative); NaN when unavailable."""
        if not math.isfinite(self.peak) or not math.isfinite(self.baseline):
            return float("nan")
        return max(0, self.peak - self.baseline)


@contextlib.contextmanager
def saved_tensor_bytes() -> Iterator[dict[str, int]]:
    """Count the bytes autograd saves for backward inside the ``with`` block (torch).

    Each distinct storage is counted once, and leaf tensors that require grad (the
    parameters), and views of them, are left out: they exist whatever the solver does, so the count is what
    the gradient method itself keeps alive. Deterministic, so CI can track it.

    Yields:
        A dict whose ``"bytes"`` and ``"tensors"`` are filled in as the block runs.
    """
    import torch

    seen: set[int] = set()
    # Storages are kept alive until the block ends: a freed storage's address can be
    # reused by a later one, which would then be taken for the same and not counted.
    keep: list = []
    out = {"bytes": 0, "tensors": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t if t._base is None else t._base  # a Linear saves weight.t(), a view
        if base.is_leaf and base.requires_grad:
            return t
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen.add(key)
            keep.append(storage)
            out["bytes"] += storage.nbytes()
            out["tensors"] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield out


# --------------------------------------------------------------------------- allocator (glibc)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: glibc's largest dynamic mmap threshold on 64-bit (32 MiB): what a steady training loop reaches.
_STEADY_MMAP_THRESHOLD = 32 * 2**20


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


def set_mmap_threshold(nbytes: int) -> bool:
    """Pin glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to ``nbytes``.

    Called before the case allocates anything big: every buffer of at least ``nbytes``
    then gets its own mapping, unmapped on free, so the resident set follows the live
    buffers. (glibc's default raises the threshold to the largest buffer freed so far, so
    freed buffers stay resident in the heap and are reused: the peak over a pass after
    warm-up would shrink towards zero, or grow with fragmentation.) Returns False where it
    cannot be set (not glibc, or ``nbytes`` is 0).
    """
    libc = _libc()
    if not nbytes or libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(nbytes))) and bool(libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                   int(nbytes)))


def release_mmap_threshold() -> None:
    """Undo :func:`set_mmap_threshold` for the timed passes: buffers up to 32 MiB come from the
    heap and are reused, as in glibc's steady state (its dynamic threshold cannot be restored)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _STEADY_MMAP_THRESHOLD)


def trim_heap() -> None:
    """Return the heap's free pages to the system (``malloc_trim(0)``), so reusing them counts."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# --------------------------------------------------------------------------- NFE
@dataclass
class NFECounter:
    """Vector-field evaluations seen by the harness, split by phase.

    ``phase`` is switched by the instrumented pass: ``"fwd"`` while the forward solve
    runs, ``"bwd"`` during the backward pass. ``n_vjp`` counts vector-Jacobian products
    through the vector field's output.
    """

    nfe_fwd: int = 0
    nfe_bwd: int = 0
    n_vjp: int = 0
    phase: str = "fwd"

    def call(self) -> None:
        if self.phase == "fwd":
            self.nfe_fwd += 1
        else:
            self.nfe_bwd += 1

    def vjp(self, *_: Any) -> None:
        self.n_vjp += 1

    def reset(self) -> None:
        self.nfe_fwd = self.nfe_bwd = self.n_vjp = 0
        self.phase = "fwd"


# --------------------------------------------------------------------------- environment
def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(argv: list[str] | None = None, probe_devices: bool = True) -> dict[str, Any]:
    """Library versions, Python, CPU, threads, devices and dtype flags, git commit, command.

    Arguments:
        argv: the command line to record (default ``sys.argv``).
        probe_devices: import torch / jax (when installed) to report devices and flags.
    """
    from odebench import __version__

    env: dict[str, Any] = {
        "odebench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                   "XLA_FLAGS", "JAX_ENABLE_X64") if k in os.environ},
        "git_commit": _git_commit(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "libraries": {d: _version(d) for d in ("numpy", "scipy", "pandas", "torch", "torchdiffeq",
                                               "jax", "jaxlib", "diffrax", "equinox", "optax")},
    }
    if probe_devices and env["libraries"]["torch"]:
        import torch

        env["torch"] = {
            "threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cuda_version": torch.version.cuda,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        }
    if probe_devices and env["libraries"]["jax"]:
        import jax

        env["jax"] = {
            "devices": [str(d) for d in jax.devices()],
            "x64": bool(jax.config.jax_enable_x64),
        }
    return env
