"""Framework backends: build a model from spec + shared weights, train it, sync, read memory."""

from __future__ import annotations

import importlib

from odebench.backends.base import Batch, InstrumentedPass, Trainer

#: framework → module implementing ``make_trainer`` (imported lazily: torch and jax are optional).
#: A backend module may also declare ``LAZY_IMPORTS``: modules its framework imports on first use
#: (inside a case's set-up), which a launcher (:mod:`odebench.launcher`) imports ahead instead.
BACKENDS = {"torch": "odebench.backends.torch", "jax": "odebench.backends.jax"}


def get_backend(framework: str):
    """Import and return the backend module for ``framework``.

    Raises:
        ValueError: for a framework with no backend (lists the valid ones).
    """
    if framework not in BACKENDS:
        raise ValueError(f"no backend for framework {framework!r}; valid: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[framework])


__all__ = ["BACKENDS", "Batch", "InstrumentedPass", "Trainer", "get_backend"]
