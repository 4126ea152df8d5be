"""NFE counting for the JAX backend: a counting wrapper around a vector field, and the untimed
instrumented pass (forward + backward with counting on, no update) that reads the counts.

Split from :mod:`odebench.backends.jax`, which re-exports these names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from odebench.backends.base import InstrumentedPass
from odebench.measure import NFECounter
from odebench.protocol import JaxSolverPlugin, SolveFailed, Status


@functools.cache
def _counting_parts() -> Any:
    """Build (once) the JAX counting wrapper; returns a namespace with ``Counted``."""
    import equinox as eqx
    import jax

    class Counted(eqx.Module):
        """``f(t, y)`` that reports each evaluation and (``on_vjp`` given) each VJP."""

        f: Any
        on_eval: Callable = eqx.field(static=True)
        on_vjp: Callable | None = eqx.field(static=True)

        def __call__(self, t, y):
            if self.on_vjp is None:  # plain: differentiable in both modes
                jax.debug.callback(self.on_eval)
                return self.f(t, y)
            return _counted_call((self.f, y), t, self.on_eval, self.on_vjp)

    def _call(fy, t):
        f, y = fy
        return f(t, y)

    @eqx.filter_custom_vjp
    def _counted_call(fy, t, on_eval, on_vjp):
        jax.debug.callback(on_eval)
        return _call(fy, t)

    @_counted_call.def_fwd
    def _counted_fwd(perturbed, fy, t, on_eval, on_vjp):
        del perturbed
        jax.debug.callback(on_eval)
        return _call(fy, t), None

    @_counted_call.def_bwd
    def _counted_bwd(residuals, grad_out, perturbed, fy, t, on_eval, on_vjp):
        del residuals, perturbed
        if on_vjp is not None:
            jax.debug.callback(on_vjp)
        # Re-linearise the raw field (uncounted): the count is of what the solver asks for.
        _, vjp = eqx.filter_vjp(lambda _fy: _call(_fy, t), fy)
        if grad_out is None:
            return jax.tree.map(lambda _: None, fy)
        (grad_fy,) = vjp(grad_out)
        return grad_fy

    return type("_CountingParts", (), {"Counted": Counted})


class _Callbacks:
    """Hashable (by identity) holder of a counter's callbacks: a static field of a jitted
    module must hash, and one holder per counter keeps the jit cache warm across passes."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def on_eval(self) -> None:
        self.counter.call()

    def on_vjp(self) -> None:
        self.counter.vjp()


def counted(f: Any, counter: Any, count_vjp: bool = True) -> Any:
    """``f(t, y)`` wrapped to report to ``counter`` on every evaluation and every VJP.

    Arguments:
        f: a JAX vector field ``f(t, y)`` (its array leaves stay differentiable leaves).
        counter: an object with ``call()`` and ``vjp()`` methods, normally
            :class:`odebench.measure.NFECounter` (whose ``phase`` splits forward and
            backward evaluations).
        count_vjp: count VJPs too. That makes the wrapper a ``custom_vjp``, which JAX
            cannot forward-differentiate, so pass False for implicit methods (they take
            Jacobians with ``jvp``; each Jacobian column then counts as one evaluation);
            a plugin says which with :meth:`~odebench.protocol.JaxSolverPlugin.counts_vjp`.

    Returns:
        An ``equinox.Module`` computing ``f(t, y)``. Each evaluation runs
        ``jax.debug.callback(counter.call)``; each vector-Jacobian product through it (a
        ``custom_vjp`` whose backward rule re-linearises ``f`` uncounted) runs
        ``counter.vjp``. Untimed use only; call ``jax.effects_barrier()`` before reading.
    """
    holder = counter.__dict__.get("_jax_callbacks")
    if holder is None:
        holder = _Callbacks(counter)
        counter.__dict__["_jax_callbacks"] = holder
    return _counting_parts().Counted(f, holder.on_eval, holder.on_vjp if count_vjp else None)


def instrumented_pass(plugin: JaxSolverPlugin, loss_fn: Callable[[Any], tuple[Any, tuple[Any, Any]]], model: Any,
                      *, method: str, max_steps: int, counter: NFECounter | None = None) -> InstrumentedPass:
    """One untimed forward + backward (``jax.vjp``) with a counting vector field; no update.

    Arguments:
        plugin: the JAX plugin that solves (its ``status``, ``message``, ``to_stats`` and
            ``counts_vjp`` read the outcome).
        loss_fn: ``loss_fn(f) -> (loss, (code, stats))``, the forward pass solving with the
            vector field ``f`` (the counted ``model``).
        model: the vector field; the gradient is taken with respect to its array leaves.
        method, max_steps: the solve's method (whether VJPs can be counted) and step budget
            (for the failure message).
        counter: reuse this counter (reset first), so repeated passes hit the jit cache.

    Returns:
        Forward evaluations (the forward solve), backward ones (a ``BacksolveAdjoint``'s
        reverse solve, a checkpointed loop's recomputation), VJPs through the field (None
        where the method's Jacobians need forward mode), and the solve's own statistics.

    Raises:
        SolveFailed: when the forward solve's status is not ok.
    """
    import jax

    counter = counter if counter is not None else NFECounter()
    counter.reset()
    count_vjp = plugin.counts_vjp(method)

    def counted_loss(m):
        return loss_fn(counted(m, counter, count_vjp))

    return _read_pass(plugin, counter, count_vjp, max_steps, lambda: jax.vjp(counted_loss, model, has_aux=True),
                      lambda vjp_fn, g: vjp_fn(g))


def _read_pass(plugin: JaxSolverPlugin, counter: NFECounter, count_vjp: bool, max_steps: int,
               forward: Callable[[], Any], backward: Callable[[Any, Any], Any]) -> InstrumentedPass:
    """Run an instrumented pass's forward (``-> (loss, vjp_fn, (code, stats))``) and backward
    (``(vjp_fn, cotangent) -> grads``), switching the counter's phase between them."""
    import jax
    import jax.numpy as jnp

    loss, vjp_fn, (code, stats) = forward()
    jax.block_until_ready(loss)
    # The counting callbacks run asynchronously: wait for every one before reading or switching phase.
    jax.effects_barrier()
    status = plugin.status(code)
    if status is not Status.OK:
        raise SolveFailed(status, plugin.message(status, max_steps))
    counter.phase = "bwd"
    grads = backward(vjp_fn, jnp.ones_like(loss))
    jax.block_until_ready(grads)
    jax.effects_barrier()
    return InstrumentedPass(loss=float(loss), nfe_fwd=counter.nfe_fwd, nfe_bwd=counter.nfe_bwd,
                            n_vjp=counter.n_vjp if count_vjp else None, saved_bytes=None,
                            stats=plugin.to_stats(stats))


class CompiledInstrumentedPass:
    """:func:`instrumented_pass` as two jitted programs, traced and compiled once per argument shape.

    The forward program returns the loss, its VJP (a pytree of residuals) and the solve's
    outcome; the backward program applies that VJP. Every later pass on arguments of the same
    shapes (a training run's snapshots) reuses both programs, where the eager pass re-runs
    JAX's tracing and linearisation in Python on every call. The counting is the same: the
    counting vector field's callbacks run inside the programs, the phase is switched between
    the two, and ``n_traces`` counts how often the forward program was traced.

    Arguments:
        plugin, method, max_steps: as :func:`instrumented_pass`.
        loss_fn: ``loss_fn(f, *args) -> (loss, (code, stats))``, the forward pass solving with
            the vector field ``f`` (the counted model) on the call's extra arguments.
        counter: the counter the callbacks report to (reset before each pass); it must stay
            the same object, or the programs are traced again.
    """

    def __init__(self, plugin: JaxSolverPlugin, loss_fn: Callable[..., tuple[Any, tuple[Any, Any]]], *,
                 method: str, max_steps: int, counter: NFECounter | None = None) -> None:
        import jax

        self.plugin = plugin
        self.max_steps = max_steps
        self.counter = counter if counter is not None else NFECounter()
        self.count_vjp = plugin.counts_vjp(method)
        self.n_traces = 0

        def forward(model: Any, *args: Any) -> tuple[Any, Any, Any]:
            self.n_traces += 1  # runs only while tracing
            return jax.vjp(lambda m: loss_fn(counted(m, self.counter, self.count_vjp), *args), model, has_aux=True)

        self._forward = jax.jit(forward)
        self._backward = jax.jit(lambda vjp_fn, g: vjp_fn(g))

    def __call__(self, model: Any, *args: Any) -> InstrumentedPass:
        """One pass at ``model`` (gradient with respect to its array leaves) on ``args``; no update.

        Raises:
            SolveFailed: when the forward solve's status is not ok.
        """
        self.counter.reset()
        return _read_pass(self.plugin, self.counter, self.count_vjp, self.max_steps,
                          lambda: self._forward(model, *args), self._backward)


__all__ = ["CompiledInstrumentedPass", "counted", "instrumented_pass"]
