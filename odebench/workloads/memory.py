"""The ``memory`` workload: peak memory against depth (DESIGN §6, memory).

One case is one vector field (``block``: the ODE-Net's dynamics block or an MLP) at a
fixed batch, integrated by a fixed-step method with ``n_steps`` steps of ``1/n`` over
``[t0, t1]``, then one forward and one backward pass of the scalar loss
``sum(y(t1)**2)`` with respect to the field's parameters. Per case, in this order:

1. glibc's ``mmap`` threshold is pinned low (``memory.mmap_threshold``) before anything
   big is allocated, so every buffer above it is its own mapping, returned to the system
   when freed: the resident set then follows the live buffers (with glibc's dynamic
   default, buffers freed by the warm-up stay resident in the heap and are reused, and
   the peak of a later pass shrinks towards zero or grows with fragmentation);
2. warm-up passes (``measure.warmup``), untimed;
3. ``memory.passes`` memory passes: forward + backward inside
   :class:`~odebench.measure.PeakRSS` (peak resident set minus the resident set before,
   the heap trimmed first), with the CUDA counters reset first
   (``torch.cuda.max_memory_allocated`` / JAX ``peak_bytes_in_use``, minus the bytes in
   use before); the smallest peak is recorded (the others in ``peak_passes``);
4. the allocator back in its steady state (threshold 32 MiB), one untimed pass, then
   ``measure.repeats`` timed passes: forward (solve + loss) and backward (gradient)
   timed apart between device syncs with GC off; median and IQR;
5. one untimed instrumented pass: NFE-F / NFE-B / VJPs counted by the harness, the
   library's own statistics, and the bytes saved for backward (torch
   ``saved_tensors_hooks``; JAX the residuals of ``jax.vjp``).

The report fits, per plugin × method × grad mode × block × device, the slope (bytes per
step, least squares) and the exponent (log-log slope) of peak memory against ``n`` and
checks each grad mode against its memory class with :func:`check_class`, a pure function.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odebench.backends.base import SolveFailed
from odebench.measure import NFECounter, PeakRSS, gc_off, summarize, timed
from odebench.models import ACTIVATIONS, MLPSpec, mlp_weights
from odebench.protocol import FIXED_METHODS, SolverPlugin, SolveStats, Status

BLOCKS = ("convnet", "mlp")
LOSSES = ("sumsq",)

#: Thresholds of the class check (overridable in the suite's ``[classes]``).
DEFAULT_CLASSES: dict[str, Any] = {
    "adjoint_max_exponent": 0.1,       # adjoint: peak ∝ n^e with e below this
    "backprop_rel_tol": 0.2,           # backprop: |slope / saved-bytes slope - 1| within this
    "checkpoint_state_band": [0.5, 2.0],  # checkpoint: slope in states per step; above the top: not state-only
    "checkpoint_max_backprop_frac": 0.5,  # checkpoint: slope at most this fraction of backprop's
    "exponent_floor_bytes": 65536,     # peaks below this count as this in the log-log fit
}

SECTIONS = {
    "solve": {"t0": (float, None), "t1": (float, None), "loss": (str, LOSSES)},
    "convnet": {"channels": (int, "pos"), "height": (int, "pos"), "width": (int, "pos"),
                "batch": (int, "pos")},
    "mlp": {"sizes": ([int], "pos"), "activation": (str, ACTIVATIONS), "weight_std": (float, "nonneg"),
            "batch": (int, "pos")},
    "memory": {"mmap_threshold": (int, "nonneg"), "passes": (int, "pos")},
    "classes": {"adjoint_max_exponent": (float, "pos"), "backprop_rel_tol": (float, "pos"),
                "checkpoint_state_band": ([float], "nonneg"), "checkpoint_max_backprop_frac": (float, "pos"),
                "exponent_floor_bytes": (int, "nonneg")},
}
DEFAULTS = {
    "solve": {"t0": 0.0, "t1": 1.0, "loss": "sumsq"},
    "convnet": {"channels": 64, "height": 6, "width": 6, "batch": 128},
    "mlp": {"sizes": [64, 256, 64], "activation": "tanh", "weight_std": 0.1, "batch": 256},
    # 16 KiB: every tensor of the blocks above is a fresh mapping; 0 leaves glibc's default.
    "memory": {"mmap_threshold": 16384, "passes": 2},
    "classes": dict(DEFAULT_CLASSES),
}
REQUIRED: tuple[str, ...] = ()
AXES = {"block": ([str], BLOCKS), "n_steps": ([int], "pos")}
#: record fields of this workload, in the order results.csv shows them.
COLUMNS = ["batch", "state_bytes", "n_params", "loss", "repeats", "fwd_s", "fwd_s_iqr", "bwd_s", "bwd_s_iqr",
           "compile_s", "peak_bytes", "peak_source", "peak_passes", "peak_rss_bytes", "rss_method", "peak_gpu_bytes",
           "saved_bytes", "saved_source", "nfe_fwd", "nfe_bwd", "n_vjp", "nfe_native", "steps", "nfe_agree",
           "mmap_threshold", "class_params"]


def validate(config: dict[str, Any], where: str) -> None:
    """Fixed-step methods only; the MLP maps the state to itself; the class band is ``[lo, hi]``."""
    from odebench.suite import SuiteError

    bad = [m for m in config["matrix"]["method"] if m not in FIXED_METHODS]
    if bad:
        raise SuiteError(f"{where}: the memory workload takes n fixed steps of 1/n; method {bad[0]!r} is "
                         f"adaptive; valid: {', '.join(FIXED_METHODS)}")
    sizes = config["mlp"]["sizes"]
    if len(sizes) < 2 or sizes[0] != sizes[-1]:
        raise SuiteError(f"{where}: mlp.sizes must start and end with the state width, got {sizes}")
    band = config["classes"]["checkpoint_state_band"]
    if len(band) != 2 or band[0] > band[1]:
        raise SuiteError(f"{where}: classes.checkpoint_state_band must be [lo, hi] with lo <= hi, got {band}")
    if config["solve"]["t1"] == config["solve"]["t0"]:
        raise SuiteError(f"{where}: solve.t1 must differ from solve.t0")


# --------------------------------------------------------------------------- models (numpy)
def convnet_weights(channels: int, seed: int) -> dict[str, list[np.ndarray]]:
    """Initial weights of the ODE-Net dynamics block, drawn once in numpy for every framework.

    The two 3×3 convs (``channels + 1`` inputs: the time channel) as torch's default
    ``Conv2d`` init draws them, ``U(-1/√fan_in, 1/√fan_in)`` for weight and bias; the three
    GroupNorms start at weight 1, bias 0.

    Returns:
        ``{"convs": [W1, b1, W2, b2], "norms": [g1, b1, g2, b2, g3, b3]}`` as float64,
        ``W`` shaped ``(out, in, 3, 3)``.
    """
    rng = np.random.default_rng([seed, 6])
    bound = 1.0 / math.sqrt((channels + 1) * 9)
    convs = []
    for _ in range(2):
        convs.append(rng.uniform(-bound, bound, size=(channels, channels + 1, 3, 3)))
        convs.append(rng.uniform(-bound, bound, size=(channels,)))
    norms = []
    for _ in range(3):
        norms += [np.ones(channels), np.zeros(channels)]
    return {"convs": convs, "norms": norms}


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


# --------------------------------------------------------------------------- allocator
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


# --------------------------------------------------------------------------- drivers
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

    def instrumented(self) -> dict[str, Any]:
        raise NotImplementedError


class _TorchDriver(_Driver):
    saved_source = "saved_tensors_hooks"

    def __init__(self, plugin: SolverPlugin, case: dict[str, Any], config: dict[str, Any]):
        import torch

        from odebench.backends.torch import DTYPES, MLPField

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
            self.field = _torch_convnet(config["convnet"]["channels"], case["seed"], dtype, self.device)
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

    def instrumented(self):
        from odebench.backends.torch import CountingField
        from odebench.measure import saved_tensor_bytes

        counter = NFECounter()
        counted = CountingField(self.field, counter)
        with saved_tensor_bytes() as saved:
            loss, sol = self._loss(counted)
        counter.phase = "bwd"
        grads = self.torch.autograd.grad(loss, self.params)
        del grads
        return {"loss": float(loss.detach()), "nfe_fwd": counter.nfe_fwd, "nfe_bwd": counter.nfe_bwd,
                "n_vjp": counter.n_vjp, "saved_bytes": saved["bytes"], "stats": sol.stats}


def _torch_convnet(channels: int, seed: int, dtype, device):
    """The ODE-Net's :class:`~odebench.backends.torch_convnets.ODEFunc` with the shared numpy weights."""
    import torch

    from odebench.backends.torch_convnets import ODEFunc

    f = ODEFunc(channels)
    w = convnet_weights(channels, seed)
    convs = [f.conv1.conv.weight, f.conv1.conv.bias, f.conv2.conv.weight, f.conv2.conv.bias]
    norms = [f.norm1.weight, f.norm1.bias, f.norm2.weight, f.norm2.bias, f.norm3.weight, f.norm3.bias]
    with torch.no_grad():
        for p, a in zip(convs + norms, w["convs"] + w["norms"]):
            p.copy_(torch.as_tensor(a))
    return f.to(dtype=dtype, device=device)


def jax_convnet(channels: int, seed: int, dtype: Any, device: Any = None) -> Any:
    """The ODE-Net's dynamics block in JAX (an ``equinox.Module``), from :func:`convnet_weights`.

    GroupNorm(min(32, C)) → ReLU → 3×3 conv of ``[t, h]`` → GroupNorm → ReLU → 3×3 conv of
    ``[t, h]`` → GroupNorm, as :class:`~odebench.backends.torch_convnets.ODEFunc`, but on
    channels-last states ``(B, H, W, C)`` (see :func:`to_jax_layout`): XLA's CPU backend
    runs an NCHW convolution inside a ``while`` loop (every diffrax solve) about 30× slower
    than an NHWC one. Same values, same bytes per state.
    """
    import jax
    import jax.numpy as jnp

    w = convnet_weights(channels, seed)
    put = lambda a: jax.device_put(jnp.asarray(a, dtype=dtype), device)  # noqa: E731
    w1, b1, w2, b2 = w["convs"]
    convs = (np.transpose(w1, (2, 3, 1, 0)), b1, np.transpose(w2, (2, 3, 1, 0)), b2)  # OIHW → HWIO
    cls = _jax_convnet_class()
    return cls(tuple(put(a) for a in convs), tuple(put(a) for a in w["norms"]), min(32, channels))


def to_jax_layout(block: str, y: np.ndarray) -> np.ndarray:
    """A state in torch's layout (NCHW for the convnet) in the JAX block's (NHWC)."""
    return np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1))) if block == "convnet" else y


_JAX_CONVNET: list[type] = []


def _jax_convnet_class() -> type:
    if _JAX_CONVNET:
        return _JAX_CONVNET[0]
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    def group_norm(x, g, b, groups, eps=1e-5):  # NHWC; biased variance, as torch
        n, h, w, c = x.shape
        xg = x.reshape(n, h, w, groups, c // groups)
        mean = xg.mean(axis=(1, 2, 4), keepdims=True)
        var = ((xg - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
        xg = (xg - mean) / jnp.sqrt(var + eps)
        return xg.reshape(n, h, w, c) * g + b

    def concat_conv(t, x, wt, bias):  # the time channel first, as torch's ConcatConv2d
        tt = jnp.ones_like(x[..., :1]) * t.astype(x.dtype)
        out = jax.lax.conv_general_dilated(jnp.concatenate([tt, x], axis=-1), wt, (1, 1), ((1, 1), (1, 1)),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out + bias

    class ConvField(eqx.Module):
        """``f(t, h)`` of the ODE-Net block (see :func:`jax_convnet`)."""

        convs: tuple
        norms: tuple
        groups: int = eqx.field(static=True)

        def __call__(self, t, y):
            w1, b1, w2, b2 = self.convs
            g1, c1, g2, c2, g3, c3 = self.norms
            t = jnp.asarray(t)
            h = jax.nn.relu(group_norm(y, g1, c1, self.groups))
            h = concat_conv(t, h, w1, b1)
            h = jax.nn.relu(group_norm(h, g2, c2, self.groups))
            h = concat_conv(t, h, w2, b2)
            return group_norm(h, g3, c3, self.groups)

    _JAX_CONVNET.append(ConvField)
    return ConvField


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

    def instrumented(self):
        jax = self.jax
        loss, pullback, (code, stats) = self.forward()
        if int(code) != 0:
            status = self.plugin.status(code)
            raise SolveFailed(status, self.plugin.message(status, self.kw["max_steps"]))
        saved = self.residual_bytes(pullback)
        del pullback
        counter = NFECounter()
        counted = self.plugin.counted(self.model, counter)

        def loss_c(m):
            ys, _, _ = self.plugin.solve(m, self.y0, self.ts, **self.kw)
            return self.jnp.sum(ys[-1] ** 2)

        value, pull = jax.vjp(loss_c, counted)
        jax.block_until_ready(value)
        jax.effects_barrier()
        counter.phase = "bwd"
        jax.block_until_ready(pull(self.one))
        jax.effects_barrier()
        return {"loss": float(loss), "nfe_fwd": counter.nfe_fwd, "nfe_bwd": counter.nfe_bwd,
                "n_vjp": counter.n_vjp, "saved_bytes": saved, "stats": self.plugin.to_stats(stats)}


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


# --------------------------------------------------------------------------- one case
def run_case(case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin) -> dict[str, Any]:
    """Measure one depth of one plugin × grad mode × block × device and return its record fields.

    Arguments:
        case: the case's fields, with the workload's axes ``block`` and ``n_steps``.
        config: the suite's validated settings.
        plugin: an instance of the case's plugin.

    A solver failure or an exception is returned as the record's status, never raised.
    """
    measure = config["measure"]
    threshold = config["memory"]["mmap_threshold"]
    rec: dict[str, Any] = {"status": str(Status.OK), "message": "",
                           "class_params": json.dumps(config["classes"], sort_keys=True)}
    t_case = time.perf_counter()
    try:
        # Pinned before anything big is allocated (see set_mmap_threshold); released for timing.
        rec["mmap_threshold"] = threshold if set_mmap_threshold(threshold) else None
        driver = make_driver(plugin, case, config)
        rec.update(batch=state_shape(case["block"], config)[0], state_bytes=driver.state_bytes,
                   n_params=driver.n_params, compile_s=driver.compile_s)
        for _ in range(measure["warmup"]):
            driver.backward(driver.forward())
        driver.sync()
        # The memory passes: forward + backward, peak over each minus what was in use before.
        passes = []
        for _ in range(config["memory"]["passes"]):
            trim_heap()
            driver.gpu_reset()
            with gc_off(), PeakRSS() as mem:
                handle = driver.forward()
                grads = driver.backward(handle)
                driver.sync()
                del handle, grads
            passes.append((mem.delta, driver.gpu_peak()))
        # The smallest peak: a one-off allocation (a new Python arena, a lazily built kernel)
        # lands in one pass only.
        rss, gpu = min(p[0] for p in passes), passes[0][1]
        if gpu is not None:
            gpu = min(p[1] for p in passes)
        rec.update(peak_rss_bytes=rss, rss_method=mem.method, peak_gpu_bytes=gpu,
                   peak_passes=json.dumps([p[1] if gpu is not None else p[0] for p in passes]))
        rec.update(peak_bytes=gpu if gpu is not None else rss,
                   peak_source=driver.gpu_source if gpu is not None else f"rss ({mem.method})")
        # The timed passes, with the allocator back in its steady state (one untimed pass first).
        if rec["mmap_threshold"] is not None:
            release_mmap_threshold()
            driver.backward(driver.forward())
            driver.sync()
        fwd, bwd = [], []
        with gc_off():
            for _ in range(measure["repeats"]):
                handle, tf = timed(driver.forward, driver.sync)
                grads, tb = timed(lambda h=handle: driver.backward(h), driver.sync)
                fwd.append(tf)
                bwd.append(tb)
                del handle, grads
        f, b = summarize(fwd), summarize(bwd)
        rec.update(repeats=len(fwd), fwd_s=f["median"], fwd_s_iqr=f["iqr"], bwd_s=b["median"],
                   bwd_s_iqr=b["iqr"])
        inst = driver.instrumented()
        stats: SolveStats = inst["stats"]
        rec.update(loss=inst["loss"], nfe_fwd=inst["nfe_fwd"], nfe_bwd=inst["nfe_bwd"], n_vjp=inst["n_vjp"],
                   saved_bytes=inst["saved_bytes"],
                   saved_source=driver.saved_source if inst["saved_bytes"] is not None else None,
                   nfe_native=stats.nfe, steps=stats.n_steps,
                   nfe_agree=None if stats.nfe is None else stats.nfe == inst["nfe_fwd"])
    except SolveFailed as exc:
        rec.update(status=str(exc.status), message=exc.message)
    except MemoryError as exc:
        rec.update(status=str(Status.OOM), message=f"MemoryError: {exc}")
    except Exception as exc:  # noqa: BLE001 - any failure is a row, never an aborted run
        text = f"{type(exc).__name__}: {exc}"
        if "out of memory" in text.lower() or "RESOURCE_EXHAUSTED" in text:
            rec.update(status=str(Status.OOM), message=text.splitlines()[0])
        else:
            rec.update(status=str(Status.ERROR), message=text.splitlines()[0])
    rec["case_wall_s"] = time.perf_counter() - t_case
    return rec


# --------------------------------------------------------------------------- fits and classes
@dataclass
class Fit:
    """Least-squares fits of memory ``y`` against the number of steps ``n``.

    ``slope``/``intercept``: ``y ≈ intercept + slope · n`` (bytes per step); ``exponent``:
    the slope of ``log y`` against ``log n`` (``y`` floored, see :func:`fit_memory`);
    ``r2``: of the linear fit. NaN where fewer than two distinct ``n``.
    """

    n_points: int
    slope: float = float("nan")
    intercept: float = float("nan")
    exponent: float = float("nan")
    r2: float = float("nan")


def fit_memory(n: Any, y: Any, floor: float = 1.0) -> Fit:
    """Fit ``y`` (bytes) against ``n`` (steps): linear slope and log-log exponent.

    Arguments:
        n, y: equal-length sequences; pairs with a missing or non-finite value are dropped.
        floor: values below it count as ``floor`` in the log-log fit (a peak of a few pages
            is allocator granularity, and ``log 0`` is undefined).
    """
    n = np.asarray(n, dtype=np.float64)
    y = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)
    keep = np.isfinite(n) & np.isfinite(y) & (n > 0)
    n, y = n[keep], y[keep]
    fit = Fit(int(n.size))
    if np.unique(n).size < 2:
        return fit
    slope, intercept = np.polyfit(n, y, 1)
    resid = y - (intercept + slope * n)
    ss = float(((y - y.mean()) ** 2).sum())
    fit.slope, fit.intercept = float(slope), float(intercept)
    fit.r2 = 1.0 - float((resid ** 2).sum()) / ss if ss > 0 else 1.0
    fit.exponent = float(np.polyfit(np.log(n), np.log(np.maximum(y, max(floor, 1.0))), 1)[0])
    return fit


#: The memory class each grad mode belongs to (DESIGN §6).
EXPECTED_CLASS = {
    "backprop": "O(n) activations",
    "adjoint": "O(1)",
    "adjoint-seminorm": "O(1)",
    "checkpoint": "O(n) states only, or sub-linear",
}


@dataclass
class Verdict:
    """The outcome of :func:`check_class`.

    ``ok``: True (in its class), False (left it: a flag), None (cannot tell: too few
    depths, or a grad mode without a class). ``observed``: a short description of what
    the fit shows; ``reason``: why it passes or fails, with the numbers; ``note``: what
    kind of member of its class it is, where that says more (e.g. "sub-linear").
    """

    grad_mode: str
    ok: bool | None
    expected: str
    observed: str
    reason: str
    note: str = ""
    fit: Fit = field(default_factory=lambda: Fit(0))
    saved_fit: Fit | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_class(grad_mode: str, n_steps: Any, peak_bytes: Any, *, saved_bytes: Any = None,
                state_bytes: float | None = None, backprop_slope: float | None = None,
                params: dict[str, Any] | None = None) -> Verdict:
    """Check that a grad mode's peak memory against depth stays in its class.

    Pure: arrays in, verdict out. The classes (thresholds in ``params``, defaults
    :data:`DEFAULT_CLASSES`):

    - ``backprop`` — O(n) activations: the slope of peak memory against ``n`` is within
      ``backprop_rel_tol`` of the slope of the bytes saved for backward (both bytes per
      step). Without saved bytes: a positive slope and an exponent of at least 0.5.
    - ``adjoint`` / ``adjoint-seminorm`` — O(1): the log-log exponent is below
      ``adjoint_max_exponent``.
    - ``checkpoint`` — state-only: the slope is at most ``checkpoint_state_band[1]`` states
      per step (``state_bytes`` each) and at most ``checkpoint_max_backprop_frac`` of
      ``backprop_slope`` (when given, and when that backprop keeps activations, i.e. more
      than ``checkpoint_state_band[1]`` states per step). At least ``checkpoint_state_band[0]``
      states per step reads "one state per step", below it "sub-linear" (e.g. binomial
      checkpointing).

    Arguments:
        grad_mode: the grad mode whose class to check.
        n_steps: the depths.
        peak_bytes: peak memory at each depth (bytes).
        saved_bytes: bytes saved for backward at each depth (None or missing values allowed).
        state_bytes: bytes of one ODE state.
        backprop_slope: bytes per step of backprop for the same plugin, block and device.
        params: thresholds; missing keys take :data:`DEFAULT_CLASSES`.

    Returns:
        A :class:`Verdict`.
    """
    p = DEFAULT_CLASSES | (params or {})
    fit = fit_memory(n_steps, peak_bytes, floor=p["exponent_floor_bytes"])
    expected = EXPECTED_CLASS.get(grad_mode, "unknown")
    saved_fit = None
    if saved_bytes is not None and any(v is not None for v in np.atleast_1d(saved_bytes)):
        saved_fit = fit_memory(n_steps, saved_bytes, floor=p["exponent_floor_bytes"])
    verdict = Verdict(grad_mode, None, expected, "", "", "", fit, saved_fit)
    if grad_mode not in EXPECTED_CLASS:
        verdict.reason = f"no memory class for grad mode {grad_mode!r}"
        return verdict
    if not np.isfinite(fit.slope):
        verdict.reason = f"needs at least two depths (has {fit.n_points} point(s))"
        return verdict
    mb = fit.slope / 2**20
    per_state = fit.slope / state_bytes if state_bytes else float("nan")
    verdict.observed = (f"{mb:.3g} MB/step, exponent {fit.exponent:.2f}"
                        + (f", {per_state:.2f} states/step" if np.isfinite(per_state) else ""))
    if grad_mode == "backprop":
        if saved_fit is not None and np.isfinite(saved_fit.slope) and saved_fit.slope > 0:
            ratio = fit.slope / saved_fit.slope
            tol = p["backprop_rel_tol"]
            verdict.ok = bool(abs(ratio - 1.0) <= tol)
            verdict.reason = (f"slope / saved-for-backward slope = {ratio:.2f} "
                              f"({'within' if verdict.ok else 'outside'} 1 ± {tol:g})")
            if np.isfinite(per_state) and per_state <= p["checkpoint_state_band"][1]:
                # Consistent with what it saves, but what it saves is states, not activations.
                verdict.note = "states only: the library recomputes each step in backward"
        else:
            verdict.ok = bool(fit.slope > 0 and fit.exponent >= 0.5)
            verdict.reason = (f"no saved bytes to compare; slope {mb:.3g} MB/step, exponent {fit.exponent:.2f} "
                              f"({'linear growth' if verdict.ok else 'not growing linearly'})")
    elif grad_mode in ("adjoint", "adjoint-seminorm"):
        limit = p["adjoint_max_exponent"]
        verdict.ok = bool(fit.exponent < limit)
        verdict.reason = f"exponent {fit.exponent + 0.0:.3f} {'<' if verdict.ok else '>='} {limit:g}".replace(
            "-0.000", "0.000")
    else:  # checkpoint
        lo, hi = p["checkpoint_state_band"]
        frac = p["checkpoint_max_backprop_frac"]
        problems, notes = [], []
        if np.isfinite(per_state):
            notes.append(f"{per_state:.2f} states/step")
            if per_state > hi:
                problems.append(f"more than {hi:g} states per step: not state-only")
        if backprop_slope is not None and np.isfinite(backprop_slope) and backprop_slope > 0:
            if state_bytes and backprop_slope <= hi * state_bytes:
                # That backprop keeps states only itself (diffrax): "well below" it says nothing.
                notes.append("backprop keeps states only here: not compared")
            else:
                share = fit.slope / backprop_slope
                notes.append(f"{share:.2f} × backprop's slope")
                if share > frac:
                    problems.append(f"above {frac:g} × backprop's slope")
        if not notes:
            verdict.reason = "needs the state size or backprop's slope to compare with"
            return verdict
        verdict.ok = not problems
        if verdict.ok:
            verdict.note = "one state per step" if not np.isfinite(per_state) or per_state >= lo else "sub-linear"
        verdict.reason = "; ".join(notes + problems)
    return verdict


def _class_params(frame: pd.DataFrame) -> dict[str, Any]:
    for text in frame.get("class_params", pd.Series(dtype=object)).dropna():
        try:
            return DEFAULT_CLASSES | json.loads(text)
        except (TypeError, ValueError):
            continue
    return dict(DEFAULT_CLASSES)


_GROUP = ["plugin", "method", "grad_mode", "block", "device"]


def verdicts(df: pd.DataFrame) -> dict[tuple, Verdict]:
    """:func:`check_class` for every plugin × method × grad mode × block × device with ok rows."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return {}
    params = _class_params(ok)

    def arrays(g):
        g = g.sort_values("n_steps")
        saved = g["saved_bytes"]
        return (g["n_steps"].to_numpy(float), g["peak_bytes"].to_numpy(float),
                None if saved.isna().all() else saved.to_numpy(float),
                float(g["state_bytes"].dropna().iloc[0]) if g["state_bytes"].notna().any() else None)

    backprop = {}
    for key, g in ok[ok["grad_mode"] == "backprop"].groupby(_GROUP, sort=False):
        n, peak, _, _ = arrays(g)
        backprop[(key[0], key[1], key[3], key[4])] = fit_memory(n, peak).slope
    out = {}
    for key, g in ok.groupby(_GROUP, sort=False):
        n, peak, saved, state = arrays(g)
        out[key] = check_class(key[2], n, peak, saved_bytes=saved, state_bytes=state,
                               backprop_slope=backprop.get((key[0], key[1], key[3], key[4])), params=params)
    return out


# --------------------------------------------------------------------------- report
SUMMARY_NOTE = (
    "One row per plugin × method × grad mode × block × device, fitted over the depths n that ran ok. "
    "peak: the peak over one forward+backward pass minus the memory in use before it (CPU: resident set "
    "with glibc's mmap threshold pinned so freed buffers leave the process; GPU: the allocator's peak). "
    "slope: least squares of peak against n (MB per step); exp: slope of log peak against log n; saved: "
    "the same slope of the bytes kept for backward (torch saved_tensors_hooks, JAX jax.vjp residuals); "
    "states/step: slope over one ODE state. Times and NFE are at the largest n: forward and backward "
    "medians over the repeats (device synced, GC off), NFE counted by the harness in an untimed pass. "
    "class: ✓ in its class, ✗ left it (reason in the check column), ? cannot tell.")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per plugin × method × grad mode × block × device: fits, class check, times at the largest n."""
    from odebench.report import fmt, groups

    checks = verdicts(df)
    rows = []
    for key, _g, ok, status in groups(df, _GROUP):
        v = checks.get(tuple(key))
        top = ok.sort_values("n_steps").iloc[-1] if len(ok) else None
        fit = v.fit if v else Fit(0)
        sfit = v.saved_fit if v else None
        state = float(top["state_bytes"]) if top is not None and pd.notna(top["state_bytes"]) else np.nan
        mark = "–" if v is None else {True: "✓", False: "✗ FLAG", None: "?"}[v.ok]
        ns = sorted(ok["n_steps"].astype(int)) if len(ok) else []

        def at_top(col, scale=1.0, spec=".2f", top=top):
            return fmt(float(top[col]) * scale, spec) if top is not None and pd.notna(top[col]) else "–"

        # A ratio to a saved-bytes slope that is zero (adjoint) or noise says nothing.
        meaningful = sfit is not None and np.isfinite(sfit.slope) and sfit.slope > 0.01 * (
            state if np.isfinite(state) else 2**10)
        rows.append({
            "plugin": key[0], "method": key[1], "grad": key[2], "block": key[3], "device": key[4],
            "status": status,
            "n": f"{ns[0]}–{ns[-1]} ({len(ns)})" if ns else "–",
            "peak MB @n_max": at_top("peak_bytes", 2**-20, ".1f"),
            "slope MB/step": _num(fit.slope / 2**20, ".3f"),
            "exp": _num(fit.exponent, ".2f"),
            "saved MB/step": _num(sfit.slope / 2**20, ".3f") if sfit else "–",
            "slope/saved": _num(fit.slope / sfit.slope, ".2f") if meaningful else "–",
            "states/step": _num(fit.slope / state, ".2f") if np.isfinite(state) else "–",
            "fwd/bwd ms @n_max": f"{at_top('fwd_s', 1e3, '.1f')}/{at_top('bwd_s', 1e3, '.1f')}",
            "NFE-F/B @n_max": f"{at_top('nfe_fwd', 1, '.0f')}/{at_top('nfe_bwd', 1, '.0f')}",
            "class": f"{mark} {v.expected}" if v else "–",
            "check": (v.reason + (f"; {v.note}" if v.note else "")) if v else "",
        })
    return pd.DataFrame(rows)


def _num(x: float, spec: str) -> str:
    """``format(x, spec)`` without a negative zero; an en dash for a missing value."""
    from odebench.report import fmt

    text = fmt(x, spec)
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """Per-depth table, the class rules, and the quoted reference figures (``[paper]``)."""
    from odebench.report import fmt, to_frame

    df = to_frame(records)
    ok = df[df["status"] == "ok"].sort_values(_GROUP + ["n_steps"])
    out = []
    params = _class_params(df)
    lo, hi = params["checkpoint_state_band"]
    out += ["## Class rules", "",
            f"- backprop, O(n) activations: peak slope within ±{params['backprop_rel_tol']:.0%} of the "
            "saved-for-backward slope (bytes per step).",
            f"- adjoint / adjoint-seminorm, O(1): log-log exponent of peak against n below "
            f"{params['adjoint_max_exponent']:g} (peaks under {params['exponent_floor_bytes'] / 2**10:g} KiB "
            "count as that).",
            f"- checkpoint, state-only: slope at most {hi:g} states per step and at most "
            f"{params['checkpoint_max_backprop_frac']:g} × backprop's slope; ≥ {lo:g} states/step reads "
            "\"one state per step\", below it \"sub-linear\".", ""]
    paper = (config or {}).get("paper", {})
    checks = verdicts(df) if len(ok) else {}
    matching = [key for key in checks for row in paper.get("rows", [])
                if key[2] == row.get("grad_mode", key[2]) and key[3] == row.get("block", key[3])]
    if paper.get("rows") and not matching:
        wanted = ", ".join(f"{r.get('grad_mode', '?')} on {r.get('block', '?')}" for r in paper["rows"])
        out += [f"## Against the reference ({paper.get('source', '')})", "",
                f"No ok rows of {wanted} in this run (the default and `odenet-cpu` profiles have them).", ""]
    elif paper.get("rows"):
        out += [f"## Against the reference ({paper.get('source', '')})", "",
                "| plugin | grad | block | device | batch | measured MB/step | NFE/step | measured MB/NFE | "
                "scaled to ref. batch | reference MB/NFE | ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in paper["rows"]:
            for key, v in checks.items():
                if key[2] != row.get("grad_mode", key[2]) or key[3] != row.get("block", key[3]):
                    continue
                g = ok[(ok[_GROUP] == pd.Series(dict(zip(_GROUP, key)))).all(axis=1)]
                per_step = (g["nfe_fwd"] / g["n_steps"]).median()
                batch = float(g["batch"].iloc[0])
                mb_nfe = v.fit.slope / 2**20 / per_step if per_step else np.nan
                scaled = mb_nfe * row["batch"] / batch if row.get("batch") else mb_nfe
                ref = row.get("mb_per_nfe", np.nan)
                out.append(f"| {key[0]} | {key[2]} | {key[3]} | {key[4]} | {batch:.0f} | "
                           f"{fmt(v.fit.slope / 2**20, '.2f')} | {fmt(per_step, '.0f')} | {fmt(mb_nfe, '.2f')} | "
                           f"{fmt(scaled, '.2f')} (batch {row.get('batch', '?')}) | {ref} | "
                           f"{fmt(scaled / ref, '.2f')} |")
        out += ["", "Measured MB/NFE is the fitted peak slope per step over the harness's forward NFE per step; "
                "memory per evaluation scales with the batch, so it is rescaled linearly to the reference's.", ""]
    if len(ok):
        out += ["## Per depth", "",
                "| plugin | grad | block | device | n | peak MB | saved MB | fwd ms | bwd ms | NFE-F | NFE-B | "
                "VJPs | native NFE agrees |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in ok.iterrows():
            saved = fmt(r["saved_bytes"] / 2**20, ".2f") if pd.notna(r["saved_bytes"]) else "–"
            vjp = fmt(r["n_vjp"], ".0f") if pd.notna(r["n_vjp"]) else "–"
            agree = "–" if pd.isna(r["nfe_agree"]) else ("yes" if bool(r["nfe_agree"]) else "NO")
            out.append(f"| {r['plugin']} | {r['grad_mode']} | {r['block']} | {r['device']} | {int(r['n_steps'])} | "
                       f"{fmt(r['peak_bytes'] / 2**20, '.2f')} | {saved} | {fmt(r['fwd_s'] * 1e3, '.1f')} | "
                       f"{fmt(r['bwd_s'] * 1e3, '.1f')} | {fmt(r['nfe_fwd'], '.0f')} | {fmt(r['nfe_bwd'], '.0f')} | "
                       f"{vjp} | {agree} |")
        out.append("")
    return out


def _label(key: tuple, v: Verdict | None) -> str:
    base = f"{key[0]} {key[2]}"
    if v is None or not np.isfinite(v.fit.slope):
        return base
    return f"{base}: {_num(v.fit.slope / 2**20, '.3g')} MB/step, exp {_num(v.fit.exponent, '.2f')}"


def figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Peak memory against n (log-log, fitted slopes in the legend; dotted: saved bytes) and
    forward / backward time against n; one panel per block × device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from odebench.report import to_frame

    df = to_frame(records)
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return []
    out.mkdir(exist_ok=True)
    checks = verdicts(df)
    panels = list(ok.groupby(["block", "device"], sort=False))
    lines = list(ok.groupby(_GROUP, sort=False))
    colours = {k: f"C{i % 10}" for i, (k, _) in enumerate(lines)}
    paths = []

    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), squeeze=False)
    for ax, ((block, device), _) in zip(axes[0], panels):
        for key, g in lines:
            if (key[3], key[4]) != (block, device):
                continue
            g = g.sort_values("n_steps")
            y = np.maximum(g["peak_bytes"].to_numpy(float), 1.0) / 2**20
            ax.plot(g["n_steps"], y, "o-", color=colours[key], label=_label(key, checks.get(key)), lw=1.4)
            if g["saved_bytes"].notna().any():
                ax.plot(g["n_steps"], np.maximum(g["saved_bytes"].to_numpy(float), 1.0) / 2**20, ":",
                        color=colours[key], lw=1.0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("rk4 steps n (step size 1/n)")
        ax.set_ylabel("peak memory over forward+backward (MB)")
        ax.set_title(f"{block}, {device} (dotted: saved for backward)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "memory_vs_steps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, len(panels), figsize=(7.5 * len(panels), 9), squeeze=False)
    for j, ((block, device), _) in enumerate(panels):
        for i, (col, what) in enumerate((("fwd_s", "forward"), ("bwd_s", "backward"))):
            ax = axes[i][j]
            for key, g in lines:
                if (key[3], key[4]) != (block, device):
                    continue
                g = g.sort_values("n_steps")
                ax.plot(g["n_steps"], g[col] * 1e3, "o-", color=colours[key], label=f"{key[0]} {key[2]}", lw=1.4)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("rk4 steps n")
            ax.set_ylabel(f"{what} time, median (ms)")
            ax.set_title(f"{what}: {block}, {device}", fontsize=10)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "time_vs_steps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


__all__ = ["AXES", "BLOCKS", "COLUMNS", "DEFAULTS", "DEFAULT_CLASSES", "EXPECTED_CLASS", "Fit", "SECTIONS",
           "Verdict", "check_class", "convnet_weights", "fit_memory", "figures", "initial_state", "jax_convnet",
           "make_driver", "release_mmap_threshold", "run_case", "sections", "set_mmap_threshold", "solve_kwargs",
           "state_shape", "summary", "to_jax_layout", "trim_heap", "validate", "verdicts"]

