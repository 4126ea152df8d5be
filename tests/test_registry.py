"""Declared capabilities of every registered plugin, and the registry's behaviour. What the
plugins do with them (the contract, orders, gradients, NFE) is in test_conformance.py."""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest

from odebench import registry
from odebench.protocol import (
    BATCH_STEPPING,
    DEVICES,
    FRAMEWORKS,
    GRAD_MODES,
    METHODS,
    NFE_SOURCES,
    SolverPlugin,
)

PLUGINS = registry.plugin_names()


def test_builtin_plugins_are_registered_through_entry_points():
    eps = {ep.name for ep in importlib.metadata.entry_points(group=registry.GROUP)}
    assert {"torchdiffeq", "torch_custom", "diffrax", "scipy", "torchode"} <= eps
    assert "torchdiffeq" in PLUGINS


@pytest.mark.parametrize("name", PLUGINS)
def test_capabilities_are_declared_data(name):
    cls = registry.entry(name).load()
    assert cls is not None, registry.entry(name).error
    assert issubclass(cls, SolverPlugin) and cls.name == name
    assert cls.framework in FRAMEWORKS
    assert set(cls.methods) <= set(METHODS) and cls.methods
    assert all(isinstance(v, str) and v for v in cls.methods.values())
    assert set(cls.grad_modes) <= set(GRAD_MODES) and cls.grad_modes
    assert set(cls.devices) <= set(DEVICES)
    reason = cls.available()
    assert reason is None or (reason.startswith("unavailable:") and "pip install odebench[" in reason)
    assert cls.nfe_source in NFE_SOURCES, (
        f"{name} declares nfe_source {cls.nfe_source!r}; valid: {', '.join(NFE_SOURCES)}")
    assert cls.batch_stepping in BATCH_STEPPING, (name, cls.batch_stepping)
    assert isinstance(cls.compiled, bool)
    described = cls.describe()
    assert described["name"] == name and described["methods"] == sorted(cls.methods)
    assert described["nfe_source"] == cls.nfe_source
    assert described["batch_stepping"] == cls.batch_stepping and described["compiled"] is cls.compiled


class _NeedsMissingFramework(SolverPlugin):
    name = "ghost"
    framework = "torch"
    requires = ("odebench_no_such_framework_xyz",)
    extra = "ghost"
    methods = {"euler": "euler"}
    grad_modes = ("backprop",)

    def odeint(self, f, y0, ts, **kw):  # never called: the plugin is unavailable
        raise AssertionError("unavailable plugins are not run")


def _fake_entry_points(monkeypatch, eps):
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: eps if group == registry.GROUP else real(group=group))
    registry.refresh()


def test_missing_framework_is_unavailable_with_install_command(monkeypatch):
    ep = importlib.metadata.EntryPoint("ghost", f"{__name__}:_NeedsMissingFramework", registry.GROUP)
    _fake_entry_points(monkeypatch, [ep])
    try:
        (row,) = registry.describe_all()
        assert row["available"] == ("unavailable: odebench_no_such_framework_xyz is not installed — "
                                    "`pip install odebench[ghost]`")
        with pytest.raises(RuntimeError, match="pip install odebench\\[ghost\\]"):
            registry.get_plugin("ghost")
    finally:
        registry.refresh()


def test_unimportable_plugin_is_listed_not_fatal(monkeypatch):
    eps = [importlib.metadata.EntryPoint("broken", "odebench_no_such_module:Plugin", registry.GROUP),
           importlib.metadata.EntryPoint("ghost", f"{__name__}:_NeedsMissingFramework", registry.GROUP)]
    _fake_entry_points(monkeypatch, eps)
    try:
        rows = {r["name"]: r for r in registry.describe_all()}
        assert rows["broken"]["available"].startswith("unavailable: cannot import odebench_no_such_module")
        assert "ghost" in rows
    finally:
        registry.refresh()


def test_duplicate_names_warn_and_keep_the_first(monkeypatch):
    eps = [importlib.metadata.EntryPoint("ghost", f"{__name__}:_NeedsMissingFramework", registry.GROUP),
           importlib.metadata.EntryPoint("ghost", "elsewhere:Other", registry.GROUP)]
    _fake_entry_points(monkeypatch, eps)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = registry.plugin_names()
        assert names == ["ghost"]
        assert any("duplicate odebench plugin name 'ghost'" in str(w.message) for w in caught)
    finally:
        registry.refresh()


def test_unknown_plugin_lists_registered():
    with pytest.raises(registry.UnknownPluginError, match="unknown plugin 'nosuch'; registered: .*torchdiffeq"):
        registry.get_plugin("nosuch")
