"""The torch backend: the MLP vector field from shared weights, its trainer, and the one
instrumented (NFE-counting) pass every torch workload uses."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from odebench.backends.base import Batch, InstrumentedPass, Trainer
from odebench.measure import NFECounter, saved_tensor_bytes
from odebench.models import MLPSpec
from odebench.protocol import SolveFailed, SolverPlugin, SolveStats

#: Imported by torch on first use, not with ``import torch``: the first optimiser built imports dynamo
#: (``torch.optim`` wraps its methods to keep dynamo out), 1-2 s of a case's set-up; a launcher that
#: imports it ahead saves that in every case it forks (see :mod:`odebench.backends`).
LAZY_IMPORTS = ("torch._dynamo",)

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


#: The environment variable naming a folder for inductor's on-disk caches (compiled graphs and kernels)
#: shared by the cases of compiling torch plugins. Unset: each such case compiles into a fresh, empty
#: folder of its own, removed when it ends, so every compile is cold.
CACHE_ENV = "ODEBENCH_TORCH_CACHE"


class InductorCache:
    """Where a compiling torch plugin's case keeps inductor's caches, and what they did for it.

    Made by :func:`inductor_cache`; :meth:`record` counts the graph-cache lookups since then. The
    case's compiles all happen in the plugin's ``prepare`` (timed passes never compile, untimed ones
    run eagerly), so the counts are those of the compiles ``compile_s`` timed.
    """

    def __init__(self, folder: str | None, path: str):
        self.folder = folder
        self.path = path
        self._start = self._counts()

    @staticmethod
    def _counts() -> tuple[int, int]:
        from torch._dynamo.utils import counters

        inductor = counters["inductor"]  # looked up each time: dynamo replaces the table when it resets
        return inductor["fxgraph_cache_hit"], inductor["fxgraph_cache_miss"]

    def record(self) -> dict[str, Any]:
        """``torch_cache``: ``off`` (a fresh folder of the case's own: every compile cold), ``cold``
        (every compiled graph missed the shared cache), ``warm`` (every one was read from it:
        compile_s is not a cold compile), ``mixed``, or ``unused`` (nothing compiled); with the counts
        of hits and misses."""
        # a count below its start means dynamo reset the table since: all its counts are then new
        hits, misses = (now - then if now >= then else now for now, then in zip(self._counts(), self._start))
        if self.folder is None:
            state = "off"
        elif hits and misses:
            state = "mixed"
        else:
            state = "warm" if hits else "cold" if misses else "unused"
        return {"torch_cache": state, "torch_cache_hits": hits, "torch_cache_misses": misses}

    def close(self) -> None:
        """Remove the case's own folder (a shared one stays)."""
        if self.folder is None:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)


def inductor_cache(folder: str | None) -> InductorCache:
    """Point inductor's on-disk caches at ``folder`` (None: a fresh, empty one of this process's own)
    and forget what this process cached in memory, before anything compiles.

    Inductor caches compiled graphs, and the C++ kernels built for them, on disk by default and
    reads them back in any later process: without this, a case's ``compile_s`` would be warm
    whenever an earlier run compiled the same programs.
    """
    import os
    import tempfile

    from torch._inductor.utils import clear_caches

    path = folder or tempfile.mkdtemp(prefix="odebench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(path)
    clear_caches()
    return InductorCache(folder, path)


class MLPField(nn.Module):
    """``f(t, y) = MLP(y)``: an autonomous vector field built from numpy weights.

    Arguments:
        spec: the model specification.
        weights: ``[(W, b), ...]`` from :func:`odebench.models.mlp_weights`.
        dtype, device: where the parameters live.
    """

    def __init__(self, spec: MLPSpec, weights, dtype=torch.float32, device="cpu"):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (w, b) in enumerate(weights):
            # Built in the target dtype: a float32 layer would round float64 weights before the cast.
            lin = nn.Linear(w.shape[1], w.shape[0], dtype=dtype)
            # np.array copies: a JAX model's arrays come as read-only numpy views, which torch warns about.
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.array(w)))
                lin.bias.copy_(torch.from_numpy(np.array(b)))
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(_ACTIVATIONS[spec.activation]())
        self.net = nn.Sequential(*layers).to(dtype=dtype, device=device)

    #: Declared: ``forward`` ignores ``t``. A plugin whose samples sit at different times
    #: (torchode) may then evaluate the whole batch in one call.
    autonomous = True

    def forward(self, t, y):
        return self.net(y)


class CountingField(nn.Module):
    """Wraps a vector field to count its evaluations and the VJPs through its output.

    The wrapped module is a submodule, so ``parameters()`` (what adjoint methods
    differentiate) are the same tensors; only the instrumented pass uses this wrapper,
    never a timed one.
    """

    def __init__(self, inner: nn.Module, counter: NFECounter):
        super().__init__()
        self.inner = inner
        self.counter = counter

    @property
    def autonomous(self) -> bool:
        """The wrapped field's declaration (see :attr:`MLPField.autonomous`)."""
        return bool(getattr(self.inner, "autonomous", False))

    def forward(self, t, y):
        self.counter.call()
        out = self.inner(t, y)
        if out.requires_grad:
            out.register_hook(self._on_grad)
        return out

    def _on_grad(self, grad):
        self.counter.vjp()


@contextlib.contextmanager
def counting(module: nn.Module, counter: NFECounter) -> Iterator[NFECounter]:
    """Count ``module``'s evaluations, and the VJPs through its outputs, into ``counter``.

    A forward hook, not a wrapper: the solver sees the very module it would see untimed
    (adjoint methods find the same parameters, a plugin's type checks see the same class),
    and a module nested inside a model (the ODE-Net's ``odefunc``) is counted the same way.
    """
    def hook(_module, _inputs, out):
        counter.call()
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(counter.vjp)

    handle = module.register_forward_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def _transformed(x: Any) -> bool:
    """Whether ``x`` is a tensor wrapped by a ``torch.func`` transform (vmap, grad), not a plain one."""
    return isinstance(x, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(x)


@contextlib.contextmanager
def recording(module: nn.Module) -> Iterator[list[tuple[Any, torch.Tensor] | None]]:
    """Record the inputs ``(t, y)`` of ``module``'s calls (detached copies), in call order.

    A copy of a ``y`` that was part of a graph (``requires_grad``) requires grad itself, as a leaf:
    the backward of that call had to differentiate through its input too (the chain back to the
    parameters), and the floor replays that.

    A call made inside a ``torch.func`` transform (torchode's per-sample adjoint vmaps the field's
    VJP) is recorded as None: its inputs are wrapped tensors that must not leave the transform, and
    no plain tensor stands for them.
    """
    states: list[tuple[Any, torch.Tensor] | None] = []

    def hook(_module, inputs, _out):
        t, y = inputs
        if _transformed(y) or _transformed(t):
            states.append(None)
            return
        states.append((t.detach().clone() if isinstance(t, torch.Tensor) else t,
                       y.detach().clone().requires_grad_(y.requires_grad)))

    handle = module.register_forward_hook(hook)
    try:
        yield states
    finally:
        handle.remove()


def floor_replay(field: nn.Module, fwd: list[tuple[Any, torch.Tensor]], bwd: list[tuple[Any, torch.Tensor]] = (),
                 *, graph: bool = False) -> Callable[[], None]:
    """The eager floor: a callable that evaluates the vector field alone at recorded states, and
    differentiates those evaluations as the solve's backward pass did, with no solver around them.

    What is left of a solve's (or a training iteration's) time over the floor's is the solver's own
    loop: its steps, controller, output and, for training, the loss and the optimiser step.

    Arguments:
        field: the vector field (its parameters are what the backward differentiates).
        fwd: the states of the forward solve's evaluations.
        bwd: the states of the backward pass's evaluations (an adjoint's reverse solve, a
            checkpoint's recomputation): each evaluated and differentiated on its own (a VJP).
        graph: differentiate the forward evaluations (backprop stores them): one backward pass
            through all of them, with unit cotangents, with respect to the parameters and to each
            state that required grad when it was recorded (:func:`recording`): a solve's backward
            carries the gradient back through every evaluation's input but the first. False: they
            run without a graph.
    """
    params = [p for p in field.parameters() if p.requires_grad]
    # Cotangents made once, outside the replay: making them is no part of the field's cost.
    fwd_cot = [torch.ones_like(y) for _, y in fwd] if graph else []
    bwd_cot = [torch.ones_like(y) for _, y in bwd]
    chained = [y for _, y in fwd if y.requires_grad] if graph else []
    for _, y in bwd:
        y.requires_grad_(True)

    def replay() -> None:
        with torch.set_grad_enabled(graph):
            outs = [field(t, y) for t, y in fwd]
        if graph and outs:
            torch.autograd.grad(outs, [*params, *chained], fwd_cot, allow_unused=True)
        for (t, y), cot in zip(bwd, bwd_cot):
            torch.autograd.grad(field(t, y), [y, *params], cot, allow_unused=True)

    return replay


def floor_of(field: nn.Module, loss_fn: Callable[[], tuple[torch.Tensor, SolveStats | None]],
             params: list[torch.Tensor]) -> tuple[Callable[[], None], int] | None:
    """The eager floor of one forward + backward (:func:`floor_replay`) and its forward steps.

    The field's calls are recorded in one untimed run of ``loss_fn`` and the gradient with respect to
    ``params`` (nothing is updated): the forward ones are replayed with a graph and one backward where
    the grad mode stores the steps (no evaluation in the backward pass), else without one, and the
    backward ones each with a VJP. None when a call ran inside a ``torch.func`` transform (see
    :func:`recording`): the floor's columns are then empty.
    """
    with recording(field) as states:
        loss, stats = loss_fn()
        n_fwd = len(states)
        torch.autograd.grad(loss, params, allow_unused=True)
    if any(s is None for s in states):
        return None  # a call inside a vmap has no state to replay: the floor cannot be measured
    fwd, bwd = states[:n_fwd], states[n_fwd:]
    return floor_replay(field, fwd, bwd, graph=not bwd), (stats.n_steps if stats is not None else 0) or 0


def instrumented_pass(loss_fn: Callable[[], tuple[torch.Tensor, SolveStats | None]], field: nn.Module | None,
                      params: list[torch.Tensor]) -> InstrumentedPass:
    """One untimed forward + backward with counting on; no parameter is updated.

    Arguments:
        loss_fn: runs the forward pass (the solve and the loss) and returns ``(loss, stats)``,
            ``stats`` the solve's own statistics (None where there is no solve).
        field: the vector field whose evaluations are counted (None: nothing to count, e.g.
            a ResNet; the NFE figures are then None).
        params: the tensors the gradient is taken with respect to.

    Returns:
        NFE of the forward solve and of the backward pass (an adjoint's reverse solve, a
        checkpoint's recomputation), VJPs through the field, and the bytes autograd saved
        for backward during the forward pass.
    """
    counter = NFECounter()
    with contextlib.ExitStack() as stack:
        if field is not None:
            stack.enter_context(counting(field, counter))
        with saved_tensor_bytes() as saved:
            loss, stats = loss_fn()
        counter.phase = "bwd"
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        del grads
    counted = field is not None
    return InstrumentedPass(loss=float(loss.detach()), nfe_fwd=counter.nfe_fwd if counted else None,
                            nfe_bwd=counter.nfe_bwd if counted else None,
                            n_vjp=counter.n_vjp if counted else None, saved_bytes=saved["bytes"],
                            stats=stats if stats is not None else SolveStats())


def compile_by_running(plugin: SolverPlugin, f, y0: torch.Tensor, ts: torch.Tensor, **solve_kw: Any) -> float:
    """A compiling plugin's :meth:`~odebench.protocol.SolverPlugin.prepare`: one solve and one backward
    pass for these shapes and settings, so that dynamo and inductor compile the forward and backward
    graphs before any timer; gradients are returned by ``autograd.grad`` and discarded.

    Arguments:
        plugin: the compiling plugin (its ``odeint`` runs the compiled solve).
        f, y0, ts: as for ``odeint``; ``f``'s parameters get no ``.grad``.
        solve_kw: the keywords of the timed ``odeint`` calls.

    Returns:
        Seconds spent (tracing, compiling and running once).
    """
    start = time.perf_counter()
    sol = plugin.odeint(f, y0, ts, **solve_kw)
    if sol.ok and sol.ys.requires_grad:
        inputs = [p for p in f.parameters() if p.requires_grad] if isinstance(f, nn.Module) else []
        if y0.requires_grad:
            inputs.append(y0)
        if inputs:
            torch.autograd.grad(sol.ys.square().sum(), inputs, allow_unused=True)
    return time.perf_counter() - start


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; valid: rmsprop, adam, sgd")


class TorchTrainer(Trainer):
    """Trains an :class:`MLPField` through a torch-framework plugin with MSE loss."""

    def __init__(self, plugin: SolverPlugin, model_spec: MLPSpec, weights, *, method: str,
                 rtol: float, atol: float, grad_mode: str, max_steps: int, lr: float,
                 optimizer: str = "rmsprop", dtype: str = "float32", device: str = "cpu"):
        self.plugin = plugin
        self.dtype = DTYPES[dtype]
        self.device = torch.device(device)
        self._init = (model_spec, weights, optimizer, lr)
        self._prepared: set[tuple] = set()  # batch shapes the plugin has compiled for
        self.reset()
        self.solve_kw = dict(method=method, rtol=rtol, atol=atol, grad_mode=grad_mode, max_steps=max_steps)
        self._cuda = self.device.type == "cuda"

    def reset(self) -> None:
        spec, weights, optimizer, lr = self._init
        self.field = MLPField(spec, weights, self.dtype, self.device)
        self.opt = _optimizer(optimizer, self.field.parameters(), lr)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def to_batch(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The batch as tensors; a compiling plugin compiles here (untimed) for a new shape."""
        y0, ts, ys = self._tensor(batch.y0), self._tensor(batch.ts), self._tensor(batch.ys)
        key = (tuple(y0.shape), tuple(ts.shape))
        if key not in self._prepared:
            self._prepared.add(key)
            spent = self.plugin.prepare(self.field, y0, ts, **self.solve_kw)
            if spent is not None:
                self.compile_s = (self.compile_s or 0.0) + spent
        return y0, ts, ys

    def _loss(self, field: nn.Module, batch) -> tuple[torch.Tensor, Any]:
        y0, ts, ys = batch
        sol = self.plugin.odeint(field, y0, ts, **self.solve_kw)
        if not sol.ok:
            raise SolveFailed(sol.status, sol.message)
        return torch.mean((sol.ys - ys) ** 2), sol

    def _run_only(self):
        """A compiling plugin's timed passes run what :meth:`to_batch` compiled and never compile.

        A frame that would need a new graph (torchode: a step that first passes exactly one
        output time, a size dynamo specialises) runs eagerly instead of compiling in a timer.
        """
        if not self.plugin.compiled or getattr(self, "_in_eager", False):
            return contextlib.nullcontext()
        return torch.compiler.set_stance("eager_on_recompile")

    def forward(self, batch):
        with self._run_only():
            return self._loss(self.field, batch)[0]

    def backward(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        with self._run_only():
            loss.backward()
        self.opt.step()

    def loss_value(self, loss: torch.Tensor) -> float:
        return float(loss.detach())

    def sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)

    def eager(self):
        """A compiling plugin's untimed passes run its code eagerly (the same algorithm and calls).

        torch.compile cannot trace the saved-tensor hooks or the counter's side effects, and a
        no-grad snapshot would compile yet another graph; so for such a plugin the saved bytes
        are those of its eager graph.
        """
        if not self.plugin.compiled:
            return contextlib.nullcontext()
        return self._forced_eager()

    @contextlib.contextmanager
    def _forced_eager(self) -> Iterator[None]:
        self._in_eager = True  # forward and backward inside must not switch to eager_on_recompile
        try:
            with torch.compiler.set_stance("force_eager"):
                yield
        finally:
            self._in_eager = False

    def instrumented(self, batch) -> InstrumentedPass:
        def loss_fn():
            loss, sol = self._loss(self.field, batch)
            return loss, sol.stats

        with self.eager():
            return instrumented_pass(loss_fn, self.field, list(self.field.parameters()))

    def floor(self, batch) -> tuple[Callable[[], None], int] | None:
        """The eager floor of one iteration on ``batch`` and its forward steps (:func:`floor_of`)."""
        def loss_fn():
            loss, sol = self._loss(self.field, batch)
            return loss, sol.stats

        with self.eager():
            return floor_of(self.field, loss_fn, list(self.field.parameters()))

    def predict(self, ts: np.ndarray, y0: np.ndarray) -> np.ndarray:
        kw = dict(self.solve_kw, grad_mode=self.plugin.grad_modes[0])
        with torch.no_grad(), self.eager():
            sol = self.plugin.odeint(self.field, self._tensor(y0), self._tensor(ts), **kw)
        if not sol.ok:
            raise SolveFailed(sol.status, sol.message)
        return sol.ys.detach().to("cpu", torch.float64).numpy()

    def parameters_numpy(self) -> list[np.ndarray]:
        return [p.detach().to("cpu", torch.float64).numpy() for p in self.field.parameters()]


def make_trainer(plugin: SolverPlugin, model_spec: MLPSpec, weights, *, method: str, rtol: float,
                 atol: float, grad_mode: str, max_steps: int, lr: float, optimizer: str = "rmsprop",
                 dtype: str = "float32", device: str = "cpu") -> TorchTrainer:
    """Build the torch trainer for one training case (see :class:`TorchTrainer`)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    return TorchTrainer(plugin, model_spec, weights, method=method, rtol=rtol, atol=atol,
                        grad_mode=grad_mode, max_steps=max_steps, lr=lr, optimizer=optimizer,
                        dtype=dtype, device=device)
