"""The plugin contract, checked for every registered plugin, and the registry's behaviour."""

from __future__ import annotations

import importlib.metadata
import warnings

import numpy as np
import pytest

from odebench import registry
from odebench.problems import LinearSpiral
from odebench.protocol import (
    ADAPTIVE_METHODS,
    DEVICES,
    FIXED_METHODS,
    FRAMEWORKS,
    GRAD_MODES,
    METHODS,
    NFE_SOURCES,
    Solution,
    SolverPlugin,
    Status,
    UnsupportedError,
)

PLUGINS = registry.plugin_names()
SPIRAL = LinearSpiral()
A = np.asarray(SPIRAL.A)


def _available(name):
    reason = registry.entry(name).available()
    if reason:
        pytest.skip(f"{name}: {reason}")
    return registry.get_plugin(name)


def _field_and_state(framework: str, y0: np.ndarray, ts: np.ndarray):
    """The spiral's vector field, initial state and times in a plugin's framework (float64)."""
    if framework == "torch":
        import torch

        class Linear(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.A = torch.nn.Parameter(torch.as_tensor(A))

            def forward(self, t, y):
                return y @ self.A.T

        return Linear(), torch.as_tensor(y0), torch.as_tensor(ts)
    if framework == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        a = jnp.asarray(A)
        return (lambda t, y: y @ a.T), jnp.asarray(y0), jnp.asarray(ts)
    return (lambda t, y: y @ A.T), y0, ts


def test_builtin_plugins_are_registered_through_entry_points():
    eps = {ep.name for ep in importlib.metadata.entry_points(group=registry.GROUP)}
    assert {"torchdiffeq", "torch_custom", "diffrax", "scipy"} <= eps
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
    described = cls.describe()
    assert described["name"] == name and described["methods"] == sorted(cls.methods)
    assert described["nfe_source"] == cls.nfe_source


@pytest.mark.parametrize("name", PLUGINS)
def test_every_declared_nonstiff_method_solves_the_spiral(name):
    plugin = _available(name)
    ts = np.linspace(0.0, 1.0, 101)
    y0 = np.array([[2.0, 0.0], [0.5, -1.0]])
    exact = SPIRAL.exact(ts, y0[0]), SPIRAL.exact(ts, y0[1])
    exact = np.stack(exact, axis=1)
    for method in sorted(set(plugin.methods) & set(FIXED_METHODS + ADAPTIVE_METHODS)):
        f, y, t = _field_and_state(plugin.framework, y0, ts)
        # a budget far above the ~500 steps bosh3 takes: a broken controller fails, not hangs
        sol = plugin.odeint(f, y, t, method=method, rtol=1e-8, atol=1e-10, grad_mode=plugin.grad_modes[0],
                            max_steps=5_000)
        assert isinstance(sol, Solution) and sol.status is Status.OK, (method, sol.message)
        # a declared source of NFE reports a count for these explicit methods; "none" reports none
        nfe = sol.stats.nfe
        if plugin.nfe_source == "none":
            assert nfe is None, (method, nfe)
        else:
            assert isinstance(nfe, int) and nfe > 0, (method, nfe)
        ys = np.asarray(sol.ys.detach() if hasattr(sol.ys, "detach") else sol.ys)
        assert ys.shape == (len(ts), 2, 2)
        # Fixed steps on a 0.01 grid: euler is first order, so a loose bound. Adaptive ones
        # at rtol 1e-8: 1e-4 leaves room for dense output, whose order is below the
        # method's (torchdiffeq's dopri8 interpolant is off by 1e-5 here).
        tol = 0.1 if method == "euler" else 1e-3 if method in FIXED_METHODS else 1e-4
        assert np.max(np.abs(ys - exact)) < tol, method


@pytest.mark.parametrize("name", PLUGINS)
def test_undeclared_combinations_raise_unsupported(name):
    plugin = _available(name)
    missing_grad = next((g for g in GRAD_MODES if g not in plugin.grad_modes), None)
    method = next(iter(plugin.methods))
    assert plugin.unsupported_reason(method, plugin.grad_modes[0]) is None
    if missing_grad:
        assert missing_grad in plugin.unsupported_reason(method, missing_grad)
        f, y, t = _field_and_state(plugin.framework, np.array([[1.0, 0.0]]), np.linspace(0, 1, 3))
        with pytest.raises(UnsupportedError):
            plugin.odeint(f, y, t, method=method, grad_mode=missing_grad)
    missing_method = next(m for m in METHODS if m not in plugin.methods)
    assert plugin.unsupported_reason(missing_method, plugin.grad_modes[0])


class _NeedsMissingFramework(SolverPlugin):
    name = "ghost"
    framework = "torch"
    requires = ("odebench_no_such_framework_xyz",)
    extra = "ghost"
    methods = {"euler": "euler"}
    grad_modes = ("backprop",)


def _fake_entry_points(monkeypatch, eps):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: eps)
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
