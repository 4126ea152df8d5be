"""Framework backends: build a model from spec + shared weights, train it, sync, read memory."""

from __future__ import annotations

import importlib

from odebench.backends.base import Batch, InstrumentedPass, Trainer

#: framework → module implementing ``make_trainer`` (imported lazily: torch and jax are optional).
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
