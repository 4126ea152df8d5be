"""odebench's own PyTorch ODE solvers (DESIGN §5).

``TorchCustomPlugin`` imports without torch; the solver API (``odeint``,
``odeint_adjoint``, ``solve``, ``SolverError``) is loaded on first access.
"""

from __future__ import annotations

from .plugin import TorchCustomPlugin

__all__ = ["TorchCustomPlugin", "odeint", "odeint_adjoint", "solve", "SolverError"]

_LAZY = {"odeint": "api", "odeint_adjoint": "api", "solve": "api", "SolverError": "adjoint"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
