"""Framework drivers of the ``memory`` workload: one case's field, state and solve in torch or JAX.

A driver runs the timed forward (solve + loss) and backward (gradient with respect to the
parameters) passes, the device counters for the GPU peak, and the untimed instrumented pass
(through the backend's shared one: :func:`odebench.backends.torch.instrumented_pass`,
:func:`odebench.backends.jax.instrumented_pass`).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from odebench.backends.base import InstrumentedPass
from odebench.models import MLPSpec, mlp_weights
from odebench.protocol import SolveFailed, SolverPlugin


def state_shape(block: str, config: dict[str, Any]) -> tuple[int, ...]:
    """Shape of the ODE state of ``block`` at the suite's batch."""
    if block == "convnet":
        c = config["convnet"]
        return (c["batch"], c["channels"], c["height"], c["width"])
    m = config["mlp"]
    return (m["batch"], m["sizes"][0])


def initial_state(block: str, config: dict[str, Any], seed: int) -> np.ndarray:
    """``y0``: standard normal, float64, the same in every framework."""
    return np.random.default_rng([seed, 7]).standard_normal(state_shape(block, config))


def _mlp_spec(config: dict[str, Any]) -> MLPSpec:
    m = config["mlp"]
    return MLPSpec(tuple(m["sizes"]), m["activation"], m["weight_std"], 0.0)


class _Driver:
    """One case's model, state and solve in a framework: forward/backward/instrumented passes."""

    state_bytes: int = 0
    n_params: int = 0
    compile_s: float | None = None
    saved_source: str = ""
    gpu_source: str = ""

    def forward(self) -> Any:  # timed: solve + loss; returns a handle for backward
        raise NotImplementedError

    def backward(self, handle: Any) -> Any:  # timed: gradient w.r.t. the parameters
        raise NotImplementedError

    def sync(self) -> None:
        pass

    def loss_value(self, handle: Any) -> float:
        raise NotImplementedError

    def gpu_reset(self) -> None:
        pass

    def gpu_peak(self) -> int | None:
        return None

    def floor(self) -> tuple[Any, int] | None:  # untimed: the eager floor (odebench.measure.floor_fields)
        return None  # a JAX driver's field cannot be replayed alone here

    def instrumented(self) -> InstrumentedPass:  # untimed: NFE, VJPs, saved bytes, the library's stats
        raise NotImplementedError


class _TorchDriver(_Driver):
    saved_source = "saved_tensors_hooks"

    def __init__(self, plugin: SolverPlugin, case: dict[str, Any], config: dict[str, Any]):
        import torch

        from odebench.backends.torch import DTYPES, MLPField
        from odebench.backends.torch_convnets import odefunc_from_weights

        self.torch = torch
        self.plugin = plugin
        self.device = torch.device(case["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        self.cuda = self.device.type == "cuda"
        self.gpu_source = "torch.cuda.max_memory_allocated" if self.cuda else ""
        dtype = DTYPES[config["measure"]["dtype"]]
        block = case["block"]
        if block == "convnet":
            self.field = odefunc_from_weights(config["convnet"]["channels"], case["seed"], dtype, self.device)
        else:
            spec = _mlp_spec(config)
            self.field = MLPField(spec, mlp_weights(spec, case["seed"]), dtype, self.device)
        self.params = [p for p in self.field.parameters() if p.requires_grad]
        self.n_params = sum(p.numel() for p in self.params)
        self.y0 = torch.as_tensor(initial_state(block, config, case["seed"]), dtype=dtype, device=self.device)
        self.state_bytes = self.y0.numel() * self.y0.element_size()
        s = config["solve"]
        self.ts = torch.tensor([s["t0"], s["t1"]], dtype=dtype, device=self.device)
        self.kw = solve_kwargs(case, config)

    def _loss(self, f):
        sol = self.plugin.odeint(f, self.y0, self.ts, **self.kw)
        if not sol.ok:
            raise SolveFailed(sol.status, sol.message)
        return (sol.ys[-1] ** 2).sum(), sol

    def forward(self):
        return self._loss(self.field)[0]

    def backward(self, loss):
        return self.torch.autograd.grad(loss, self.params)

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def loss_value(self, loss) -> float:
        return float(loss.detach())

    def gpu_reset(self):
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats(self.device)
            self._gpu_base = self.torch.cuda.memory_allocated(self.device)

    def gpu_peak(self):
        if not self.cuda:
            return None
        self.sync()
        return int(self.torch.cuda.max_memory_allocated(self.device) - self._gpu_base)

    def _loss_and_stats(self):
        loss, sol = self._loss(self.field)
        return loss, sol.stats

    def instrumented(self) -> InstrumentedPass:
        from odebench.backends.torch import instrumented_pass

        return instrumented_pass(self._loss_and_stats, self.field, self.params)

    def floor(self):
        from odebench.backends.torch import floor_of

        return floor_of(self.field, self._loss_and_stats, self.params)


class _JaxDriver(_Driver):
    """Forward = a jitted ``jax.vjp`` (loss and the pullback, whose leaves are the residuals);
    backward = a jitted call of the pullback. Both compiled before any timing."""

    saved_source = "jax.vjp residuals"

    def __init__(self, plugin: SolverPlugin, case: dict[str, Any], config: dict[str, Any]):
        if "jax" not in sys.modules:  # flags read when JAX starts
            # GPU peak memory needs on-demand allocation (DESIGN §4).
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
            if config["measure"]["threads"] == 1:
                flags = os.environ.get("XLA_FLAGS", "")
                if "xla_cpu_multi_thread_eigen" not in flags:
                    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
        import jax

        if config["measure"]["dtype"] == "float64":
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        from odebench.backends.jax import _device, build_mlp
        from odebench.backends.jax_convnets import jax_convnet, to_jax_layout

        self.jax, self.jnp = jax, jnp
        self.plugin = plugin
        self.device = _device(case["device"])
        self.gpu_source = "jax peak_bytes_in_use" if case["device"] != "cpu" else ""
        dtype = jnp.float64 if config["measure"]["dtype"] == "float64" else jnp.float32
        block = case["block"]
        if block == "convnet":
            self.model = jax_convnet(config["convnet"]["channels"], case["seed"], dtype, self.device)
        else:
            spec = _mlp_spec(config)
            self.model = build_mlp(spec, mlp_weights(spec, case["seed"]), dtype, self.device)
        leaves = jax.tree.leaves(self.model)
        self.n_params = int(sum(x.size for x in leaves))
        self._param_ptrs = {_buffer_ptr(x) for x in leaves} - {None}
        y0 = to_jax_layout(block, initial_state(block, config, case["seed"]))
        self.y0 = jax.device_put(jnp.asarray(y0, dtype=dtype), self.device)
        self.state_bytes = int(self.y0.nbytes)
        s = config["solve"]
        self.ts = jax.device_put(jnp.asarray([s["t0"], s["t1"]], dtype=dtype), self.device)
        self.kw = solve_kwargs(case, config)
        self.one = jax.device_put(jnp.ones((), dtype=dtype), self.device)
        start = time.perf_counter()
        self._fwd = jax.jit(self._vjp).lower(self.model).compile()
        _, pullback, _ = self._fwd(self.model)
        self._bwd = jax.jit(self._pull).lower(pullback, self.one).compile()
        self.compile_s = time.perf_counter() - start

    def _loss(self, model):
        ys, code, stats = self.plugin.solve(model, self.y0, self.ts, **self.kw)
        return self.jnp.sum(ys[-1] ** 2), (code, stats)

    def _vjp(self, model):
        return self.jax.vjp(self._loss, model, has_aux=True)

    @staticmethod
    def _pull(pullback, ct):
        return pullback(ct)

    def forward(self):
        out = self._fwd(self.model)
        self.jax.block_until_ready(out)
        return out

    def backward(self, handle):
        _, pullback, _ = handle
        grads = self._bwd(pullback, self.one)
        self.jax.block_until_ready(grads)
        return grads

    def loss_value(self, handle) -> float:
        return float(handle[0])

    def _stats(self):
        return self.device.memory_stats() if hasattr(self.device, "memory_stats") else None

    def gpu_reset(self):
        stats = self._stats()
        self._gpu_base = stats.get("bytes_in_use") if stats else None

    def gpu_peak(self):
        # peak_bytes_in_use cannot be reset: it also covers the (identical) warm-up passes.
        stats = self._stats()
        if not stats or "peak_bytes_in_use" not in stats or self._gpu_base is None:
            return None
        return int(stats["peak_bytes_in_use"] - self._gpu_base)

    def residual_bytes(self, pullback) -> int | None:
        """Bytes of the pullback's residual arrays, each buffer once, the parameters left out."""
        seen, total = set(), 0
        for leaf in self.jax.tree.leaves(pullback):
            if not hasattr(leaf, "nbytes"):
                continue
            ptr = _buffer_ptr(leaf)
            if ptr is not None and (ptr in seen or ptr in self._param_ptrs):
                continue
            seen.add(ptr)
            total += int(leaf.nbytes)
        return total

    def instrumented(self) -> InstrumentedPass:
        """The backend's instrumented pass, with the bytes of the compiled forward's residuals."""
        from odebench.backends.jax import instrumented_pass

        _, pullback, (code, _) = self.forward()
        if int(code) != 0:
            status = self.plugin.status(code)
            raise SolveFailed(status, self.plugin.message(status, self.kw["max_steps"]))
        saved = self.residual_bytes(pullback)
        del pullback
        inst = instrumented_pass(self.plugin, self._loss, self.model, method=self.kw["method"],
                                 max_steps=self.kw["max_steps"])
        inst.saved_bytes = saved
        return inst


def _buffer_ptr(x: Any) -> int | None:
    try:
        return int(x.unsafe_buffer_pointer())
    except Exception:  # noqa: BLE001 - sharded, deleted or not a device array
        return None


def solve_kwargs(case: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``odeint`` keywords of a case: ``n_steps`` fixed steps of ``(t1 - t0) / n``.

    The step budget is ``n + 1`` (capped by ``measure.max_steps``): a fixed-step solve needs
    ``n``, and diffrax sizes its saved buffers and backprop checkpoints by the budget, so
    ``measure.max_steps`` (100 000) would make its memory that of 100 000 steps.
    """
    s, n = config["solve"], case["n_steps"]
    return dict(method=case["method"], step_size=abs(s["t1"] - s["t0"]) / n, grad_mode=case["grad_mode"],
                max_steps=min(config["measure"]["max_steps"], n + 1))


def make_driver(plugin: SolverPlugin, case: dict[str, Any], config: dict[str, Any]) -> _Driver:
    """The framework driver of one case (torch or jax, by the plugin's backend framework)."""
    framework = plugin.backend_framework()
    if framework == "torch":
        return _TorchDriver(plugin, case, config)
    if framework == "jax":
        return _JaxDriver(plugin, case, config)
    raise ValueError(f"the memory workload has no driver for framework {framework!r}; valid: torch, jax")
