"""What every backend's trainer provides to the runner.

The runner owns timing: it calls :meth:`Trainer.forward` and :meth:`Trainer.backward`
inside its timers and :meth:`Trainer.sync` before each clock read. Everything a timer
must not see (NFE counting, saved-bytes hooks, snapshots) goes through the untimed
:meth:`Trainer.instrumented` and :meth:`Trainer.predict`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from odebench.protocol import SolveStats


@dataclass
class Batch:
    """One minibatch, as numpy, identical for every framework.

    Arguments:
        y0: initial states, shape ``(B, d)``.
        ts: times, shape ``(T,)``, starting at the window's start.
        ys: targets at ``ts``, shape ``(T, B, d)``.
    """

    y0: np.ndarray
    ts: np.ndarray
    ys: np.ndarray


@dataclass
class InstrumentedPass:
    """Counts from one untimed forward+backward pass (no optimiser update).

    ``nfe_fwd``: vector-field evaluations in the forward solve; ``nfe_bwd``: those during
    the backward pass (adjoint reverse solve, checkpoint recomputation); ``n_vjp``:
    vector-Jacobian products through the vector field; ``saved_bytes``: bytes autograd
    kept for backward (None where the framework cannot tell); ``stats``: the library's
    own statistics of the forward solve.
    """

    loss: float
    nfe_fwd: int | None
    nfe_bwd: int | None
    n_vjp: int | None
    saved_bytes: int | None = None
    stats: SolveStats = field(default_factory=SolveStats)


class Trainer:
    """A model, an optimiser and a plugin, ready to train. Subclassed per framework.

    Attributes:
        fused: True when forward and backward run as one compiled step and cannot be
            timed apart (then :meth:`forward` does the whole step, :meth:`backward` nothing).
        compile_s: seconds spent compiling (JAX), kept out of every timing column.
        n_traces: how many times the step was traced; more than one after warm-up means
            a recompilation landed inside the timed loop.
    """

    fused: bool = False
    compile_s: float | None = None
    n_traces: int | None = None

    def reset(self) -> None:
        """Restore the initial parameters and optimiser state, keeping compiled code.

        The runner warms up on the trainer itself, then resets it, so a JAX step is
        compiled once and training still starts from the shared initial weights.
        """
        raise NotImplementedError

    def to_batch(self, batch: Batch) -> Any:
        """Move a numpy batch into the framework and onto the device (untimed)."""
        raise NotImplementedError

    def forward(self, batch: Any) -> Any:
        """Solve and compute the loss; returns a handle for :meth:`backward`.

        Raises:
            SolveFailed: when the solve's status is not ok.
        """
        raise NotImplementedError

    def backward(self, handle: Any) -> None:
        """Gradients of the loss and one optimiser update."""
        raise NotImplementedError

    def loss_value(self, handle: Any) -> float:
        """The loss of a forward handle as a Python float (syncs)."""
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for all queued device work (``cuda.synchronize`` / ``block_until_ready``)."""

    def instrumented(self, batch: Any) -> InstrumentedPass:
        """An untimed forward+backward with counting on; the parameters are not updated."""
        raise NotImplementedError

    def predict(self, ts: np.ndarray, y0: np.ndarray) -> np.ndarray:
        """Trajectory of the current model from ``y0`` at ``ts`` as float64 numpy, no gradients."""
        raise NotImplementedError

    def parameters_numpy(self) -> list[np.ndarray]:
        """Current parameters as numpy arrays in the shared layer order (for the fairness gate)."""
        raise NotImplementedError

    def floor(self, batch: Any) -> tuple[Any, int] | None:
        """The eager floor of one iteration on ``batch`` and its forward steps, or None where the
        backend cannot replay its field alone (see :func:`odebench.backends.torch.floor_replay`)."""
        return None

    def eager(self) -> contextlib.AbstractContextManager:
        """A context in which a compiling plugin runs its solve op by op, compiling nothing (for
        untimed passes: the instrumented pass, predictions, the fairness gate). Default: no change."""
        return contextlib.nullcontext()
