"""``measure.isolation = "group"``: the cases a workload groups share one fresh process, each
with its own record, timeout and (in JAX) the group's compiled programs; a case that times out
is a row and the rest of its group runs on in a fresh process."""

from __future__ import annotations

import pytest

from odebench import runner
from odebench.suite import load_suite

SUITE = """
[suite]
name = "wp-group"
workload = "workprecision"

[measure]
warmup = 1
repeats = {repeats}
timeout_s = {timeout}
isolation = "group"
dtype = "float64"
threads = 1

[matrix]
plugin = {plugins}
method = {methods}
grad_mode = ["backprop"]
task = ["solve"]
problem = ["linear_spiral"]
n_steps = {n_steps}
tolerances = {tolerances}
include = {include}

[problems]
linear_spiral = {problem}
"""


def _run(tmp_path, monkeypatch, **fields):
    monkeypatch.setenv("ODEBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "suite.toml").write_text(SUITE.format(**fields))
    suite = load_suite(folder)
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    records = runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile), progress=False)
    return records, run_dir


def test_a_curve_shares_one_process_and_jax_compiles_it_once(tmp_path, monkeypatch):
    pytest.importorskip("diffrax")
    records, run_dir = _run(
        tmp_path, monkeypatch, repeats=1, timeout=300, plugins='["torch_custom", "diffrax"]', methods='["dopri5"]',
        n_steps="[0]", tolerances='[{ rtol = 1e-3, atol = 1e-6 }, { rtol = 1e-7, atol = 1e-10 }]', include="[]",
        problem="{ t1 = 4.0, n_points = 5 }")
    assert [r["status"] for r in records] == ["ok"] * 4, [(r["status"], r["message"]) for r in records]
    for plugin in ("torch_custom", "diffrax"):
        loose, tight = sorted((r for r in records if r["plugin"] == plugin), key=lambda r: -r["rtol"])
        assert (loose["group_size"], loose["group_index"], tight["group_index"]) == (2, 0, 1)
        # Only the process's first case started it; the second's wall time is its own work.
        assert loose["startup_s"] > 0 and tight["startup_s"] == 0.0
        assert 0 < tight["process_s"] < loose["process_s"]
        # The tolerance reaches the solve: a shared program must not keep the first case's.
        assert tight["nfe_fwd"] > loose["nfe_fwd"] and tight["err_l2"] < loose["err_l2"] / 100
    loose, tight = sorted((r for r in records if r["plugin"] == "diffrax"), key=lambda r: -r["rtol"])
    assert loose["compile_s"] > 0 and loose["compile_reused"] is False
    assert tight["compile_s"] == 0.0 and tight["compile_reused"] is True
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == [
        "diffrax-linear_spiral-solve.log", "torch_custom-linear_spiral-solve.log"]


def test_a_timed_out_case_is_a_row_and_its_group_runs_on_in_a_fresh_process(tmp_path, monkeypatch):
    # rk4 with 8 steps is instant; dopri5 at rtol 1e-12 over t = 5000 takes a million steps.
    records, _ = _run(
        tmp_path, monkeypatch, repeats=1, timeout=15, plugins='["torch_custom"]', methods='["rk4"]',
        n_steps="[8]", tolerances="[{ rtol = 1e-12, atol = 1e-15 }]",
        include='[{ method = "dopri5", n_steps = [0] }, { method = "rk4", n_steps = [16] }]',
        problem="{ t1 = 5000.0, n_points = 9, max_steps = 100000000 }")
    by = {(r["method"], r["n_steps"]): r for r in records}
    first, slow, after = by[("rk4", 8)], by[("dopri5", 0)], by[("rk4", 16)]
    assert slow["status"] == "timeout" and "no result within 15 s" in slow["message"]
    assert first["status"] != "timeout" and after["status"] != "timeout"
    assert (first["group_size"], first["group_index"]) == (3, 0)
    # The case after the killed one ran in a process of its own making: it started it.
    assert (after["group_size"], after["group_index"]) == (1, 0) and after["startup_s"] > 0
    assert len(records) == 3
