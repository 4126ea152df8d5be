"""Plugin discovery through the ``odebench.plugins`` entry-point group.

Discovery is lazy and cached: entry points are read on first use and a plugin class is
imported only when asked for. Plugin modules import their framework lazily, so a plugin
whose framework is missing still loads and reports itself unavailable with the install
command; one whose module cannot even be imported is listed unavailable with the error.
Built-in plugins register exactly like a third party's.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from dataclasses import dataclass

from odebench.protocol import SolverPlugin

GROUP = "odebench.plugins"


class UnknownPluginError(KeyError):
    """No plugin of that name is registered (message lists the registered ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class PluginEntry:
    """A registered plugin: its entry point, and the class once loaded (or why it failed)."""

    name: str
    entry_point: importlib.metadata.EntryPoint
    _cls: type[SolverPlugin] | None = None
    _error: str | None = None

    def load(self) -> type[SolverPlugin] | None:
        """The plugin class, or None when its module cannot be imported (see :attr:`error`)."""
        if self._cls is None and self._error is None:
            try:
                cls = self.entry_point.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                self._error = f"unavailable: cannot import {self.entry_point.value}: {type(exc).__name__}: {exc}"
            else:
                if not (isinstance(cls, type) and issubclass(cls, SolverPlugin)):
                    self._error = f"unavailable: {self.entry_point.value} is not a SolverPlugin subclass"
                else:
                    self._cls = cls
        return self._cls

    @property
    def error(self) -> str | None:
        self.load()
        return self._error

    def available(self) -> str | None:
        """None when usable here, else the reason (with the install command)."""
        cls = self.load()
        return self._error if cls is None else cls.available()


@functools.cache
def _entries() -> dict[str, PluginEntry]:
    found: dict[str, PluginEntry] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in found:
            if found[ep.name].entry_point.value != ep.value:
                warnings.warn(
                    f"duplicate odebench plugin name {ep.name!r}: {ep.value} ignored, "
                    f"{found[ep.name].entry_point.value} kept", stacklevel=2)
            continue
        found[ep.name] = PluginEntry(ep.name, ep)
    return dict(sorted(found.items()))


def refresh() -> None:
    """Forget the cached discovery (after installing a plugin in the same process)."""
    _entries.cache_clear()


def plugin_names() -> list[str]:
    """Names of all registered plugins, available or not."""
    return list(_entries())


def entry(name: str) -> PluginEntry:
    """The registry entry for ``name``.

    Raises:
        UnknownPluginError: with the registered names.
    """
    entries = _entries()
    if name not in entries:
        raise UnknownPluginError(f"unknown plugin {name!r}; registered: {', '.join(entries) or 'none'}")
    return entries[name]


def get_plugin(name: str) -> SolverPlugin:
    """An instance of the plugin ``name``.

    Raises:
        UnknownPluginError: if not registered.
        RuntimeError: if registered but unavailable here (the message says why and how to fix it).
    """
    e = entry(name)
    reason = e.available()
    if reason:
        raise RuntimeError(f"plugin {name!r} is {reason}")
    return e.load()()


def describe_all() -> list[dict]:
    """One dict per registered plugin: name, framework, version, methods, grad modes, availability."""
    rows = []
    for name, e in _entries().items():
        cls = e.load()
        if cls is None:
            rows.append({"name": name, "framework": None, "version": None, "methods": [],
                         "grad_modes": [], "devices": [], "batch_stepping": None, "compiled": None,
                         "available": e.error})
        else:
            rows.append(cls.describe())
    return rows
