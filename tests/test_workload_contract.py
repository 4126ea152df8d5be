"""The workload seam: a new workload is one subclass, registered, run by the runner, drawn by the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from odebench import Workload, registry, report, runner
from odebench.suite import load_suite

DECAY_SUITE = """
[suite]
name = "decay"
workload = "decay"

[problem]
rate = 2.0

[measure]
isolation = "inline"

[matrix]
plugin = ["torch_custom", "torchdiffeq"]
method = ["euler", "rk4", "dopri8"]
grad_mode = ["backprop"]
"""


class Decay(Workload):
    """y' = -rate·y from y(0) = 1 on [0, 1]: the final value's error against exp(-rate)."""

    name = "decay"
    sections = {"problem": {"rate": (float, "pos")}}
    defaults = {"problem": {"rate": 1.0}}
    required = ("problem",)
    columns = ["y1", "abs_error", "nfe"]
    summary_note = "Final value of y' = -rate y on [0, 1] with 20 fixed steps, and its error."

    def run_case(self, case, config, plugin):
        import math

        import torch

        rate = config["problem"]["rate"]

        class Field(torch.nn.Module):
            def forward(self, t, y):
                return -rate * y

        sol = plugin.odeint(Field(), torch.ones(1, dtype=torch.float64),
                            torch.linspace(0, 1, 21, dtype=torch.float64), method=case["method"])
        if not sol.ok:
            return {"status": str(sol.status), "message": sol.message}
        y1 = float(sol.ys[-1, 0])
        return {"status": "ok", "message": "", "y1": y1, "abs_error": abs(y1 - math.exp(-rate)),
                "nfe": sol.stats.nfe}

    def summary(self, df):
        return df[["plugin", "method", "status", "y1", "abs_error"]]


@pytest.fixture
def decay_registered():
    registry.register_workload(Decay)
    yield
    registry.unregister("decay", workload=True)


def test_a_new_workload_runs_through_the_runner_and_the_report(tmp_path, decay_registered):
    folder = tmp_path / "decay"
    folder.mkdir()
    (folder / "suite.toml").write_text(DECAY_SUITE)
    suite = load_suite(folder)
    assert suite.workload.name == "decay" and suite.config["problem"]["rate"] == 2.0
    cases = suite.cases()
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    records = runner.run(suite, cases, run_dir, runner.RunSpec(str(folder), suite.profile), progress=False)
    by = {(r["plugin"], r["method"]): r for r in records}
    # torch_custom has no dopri8: an unsupported row, never a crash; the others ran.
    assert by[("torch_custom", "dopri8")]["status"] == "unsupported"
    assert by[("torchdiffeq", "euler")]["status"] == "ok"
    # Euler's error is O(h) and RK4's O(h^4): the workload's own figures reach the records.
    assert by[("torchdiffeq", "euler")]["abs_error"] > 1e-3 > 1e-6 > by[("torchdiffeq", "rk4")]["abs_error"]
    assert by[("torch_custom", "rk4")]["y1"] == pytest.approx(by[("torchdiffeq", "rk4")]["y1"], abs=1e-14)
    md = report.render(run_dir).read_text()
    assert "y' = -rate y" in md  # the workload's summary note
    assert "### Not run" in md and "torch_custom** unsupported: dopri8/backprop" in md
    frame = pd.read_csv(run_dir / "results.csv")
    assert {"y1", "abs_error", "nfe"} <= set(frame.columns)
    assert json.loads((run_dir / "run.json").read_text())["suite"] == "decay"


def test_a_workload_missing_its_contract_is_refused_at_registration():
    class Half(Workload):
        name = "half"

        def run_case(self, case, config, plugin):
            return {}

    with pytest.raises(registry.PluginError, match="Half does not implement summary"):
        registry.register_workload(Half)
    assert "half" not in registry.workload_names()


def test_an_unknown_workload_in_a_suite_is_one_line_with_the_choices(tmp_path):
    from odebench.schema import SuiteError

    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "suite.toml").write_text(DECAY_SUITE.replace('workload = "decay"', 'workload = "decya"'))
    with pytest.raises(SuiteError, match=r"unknown value 'decya' for suite.workload; valid: .*memory, mnist, train"):
        load_suite(folder)


def test_built_in_workloads_register_through_entry_points():
    import importlib.metadata

    names = {ep.name for ep in importlib.metadata.entry_points(group=registry.WORKLOAD_GROUP)}
    assert {"train", "memory", "mnist"} <= names
    for name in ("train", "memory", "mnist"):
        w = registry.get_workload(name)
        assert isinstance(w, Workload) and w.name == name and w.columns and w.summary_note
