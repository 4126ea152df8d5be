"""The declared seams: JAX plugins, the failure path in every workload, and the module structure."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

from odebench import JaxSolverPlugin, SolverPlugin, Status, registry
from odebench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- JAX plugin contract
class _HalfJax(JaxSolverPlugin):
    """A JAX plugin written from an incomplete reading of the contract: no ``to_stats``."""

    name = "halfjax"
    methods = {"euler": "Euler"}
    grad_modes = ("backprop",)

    def odeint(self, f, y0, ts, **kw):
        raise AssertionError("never run")

    def solve(self, f, y0, ts, **kw):
        raise AssertionError("never run")

    def status(self, code):
        return Status.OK

    def message(self, status, max_steps):
        return ""

    def counts_vjp(self, method):
        return True


def test_an_incomplete_jax_plugin_is_refused_at_registration_naming_what_is_missing():
    with pytest.raises(registry.PluginError) as err:
        registry.register(_HalfJax)
    message = str(err.value)
    assert message == ("cannot register '_HalfJax': _HalfJax does not implement to_stats "
                       "(declared abstract by JaxSolverPlugin)")
    assert "halfjax" not in registry.plugin_names()


def test_an_incomplete_jax_plugin_from_an_entry_point_is_unavailable_with_the_reason(monkeypatch):
    real = importlib.metadata.entry_points
    ep = importlib.metadata.EntryPoint("halfjax", f"{__name__}:_HalfJax", registry.GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep] if group == registry.GROUP else real(group=group))
    registry.refresh()
    try:
        assert "does not implement to_stats" in registry.entry("halfjax").available()
    finally:
        registry.refresh()


def test_every_registered_jax_plugin_implements_the_jax_contract():
    for name in registry.plugin_names():
        cls = registry.entry(name).load()
        if cls is not None and cls.framework == "jax":
            assert issubclass(cls, JaxSolverPlugin), name


def test_a_complete_plugin_registers_and_runs_in_process():
    torch = pytest.importorskip("torch")

    class Explicit(SolverPlugin):
        name = "explicit_euler_test"
        framework = "torch"
        methods = {"euler": "euler"}
        grad_modes = ("backprop",)

        def odeint(self, f, y0, ts, *, method, rtol=1e-7, atol=1e-9, step_size=None, grad_mode="backprop",
                   max_steps=100_000):
            from odebench import Solution, SolveStats

            self.check(method, grad_mode)
            ys = [y0]
            for t0, t1 in zip(ts[:-1], ts[1:]):
                ys.append(ys[-1] + (t1 - t0) * f(t0, ys[-1]))
            return Solution(torch.stack(ys), stats=SolveStats(n_steps=len(ts) - 1, nfe=len(ts) - 1))

    registry.register(Explicit)
    try:
        plugin = registry.get_plugin("explicit_euler_test")
        sol = plugin.odeint(lambda t, y: -y, torch.ones(1), torch.linspace(0, 1, 3), method="euler")
        assert sol.ok and float(sol.ys[-1]) == pytest.approx(0.25)
    finally:
        registry.unregister("explicit_euler_test")


# --------------------------------------------------------------------------- one failure path
def _case(suite: str, profile: str):
    s = load_suite(ROOT / "suites" / suite, profile)
    case = next(c for c in s.cases() if registry.entry(c.plugin).available() is None
                and not registry.entry(c.plugin).load().unsupported_reason(c.method, c.grad_mode, c.device))
    return case.to_dict(), s.config, registry.get_plugin(case.plugin)


def _oom(kind: str):
    if kind == "torch":
        import torch

        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if kind == "xla":
        return RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 21474836480 bytes.")
    return MemoryError()


@pytest.mark.parametrize("suite, profile, target, kind", [
    ("spiral", "quick", "odebench.workloads.train.case.get_backend", "torch"),
    ("memory", "quick", "odebench.workloads.memory.case.make_driver", "xla"),
    ("mnist", "quick", "odebench.workloads.mnist.case._run", "host"),
])
def test_a_simulated_out_of_memory_error_is_status_oom_in_every_workload(monkeypatch, suite, profile, target,
                                                                       kind):
    pytest.importorskip("torch")
    case, config, plugin = _case(suite, profile)

    def boom(*args, **kwargs):
        raise _oom(kind)

    monkeypatch.setattr(target, boom)
    rec = registry.get_workload(config["suite"]["workload"]).run_case(case, config, plugin)
    assert rec["status"] == "oom", rec
    assert "\n" not in rec["message"]


# --------------------------------------------------------------------------- structure
def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


MODULES = sorted((ROOT / "odebench").rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_boundaries(path):
    rel = path.relative_to(ROOT).as_posix()
    imports = _imports(path)
    # The harness finds plugins through the registry only, never by importing one.
    assert not any(i.startswith("odebench_plugins") for i in imports), rel
    if rel == "odebench/report.py":
        assert not any(i.startswith("odebench.runner") for i in imports)
    if rel.startswith("odebench/workloads/"):
        assert "odebench.report" not in imports and "odebench.runner" not in imports, rel
    if rel in ("odebench/suite.py", "odebench/schema.py", "odebench/records.py", "odebench/tables.py"):
        assert not any(i.startswith("odebench.workloads") for i in imports), rel
    if rel == "odebench/asvbench.py":
        assert not any(i.startswith("odebench.regress") for i in imports)
    # One concern per module: none grows past ~600 lines.
    assert len(path.read_text().splitlines()) <= 600, f"{rel} has grown past 600 lines"
