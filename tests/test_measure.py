"""Measurement primitives: saved-bytes exactness, peak RSS, summaries, timers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odebench.measure import NFECounter, PeakRSS, saved_tensor_bytes, summarize, timed


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


def test_peak_rss_sees_a_large_allocation():
    with PeakRSS() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block.sum()
        del block
    assert mem.delta >= 60 * 2**20
    assert mem.method in ("VmHWM", "ru_maxrss")


def test_summarize_median_and_iqr():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0, None, float("nan")])
    assert s == {"median": 3.0, "iqr": 2.0, "n": 5}
    assert summarize([])["n"] == 0


def test_timed_syncs_around_the_work():
    calls = []
    out, seconds = timed(lambda: calls.append("work") or 7, lambda: calls.append("sync"))
    assert out == 7 and calls == ["sync", "work", "sync"] and seconds >= 0


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
