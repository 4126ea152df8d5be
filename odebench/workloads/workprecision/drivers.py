"""Framework drivers of the ``workprecision`` workload: one problem's field, state and solve
in torch, JAX or numpy.

A driver does, for one case:

* ``solve()``: the timed forward solve (no gradient tape: torch under ``no_grad``, JAX a
  compiled solve, numpy for scipy's own framework); raises :class:`~odebench.SolveFailed`
  when the solve's status is not ok;
* ``instrumented_solve()``: an untimed solve whose vector field is counted by the backend's
  counter (:func:`odebench.backends.torch.counting`, :func:`odebench.backends.jax.counted`)
  and whose every evaluation state ``(t, y)`` is recorded;
* ``field_replay(states)``: a callable that evaluates the vector field alone at those states,
  one evaluation after another, as the solve did (the loop-time subtraction);
* ``gradient()``: the timed forward + backward pass of ``loss = Σ_i ‖y(t_i) - target_i‖²``
  with respect to the field's parameters and ``y0``; ``flat_gradient`` lays the result out as
  the reference does (each layer's ``W`` then ``b``, then ``y0``);
* ``instrumented_gradient()``: the backend's untimed instrumented pass (NFE-F, NFE-B, VJPs,
  saved bytes).
"""

from __future__ import annotations

import abc
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from odebench.measure import NFECounter
from odebench.protocol import STIFF_METHODS, SolveFailed, SolverPlugin, SolveStats, Status, UnsupportedError
from odebench.workloads.workprecision.problems import Problem


def solve_kwargs(case: dict[str, Any], problem: Problem) -> dict[str, Any]:
    """``odeint`` keywords of a case.

    A fixed-step case (``n_steps > 0``) takes ``n_steps`` steps of ``(t1 - t0) / n_steps``
    with a budget of ``n_steps + 1`` (diffrax sizes its loop by the budget); an adaptive one
    takes the case's tolerances and the problem's budget (its explicit budget for an explicit
    method).
    """
    n = int(case.get("n_steps") or 0)
    kw: dict[str, Any] = {"method": case["method"], "grad_mode": case["grad_mode"]}
    if n > 0:
        kw.update(step_size=float(problem.ts[-1] - problem.ts[0]) / n, max_steps=min(problem.max_steps, n + 1))
    else:
        budget = problem.max_steps if case["method"] in STIFF_METHODS else problem.explicit_max_steps
        kw.update(rtol=float(case["rtol"]), atol=float(case["atol"]), max_steps=budget)
    return kw


class Driver(abc.ABC):
    """What a case measures through, in one framework (see the module docstring).

    Attributes:
        compile_s: seconds spent compiling before any timing (JAX), else None.
        saved_source: how ``saved_bytes`` is measured (None where it is not).
    """

    compile_s: float | None = None
    saved_source: str | None = None

    @abc.abstractmethod
    def solve(self) -> Any:
        """One forward solve (timed by the caller); a handle for :meth:`trajectory`.

        Raises:
            odebench.SolveFailed: when the solve's status is not ok.
        """

    def sync(self) -> None:
        """Wait for queued work: nothing on the CPU in torch and numpy; JAX blocks inside its calls."""
        return None

    @abc.abstractmethod
    def trajectory(self, handle: Any) -> np.ndarray:
        """The solution of a :meth:`solve` handle at the output times, float64 numpy."""

    @abc.abstractmethod
    def instrumented_solve(self) -> tuple[int, SolveStats, list[tuple[Any, Any]]]:
        """An untimed solve: ``(NFE counted by the harness, the library's statistics, the states)``.

        Raises:
            odebench.SolveFailed: when the solve's status is not ok.
        """

    @abc.abstractmethod
    def field_replay(self, states: list[tuple[Any, Any]]) -> Callable[[], Any]:
        """A callable evaluating the vector field at ``states``, one after another (timed by the caller)."""

    def gradient(self) -> Any:
        """One forward + backward pass (timed by the caller); a handle for :meth:`flat_gradient`.

        Raises:
            odebench.SolveFailed: when the forward solve's status is not ok.
            ValueError: in a driver that only solves.
        """
        raise ValueError(f"{type(self).__name__} solves only: gradients run in the backend's framework")

    def flat_gradient(self, handle: Any) -> tuple[float, np.ndarray, np.ndarray]:
        """``(loss, gradient, trajectory)`` of a :meth:`gradient` handle, float64 numpy; the gradient
        is each layer's ``W`` then ``b``, then ``y0``."""
        raise ValueError(f"{type(self).__name__} solves only: gradients run in the backend's framework")

    def instrumented_gradient(self) -> Any:
        """The backend's untimed instrumented pass (:class:`odebench.backends.base.InstrumentedPass`)."""
        raise ValueError(f"{type(self).__name__} solves only: gradients run in the backend's framework")


# --------------------------------------------------------------------------- torch
def _field(problem: Problem, framework: str) -> Any:
    """The problem's field in ``framework``, with its shared weights (the contract's, for built-in and
    user's problems alike: :func:`odebench.problemload.build_field`)."""
    from odebench.problemload import build_field

    return build_field(problem.parts.problem, framework, problem.parts.weights)[0]


class TorchDriver(Driver):
    """torch plugins, and scipy's black-box adjoint (torch field, numpy solve) for gradients."""

    saved_source = "saved_tensors_hooks"

    def __init__(self, plugin: SolverPlugin, problem: Problem, kw: dict[str, Any], targets: np.ndarray | None):
        import torch

        self.torch, self.plugin, self.kw = torch, plugin, kw
        self.field = _field(problem, "torch")
        self.params = [p for p in self.field.parameters() if p.requires_grad]
        self.y0 = torch.as_tensor(problem.y0, dtype=torch.float64)
        self.ts = torch.as_tensor(problem.ts, dtype=torch.float64)
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float64)

    def _odeint(self, y0: Any) -> Any:
        sol = self.plugin.odeint(self.field, y0, self.ts, **self.kw)
        if not sol.ok:
            raise SolveFailed(sol.status, sol.message)
        return sol

    def solve(self) -> Any:
        with self.torch.no_grad():
            return self._odeint(self.y0)

    def trajectory(self, handle: Any) -> np.ndarray:
        return handle.ys.detach().numpy().astype(np.float64)

    def instrumented_solve(self):
        from odebench.backends.torch import counting, recording

        counter = NFECounter()
        with recording(self.field) as states, counting(self.field, counter), self.torch.no_grad():
            sol = self._odeint(self.y0)
        return counter.nfe_fwd, sol.stats, states

    def field_replay(self, states):
        from odebench.backends.torch import floor_replay

        return floor_replay(self.field, states)  # the forward solve's evaluations, without a graph

    def _loss(self, y0: Any) -> tuple[Any, Any]:
        sol = self._odeint(y0)
        return ((sol.ys - self.targets) ** 2).sum(), sol

    def gradient(self) -> Any:
        y0 = self.y0.clone().requires_grad_(True)
        loss, sol = self._loss(y0)
        grads = self.torch.autograd.grad(loss, [*self.params, y0], allow_unused=True)
        return loss, grads, sol.ys

    def flat_gradient(self, handle):
        loss, grads, ys = handle
        parts = [(g if g is not None else self.torch.zeros_like(p)).detach().reshape(-1)
                 for g, p in zip(grads, [*self.params, self.y0])]
        return float(loss.detach()), self.torch.cat(parts).numpy().astype(np.float64), \
            ys.detach().numpy().astype(np.float64)

    def instrumented_gradient(self):
        from odebench.backends.torch import instrumented_pass

        y0 = self.y0.clone().requires_grad_(True)

        def loss_fn():
            loss, sol = self._loss(y0)
            return loss, sol.stats

        return instrumented_pass(loss_fn, self.field, self.params)


# --------------------------------------------------------------------------- numpy
class NumpyDriver(Driver):
    """numpy-framework plugins (scipy) on the problem's own numpy field: forward solves only."""

    def __init__(self, plugin: SolverPlugin, problem: Problem, kw: dict[str, Any]):
        self.plugin, self.kw, self.problem = plugin, kw, problem
        if problem.rhs is None:
            raise UnsupportedError(f"problem {problem.name!r} provides no numpy vector field")
        self.f = problem.rhs

    def _odeint(self, f: Callable) -> Any:
        sol = self.plugin.odeint(f, self.problem.y0, self.problem.ts, **self.kw)
        if not sol.ok:
            raise SolveFailed(sol.status, sol.message)
        return sol

    def solve(self) -> Any:
        return self._odeint(self.f)

    def trajectory(self, handle: Any) -> np.ndarray:
        return np.asarray(handle.ys, dtype=np.float64)

    def instrumented_solve(self):
        states: list[tuple[Any, Any]] = []
        f = self.f

        def counted(t, y):
            states.append((t, np.array(y, copy=True)))
            return f(t, y)

        sol = self._odeint(counted)
        return len(states), sol.stats, states

    def field_replay(self, states):
        f = self.f

        def replay():
            for t, y in states:
                f(t, y)

        return replay


# --------------------------------------------------------------------------- JAX
def _start_jax(threads: int) -> Any:
    """Import JAX with float64 on (and one intra-op thread when the suite asks for one)."""
    if "jax" not in sys.modules and threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:  # read once, when JAX starts
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    import jax

    # Every case of this workload is float64; the runner gives each case its own process.
    jax.config.update("jax_enable_x64", True)
    return jax


#: Compiled programs of this process, by everything they were traced with but their arguments.
#: The tolerances are arguments, so the points of one adaptive curve share one compile when they
#: run in one process (``measure.isolation = "group"``): only the first has it in ``compile_s``.
_PROGRAMS: dict[tuple, Any] = {}
#: The counter of every instrumented gradient and the state sink of every instrumented solve in
#: this process: one of each keeps the instrumented programs' static parts (their callbacks)
#: identical from case to case, so that they too compile once per curve.
_COUNTER = NFECounter()
_STATES: list[tuple[np.ndarray, np.ndarray]] = []


def _record_state(t: Any, y: Any) -> None:
    _STATES.append((np.asarray(t), np.asarray(y)))


@functools.cache
def _recorded_class() -> type:
    """A field wrapper that sends each evaluation's ``(t, y)`` to :data:`_STATES` (untimed use only)."""
    import equinox as eqx
    import jax

    class Recorded(eqx.Module):
        f: Any

        def __call__(self, t, y):
            jax.debug.callback(_record_state, t, y)
            return self.f(t, y)

    return Recorded


def _bucket(n: int) -> int:
    """The padded length of ``n`` replayed states: the next power of two, at least 16 (one replay
    program serves every state count up to it)."""
    return max(16, 1 << max(n - 1, 0).bit_length())


class JaxDriver(Driver):
    """JAX plugins: the solve and the gradient compiled ahead of time (``compile_s`` apart).

    Every compiled program takes the tolerances as arguments and is kept for the process's later
    cases (:data:`_PROGRAMS`); ``compile_reused`` says a case found its program compiled.
    """

    saved_source = None

    def __init__(self, plugin: Any, problem: Problem, kw: dict[str, Any], targets: np.ndarray | None,
                 threads: int):
        jax = _start_jax(threads)
        import jax.numpy as jnp

        self.jax, self.jnp, self.plugin = jax, jnp, plugin
        # The static keywords (method, grad mode, step, budget) are traced into the programs; the
        # tolerances are passed to them, as float64 scalars.
        self.kw = {k: v for k, v in kw.items() if k not in ("rtol", "atol")}
        self.tol = {k: jnp.asarray(kw[k], dtype=jnp.float64) for k in ("rtol", "atol") if k in kw}
        self.model = _field(problem, "jax")
        self.y0 = jnp.asarray(problem.y0, dtype=jnp.float64)
        # Concrete output times closed over (not traced): diffrax then sizes a fixed-step loop by the grid.
        self.ts = jnp.asarray(problem.ts, dtype=jnp.float64)
        self.targets = None if targets is None else jnp.asarray(targets, dtype=jnp.float64)
        self.compile_s = 0.0
        self.compile_reused = False
        # Only what the task times is compiled here: a compile of a diffrax solve takes seconds.
        if targets is None:
            self._solve = self._program("solve", lambda: jax.jit(self._solve_fn), self.model, self.y0, self.tol)
        else:
            vg = jax.value_and_grad(self._loss_fn, argnums=(0, 1), has_aux=True)
            self._grad = self._program("gradient", lambda: jax.jit(vg), self.model, self.y0, self.targets, self.tol)

    def _key(self, what: str, *args: Any) -> tuple:
        """What a program of this driver depends on beyond its arguments' values."""
        leaves, treedef = self.jax.tree_util.tree_flatten(args)
        return (what, self.plugin.name, tuple(sorted(self.kw.items())), np.asarray(self.ts).tobytes(), treedef,
                tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x)))) for x in leaves))

    def _program(self, what: str, make: Callable[[], Any], *args: Any, timed: bool = True) -> Any:
        """The compiled ``make()`` for ``args``, from :data:`_PROGRAMS` or compiled now (timed into
        ``compile_s`` unless ``timed`` is False: the untimed passes' compiles are no figure)."""
        key = self._key(what, *args)
        if key in _PROGRAMS:
            if timed:
                self.compile_reused = True
            return _PROGRAMS[key]
        start = time.perf_counter()
        out = _PROGRAMS[key] = make().lower(*args).compile()
        if timed:
            self.compile_s += time.perf_counter() - start
        return out

    def _solve_fn(self, model, y0, tol):
        return self.plugin.solve(model, y0, self.ts, **self.kw, **tol)

    def _loss_fn(self, model, y0, targets, tol):
        ys, code, stats = self.plugin.solve(model, y0, self.ts, **self.kw, **tol)
        return self.jnp.sum((ys - targets) ** 2), (code, stats, ys)

    def _check(self, code: Any) -> None:
        status = self.plugin.status(code)  # reads the code: waits for the computation
        if status is not Status.OK:
            raise SolveFailed(status, self.plugin.message(status, self.kw["max_steps"]))

    def solve(self) -> Any:
        ys, code, stats = self._solve(self.model, self.y0, self.tol)
        self.jax.block_until_ready(ys)
        self._check(code)
        return ys, stats

    def trajectory(self, handle):
        return np.asarray(handle[0], dtype=np.float64)

    def instrumented_solve(self):
        # One host callback per evaluation both records its state and counts it (the harness's
        # count is the number of states, as in the numpy driver): a second, counting callback
        # doubled the pass's time, which at rtol 1e-10 is seconds per point.
        jax = self.jax
        field = _recorded_class()(self.model)
        run = self._program("instrumented", lambda: jax.jit(self._solve_fn), field, self.y0, self.tol, timed=False)
        _STATES.clear()
        ys, code, stats = run(field, self.y0, self.tol)
        jax.block_until_ready(ys)
        jax.effects_barrier()
        self._check(code)
        states = list(_STATES)
        _STATES.clear()
        return len(states), self.plugin.to_stats(stats), states

    def field_replay(self, states):
        jax, jnp = self.jax, self.jnp
        if not states:
            return lambda: None
        n = len(states)
        # Padded to a bucket, so that one program replays every state count up to it; the loop runs
        # over the first n only.
        pad = _bucket(n) - n
        ts = jnp.asarray(np.pad(np.array([s[0] for s in states], dtype=np.float64), (0, pad), mode="edge"))
        ys = np.stack([s[1] for s in states]).astype(np.float64)
        ys = jnp.asarray(np.pad(ys, [(0, pad)] + [(0, 0)] * (ys.ndim - 1), mode="edge"))
        count = jnp.asarray(n, dtype=jnp.int32)

        def run(model, ts, ys, count):
            # One evaluation after another, as in the solve; the sum keeps each one live.
            def body(i, acc):
                return acc + model(ts[i], ys[i])

            return jax.lax.fori_loop(0, count, body, jnp.zeros_like(ys[0]))

        compiled = self._program("replay", lambda: jax.jit(run), self.model, ts, ys, count, timed=False)
        model = self.model
        return lambda: jax.block_until_ready(compiled(model, ts, ys, count))

    def gradient(self):
        (loss, (code, _stats, ys)), grads = self._grad(self.model, self.y0, self.targets, self.tol)
        self.jax.block_until_ready(grads)
        self._check(code)
        return loss, grads, ys

    def flat_gradient(self, handle):
        loss, (g_model, g_y0), ys = handle
        # The model's leaves in pytree order: an MLP's W then b, layer by layer; a user's field's
        # leaves in the order of its shared weights (checked when the problem was loaded).
        parts = [np.asarray(x, np.float64).reshape(-1) for x in self.jax.tree_util.tree_leaves(g_model)]
        parts.append(np.asarray(g_y0, np.float64).reshape(-1))
        return float(loss), np.concatenate(parts), np.asarray(ys, np.float64)

    def instrumented_gradient(self):
        from odebench.backends.jax import instrumented_pass

        def loss_fn(f):
            ys, code, stats = self.plugin.solve(f, self.y0, self.ts, **self.kw, **self.tol)
            return self.jnp.sum((ys - self.targets) ** 2), (code, stats)

        # The process's one counter (reset by the pass): diffrax's own compiled solve then serves
        # every point of the curve (the tolerances are arrays, not static values).
        return instrumented_pass(self.plugin, loss_fn, self.model, method=self.kw["method"],
                                 max_steps=self.kw["max_steps"], counter=_COUNTER)


def make_driver(plugin: SolverPlugin, problem: Problem, kw: dict[str, Any], *, task: str,
                targets: np.ndarray | None = None, threads: int = 0) -> Driver:
    """The driver of one case.

    A solve runs in the plugin's own framework (scipy: numpy); a gradient in the framework of
    the plugin's backend (scipy: its torch black-box adjoint).

    Raises:
        ValueError: for a framework without a driver, or a gradient without targets.
    """
    framework = plugin.framework if task == "solve" else plugin.backend_framework()
    if task == "gradient" and targets is None:
        raise ValueError("the gradient task needs the loss's targets")
    if framework == "torch":
        return TorchDriver(plugin, problem, kw, targets)
    if framework == "jax":
        return JaxDriver(plugin, problem, kw, targets, threads)
    if framework == "numpy" and task == "solve":
        return NumpyDriver(plugin, problem, kw)
    raise ValueError(f"the workprecision workload has no {task} driver for framework {framework!r}; "
                     "valid: torch, jax (and numpy for solves)")
