"""The cross-framework fairness gate (DESIGN §4, fairness).

Before a training case is timed, the same model, weights, data and loss are run in
float64 through the case's plugin and through a reference (torchdiffeq on the torch
backend): the initial loss and the losses after the first optimiser steps must agree to
a relative 1e-6. Solves use the method's own grid (fixed-step) or a tight tolerance
(adaptive), so the gate tests the set-up — weights, batches, loss, optimiser — and not
the solvers' error norms. A case that fails is recorded with status ``unfair`` and both
sets of values, and is not timed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Relative agreement the gate demands, and the tolerances of its adaptive solves.
GATE_RTOL = 1e-6
SOLVE_RTOL, SOLVE_ATOL = 1e-10, 1e-12
GATE_MAX_STEPS = 1_000_000
REFERENCE_PLUGINS = ("torchdiffeq", "torch_custom")


@dataclass
class GateResult:
    """Outcome of the gate: ``passed`` None means it could not run (no reference)."""

    passed: bool | None
    losses: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    reference_plugin: str | None = None
    max_rel: float | None = None
    note: str = ""

    def record(self) -> dict[str, Any]:
        return {"gate": {None: "skipped", True: "pass", False: "fail"}[self.passed],
                "gate_losses": self.losses, "gate_reference": self.reference,
                "gate_reference_plugin": self.reference_plugin, "gate_max_rel": self.max_rel,
                "gate_note": self.note}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> GateResult:
        """The result back from :meth:`record`'s fields (as a gate run in another process sends it)."""
        passed = {"skipped": None, "pass": True, "fail": False}[rec["gate"]]
        return cls(passed, list(rec["gate_losses"]), list(rec["gate_reference"]), rec["gate_reference_plugin"],
                   rec["gate_max_rel"], rec.get("gate_note", ""))


def compare(losses: list[float], reference: list[float], rtol: float = GATE_RTOL) -> tuple[bool, float]:
    """Whether two loss sequences agree to ``rtol`` (relative), and the largest relative difference."""
    a, b = np.asarray(losses, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False, float("inf")
    rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
    worst = float(rel.max()) if rel.size else 0.0
    return worst <= rtol, worst


def losses_of(plugin, spec, weights, batches, *, method: str, grad_mode: str, lr: float, optimizer: str,
              max_steps: int) -> list[float]:
    """Loss before each of ``len(batches)`` optimiser steps, in float64, through ``plugin``."""
    from odebench.backends import get_backend

    trainer = get_backend(plugin.backend_framework()).make_trainer(
        plugin, spec, weights, method=method, rtol=SOLVE_RTOL, atol=SOLVE_ATOL, grad_mode=grad_mode,
        max_steps=max_steps, lr=lr, optimizer=optimizer, dtype="float64", device="cpu")
    out = []
    # A compiling plugin's gate runs its solve eagerly (the same code, op by op): the gate checks the
    # set-up, and a float64 compile only for it would cost minutes (the plugin's tests pin its compiled
    # results to its eager ones).
    with trainer.eager():
        for batch in batches:
            handle = trainer.forward(trainer.to_batch(batch))
            trainer.backward(handle)
            out.append(trainer.loss_value(handle))
    return out


def fairness_gate(plugin, spec, weights, batches, *, method: str, grad_mode: str, lr: float, optimizer: str,
                  max_steps: int, reference_weights=None) -> GateResult:
    """Run the gate for one training case.

    Arguments:
        plugin: the case's plugin instance.
        spec, weights: the model and its shared initial weights.
        batches: the first few training batches (their number = optimiser steps checked).
        method, grad_mode, lr, optimizer, max_steps: the case's settings.
        reference_weights: the reference's weights (default: ``weights``); tests pass different
            ones to prove the gate can fail.

    Returns:
        A :class:`GateResult`; ``passed`` None when no reference plugin has the method.
    """
    from odebench import registry
    from odebench.protocol import FIXED_METHODS

    # Fixed-step methods must match step for step; adaptive ones at the gate's tight
    # tolerance all converge to the exact flow, so dopri5 stands in for a method the
    # reference lacks (lsoda, radau, ...).
    ref_method = method if method in FIXED_METHODS else None
    ref_name = None
    for name in REFERENCE_PLUGINS:
        e = registry.entry(name) if name in registry.plugin_names() else None
        if e is None or e.available() is not None or name == plugin.name:
            continue
        methods = e.load().methods
        if method in methods or (ref_method is None and "dopri5" in methods):
            ref_name, ref_method = name, method if method in methods else "dopri5"
            break
    if ref_name is None and plugin.name in REFERENCE_PLUGINS:
        ref_name, ref_method = plugin.name, method  # the reference itself: checks repeatability
    if ref_name is None:
        return GateResult(None, note=f"no reference plugin has method {method!r}")
    reference = registry.get_plugin(ref_name)
    # The gate's tight tolerance may need more steps than the case's budget: the budget
    # is the case's to fail, not the gate's.
    kw = dict(lr=lr, optimizer=optimizer, max_steps=max(max_steps, GATE_MAX_STEPS))
    ours = losses_of(plugin, spec, weights, batches, method=method, grad_mode=grad_mode, **kw)
    # The same grad mode where the reference has it: an adjoint's gradient differs from the
    # discrete one by the backward solve's error, so it must be compared with an adjoint.
    # checkpoint is the exact discrete gradient, so backprop stands in for it.
    ref_grad = grad_mode if grad_mode in reference.grad_modes else "backprop"
    theirs = losses_of(reference, spec, weights if reference_weights is None else reference_weights,
                       batches, method=ref_method, grad_mode=ref_grad, **kw)
    ok, worst = compare(ours, theirs)
    return GateResult(ok, ours, theirs, f"{ref_name} {ref_method} {ref_grad}", worst)


def _gate_by_name(plugin_name: str, spec, weights, batches, kw: dict[str, Any]) -> GateResult:
    from odebench import registry

    return fairness_gate(registry.get_plugin(plugin_name), spec, weights, batches, **kw)


def isolated_fairness_gate(plugin, spec, weights, batches, **kw: Any) -> GateResult:
    """:func:`fairness_gate` in a child process when the plugin's framework has global dtype state.

    JAX's float64 needs ``jax_enable_x64``, a process-wide switch: run in the case's own
    process it would leak into the timed float32 training, so for JAX the gate runs in a
    fresh interpreter. torch keeps dtypes per tensor and runs the gate in-process.
    """
    if plugin.framework != "jax":
        return fairness_gate(plugin, spec, weights, batches, **kw)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_gate_by_name, plugin.name, spec, weights, batches, kw).result()
