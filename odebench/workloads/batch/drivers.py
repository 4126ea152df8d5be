"""Framework drivers of the ``batch`` workload: one case's solves in torch or JAX.

A driver holds the case's two *modes*: ``joint``, the whole batch as one ``y0`` of shape
``(N, d)`` in one solve, and ``solo``, each sample as its own ``y0`` of shape ``(1, d)`` in a
solve of its own, through the same plugin and settings. Van der Pol's μ is data of the vector
field (a tensor of shape ``(N, 1)``, or ``(1, 1)`` solo), so the batch is one call of ``f``; the
MLP field is shared and only the initial states differ.

Per mode a driver compiles what the plugin compiles (outside any timer), runs one untimed
instrumented pass (every solve's vector-field calls counted by the harness — a forward hook in
torch, :func:`odebench.backends.jax.counted` in JAX — with the library's own statistics and the
trajectory), and runs the timed passes. Solves are forward only: no gradient is taken, so the
MLP's parameters are frozen and torch solves run under ``no_grad``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from odebench.measure import NFECounter
from odebench.protocol import SolveFailed, SolverPlugin, SolveStats, Status
from odebench.workloads.batch.problem import BatchProblem

#: The two ways a case solves its batch.
MODES = ("joint", "solo")


@dataclass
class Solved:
    """What the instrumented pass learns from one solve.

    Arguments:
        nfe: vector-field calls counted by the harness (each call evaluates every sample of the solve).
        stats: the library's own statistics.
        ys: the trajectory as float64 numpy, shape ``(T, n, d)``.
    """

    nfe: int
    stats: SolveStats
    ys: np.ndarray


def solve_kwargs(case: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The ``odeint`` keywords of every solve of a case (the case's method, tolerances and grad mode)."""
    return dict(method=case["method"], rtol=case["rtol"], atol=case["atol"], grad_mode=case["grad_mode"],
                max_steps=config["measure"]["max_steps"])


def _fail(what: str, status: Status, message: str) -> SolveFailed:
    """The exception for a solve that ended with ``status``, its message prefixed with which solve."""
    return SolveFailed(status, f"{what}: {message}" if message else what)


class _Driver:
    """One case's joint and solo solves in a framework (see the module docstring)."""

    def prepare(self, mode: str) -> float | None:
        """Compile the mode's solve for its shapes; seconds spent, or None when nothing compiles."""
        raise NotImplementedError

    def instrumented(self, mode: str) -> list[Solved]:
        """One untimed pass of the mode, counted: one :class:`Solved` per solve.

        Raises:
            odebench.protocol.SolveFailed: when a solve does not end ok.
        """
        raise NotImplementedError

    def run(self, mode: str) -> Any:
        """One timed pass of the mode: every solve of it, finished (device work included)."""
        raise NotImplementedError

    def check(self, mode: str, out: Any) -> None:
        """Raise :class:`~odebench.protocol.SolveFailed` when a solve of a timed pass did not end ok."""
        raise NotImplementedError

    def sync(self) -> None:
        return None


# --------------------------------------------------------------------------- torch
@functools.cache
def _torch_vdp_class() -> type:
    import torch
    from torch import nn

    class BatchVanDerPol(nn.Module):
        """Van der Pol with one μ per sample: ``mu`` of shape ``(n, 1)`` against ``y`` of ``(n, 2)``.

        The same formula as :meth:`odebench.problems.vanderpol.VanDerPol.rhs`, μ read per row.
        """

        #: ``forward`` ignores ``t``: torchode may evaluate samples at different times in one call.
        autonomous = True

        def __init__(self, mu):
            super().__init__()
            self.register_buffer("mu", mu)

        def forward(self, t, y):
            y1, y2 = y[:, :1], y[:, 1:2]
            return torch.cat([y2, self.mu * (1.0 - y1 * y1) * y2 - y1], dim=-1)

    return BatchVanDerPol


class _TorchDriver(_Driver):
    def __init__(self, plugin: SolverPlugin, problem: BatchProblem, case: dict[str, Any], config: dict[str, Any]):
        import torch

        from odebench.backends.torch import DTYPES, MLPField

        self.torch, self.plugin = torch, plugin
        self.device = torch.device(case["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        dtype = DTYPES[config["measure"]["dtype"]]
        tensor = functools.partial(torch.as_tensor, dtype=dtype, device=self.device)
        self.ts = tensor(problem.ts)
        y0 = tensor(problem.y0)
        self.kw = solve_kwargs(case, config)
        if problem.kind == "vdp":
            mu = tensor(problem.params)[:, None]
            vdp = _torch_vdp_class()
            joint_field = vdp(mu)
            solo_fields = [vdp(mu[i:i + 1].clone()) for i in range(problem.n)]
        else:
            # Frozen parameters: forward solves only, so no plugin builds a graph.
            joint_field = MLPField(problem.spec, problem.weights, dtype, self.device).requires_grad_(False)
            solo_fields = [joint_field] * problem.n
        self.solves = {"joint": [(joint_field, y0)],
                       "solo": [(f, y0[i:i + 1].clone()) for i, f in enumerate(solo_fields)]}

    def _stance(self, stance: str):
        """A compiling plugin runs compiled code only in timed passes (``eager_on_recompile``: a frame
        that would need a new graph runs eagerly instead of compiling in a timer), and its own code
        eagerly in the instrumented pass (``force_eager``: hooks and counters cannot be traced)."""
        if not self.plugin.compiled:
            return contextlib.nullcontext()
        return self.torch.compiler.set_stance(stance)

    def prepare(self, mode: str) -> float | None:
        field, y0 = self.solves[mode][0]  # every solve of a mode has the same shapes
        with self.torch.no_grad():
            return self.plugin.prepare(field, y0, self.ts, **self.kw)

    def instrumented(self, mode: str) -> list[Solved]:
        from odebench.backends.torch import counting

        out = []
        for i, (field, y0) in enumerate(self.solves[mode]):
            counter = NFECounter()
            with self.torch.no_grad(), self._stance("force_eager"), counting(field, counter):
                sol = self.plugin.odeint(field, y0, self.ts, **self.kw)
            if not sol.ok:
                raise _fail(f"{mode} solve" + (f" of sample {i}" if mode == "solo" else ""), sol.status,
                            sol.message)
            ys = sol.ys.detach().to("cpu", self.torch.float64).numpy() if self.torch.is_tensor(sol.ys) \
                else np.asarray(sol.ys, dtype=np.float64)
            out.append(Solved(counter.nfe_fwd, sol.stats, ys))
        return out

    def run(self, mode: str) -> list[Any]:
        with self.torch.no_grad(), self._stance("eager_on_recompile"):
            return [self.plugin.odeint(f, y0, self.ts, **self.kw) for f, y0 in self.solves[mode]]

    def check(self, mode: str, out: list[Any]) -> None:
        bad = next((s for s in out if not s.ok), None)
        if bad is not None:
            raise _fail(f"timed {mode} solve", bad.status, bad.message)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


# --------------------------------------------------------------------------- JAX
@functools.cache
def _jax_vdp_class() -> type:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    class BatchVanDerPol(eqx.Module):
        """Van der Pol with one μ per sample (an array leaf of shape ``(n, 1)``): the torch field's formula."""

        mu: jax.Array

        def __call__(self, t, y):
            y1, y2 = y[:, :1], y[:, 1:2]
            return jnp.concatenate([y2, self.mu * (1.0 - y1 * y1) * y2 - y1], axis=-1)

    return BatchVanDerPol


def _start_jax(config: dict[str, Any]) -> None:
    """Settings JAX reads when it starts: one Eigen thread when the suite asks for one (a spinning
    second thread on a shared CPU is noise), and no preallocation of a GPU's memory."""
    if "jax" in sys.modules:
        return
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    flags = os.environ.get("XLA_FLAGS", "")
    if config["measure"]["threads"] == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()


class _JaxDriver(_Driver):
    def __init__(self, plugin: SolverPlugin, problem: BatchProblem, case: dict[str, Any], config: dict[str, Any]):
        _start_jax(config)
        import jax

        if config["measure"]["dtype"] == "float64":
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        from odebench.backends.jax import _device, build_mlp

        self.jax, self.plugin = jax, plugin
        device = _device(case["device"])
        dtype = jnp.float64 if config["measure"]["dtype"] == "float64" else jnp.float32

        def put(a):
            return jax.device_put(jnp.asarray(np.asarray(a), dtype=dtype), device)

        self.ts = put(problem.ts)
        y0 = put(problem.y0)
        self.kw = solve_kwargs(case, config)
        if problem.kind == "vdp":
            vdp = _jax_vdp_class()
            joint_field = vdp(put(problem.params[:, None]))
            solo_fields = [vdp(put(problem.params[i:i + 1, None])) for i in range(problem.n)]
        else:
            joint_field = build_mlp(problem.spec, problem.weights, dtype, device)
            solo_fields = [joint_field] * problem.n
        self.solves = {"joint": [(joint_field, y0)],
                       "solo": [(f, y0[i:i + 1]) for i, f in enumerate(solo_fields)]}
        self._compiled: dict[str, Any] = {}
        self._counted = jax.jit(self._solve)  # traced once per mode's shapes; its callbacks count
        self._counter = NFECounter()

    def _solve(self, field, y0, ts):
        return self.plugin.solve(field, y0, ts, **self.kw)

    def prepare(self, mode: str) -> float:
        field, y0 = self.solves[mode][0]
        start = time.perf_counter()
        self._compiled[mode] = self.jax.jit(self._solve).lower(field, y0, self.ts).compile()
        return time.perf_counter() - start

    def instrumented(self, mode: str) -> list[Solved]:
        from odebench.backends.jax import counted

        out = []
        for i, (field, y0) in enumerate(self.solves[mode]):
            self._counter.reset()
            # count_vjp=False: no gradient is taken, and a custom_vjp wrapper is not needed to count calls.
            ys, code, stats = self._counted(counted(field, self._counter, count_vjp=False), y0, self.ts)
            self.jax.block_until_ready(ys)
            self.jax.effects_barrier()
            status = self.plugin.status(code)
            if status is not Status.OK:
                where = f"{mode} solve" + (f" of sample {i}" if mode == "solo" else "")
                raise _fail(where, status, self.plugin.message(status, self.kw["max_steps"]))
            out.append(Solved(self._counter.nfe_fwd, self.plugin.to_stats(stats), np.asarray(ys, dtype=np.float64)))
        return out

    def run(self, mode: str) -> list[Any]:
        solve = self._compiled.get(mode)
        if solve is None:  # compiling here would put compile time in a timer
            raise RuntimeError(f"the {mode} solve was not compiled: prepare({mode!r}) runs before run({mode!r})")
        out = [solve(f, y0, self.ts) for f, y0 in self.solves[mode]]
        self.jax.block_until_ready(out)
        return out

    def check(self, mode: str, out: list[Any]) -> None:
        for _, code, _ in out:
            status = self.plugin.status(code)
            if status is not Status.OK:
                raise _fail(f"timed {mode} solve", status, self.plugin.message(status, self.kw["max_steps"]))


def make_driver(plugin: SolverPlugin, problem: BatchProblem, case: dict[str, Any], config: dict[str, Any]) -> _Driver:
    """The driver of one case, by the plugin's backend framework (scipy solves torch fields).

    Raises:
        ValueError: for a framework without a driver.
    """
    framework = plugin.backend_framework()
    if framework == "torch":
        return _TorchDriver(plugin, problem, case, config)
    if framework == "jax":
        return _JaxDriver(plugin, problem, case, config)
    raise ValueError(f"the batch workload has no driver for framework {framework!r}; valid: torch, jax")
