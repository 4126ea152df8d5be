"""Stopping a run cleanly: SIGTERM (and SIGHUP) raise in the main thread as Ctrl-C does.

Python turns SIGINT into :class:`KeyboardInterrupt`; SIGTERM's default action ends the
process at once, skipping every ``finally``, so a case's worker (in a session of its own,
out of reach of the terminal's signals) would keep computing and its temporary folder
would stay. With :func:`terminate_raises` both signals unwind the stack the same way: the
runner stops the worker's process group, temporary folders are removed, and the command
line names the folder to ``--resume``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: Signals that become :class:`Terminated` (SIGHUP: the terminal went away).
SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """A termination signal arrived (a BaseException, so ``except Exception`` does not swallow it).

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """The conventional exit status after a signal: 128 + its number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    A signal set to be ignored when the block starts (``nohup`` ignores SIGHUP) stays ignored.
    After the first signal the others are ignored, so a second SIGTERM cannot cut the cleanup
    short. Outside the main thread (where Python cannot set handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
