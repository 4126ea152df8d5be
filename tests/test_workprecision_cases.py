"""Cases of the workprecision workload: convergence per plugin, loop time, gradients, and the suite's checks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from odebench import registry
from odebench.protocol import FIXED_METHODS
from odebench.schema import SuiteError
from odebench.suite import load_suite
from odebench.workloads.workprecision import problems
from odebench.workloads.workprecision.case import run_case
from odebench.workloads.workprecision.drivers import make_driver, solve_kwargs
from odebench.workloads.workprecision.gradref import fd_check, reference_gradient
from odebench.workloads.workprecision.schema import PROBLEMS

SUITE = ROOT / "suites" / "workprecision"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """References and reference gradients in a cache of this test session's own."""
    monkeypatch.setenv("ODEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "wp-cache"))


def _config(**problems_over):
    over = {"measure.repeats": 1, "measure.warmup": 1}
    over |= {f"problems.{k}": v for k, v in problems_over.items()}
    return load_suite(SUITE, "quick", over).config


def _case(plugin, method, problem="linear_spiral", task="solve", grad=None, rtol=1e-6, n_steps=0):
    cls = registry.entry(plugin).load()
    grad = grad or ("backprop" if "backprop" in cls.grad_modes else cls.grad_modes[0])
    fixed = n_steps > 0
    return {"plugin": plugin, "method": method, "grad_mode": grad, "rtol": None if fixed else rtol,
            "atol": None if fixed else rtol * 1e-3, "seed": 0, "device": "cpu", "problem": problem, "task": task,
            "n_steps": n_steps}


def _adaptive():
    out = []
    for name in registry.plugin_names():
        entry = registry.entry(name)
        if entry.available() is not None:
            continue
        cls = entry.load()
        if cls.compiled:  # its eager twin covers the methods; test_torchode_plugin pins the two equal
            continue
        for method in sorted(set(cls.methods) - set(FIXED_METHODS)):
            marks = [pytest.mark.slow] if cls.framework == "jax" else []  # a compile per tolerance
            out.append(pytest.param(name, method, id=f"{name}-{method}", marks=marks))
    return out


@pytest.mark.parametrize("plugin, method", _adaptive())
def test_each_adaptive_method_converges_on_the_linear_spiral_over_four_decades(plugin, method):
    config = _config(linear_spiral={"t1": 2.0})
    rtols = (1e-3, 1e-5, 1e-7)
    recs = [run_case(_case(plugin, method, rtol=r), config, registry.get_plugin(plugin)) for r in rtols]
    assert all(r["status"] == "ok" for r in recs), [r["message"] for r in recs]
    errs = [r["err_l2"] for r in recs]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 1e-2 * errs[0], errs  # four decades of rtol buy at least two of error
    assert all(r["nfe_fwd"] > 0 and r["steps"] > 0 for r in recs)


@pytest.mark.parametrize("plugin, method, n_steps", [("torch_custom", "dopri5", 0), ("scipy", "dopri5", 0),
                                                     ("torchdiffeq", "rk4", 64)])
def test_loop_time_is_non_negative_and_below_the_solve_time(plugin, method, n_steps):
    rec = run_case(_case(plugin, method, n_steps=n_steps), _config(), registry.get_plugin(plugin))
    assert rec["status"] == "ok", rec["message"]
    assert rec["field_s"] > 0 and rec["time_s_min"] > 0
    assert 0.0 <= rec["loop_s_per_step"] * rec["steps"] <= rec["time_s_min"]
    assert rec["time_s_min"] <= rec["time_s"]
    if registry.entry(plugin).load().nfe_source == "counter":  # the library's own tally
        assert rec["nfe_fwd"] == rec["nfe_native"]
    if n_steps:
        assert rec["steps"] == n_steps and rec["nfe_fwd"] == 4 * n_steps


@pytest.mark.parametrize("plugin", ["torch_custom", "diffrax"])
def test_states_are_replayed_as_the_solve_evaluated_them(plugin):
    if plugin not in registry.plugin_names() or registry.entry(plugin).available():
        pytest.skip(f"{plugin} is not installed")
    config = _config()
    problem = problems.build("vanderpol", config, 0)
    kw = solve_kwargs(_case(plugin, "tsit5", problem="vanderpol"), problem)
    driver = make_driver(registry.get_plugin(plugin), problem, kw, task="solve", threads=1)
    nfe, stats, states = driver.instrumented_solve()
    # The harness's count agrees with the library's own, state for state.
    assert nfe == len(states) == stats.nfe
    assert np.allclose(np.asarray(states[0][1]), problem.y0)
    # A second instrumented solve in the process (the compiled program reused) counts afresh.
    again, _, states2 = driver.instrumented_solve()
    assert again == nfe and len(states2) == nfe


def test_the_gradient_reference_agrees_with_finite_differences():
    config = _config(neural_spiral={"t1": 5.0, "n_points": 5})
    problem = problems.build("neural_spiral", config, 0)
    targets = problems.loss_targets(problem, 0, 1.0)
    ref = reference_gradient(problem, targets, config, 0)
    assert ref.fd < 1e-6 and ref.xcheck < 1e-8, (ref.fd, ref.xcheck)
    assert ref.grad.size == problem.mlp[0].n_params + problem.y0.size
    # The check itself is sharp: a gradient off by 1e-4 in one entry fails it.
    bad = ref.grad.copy()
    bad[0] += 1e-4 * np.linalg.norm(ref.grad)
    worst = fd_check(problem, targets, bad, directions=3, step=1e-4, rtol=1e-13, atol=1e-14, seed=0)
    assert worst > 1e-6
    assert reference_gradient(problem, targets, config, 0).fd == ref.fd  # read back from the cache


@pytest.mark.parametrize("plugin, grad", [("torch_custom", "adjoint"), ("torch_custom", "checkpoint"),
                                          ("scipy", "adjoint")])
def test_a_gradient_case_measures_error_cost_and_memory(plugin, grad):
    config = _config(neural_spiral={"t1": 5.0, "n_points": 5})
    rec = run_case(_case(plugin, "dopri5", problem="neural_spiral", task="gradient", grad=grad, rtol=1e-8),
                   config, registry.get_plugin(plugin))
    assert rec["status"] == "ok", rec["message"]
    assert rec["grad_err"] < 1e-5 and rec["grad_err_y0"] < 1e-5 and rec["grad_ref_fd"] < 1e-6
    assert rec["nfe_fwd"] > 0 and rec["nfe_bwd"] > 0 and rec["time_s"] > 0
    assert rec["saved_bytes"] is not None and rec["peak_bytes"] >= 0
    assert rec["err_l2"] < 1e-5


def test_a_gradient_on_a_problem_without_a_network_is_unsupported():
    rec = run_case(_case("torch_custom", "dopri5", problem="lorenz", task="gradient"), _config(),
                   registry.get_plugin("torch_custom"))
    assert rec["status"] == "unsupported" and "neural" in rec["message"]


def test_an_explicit_method_on_a_stiff_problem_is_a_failure_row_not_a_crash():
    config = _config(robertson={"t1": 1.0, "n_points": 5, "explicit_max_steps": 200})
    rec = run_case(_case("torch_custom", "dopri5", problem="robertson"), config, registry.get_plugin("torch_custom"))
    assert rec["status"] in ("max_steps", "dt_underflow", "nonfinite"), rec
    assert "\n" not in rec["message"] and rec["case_wall_s"] < 60 and rec["max_steps_used"] == 200
    # The implicit methods keep the problem's full budget.
    rec = run_case(_case("scipy", "radau", problem="robertson"), config, registry.get_plugin("scipy"))
    assert rec["status"] == "ok" and rec["max_steps_used"] == 20_000 and rec["err_l2"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("grad", ["backprop", "adjoint-seminorm"])
def test_a_jax_gradient_case(grad):
    config = _config(neural_wide={"t1": 1.0, "n_points": 3, "batch": 4})
    rec = run_case(_case("diffrax", "tsit5", problem="neural_wide", task="gradient", grad=grad, rtol=1e-8), config,
                   registry.get_plugin("diffrax"))
    assert rec["status"] == "ok", rec["message"]
    assert rec["grad_err"] < 1e-5 and rec["compile_s"] > 0 and rec["nfe_bwd"] > 0


# --------------------------------------------------------------------------- the suite and its checks
def test_every_profile_of_the_suite_loads_and_the_small_ones_are_small():
    counts = {}
    for profile in ("default", "quick", "full", "asv"):
        suite = load_suite(SUITE, profile)
        cases = suite.cases()
        runnable = [c for c in cases if not registry.entry(c.plugin).load().unsupported_reason(c.method, c.grad_mode)]
        counts[profile] = len(runnable)
        if profile == "default":
            assert {dict(c.axes)["problem"] for c in cases} == set(PROBLEMS)
            assert {dict(c.axes)["task"] for c in cases} == {"solve", "gradient"}
    assert counts["quick"] <= 50 and counts["asv"] <= 12 and counts["default"] > 1000


_TINY = """
[suite]
name = "tiny"
workload = "workprecision"
[measure]
dtype = "{dtype}"
[matrix]
plugin = ["torch_custom"]
method = {methods}
grad_mode = ["backprop"]
task = {tasks}
problem = {problem}
n_steps = {n_steps}
tolerances = {tolerances}
"""


@pytest.mark.parametrize("fields, message", [
    ({"dtype": "float32"}, "float64"),
    ({"methods": '["rk4"]'}, "needs step counts > 0"),
    ({"n_steps": "[16]"}, "sweeps matrix.tolerances with n_steps = [0]"),
    ({"methods": '["rk4"]', "n_steps": "[12]"}, "multiples of 8"),
    ({"tasks": '["gradient"]'}, "needs a neural vector field"),
    ({"tolerances": "[{rtol = 1e-3, atol = 1e-6}, {rtol = 1e-6, atol = 1e-6}]"}, "atol/rtol constant"),
])
def test_the_suite_checks_say_what_is_wrong_in_one_line(tmp_path, fields, message):
    values = {"dtype": "float64", "methods": '["dopri5"]', "tasks": '["solve"]', "problem": '["lorenz"]',
              "n_steps": "[0]", "tolerances": "[{rtol = 1e-3, atol = 1e-6}]"} | fields
    (tmp_path / "suite.toml").write_text(_TINY.format(**values))
    with pytest.raises(SuiteError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_suite(tmp_path)
    assert "\n" not in str(info.value)


def test_an_unknown_problem_setting_is_refused(tmp_path):
    with pytest.raises(SuiteError, match="unknown key 'batch' in problems.lorenz; valid: t1, n_points, max_steps"):
        load_suite(SUITE, "quick", {"problems.lorenz": {"batch": 3}})


@pytest.mark.parametrize("budget, expected", [(0.0, 4), (1e-9, 1)])
def test_timed_repeats_stop_at_the_repeat_budget(budget, expected):
    config = _config()
    config["measure"] |= {"repeats": 4, "repeat_budget_s": budget}
    rec = run_case(_case("torch_custom", "dopri5", rtol=1e-4), config, registry.get_plugin("torch_custom"))
    assert rec["status"] == "ok", rec["message"]
    # No budget: every repeat runs; a budget the first repeat exceeds: that one alone, and it is what is summarised.
    assert rec["repeats"] == expected
    assert rec["time_s_min"] <= rec["time_s"]
