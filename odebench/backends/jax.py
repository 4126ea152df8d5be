"""The JAX backend: an MLP vector field from a spec and the shared numpy weights, trained
with one ``jax.jit``-compiled step (solve, loss, gradient, optimiser update).

The step is compiled ahead of time (``jit(...).lower(...).compile()``) in :meth:`to_batch`,
which the runner calls outside its timers, so ``compile_s`` never lands in a timing
column; ``n_traces`` counts how often the step was traced (one per batch shape).
Because forward and backward are one compiled program, the trainer is ``fused``:
:meth:`JaxTrainer.forward` runs the whole step and :meth:`JaxTrainer.backward` does nothing.

float64 needs ``jax_enable_x64``, which must be set before any array is made:
:func:`make_trainer` sets it when ``dtype="float64"`` (the runner uses a fresh process per
case, so the process-wide flag does not leak into other cases). float32 arrays are cast
explicitly, so a float32 trainer stays float32 even with x64 on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from odebench.backends.base import Batch, InstrumentedPass, Trainer
from odebench.backends.jax_counting import CompiledInstrumentedPass, counted, instrumented_pass
from odebench.measure import NFECounter
from odebench.models import MLPSpec
from odebench.protocol import JaxSolverPlugin, SolveFailed, Status

OPTIMIZERS = ("rmsprop", "adam", "sgd")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")


#: The environment variable naming a folder for JAX's persistent compilation cache (unset: no cache,
#: every compile is cold).
CACHE_ENV = "ODEBENCH_JAX_CACHE"


class CacheWatch:
    """JAX's persistent compilation cache in this process, and what it did for the compiles that
    ``compile_s`` times (see :func:`persistent_cache` and :func:`timed_compile`).

    Only those compiles count: an untimed pass may legitimately read a program another case (or
    this one) wrote, which says nothing about whether ``compile_s`` was a cold compile.
    """

    def __init__(self, folder: str | None):
        self.folder = folder
        self.hits = self.misses = 0
        self.in_compile = 0

    def _on_event(self, event: str, **_kw: Any) -> None:
        if not self.in_compile:
            return
        if event == "/jax/compilation_cache/cache_hits":
            self.hits += 1
        elif event == "/jax/compilation_cache/cache_misses":
            self.misses += 1

    def record(self) -> dict[str, Any]:
        """``jax_cache``: ``off`` (no cache: every compile cold), ``cold`` (every compile in compile_s
        missed the cache), ``warm`` (every one was read from it: compile_s is not a cold compile),
        ``mixed``, or ``unused`` (none went through the cache); with the counts of hits and misses."""
        if self.folder is None:
            state = "off"
        elif self.hits and self.misses:
            state = "mixed"
        else:
            state = "warm" if self.hits else "cold" if self.misses else "unused"
        return {"jax_cache": state, "jax_cache_hits": self.hits, "jax_cache_misses": self.misses}

    def close(self) -> None:
        """Nothing to remove: JAX's cache folder is the user's (``ODEBENCH_JAX_CACHE``) or none. The
        worker closes every case's cache watch alike (the torch one removes its case folder)."""


_WATCH: CacheWatch | None = None
_LISTENING = False


def timed_compile(compile_fn: Callable[[], Any]) -> Any:
    """Run ``compile_fn`` (a compile that ``compile_s`` times), its cache hits and misses counted."""
    if _WATCH is None:
        return compile_fn()
    _WATCH.in_compile += 1
    try:
        return compile_fn()
    finally:
        _WATCH.in_compile -= 1


def persistent_cache(folder: str | None) -> CacheWatch:
    """Turn on JAX's persistent compilation cache in ``folder`` (None: leave it off) and watch it.

    Every compile is cached (no minimum compile time or size), so a second run of the same cases
    reads its programs back; the returned watch counts the hits and misses from now on, so a record
    says whether its compile time was cold or read from the cache. Call before anything compiles.
    """
    import jax

    global _WATCH, _LISTENING
    watch = _WATCH = CacheWatch(folder)
    if folder is not None:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if not _LISTENING:
        # One listener per process, reporting to the current case's watch: several cases may run
        # one after another in one process (measure.isolation = "group").
        jax.monitoring.register_event_listener(_on_event)
        _LISTENING = True
    return watch


def _on_event(event: str, **kw: Any) -> None:
    if _WATCH is not None:
        _WATCH._on_event(event, **kw)


@functools.cache
def _mlp_class() -> type:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    acts = {"tanh": jnp.tanh, "relu": jax.nn.relu, "softplus": jax.nn.softplus}

    class MLP(eqx.Module):
        """``f(t, y) = MLP(y)``: ``h @ W.T + b`` per layer, activation between layers.

        ``layers`` is ``((W1, b1), (W2, b2), ...)`` with ``W`` shaped ``(out, in)`` as in
        ``torch.nn.Linear`` and :func:`odebench.models.mlp_weights`.
        """

        layers: tuple[tuple[jax.Array, jax.Array], ...]
        activation: str = eqx.field(static=True)

        def __call__(self, t, y):
            del t
            act = acts[self.activation]
            h = y
            last = len(self.layers) - 1
            for i, (w, b) in enumerate(self.layers):
                h = h @ w.T + b
                if i < last:
                    h = act(h)
            return h

    return MLP


def build_mlp(spec: MLPSpec, weights: list[tuple[np.ndarray, np.ndarray]], dtype: Any, device: Any = None) -> Any:
    """An equinox MLP from ``spec`` and ``weights`` (as :func:`odebench.models.mlp_weights`).

    Raises:
        ValueError: when the weights' shapes do not match the spec.
    """
    import jax
    import jax.numpy as jnp

    expected = [((o, i), (o,)) for i, o in zip(spec.sizes[:-1], spec.sizes[1:])]
    got = [(np.shape(w), np.shape(b)) for w, b in weights]
    if got != expected:
        raise ValueError(f"weights do not match model.sizes {list(spec.sizes)}: expected {expected}, got {got}")
    layers = tuple(
        (jax.device_put(jnp.asarray(np.asarray(w), dtype=dtype), device),
         jax.device_put(jnp.asarray(np.asarray(b), dtype=dtype), device))
        for w, b in weights
    )
    return _mlp_class()(layers, spec.activation)


def make_optimizer(name: str, lr: float) -> Any:
    """An optax optimiser whose update equals PyTorch's default of the same name.

    ``rmsprop`` = ``torch.optim.RMSprop`` defaults: ``v ← 0.99 v + 0.01 g²`` from ``v = 0``,
    ``p ← p - lr g / (√v + 1e-8)`` (eps outside the square root, not centred, no momentum);
    ``adam`` = ``torch.optim.Adam`` defaults (betas 0.9/0.999, eps 1e-8 outside the root,
    bias-corrected); ``sgd`` = plain ``torch.optim.SGD``.

    Raises:
        ValueError: for an unknown name (lists the valid ones).
    """
    import optax

    if name == "rmsprop":
        return optax.rmsprop(lr, decay=0.99, eps=1e-8, initial_scale=0.0, eps_in_sqrt=False, centered=False)
    if name == "adam":
        return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    if name == "sgd":
        return optax.sgd(lr)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def _device(device: str) -> Any:
    import jax

    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    platform = "cpu" if device == "cpu" else "gpu"
    try:
        return jax.devices(platform)[0]
    except RuntimeError as exc:
        have = sorted({d.platform for d in jax.devices()})
        raise ValueError(f"JAX has no {device} device here (has: {', '.join(have)})") from exc


class _Trajectory:
    """One jitted trajectory program of a plugin and its solve settings; counts its traces."""

    def __init__(self, plugin: JaxSolverPlugin, solve_kwargs: dict[str, Any]) -> None:
        import jax

        self.n_traces = 0

        def run(model: Any, y0: Any, ts: Any) -> tuple[Any, Any]:
            self.n_traces += 1  # runs only while tracing
            pred, code, _ = plugin.solve(model, y0, ts, **solve_kwargs)
            return pred, code

        self.fn = jax.jit(run)


@functools.cache
def _trajectory_program(plugin: JaxSolverPlugin, solve_items: tuple[tuple[str, Any], ...]) -> _Trajectory:
    return _Trajectory(plugin, dict(solve_items))


def trajectory_program(plugin: JaxSolverPlugin, **solve_kwargs: Any) -> _Trajectory:
    """The process's one jitted trajectory program for ``plugin`` with these solve settings.

    A trainer's predictions (every snapshot and the final MSE) and the solver-swap check's
    evaluation with the trained solver share it, so the program is compiled once per case
    for each arithmetic (JAX keys its cache by shape, dtype and the x64 switch), not once
    per caller.
    """
    return _trajectory_program(plugin, tuple(sorted(solve_kwargs.items())))


def trajectory(plugin: JaxSolverPlugin, model: Any, y0: Any, ts: Any, **solve_kwargs: Any) -> np.ndarray:
    """``model``'s trajectory at ``ts`` from ``y0`` solved by ``plugin`` (jitted; see :func:`trajectory_program`).

    Arguments:
        plugin: the JAX plugin.
        model: the vector field (an ``equinox.Module``; its arrays are the program's arguments).
        y0, ts: device arrays of the solve's dtype.
        solve_kwargs: :meth:`~odebench.protocol.JaxSolverPlugin.solve`'s keyword arguments (hashable).

    Returns:
        The trajectory as float64 numpy, shape ``(len(ts), d)``.

    Raises:
        SolveFailed: when the solve does not end with status ok.
    """
    pred, code = trajectory_program(plugin, **solve_kwargs).fn(model, y0, ts)
    status = plugin.status(code)
    if status is not Status.OK:
        raise SolveFailed(status, plugin.message(status, solve_kwargs.get("max_steps", 100_000)))
    return np.asarray(pred, dtype=np.float64)


class JaxTrainer(Trainer):
    """A JAX MLP neural ODE trained by a fused, jitted step. Build with :func:`make_trainer`."""

    fused = True

    def __init__(
        self,
        plugin: Any,
        model: Any,
        *,
        method: str,
        rtol: float,
        atol: float,
        grad_mode: str,
        max_steps: int,
        step_size: float | None,
        optimizer: Any,
        dtype: Any,
        device: Any,
    ) -> None:
        import jax

        self.plugin = plugin
        self.model = model
        self.dtype = dtype
        self.device = device
        self.solve_kwargs = dict(
            method=method, rtol=rtol, atol=atol, step_size=step_size, grad_mode=grad_mode, max_steps=max_steps
        )
        self.optimizer = optimizer
        self.opt_state = jax.device_put(optimizer.init(model), device)
        self._initial = (self.model, self.opt_state)  # immutable arrays: safe to keep
        self.compile_s = 0.0
        self.n_traces = 0
        self._compiled: dict[Any, Any] = {}
        self._last: Any = None
        self._counter = NFECounter()
        self._pass = CompiledInstrumentedPass(plugin, self._loss, method=method, max_steps=max_steps,
                                              counter=self._counter)

    # -- the step -------------------------------------------------------------------
    def _loss(self, model: Any, y0: Any, ts: Any, ys: Any) -> tuple[Any, tuple[Any, Any]]:
        import jax.numpy as jnp

        pred, code, stats = self.plugin.solve(model, y0, ts, **self.solve_kwargs)
        return jnp.mean((pred - ys) ** 2), (code, stats)

    def _step(self, model: Any, opt_state: Any, y0: Any, ts: Any, ys: Any) -> tuple[Any, ...]:
        import jax
        import jax.numpy as jnp
        import optax

        self.n_traces += 1  # runs only while tracing
        (loss, (code, stats)), grads = jax.value_and_grad(self._loss, has_aux=True)(model, y0, ts, ys)
        updates, new_opt_state = self.optimizer.update(grads, opt_state, model)
        new_model = optax.apply_updates(model, updates)
        # A failed solve (its gradient is meaningless) leaves the parameters untouched.
        ok = code == 0
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        new_model = jax.tree.map(keep, new_model, model)
        new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        return new_model, new_opt_state, loss, code, stats

    def _key(self, jb: tuple[Any, Any, Any]) -> tuple:
        return tuple((a.shape, str(a.dtype)) for a in jb)

    def compile(self, jb: tuple[Any, Any, Any]) -> Any:
        """Trace, lower and compile the step for this batch's shapes (once per shape)."""
        import jax

        key = self._key(jb)
        if key not in self._compiled:
            start = time.perf_counter()
            lowered = jax.jit(self._step).lower(self.model, self.opt_state, *jb)
            self._compiled[key] = timed_compile(lowered.compile)
            self.compile_s += time.perf_counter() - start
        return self._compiled[key]

    # -- the Trainer interface --------------------------------------------------------
    def reset(self) -> None:
        """Back to the initial parameters and optimiser state; compiled steps are kept."""
        self.model, self.opt_state = self._initial
        self._last = None

    def to_batch(self, batch: Batch) -> tuple[Any, Any, Any]:
        """The batch as device arrays of the trainer's dtype; compiles the step for a new shape."""
        import jax

        jb = tuple(
            jax.device_put(np.asarray(a, dtype=self.dtype), self.device) for a in (batch.y0, batch.ts, batch.ys)
        )
        self.compile(jb)
        return jb

    def forward(self, batch: Any) -> dict[str, Any]:
        step = self.compile(batch)
        self.model, self.opt_state, loss, code, stats = step(self.model, self.opt_state, *batch)
        self._last = (self.model, loss)
        status = self.plugin.status(code)  # reads the code: waits for the step
        if status is not Status.OK:
            raise SolveFailed(status, self.plugin.message(status, self.solve_kwargs["max_steps"]))
        return {"loss": loss, "stats": stats}

    def backward(self, handle: Any) -> None:
        """Nothing: the fused step already updated the parameters."""

    def loss_value(self, handle: Any) -> float:
        return float(handle["loss"])

    def sync(self) -> None:
        import jax

        if self._last is not None:
            jax.block_until_ready(self._last)

    def instrumented(self, batch: Any) -> InstrumentedPass:
        """Untimed forward + backward with a counting vector field; no update (see :func:`instrumented_pass`).

        ``stats`` is the forward solve's own statistics, whose ``nfe`` must equal ``nfe_fwd``.
        """
        return self._pass(self.model, *batch)

    @property
    def n_pass_traces(self) -> int:
        """How often the instrumented pass's forward program was traced (once per batch shape)."""
        return self._pass.n_traces

    def predict(self, ts: np.ndarray, y0: np.ndarray) -> np.ndarray:
        """The model's trajectory at ``ts`` from ``y0`` with the trained solver (:func:`trajectory`)."""
        import jax

        ts_j = jax.device_put(np.asarray(ts, dtype=self.dtype), self.device)
        y0_j = jax.device_put(np.asarray(y0, dtype=self.dtype), self.device)
        max_steps = max(self.solve_kwargs["max_steps"], len(ts))
        return trajectory(self.plugin, self.model, y0_j, ts_j, **dict(self.solve_kwargs, max_steps=max_steps))

    def parameters_numpy(self) -> list[np.ndarray]:
        out = []
        for w, b in self.model.layers:
            out += [np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)]
        return out


def make_trainer(
    plugin: Any,
    model_spec: MLPSpec,
    weights: list[tuple[np.ndarray, np.ndarray]],
    *,
    method: str,
    rtol: float,
    atol: float,
    grad_mode: str,
    max_steps: int,
    lr: float,
    optimizer: str = "rmsprop",
    dtype: str = "float32",
    device: str = "cpu",
    step_size: float | None = None,
) -> JaxTrainer:
    """A :class:`JaxTrainer` for an MLP neural ODE solved by a JAX ``plugin``.

    Arguments:
        plugin: a :class:`~odebench.protocol.JaxSolverPlugin` (instance or class).
        model_spec: the MLP.
        weights: the shared initial weights, :func:`odebench.models.mlp_weights`.
        method, rtol, atol, grad_mode, max_steps: passed to the plugin.
        lr: learning rate.
        optimizer: one of :data:`OPTIMIZERS`, with PyTorch's default hyperparameters.
        dtype: ``"float32"`` or ``"float64"`` (the latter turns on ``jax_enable_x64``).
        device: ``"cpu"`` or ``"cuda"``.
        step_size: fixed step for fixed-step methods (None: step on the batch's times).

    Raises:
        ValueError: for an unknown optimizer, dtype or device, or mismatched weights.
        UnsupportedError: for a method/grad mode/device the plugin does not declare.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if isinstance(plugin, type):
        plugin = plugin()
    if not isinstance(plugin, JaxSolverPlugin):
        raise ValueError(f"plugin {plugin.name!r} is a {plugin.framework} plugin, not a JaxSolverPlugin")
    plugin.check(method, grad_mode, device)
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    jdtype = jnp.float64 if dtype == "float64" else jnp.float32
    dev = _device(device)
    model = build_mlp(model_spec, weights, jdtype, dev)
    return JaxTrainer(
        plugin,
        model,
        method=method,
        rtol=rtol,
        atol=atol,
        grad_mode=grad_mode,
        max_steps=max_steps,
        step_size=step_size,
        optimizer=make_optimizer(optimizer, lr),
        dtype=np.float64 if dtype == "float64" else np.float32,
        device=dev,
    )


__all__ = ["DEVICES", "DTYPES", "OPTIMIZERS", "CompiledInstrumentedPass", "JaxTrainer", "build_mlp", "counted",
           "instrumented_pass", "make_optimizer", "make_trainer", "trajectory", "trajectory_program"]
