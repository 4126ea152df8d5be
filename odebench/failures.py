"""One failure path: any exception raised while measuring a case → ``(Status, message)``.

Every workload, the runner and the asv bridge turn exceptions into a record's status
here and nowhere else, so the same failure gets the same status whatever measured it: a
CUDA or XLA out-of-memory error is ``oom`` in every workload, a solver's own failure keeps
its status (``max_steps``, ``dt_underflow``, ``nonfinite``), and anything unexpected is
``error`` with the exception's type and first line.
"""

from __future__ import annotations

from odebench.protocol import SolveFailed, Status, UnsupportedError

#: Substrings of an exception's text that mean the device or host ran out of memory
#: (torch's CUDA allocator, XLA's ``RESOURCE_EXHAUSTED``, cuDNN / cuBLAS allocation failures).
OOM_MARKERS = ("out of memory", "resource_exhausted", "cudnn_status_alloc_failed",
               "cublas_status_alloc_failed", "failed to allocate")


def one_line(text: str, limit: int = 300) -> str:
    """The first line of ``text``, cut at a word boundary with an ellipsis past ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def classify(exc: BaseException) -> tuple[Status, str]:
    """The status and one-line message a record gets for ``exc``.

    Arguments:
        exc: what was raised while a case was being measured.

    Returns:
        ``(status, message)``:
        :class:`~odebench.protocol.SolveFailed` → its own status and message;
        :class:`~odebench.protocol.UnsupportedError` → ``unsupported``;
        ``MemoryError`` and any exception whose text marks an out-of-memory condition
        (torch ``OutOfMemoryError``, XLA ``RESOURCE_EXHAUSTED``) → ``oom``;
        ``TimeoutError`` → ``timeout``; anything else → ``error``, as ``Type: first line``.
    """
    if isinstance(exc, SolveFailed):
        return exc.status, one_line(exc.message)
    if isinstance(exc, UnsupportedError):
        return Status.UNSUPPORTED, one_line(str(exc))
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or \
            any(marker in text.lower() for marker in OOM_MARKERS):
        return Status.OOM, one_line(text)
    if isinstance(exc, TimeoutError):
        return Status.TIMEOUT, one_line(text)
    return Status.ERROR, one_line(text)


def failure_fields(exc: BaseException) -> dict[str, str]:
    """``{"status": ..., "message": ...}`` for a record, from :func:`classify`."""
    status, message = classify(exc)
    return {"status": str(status), "message": message}


__all__ = ["OOM_MARKERS", "SolveFailed", "classify", "failure_fields", "one_line"]
