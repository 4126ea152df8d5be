"""The solver-swap check: a trained model evaluated with a reference solver, exactly 0 for its own solver."""

from __future__ import annotations

import math

import pytest
from conftest import MINI_SUITE

from odebench import registry
from odebench.suite import load_suite

torch = pytest.importorskip("torch")


def train_suite(tmp_path, swap: str, methods: str):
    text = MINI_SUITE.format(iterations=3, isolation="inline", launch="exec", threads=0, timeout=300, plugins='["torchdiffeq", "torch_custom"]',
                             methods=methods, grads='["backprop"]')
    path = tmp_path / "suite.toml"
    path.write_text(text + swap)
    # No fairness gate: it spawns a process per case and is not what these tests are about.
    return load_suite(path, overrides={"measure.fairness_steps": 0})


@pytest.mark.parametrize("plugin", ["torchdiffeq", "torch_custom"])
def test_a_spiral_model_evaluated_with_the_solver_it_was_trained_with_changes_by_exactly_zero(tmp_path, plugin):
    from odebench.workloads.train.case import run_case

    # The reference is the training solver itself: its own plugin's dopri5 at the case's tolerances, in float32.
    suite = train_suite(tmp_path, '\n[swap]\nrtol = 1e-5\natol = 1e-7\ndtype = "float32"\nplugin = "own"\n', '["dopri5"]')
    [case] = suite.cases(plugins=[plugin])
    rec = run_case(case.to_dict(), suite.config, registry.get_plugin(plugin))
    assert rec["status"] == "ok", rec["message"]
    assert rec["swap_mse_delta"] == 0.0
    # ... and the evaluation reproduces the recorded final MSE bit for bit.
    assert rec["swap_mse"] == rec["final_mse"]
    assert rec["swap_solver"] == f"{plugin} dopri5 rtol=1e-05 atol=1e-07 float32"


def test_an_euler_trained_spiral_model_is_evaluated_with_a_tight_float64_dopri5(tmp_path):
    from odebench.workloads.train.case import run_case

    suite = train_suite(tmp_path, "", '["euler"]')
    [case] = suite.cases(plugins=["torchdiffeq"])
    rec = run_case(case.to_dict(), suite.config, registry.get_plugin("torchdiffeq"))
    assert rec["status"] == "ok", rec["message"]
    # One reference for every case by default: odebench's own dopri5, whichever plugin trained.
    assert rec["swap_solver"] == "torch_custom dopri5 rtol=1e-09 atol=1e-11 float64"
    assert math.isfinite(rec["swap_mse_delta"]) and rec["swap_mse_delta"] != 0.0
    assert rec["swap_mse"] - rec["swap_mse_delta"] == pytest.approx(rec["final_mse"], rel=1e-5)


def test_the_default_reference_and_the_cases_own_agree_on_a_trained_model(tmp_path):
    """torch_custom's and torchdiffeq's float64 dopri5 at rtol 1e-9 give one swapped MSE: the choice of
    reference plugin does not move the figure (and "own" does pick the case's plugin)."""
    from odebench.swap import reference_solver
    from odebench.workloads.train.case import run_case

    suite = train_suite(tmp_path, "", '["euler"]')
    [case] = suite.cases(plugins=["torchdiffeq"])
    plugin = registry.get_plugin("torchdiffeq")
    rec = run_case(case.to_dict(), suite.config, plugin)
    assert rec["status"] == "ok", rec["message"]
    own = load_suite(tmp_path / "suite.toml", overrides={"measure.fairness_steps": 0, "swap.plugin": "own"})
    ref = reference_solver(plugin, own.config["swap"])
    assert ref.label() == "torchdiffeq dopri5 rtol=1e-09 atol=1e-11 float64"
    again = run_case(case.to_dict(), own.config, plugin)
    assert again["swap_solver"] == ref.label()
    assert again["final_mse"] == rec["final_mse"]  # the same training, bit for bit
    assert again["swap_mse"] == pytest.approx(rec["swap_mse"], rel=1e-7)


def test_swap_can_be_turned_off(tmp_path):
    from odebench.workloads.train.case import run_case

    suite = train_suite(tmp_path, "\n[swap]\nenabled = false\n", '["rk4"]')
    [case] = suite.cases(plugins=["torchdiffeq"])
    rec = run_case(case.to_dict(), suite.config, registry.get_plugin("torchdiffeq"))
    assert rec["status"] == "ok" and "swap_mse_delta" not in rec


def test_the_reference_falls_back_to_a_torch_plugin_that_has_the_method():
    from odebench.swap import reference_solver

    class NoDopri5:
        name, methods, devices = "fixedonly", {"euler": "euler"}, ("cpu",)

    settings = {"method": "dopri5", "rtol": 1e-6, "atol": 1e-6, "dtype": "float64"}
    ref = reference_solver(NoDopri5(), dict(settings, plugin="own"))
    assert ref.plugin.name == "torchdiffeq" and ref.label() == "torchdiffeq dopri5 rtol=1e-06 atol=1e-06 float64"
    assert reference_solver(NoDopri5(), settings).plugin.name == "torch_custom"  # the default names it
    # A named plugin that lacks the method (the compiled plugin is fixed-step only) gives way to the
    # case's own, then to the fallbacks.
    ref = reference_solver(NoDopri5(), dict(settings, plugin="torch_custom_compiled"))
    assert ref.plugin.name == "torchdiffeq"
    ref = reference_solver(registry.get_plugin("torchdiffeq"), dict(settings, plugin="torch_custom_compiled"))
    assert ref.plugin.name == "torchdiffeq"


# --------------------------------------------------------------------------- mnist
def mnist_setup(kind: str):
    from odebench.backends.torch_convnets import build_mnist_model

    plugin = registry.get_plugin("torchdiffeq")
    model = build_mnist_model(kind, plugin, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (24,), generator=gen)
    config = {"measure": {"dtype": "float32"}, "data": {"test_batch_size": 8},
              "swap": {"enabled": True, "method": "dopri5", "rtol": 1e-6, "atol": 1e-6, "dtype": "float64"}}
    case = {"device": "cpu", "model": kind}
    return model, (x, y, x, y), case, config


@pytest.mark.parametrize("kind", ["odenet", "review"])
def test_an_mnist_model_evaluated_with_its_own_solver_changes_by_exactly_zero(kind):
    from odebench.swap import Solver
    from odebench.workloads.mnist.case import evaluate, solver_swap

    model, data, case, config = mnist_setup(kind)
    b = model.ode_block
    own = Solver(b.plugin, b.method, b.rtol, b.atol, b.step_size, "float32")
    out = solver_swap(model, data, case, config, reference=own)
    assert out["swap_acc_delta"] == 0.0
    assert out["swap_test_acc"] == evaluate(model, data[2], data[3], 8)[0]


def test_an_rknet_is_swapped_to_the_reference_without_touching_the_trained_model():
    from odebench.workloads.mnist.case import solver_swap

    model, data, case, config = mnist_setup("rknet")
    before = [p.clone() for p in model.parameters()]
    out = solver_swap(model, data, case, config)
    assert out["swap_solver"] == "torch_custom dopri5 rtol=1e-06 atol=1e-06 float64"
    assert math.isfinite(out["swap_acc_delta"]), out
    b = model.ode_block
    assert (b.method, b.step_size, next(model.parameters()).dtype) == ("rk4", 0.1, torch.float32)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_a_resnet_has_no_solver_to_swap():
    from odebench.swap import Solver, swapped_model

    model, *_ = mnist_setup("resnet")
    with pytest.raises(ValueError, match="resnet model has no ODE block"):
        swapped_model(model, Solver(registry.get_plugin("torchdiffeq"), "dopri5", 1e-6, 1e-6))
