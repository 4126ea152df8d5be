"""One failure path: every exception a case can raise maps to one status, the same in every workload."""

from __future__ import annotations

import pytest

from odebench import SolveFailed, Status, UnsupportedError
from odebench.failures import classify, one_line


@pytest.mark.parametrize("exc, status", [
    (SolveFailed(Status.MAX_STEPS, "reverse solve hit max_steps=10"), Status.MAX_STEPS),
    (SolveFailed(Status.DT_UNDERFLOW, "dt < 1e-12"), Status.DT_UNDERFLOW),
    (UnsupportedError("no method 'rk9'"), Status.UNSUPPORTED),
    (MemoryError("cannot allocate"), Status.OOM),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), Status.OOM),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes."), Status.OOM),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), Status.OOM),
    (TimeoutError("solver took too long"), Status.TIMEOUT),
    (ValueError("shapes (3,) and (4,) do not match"), Status.ERROR),
])
def test_classify(exc, status):
    got, message = classify(exc)
    assert got is status
    assert "\n" not in message and message


def test_torch_oom_error_type_is_oom():
    torch = pytest.importorskip("torch")
    assert classify(torch.OutOfMemoryError("CUDA error"))[0] is Status.OOM


def test_messages_are_one_line_and_cut_at_a_word():
    assert classify(ValueError("first line\nsecond line"))[1] == "ValueError: first line"
    long = " ".join(["word"] * 200)
    cut = one_line(long, limit=50)
    assert cut.endswith(" …") and len(cut) <= 52 and cut[:-2].split(" ")[-1] == "word"


def test_solve_failed_is_public_and_carries_its_status():
    import odebench

    exc = odebench.SolveFailed("nonfinite", "nan in the state")
    assert exc.status is Status.NONFINITE and str(exc) == "nonfinite: nan in the state"
