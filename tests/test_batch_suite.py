"""The batch-coupling workload end to end: identical samples cost nothing to batch, one stiff sample
inflates every joint plugin's steps but not torchode's, the suite file and its checks, and a tiny run
through the runner and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from odebench import registry, report, runner
from odebench.suite import SuiteError, load_suite

ROOT = Path(__file__).resolve().parents[1]

TINY = """
[suite]
name = "batch-tiny"
workload = "batch"

[vdp]
t1 = 2.0

[mlp]
sizes = [2, 16, 2]
t1 = 2.0

[samples]
layout = "{layout}"

[solve]
n_times = 5

[measure]
warmup = 0
repeats = 1
isolation = "inline"
dtype = "float64"
threads = 1
timeout_s = 600

[matrix]
plugin = {plugins}
method = ["dopri5"]
grad_mode = ["backprop"]
tolerances = [{{ rtol = 1e-6, atol = 1e-8 }}]
problem = {problems}
batch = {batches}
spread = {spreads}
include = {include}
"""

FAST = ("torch_custom", "torchdiffeq", "torchode", "scipy")
SLOW = ("diffrax", "torchode_compiled")
JOINT = [p for p in FAST + SLOW if p not in ("torchode", "torchode_compiled")]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # References are cached per sample; keep the tests' cache apart from the user's.
    monkeypatch.setenv("ODEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "batch-cache"))


def _suite(tmp_path, *, layout="geometric", plugins=("torchdiffeq",), problems=("vdp",), batches=(3,),
           spreads=(1.0,)):
    folder = tmp_path / "batch-tiny"
    folder.mkdir(exist_ok=True)
    q = lambda xs: json.dumps(list(xs))  # noqa: E731
    # scipy's one grad mode is the adjoint; the solves are forward only either way.
    include = '[{ plugin = ["scipy"], grad_mode = ["adjoint"] }]' if "scipy" in plugins else "[]"
    (folder / "suite.toml").write_text(TINY.format(layout=layout, plugins=q(p for p in plugins if p != "scipy"),
                                                   problems=q(problems), batches=q(batches),
                                                   spreads=q(spreads), include=include))
    return load_suite(folder)


def _run_one(suite, plugin: str) -> dict:
    case = next(c for c in suite.cases() if c.plugin == plugin)
    rec = suite.workload.run_case(case.to_dict(), suite.config, registry.get_plugin(plugin))
    assert rec["status"] == "ok", rec
    return rec


def _available(plugin: str):
    reason = registry.entry(plugin).available()
    if reason:
        pytest.skip(reason)


def _identical(tmp_path, plugin, problem):
    _available(plugin)
    suite = _suite(tmp_path, plugins=("torchdiffeq", plugin), problems=(problem,), spreads=(1.0,))
    rec = _run_one(suite, plugin)
    assert rec["step_inflation"] == 1.0 and rec["nfe_inflation"] == 1.0, rec
    assert rec["steps_joint_max"] == rec["steps_solo_max"] and rec["nfe_agree"] is True
    assert rec["batch_stepping"] == registry.entry(plugin).load().batch_stepping
    return rec


@pytest.mark.parametrize("problem", ["vdp", "mlp"])
@pytest.mark.parametrize("plugin", FAST)
def test_a_batch_of_identical_samples_has_an_inflation_of_exactly_one(tmp_path, plugin, problem):
    _identical(tmp_path, plugin, problem)


@pytest.mark.slow
@pytest.mark.parametrize("plugin", SLOW)
def test_a_batch_of_identical_samples_has_an_inflation_of_exactly_one_compiled(tmp_path, plugin):
    rec = _identical(tmp_path, plugin, "vdp")
    assert rec["compile_s_joint"] > 0 and rec["compile_s_solo"] > 0


def _outlier(tmp_path, plugin):
    _available(plugin)
    suite = _suite(tmp_path, layout="outlier", plugins=("torchdiffeq", plugin), batches=(4,), spreads=(40.0,))
    return _run_one(suite, plugin)


@pytest.mark.parametrize("plugin", [p for p in JOINT if p in FAST])
def test_one_stiff_sample_inflates_the_steps_of_joint_stepping(tmp_path, plugin):
    rec = _outlier(tmp_path, plugin)
    # Three samples at μ = 1 take the stiff one's steps: about twice the mean of their own.
    assert rec["step_inflation"] > 1.5, rec
    assert rec["steps_joint_mean"] == rec["steps_joint_max"]  # every sample takes the batch's steps


@pytest.mark.parametrize("plugin", ["torchode"] + [pytest.param("torchode_compiled", marks=pytest.mark.slow)])
def test_one_stiff_sample_does_not_inflate_per_sample_stepping(tmp_path, plugin):
    rec = _outlier(tmp_path, plugin)
    assert rec["step_inflation"] == pytest.approx(1.0, rel=0.1), rec
    # Its calls still evaluate the finished samples: the NFE of the batch is the stiff sample's.
    assert rec["nfe_joint"] == rec["nfe_solo_max"] and rec["nfe_inflation"] > 1.5


@pytest.mark.slow
def test_one_stiff_sample_inflates_diffrax_which_solves_the_batch_as_one_state(tmp_path):
    assert _outlier(tmp_path, "diffrax")["step_inflation"] > 1.5


def test_a_tiny_run_goes_through_the_runner_and_the_report(tmp_path):
    suite = _suite(tmp_path, plugins=("torch_custom", "torchode", "scipy"), problems=("vdp", "mlp"), batches=(1, 3),
                   spreads=(1.0, 30.0))
    cases = suite.cases()
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    records = runner.run(suite, cases, run_dir, runner.RunSpec(str(suite.path), suite.profile), progress=False)
    assert len(records) == 24 and all(r["status"] == "ok" for r in records), [r["message"] for r in records]
    md = report.render(run_dir).read_text()
    assert "## Step inflation by spread" in md and "## Every case" in md and "per-sample" in md
    assert (run_dir / "figures" / "inflation_vs_spread.png").stat().st_size > 0
    assert (run_dir / "figures" / "time_per_sample_vs_batch.png").stat().st_size > 0
    frame = pd.read_csv(run_dir / "results.csv")
    assert {"step_inflation", "batch_stepping", "s_per_sample_solo", "problem", "spread"} <= set(frame.columns)
    # A batch of one is its own solo solve for every plugin.
    assert (frame[frame["batch"] == 1]["step_inflation"] == 1.0).all()


def test_a_simulated_out_of_memory_error_is_status_oom(tmp_path, monkeypatch):
    import torch

    suite = _suite(tmp_path)

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("odebench.workloads.batch.case.make_driver", boom)
    case = suite.cases()[0]
    rec = suite.workload.run_case(case.to_dict(), suite.config, registry.get_plugin(case.plugin))
    assert rec["status"] == "oom" and "\n" not in rec["message"]


def test_the_suite_file_loads_in_every_profile_and_quick_runs_torch_plugins_and_scipy():
    folder = ROOT / "suites" / "batch"
    for profile in ("default", "quick", "asv"):
        assert load_suite(folder, profile).cases()
    quick = load_suite(folder, "quick")
    assert {c.plugin for c in quick.cases()} == set(FAST)
    assert {c.method for c in quick.cases()} == {"dopri5"}
    default = load_suite(folder)
    assert {c.plugin for c in default.cases()} == set(FAST + SLOW)
    assert {c.method for c in default.cases() if c.plugin in ("torchdiffeq", "scipy")} == {"dopri5"}


@pytest.mark.parametrize("override, match", [
    ({"matrix.method": ["rk4"]}, "method 'rk4' takes fixed steps; valid: bosh3, dopri5"),
    ({"matrix.spread": [0.5]}, "got 0.5, valid: 1 or more"),
    ({"mlp.sizes": [2, 8, 3]}, "mlp.sizes must start and end with the state width"),
    ({"vdp.y0": [1.0]}, "vdp.y0 must be a 2-d state"),
    ({"solve.n_times": 1}, "solve.n_times must be at least 2"),
    ({"samples.layout": "linear"}, "unknown value 'linear' for samples.layout; valid: geometric, outlier"),
])
def test_bad_settings_are_one_line_errors(override, match):
    with pytest.raises(SuiteError, match=match) as err:
        load_suite(ROOT / "suites" / "batch", "quick", override)
    assert "\n" not in str(err.value)
