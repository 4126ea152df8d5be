"""The report is rendered from records.jsonl alone."""

from __future__ import annotations

import shutil

import pandas as pd
from conftest import write_suite

from odebench import report, runner
from odebench.suite import load_suite


def test_report_rerenders_from_records_alone(tmp_path, cli):
    folder = write_suite(tmp_path / "s", iterations=2, methods=("rk4",), grads=("backprop", "adjoint"))
    suite = load_suite(folder)
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile), progress=False)
    report.render(run_dir)
    first_csv = (run_dir / "results.csv").read_text()
    first_md = (run_dir / "report.md").read_text()
    for name in ("results.csv", "results.parquet", "report.md"):
        (run_dir / name).unlink()
    shutil.rmtree(run_dir / "figures")
    out = cli("report", str(run_dir))
    assert out.returncode == 0, out.stderr
    assert (run_dir / "results.csv").read_text() == first_csv
    assert (run_dir / "report.md").read_text() == first_md
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == [
        "loss_vs_iteration.png", "loss_vs_time.png", "trajectories.png"]
    df = pd.read_csv(run_dir / "results.csv")
    assert list(df["grad_mode"]) == ["backprop", "adjoint"]
    assert (df["status"] == "ok").all()
    assert "| torchdiffeq | rk4" in first_md and "## Summary" in first_md


def test_summary_groups_seeds_and_reports_failures():
    base = {"suite": "x", "plugin": "p", "method": "rk4", "grad_mode": "backprop", "rtol": None, "atol": None,
            "device": "cpu", "case_id": "c", "message": ""}
    rows = [base | {"seed": 0, "status": "ok", "s_per_iter": 0.002, "s_per_iter_iqr": 0.0, "train_s": 1.0,
                    "final_mse": 0.1},
            base | {"seed": 1, "status": "ok", "s_per_iter": 0.004, "s_per_iter_iqr": 0.0, "train_s": 3.0,
                    "final_mse": 0.3},
            base | {"seed": 2, "status": "timeout", "message": "no result within 5 s"}]
    table = report.summary(report.to_frame(rows))
    (row,) = table.to_dict("records")
    assert row["train s"] == "2.00" and row["final MSE"] == "0.2" and row["seeds"] == "2/3"
    assert row["status"].startswith("ok×2, timeout") and "no result within 5 s" in row["status"]
