"""The train workload's figures mean what their columns say: error formula, memory region, NFE, flags."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_suite

from odebench import report, runner
from odebench.problems import PROBLEMS
from odebench.suite import load_suite
from odebench.workloads.train.case import final_mse


def test_the_spiral_truth_is_expm_and_final_mse_is_the_mean_over_times_and_components():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    problem = PROBLEMS["linear_spiral"](n_points=7, t1=3.0)
    A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    by_hand = np.stack([scipy_linalg.expm(A * t) @ np.array([2.0, 0.0]) for t in problem.ts])
    truth = problem.reference(problem.ts)
    np.testing.assert_allclose(truth, by_hand, rtol=1e-12, atol=1e-12)
    # Off by 0.1 in the first component at every time, 0.3 in the second at the last one only:
    # (7 * 0.01 + 0.09) / 14 by hand.
    pred = truth.copy()
    pred[:, 0] += 0.1
    pred[-1, 1] -= 0.3
    assert final_mse(pred, truth) == pytest.approx((7 * 0.01 + 0.09) / 14, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        final_mse(pred[:, :1], truth)


def _run(tmp_path, text_edit=None, **kw):
    folder = write_suite(tmp_path / "s", **kw)
    if text_edit:
        toml = folder / "suite.toml"
        toml.write_text(text_edit(toml.read_text()))
    suite = load_suite(folder)
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    records = runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile),
                         progress=False)
    return run_dir, records


def test_no_snapshots_still_counts_nfe_and_renders_a_report(tmp_path):
    run_dir, records = _run(tmp_path, lambda t: t.replace("snapshots = [0, 3]", "snapshots = []"),
                            methods=("rk4",), grads=("adjoint",))
    (rec,) = records
    assert rec["status"] == "ok", rec["message"]
    # rk4 on the 5-point window: 4 steps of 4 evaluations forward, the same again backward.
    assert rec["nfe_fwd"] == 16 and rec["nfe_bwd"] == 16
    md = report.render(run_dir).read_text()
    assert "| torchdiffeq | rk4" in md
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == ["loss_vs_iteration.png", "loss_vs_time.png"]


def test_a_widely_spread_timing_is_flagged_in_the_table_and_the_report():
    base = {"suite": "x", "workload": "train", "plugin": "p", "method": "rk4", "rtol": None, "atol": None,
            "device": "cpu", "message": "", "status": "ok", "seed": 0, "train_s": 1.0}
    rows = [base | {"case_id": "a", "grad_mode": "backprop", "s_per_iter": 0.00256, "s_per_iter_iqr": 0.00624},
            base | {"case_id": "b", "grad_mode": "adjoint", "s_per_iter": 0.002, "s_per_iter_iqr": 0.0002}]
    table = report.summary(report.to_frame(rows)).set_index("grad")
    assert table.loc["backprop", "s/iter (IQR)"].endswith("⚠")
    assert not table.loc["adjoint", "s/iter (IQR)"].endswith("⚠")


def test_backprop_that_evaluates_during_backward_is_marked_as_recomputing():
    base = {"suite": "x", "workload": "train", "method": "rk4", "rtol": None, "atol": None, "device": "cpu",
            "message": "", "status": "ok", "seed": 0, "grad_mode": "backprop", "nfe_fwd": 36.0}
    rows = [base | {"case_id": "a", "plugin": "diffrax", "nfe_bwd": 72.0},
            base | {"case_id": "b", "plugin": "torchdiffeq", "nfe_bwd": 0.0}]
    table = report.summary(report.to_frame(rows)).set_index("plugin")
    assert table.loc["diffrax", "NFE-B"] == "72.0 (recomputes)"
    assert table.loc["torchdiffeq", "NFE-B"] == "0.0"


@pytest.mark.parametrize("plugin", ["torchdiffeq", "diffrax"])
def test_peak_rss_covers_training_alone_not_the_snapshot_passes(tmp_path, plugin):
    """A 2-8-2 MLP trains in a few kB: the untimed snapshot passes (and JAX compiling them) stay out."""
    if plugin == "diffrax":
        pytest.importorskip("diffrax")
    run_dir, records = _run(tmp_path, plugins=(plugin,), methods=("dopri5",), grads=("backprop",),
                            isolation="process", iterations=4)
    (rec,) = records
    assert rec["status"] == "ok", rec["message"]
    assert rec["rss_method"] == "VmHWM"
    assert rec["peak_rss_bytes"] < 4 * 2**20, rec["peak_rss_bytes"]
    assert rec["end_to_end_s"] == pytest.approx(rec["train_s"] + (rec["compile_s"] or 0.0))


class _CountingTrainer:
    """A stand-in trainer whose parameters are one number moved by each step; it counts predictions."""

    def __init__(self):
        self.theta, self.predictions = 0.0, []

    def to_batch(self, batch):
        return batch

    def forward(self, batch):
        self.theta += 1.0
        return {"loss": 1.0 / self.theta}

    def backward(self, handle):
        pass

    def sync(self):
        pass

    def loss_value(self, handle):
        return handle["loss"]

    def predict(self, ts, y0):
        self.predictions.append(self.theta)
        return np.full((len(ts), 2), self.theta)

    def instrumented(self, batch):
        from odebench.backends.base import InstrumentedPass
        from odebench.protocol import SolveStats

        return InstrumentedPass(loss=1.0, nfe_fwd=3, nfe_bwd=6, n_vjp=3, saved_bytes=None, stats=SolveStats())


@pytest.mark.parametrize("snapshots, predicted", [([0, 2, 4], [0.0, 2.0, 4.0]), ([0, 2], [0.0, 2.0, 4.0])])
def test_the_final_mse_reuses_a_last_iteration_snapshot(snapshots, predicted):
    """A snapshot at the last iteration is the final parameters' prediction: the final MSE reads it
    instead of predicting again; without one, the final MSE predicts once after training."""
    from odebench.workloads.train.case import _train_once

    problem = PROBLEMS["linear_spiral"](n_points=5, t1=1.0)
    truth = np.zeros((5, 2))
    trainer = _CountingTrainer()
    out = _train_once(trainer, [object()] * 4, {"snapshots": snapshots}, problem, truth, record_history=True)
    assert trainer.predictions == predicted
    assert out["final_mse"] == pytest.approx(16.0)  # theta = 4 everywhere, against zeros
    assert [p["nfe_fwd"] for p in out["passes"]] == [3] * len(snapshots)
