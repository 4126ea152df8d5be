"""Discovery of solver plugins and workloads through entry points, or registration in-process.

Two entry-point groups: ``odebench.plugins`` (classes derived from
:class:`~odebench.protocol.SolverPlugin`) and ``odebench.workloads`` (classes derived from
:class:`~odebench.workload.Workload`). Discovery is lazy and cached: entry points are read
on first use and a class is imported only when asked for. Plugin modules import their
framework lazily, so a plugin whose framework is missing still loads and reports itself
unavailable with the install command; one whose module cannot be imported, or that does not
implement its contract, is listed unavailable with the reason. Built-in plugins and
workloads register exactly like a third party's.

:func:`register` and :func:`register_workload` add a class in the running process (a
notebook, a test). They check the contract at once: a class that misses an abstract method
is refused with a one-line :class:`PluginError` naming what is missing.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import warnings
from dataclasses import dataclass
from typing import Any

from odebench.protocol import SolverPlugin
from odebench.workload import Workload

GROUP = "odebench.plugins"
WORKLOAD_GROUP = "odebench.workloads"


class UnknownPluginError(KeyError):
    """No plugin (or workload) of that name is registered (message lists the registered ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


class PluginError(TypeError):
    """A class does not implement the contract it registers for (message is one line)."""


def contract_error(cls: Any, base: type) -> str | None:
    """Why ``cls`` cannot serve as a ``base`` (not a subclass, abstract methods left, no name), or None."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return f"{getattr(cls, '__name__', cls)!r} is not a {base.__name__} subclass"
    if inspect.isabstract(cls):
        missing = sorted(cls.__abstractmethods__)
        return (f"{cls.__name__} does not implement {', '.join(missing)} "
                f"(declared abstract by {_declaring(cls, missing[0])})")
    if not getattr(cls, "name", ""):
        return f"{cls.__name__} has no name (set the class attribute `name`)"
    return None


def _declaring(cls: type, method: str) -> str:
    for klass in reversed(cls.__mro__):
        if method in getattr(klass, "__abstractmethods__", ()) or \
                getattr(getattr(klass, method, None), "__isabstractmethod__", False):
            return klass.__name__
    return cls.__mro__[1].__name__


@dataclass
class PluginEntry:
    """A registered class: its entry point (or the class itself), and the class once loaded."""

    name: str
    entry_point: importlib.metadata.EntryPoint | None
    base: type = SolverPlugin
    _cls: type | None = None
    _error: str | None = None

    def load(self) -> type | None:
        """The class, or None when its module cannot be imported or it breaks the contract."""
        if self._cls is None and self._error is None and self.entry_point is not None:
            try:
                cls = self.entry_point.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                self._error = f"unavailable: cannot import {self.entry_point.value}: {type(exc).__name__}: {exc}"
            else:
                why = contract_error(cls, self.base)
                if why:
                    self._error = f"unavailable: {self.entry_point.value}: {why}"
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
        if cls is None:
            return self._error
        return cls.available() if self.base is SolverPlugin else None


_REGISTERED: dict[str, dict[str, PluginEntry]] = {GROUP: {}, WORKLOAD_GROUP: {}}


@functools.cache
def _discovered(group: str) -> dict[str, PluginEntry]:
    base = SolverPlugin if group == GROUP else Workload
    found: dict[str, PluginEntry] = {}
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name in found:
            if found[ep.name].entry_point.value != ep.value:
                kind = "plugin" if group == GROUP else "workload"
                warnings.warn(
                    f"duplicate odebench {kind} name {ep.name!r}: {ep.value} ignored, "
                    f"{found[ep.name].entry_point.value} kept", stacklevel=2)
            continue
        found[ep.name] = PluginEntry(ep.name, ep, base)
    return found


def _entries(group: str = GROUP) -> dict[str, PluginEntry]:
    # Classes registered in-process take precedence over entry points of the same name.
    return dict(sorted((_discovered(group) | _REGISTERED[group]).items()))


def refresh() -> None:
    """Forget the cached discovery (after installing a plugin in the same process)."""
    _discovered.cache_clear()


def _register(cls: Any, base: type, group: str, replace: bool) -> type:
    why = contract_error(cls, base)
    if why:
        raise PluginError(f"cannot register {getattr(cls, '__name__', cls)!r}: {why}")
    if cls.name in _entries(group) and not replace:
        raise PluginError(f"cannot register {cls.__name__!r}: the name {cls.name!r} is taken "
                          "(pass replace=True to shadow it)")
    _REGISTERED[group][cls.name] = PluginEntry(cls.name, None, base, _cls=cls)
    return cls


def register(cls: Any, *, replace: bool = False) -> type:
    """Register a solver plugin class in this process (usable as a class decorator).

    Arguments:
        cls: a :class:`~odebench.protocol.SolverPlugin` subclass with every abstract method.
        replace: shadow a plugin of the same name.

    Raises:
        PluginError: one line naming what the class lacks, or a taken name.
    """
    return _register(cls, SolverPlugin, GROUP, replace)


def register_workload(cls: Any, *, replace: bool = False) -> type:
    """Register a :class:`~odebench.workload.Workload` subclass in this process (see :func:`register`).

    A workload registered in-process runs with ``measure.isolation = "inline"``; for
    fresh-process cases register it through the ``odebench.workloads`` entry-point group.
    """
    return _register(cls, Workload, WORKLOAD_GROUP, replace)


def unregister(name: str, *, workload: bool = False) -> None:
    """Forget a class registered with :func:`register` / :func:`register_workload`."""
    _REGISTERED[WORKLOAD_GROUP if workload else GROUP].pop(name, None)


def plugin_names() -> list[str]:
    """Names of all registered plugins, available or not."""
    return list(_entries(GROUP))


def entry(name: str) -> PluginEntry:
    """The registry entry for the plugin ``name``.

    Raises:
        UnknownPluginError: with the registered names.
    """
    entries = _entries(GROUP)
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
    """One dict per registered plugin: name, framework, version, methods, grad modes, devices,
    NFE source, availability."""
    rows = []
    for name, e in _entries(GROUP).items():
        cls = e.load()
        if cls is None:
            rows.append({"name": name, "framework": None, "version": None, "methods": [],
                         "grad_modes": [], "devices": [], "nfe_source": None, "batch_stepping": None,
                         "compiled": None, "available": e.error})
        else:
            rows.append(cls.describe())
    return rows


def workload_names() -> list[str]:
    """Names of all registered workloads."""
    return list(_entries(WORKLOAD_GROUP))


@functools.cache
def _workload_instance(cls: type) -> Workload:
    return cls()


def get_workload(name: str) -> Workload:
    """The workload ``name`` (one shared instance per class).

    Raises:
        UnknownPluginError: for an unknown name (lists the registered ones), or a workload
            whose entry point is broken (with the reason).
    """
    entries = _entries(WORKLOAD_GROUP)
    if name not in entries:
        raise UnknownPluginError(f"unknown workload {name!r}; registered: {', '.join(entries) or 'none'}")
    cls = entries[name].load()
    if cls is None:
        raise UnknownPluginError(f"workload {name!r} is {entries[name].error}")
    return _workload_instance(cls)
