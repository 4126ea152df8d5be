"""A tiny work-precision suite through the runner and the report: the table first, the figures written."""

from __future__ import annotations

import pandas as pd

from odebench import report, runner
from odebench.records import read_records
from odebench.suite import load_suite

TINY = """
[suite]
name = "wp-tiny"
workload = "workprecision"

[measure]
warmup = 1
repeats = 1
isolation = "inline"
dtype = "float64"
threads = 1

[matrix]
plugin = ["torch_custom", "scipy"]
method = ["dopri5"]
grad_mode = ["backprop"]
task = ["solve"]
problem = ["linear_spiral", "neural_spiral"]
n_steps = [0]
tolerances = [{ rtol = 1e-3, atol = 1e-6 }, { rtol = 1e-5, atol = 1e-8 }, { rtol = 1e-7, atol = 1e-10 }]
include = [
  { plugin = "torch_custom", method = "rk4", n_steps = [4, 16, 64] },
  { plugin = "scipy", grad_mode = "adjoint" },
  { task = "gradient", problem = "neural_spiral", plugin = "torch_custom", grad_mode = ["backprop", "adjoint", "adjoint-seminorm"] },
]

[problems]
linear_spiral = { t1 = 4.0, n_points = 5 }
neural_spiral = { t1 = 4.0, n_points = 5 }
"""


def test_a_tiny_profile_runs_through_the_runner_and_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("ODEBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "suite.toml").write_text(TINY)
    suite = load_suite(folder)
    cases = suite.cases()
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    records = runner.run(suite, cases, run_dir, runner.RunSpec(str(folder), suite.profile), progress=False)
    by_status = pd.Series([r["status"] for r in records]).value_counts().to_dict()
    assert by_status.get("ok") == 27 and set(by_status) <= {"ok", "unsupported"}, by_status
    path = report.render(run_dir)
    text = path.read_text()
    # The matched-error table comes first: right under the summary heading, before every other section.
    summary_at = text.index("## Summary")
    table_at = text.index("| problem", summary_at)
    for later in ("## References and walls", "## Gradients", "## Loop time", "## Figures"):
        assert table_at < text.index(later), later
    head = text[table_at:].splitlines()[0]
    assert "@1e-03 ms" in head and "@1e-06 NFE" in head and "@1e-09 ms" in head
    assert "(#1)" in text and "adjoint-seminorm's backward NFE" in text and "backprop's" in text
    assert "exact solution" in text and "DOP853" in text
    figures = sorted(p.name for p in (run_dir / "figures").iterdir())
    assert figures == ["workprecision_linear_spiral.png", "workprecision_neural_spiral.png",
                       "workprecision_neural_spiral_gradient.png"]
    assert all((run_dir / "figures" / f).stat().st_size > 10_000 for f in figures)
    csv = pd.read_csv(run_dir / "results.csv")
    ok = csv[csv["status"] == "ok"]
    assert ok["err_l2"].notna().all() and (ok["time_s"] > 0).all()
    assert len(read_records(run_dir)) == len(cases)
