"""Measurement primitives: saved-bytes exactness, peak RSS, summaries, timers, GC."""

from __future__ import annotations

import builtins
import gc
import threading
import time

import numpy as np
import pytest
import torch

from odebench.measure import NFECounter, PeakRSS, gc_off, saved_tensor_bytes, summarize, timed

MiB = 2**20


def test_saved_bytes_is_exact_on_a_hand_computable_model():
    x = torch.randn(4, 3, dtype=torch.float32)  # an input: kept by the matmul for W's gradient
    w = torch.randn(3, 5, dtype=torch.float32, requires_grad=True)  # a parameter: not counted
    with saved_tensor_bytes() as saved:
        h = torch.tanh(x @ w)  # tanh keeps its output: 4×5 float32
        loss = (h * h).sum()  # mul keeps h (already counted: same storage) twice
    assert saved["bytes"] == 4 * 3 * 4 + 4 * 5 * 4
    assert saved["tensors"] == 2
    loss.backward()


def test_saved_bytes_are_linear_in_steps_for_backprop():
    lin = torch.nn.Linear(8, 8).double()

    def bytes_for(n):
        y = torch.ones(16, 8, dtype=torch.float64)
        with saved_tensor_bytes() as saved:
            for _ in range(n):
                y = y + 0.1 * torch.tanh(lin(y))
        return saved["bytes"]

    # Each step keeps the Linear input and the tanh output: 2 × 16 × 8 float64.
    assert bytes_for(6) - bytes_for(5) == 2 * 16 * 8 * 8


def _touch(n_bytes: int) -> np.ndarray:
    block = np.ones(n_bytes // 8)  # np.ones writes every page: resident, not just reserved
    assert block.sum() == n_bytes // 8
    return block


def _big_peak_before() -> None:
    """200 MiB resident and freed again: a peak of the process, not of the region after it."""
    block = _touch(200 * MiB)
    del block


def test_peak_rss_sees_a_large_allocation():
    with PeakRSS() as mem:
        block = _touch(64 * MiB)
        del block
    assert mem.method == "VmHWM"  # clear_refs is writable on the Linux machines tests run on
    assert 60 * MiB <= mem.delta < 120 * MiB


def test_peak_rss_is_the_regions_not_an_earlier_one():
    _big_peak_before()
    with PeakRSS() as mem:
        block = _touch(1 * MiB)
        del block
    assert mem.method == "VmHWM"
    assert 0 <= mem.delta < 20 * MiB, mem.delta / MiB


@pytest.fixture
def no_clear_refs(monkeypatch):
    """Writing /proc/self/clear_refs refused, as in containers that forbid it."""
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if str(file) == "/proc/self/clear_refs":
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


def test_peak_rss_without_reset_samples_the_region(no_clear_refs):
    _big_peak_before()
    with PeakRSS() as mem:
        block = _touch(50 * MiB)
        time.sleep(0.05)  # held for 50 sampling periods
        del block
    # the region's 50 MiB, never the 200 MiB peak from before it
    assert 45 * MiB <= mem.delta < 120 * MiB, mem.delta / MiB
    assert mem.method.startswith("sampled VmRSS every 1 ms") and "PermissionError" in mem.method


def test_peak_rss_without_reset_sees_nothing_from_before(no_clear_refs):
    _big_peak_before()
    with PeakRSS() as mem:
        time.sleep(0.01)
    assert 0 <= mem.delta < 20 * MiB, mem.delta / MiB
    assert mem.method.startswith("sampled")


def test_peak_rss_without_proc_is_nan_with_reason(monkeypatch):
    from odebench import measure

    monkeypatch.setattr(measure, "_proc_status_kb", lambda key: None)
    with PeakRSS() as mem:
        block = _touch(8 * MiB)
        del block
    assert mem.method.startswith("unavailable: ") and "VmRSS" in mem.method
    assert np.isnan(mem.delta)


def test_summarize_median_and_iqr():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0, None, float("nan")])
    assert s == {"median": 3.0, "iqr": 2.0, "n": 5}
    assert summarize([])["n"] == 0


def test_timed_syncs_around_the_work():
    calls = []
    out, seconds = timed(lambda: calls.append("work") or 7, lambda: calls.append("sync"))
    assert out == 7 and calls == ["sync", "work", "sync"]
    assert 0 < seconds < 1.0


class _Device:
    """Asynchronous "device work": ``launch`` queues a job that runs for ``seconds`` in a
    thread and returns at once; ``sync`` waits for every queued job (like a CUDA sync)."""

    def __init__(self):
        self.queue: list[threading.Thread] = []

    def launch(self, seconds: float) -> None:
        job = threading.Thread(target=time.sleep, args=(seconds,))
        job.start()
        self.queue.append(job)

    def sync(self) -> None:
        while self.queue:
            self.queue.pop().join()


def test_timed_bills_asynchronous_work_to_fn():
    """fn returns before its device work finishes: the end must be read after the sync."""
    device = _Device()

    def fn():
        device.launch(0.05)
        return "queued"

    out, seconds = timed(fn, device.sync)
    assert out == "queued" and not device.queue
    assert seconds >= 0.05


def test_timed_does_not_bill_earlier_work_to_fn():
    """Work queued before the timer is waited for before the start is read."""
    device = _Device()
    device.launch(0.3)
    _, seconds = timed(lambda: device.launch(0.05), device.sync)
    assert 0.05 <= seconds < 0.25


def test_gc_off_disables_the_collector_inside_and_restores_it():
    assert gc.isenabled()
    with gc_off():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_off():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), gc_off():
        raise RuntimeError("the measured region failed")
    assert gc.isenabled()  # restored on an exception too


def test_nfe_counter_phases():
    c = NFECounter()
    c.call()
    c.call()
    c.phase = "bwd"
    c.call()
    c.vjp()
    assert (c.nfe_fwd, c.nfe_bwd, c.n_vjp) == (2, 1, 1)
    c.reset()
    assert (c.nfe_fwd, c.nfe_bwd, c.n_vjp, c.phase) == (0, 0, 0, "fwd")


@pytest.mark.parametrize("bad", [float("inf")])
def test_summarize_ignores_nonfinite(bad):
    assert summarize([1.0, bad])["n"] == 1
