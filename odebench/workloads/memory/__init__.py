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

from typing import Any

from odebench.protocol import FIXED_METHODS
from odebench.schema import SuiteError
from odebench.workload import Workload
from odebench.workloads.memory import case, report
from odebench.workloads.memory.schema import AXES, COLUMNS, DEFAULTS, SECTIONS


class MemoryWorkload(Workload):
    """Peak memory and saved-for-backward bytes against the number of fixed steps (the memory suite)."""

    name = "memory"
    sections = SECTIONS
    defaults = DEFAULTS
    axes = AXES
    columns = COLUMNS
    summary_note = report.SUMMARY_NOTE

    def validate(self, config: dict[str, Any], where: str) -> None:
        """Fixed-step methods only; the MLP maps the state to itself; the class band is ``[lo, hi]``."""
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

    # What one case does and how the report shows it live in their own modules.
    run_case = staticmethod(case.run_case)
    summary = staticmethod(report.summary)
    figures = staticmethod(report.figures)
    sections_md = staticmethod(report.sections)


__all__ = ["MemoryWorkload"]
