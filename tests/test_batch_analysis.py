"""The batch workload's pure parts on constructed data: the samples, per-sample steps and errors, the
inflation ratios, the rows the report picks, and its tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from odebench.workloads.batch.analysis import (
    ModeResult,
    at_largest,
    best_slice,
    columns,
    per_sample_steps,
    ratio,
    sample_errors,
)
from odebench.workloads.batch.problem import mlp_numpy, sample_values
from odebench.workloads.batch.report import inflation_table, summary


def test_samples_spread_geometrically_or_as_one_outlier():
    assert sample_values(3, 100.0, "geometric") == pytest.approx([1.0, 10.0, 100.0])
    assert list(sample_values(1, 100.0, "geometric")) == [1.0]  # a batch of one is the easy end
    assert list(sample_values(4, 50.0, "outlier")) == [1.0, 1.0, 1.0, 50.0]
    assert list(sample_values(3, 1.0, "geometric")) == [1.0, 1.0, 1.0]  # spread 1: identical samples


@pytest.mark.parametrize("args, match", [
    ((0, 10.0, "geometric"), "at least 1, got 0"),
    ((4, 0.5, "geometric"), "spread must be at least 1"),
    ((4, 10.0, "linear"), "unknown layout 'linear'; valid: geometric, outlier"),
])
def test_bad_samples_are_one_line_errors(args, match):
    with pytest.raises(ValueError, match=match):
        sample_values(*args)


def test_joint_plugins_give_every_sample_the_batch_steps_and_per_sample_plugins_their_own():
    assert per_sample_steps(12, {}, 3, "joint") == [12, 12, 12]
    assert per_sample_steps(9, {"n_steps": [4, 9, 7]}, 3, "per-sample") == [4, 9, 7]
    # A joint plugin that happens to report a list is read from the list: data over declaration.
    assert per_sample_steps(9, {"n_steps": [9, 9]}, 2, "joint") == [9, 9]


@pytest.mark.parametrize("n_steps, extra, n, stepping, match", [
    (9, {"n_steps": [1, 2]}, 3, "per-sample", "steps for 2 samples in a solve of 3"),
    (9, {}, 3, "per-sample", "must report per-sample steps"),
    (None, {}, 2, "joint", "reports no step count"),
])
def test_missing_or_mismatched_steps_are_errors(n_steps, extra, n, stepping, match):
    with pytest.raises(ValueError, match=match):
        per_sample_steps(n_steps, extra, n, stepping)


def test_sample_errors_are_the_largest_absolute_error_of_each_sample():
    ref = np.zeros((3, 2, 2))
    ys = ref.copy()
    ys[1, 0, 1] = -0.5
    ys[2, 1, 0] = 0.25
    ys[0, 1, 1] = 0.1
    assert sample_errors(ys, ref).tolist() == [0.5, 0.25]
    with pytest.raises(ValueError, match=r"shape \(3, 2, 2\) against a reference of shape \(3, 2\)"):
        sample_errors(ys, ref[:, :, 0])


def _mode(steps, nfe, native=None, errors=None, times=(1.0,), compile_s=None):
    return ModeResult(steps=list(steps), nfe=list(nfe), nfe_native=list(native if native is not None else nfe),
                      errors=list(errors if errors is not None else [0.0] * len(steps)), times=list(times),
                      compile_s=compile_s)


def test_inflation_is_joint_steps_over_mean_solo_steps_and_times_are_per_sample():
    # One stiff sample of four: the joint solve takes its 100 steps for every sample.
    joint = _mode([100] * 4, [602], errors=[1e-8, 2e-8, 3e-8, 4e-8], times=[0.4, 0.8, 0.6])
    solo = _mode([10, 10, 10, 100], [62, 62, 62, 602], errors=[1e-7] * 4, times=[2.0, 2.0])
    out = columns(joint, solo)
    assert out["steps_joint_mean"] == 100 and out["steps_solo_mean"] == 32.5 and out["steps_solo_max"] == 100
    assert out["step_inflation"] == 100 / 32.5
    assert out["nfe_joint"] == 602 and out["nfe_solo_mean"] == 197.0 and out["nfe_inflation"] == 602 / 197
    assert out["s_per_sample_joint"] == pytest.approx(0.6 / 4) and out["s_per_sample_solo"] == pytest.approx(0.5)
    assert out["repeats"] == 2 and out["err_joint_max"] == 4e-8 and out["err_solo_mean"] == 1e-7
    assert out["nfe_agree"] is True and out["compile_s_joint"] is None


def test_identical_steps_give_an_inflation_of_exactly_one():
    out = columns(_mode([7, 7, 7], [44]), _mode([7, 7, 7], [44, 44, 44]))
    assert out["step_inflation"] == 1.0 and out["nfe_inflation"] == 1.0


def test_nfe_agreement_is_false_on_any_mismatch_and_none_without_native_counts():
    assert columns(_mode([5], [32], native=[31]), _mode([5], [32]))["nfe_agree"] is False
    assert columns(_mode([5], [32], native=[None]), _mode([5], [32], native=[None]))["nfe_agree"] is None


def test_modes_of_different_batches_are_refused():
    with pytest.raises(ValueError, match="joint mode has 2 samples, the solo mode 3"):
        columns(_mode([5, 5], [32]), _mode([5, 5, 5], [32, 32, 32]))
    with pytest.raises(ValueError, match="joint mode must be one solve, got 2"):
        columns(_mode([5, 5], [32, 32]), _mode([5, 5], [32, 32]))


def test_ratio_is_nan_without_a_positive_denominator():
    assert np.isnan(ratio(3.0, 0.0)) and np.isnan(ratio(None, 2.0)) and ratio(3.0, 2.0) == 1.5


def test_the_numpy_mlp_matches_a_hand_computation():
    w1, b1, w2, b2 = np.array([[1.0, 2.0]]), np.array([0.5]), np.array([[2.0], [-1.0]]), np.array([0.0, 1.0])
    f = mlp_numpy([(w1, b1), (w2, b2)], "tanh")
    h = np.tanh(1.0 * 0.3 + 2.0 * -0.1 + 0.5)
    assert f(0.0, np.array([0.3, -0.1])) == pytest.approx([2 * h, -h + 1.0])
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        mlp_numpy([(w1, b1)], "gelu")


# --------------------------------------------------------------------------- the rows the report picks
def _row(plugin, problem, batch, spread, inflation, status="ok", stepping="joint", **kw):
    steps = None if inflation is None else 10.0 * inflation
    base = dict(plugin=plugin, method="dopri5", problem=problem, batch=batch, spread=spread, status=status,
                message="" if status == "ok" else "ran out", batch_stepping=stepping, step_inflation=inflation,
                nfe_inflation=inflation, steps_joint_mean=steps, steps_joint_max=steps,
                steps_solo_mean=10.0, steps_solo_max=12, nfe_joint=62, nfe_solo_mean=50.0, err_joint_max=1e-7,
                err_solo_max=2e-7, s_per_sample_joint=1e-3, s_per_sample_joint_iqr=1e-5, s_per_sample_solo=2e-3,
                s_per_sample_solo_iqr=5e-3, compile_s_joint=None, compile_s_solo=None, repeats=3,
                case_id=f"{plugin}/{problem}/{batch}/{spread}", nfe_agree=True)
    return base | kw


def test_the_largest_batch_and_the_spread_with_most_batch_sizes_are_picked_per_problem():
    df = pd.DataFrame([_row("a", "vdp", 4, 10.0, 2.0), _row("a", "vdp", 16, 10.0, 3.0),
                       _row("a", "vdp", 4, 1000.0, 5.0), _row("a", "mlp", 2, 1.0, 1.0)])
    top = at_largest(df, "batch")
    assert sorted(zip(top["problem"], top["batch"])) == [("mlp", 2), ("vdp", 16)]
    # spread 1000 ran at one batch size, spread 10 at two: the time figure is drawn at 10.
    chosen = best_slice(df, "batch", "spread")
    assert set(chosen[chosen["problem"] == "vdp"]["spread"]) == {10.0}


def test_the_summary_and_the_inflation_table_show_the_declared_stepping_and_mark_unstable_times():
    df = pd.DataFrame([_row("torchdiffeq", "vdp", 8, 10.0, 1.5), _row("torchdiffeq", "vdp", 8, 100.0, 3.25),
                       _row("torchode", "vdp", 8, 100.0, 1.0, stepping="per-sample"),
                       _row("torchode", "vdp", 8, 10.0, None, status="max_steps", stepping="per-sample"),
                       _row("torchdiffeq", "vdp", 2, 100.0, 2.0)])
    table = summary(df)
    assert list(table["N"].unique()) == [8] and len(table) == 4
    by = {(r["plugin"], r["spread"]): r for _, r in table.iterrows()}
    assert by[("torchode", "100")]["stepping"] == "per-sample" and by[("torchdiffeq", "100")]["inflation"] == "3.25"
    assert by[("torchode", "10")]["status"] == "max_steps (ran out)" and by[("torchode", "10")]["inflation"] == "–"
    assert by[("torchdiffeq", "10")]["ms/sample solo"].endswith("⚠")  # IQR above half the median
    wide = inflation_table(df)
    assert list(wide.columns) == ["problem", "plugin", "method", "stepping", "N", "spread 10", "spread 100"]
    rows = {r["plugin"]: r for _, r in wide.iterrows()}
    assert rows["torchdiffeq"]["spread 100"] == "3.25 (3.25)" and rows["torchode"]["spread 10"] == "–"
    assert json.dumps(rows["torchode"]["stepping"]) == '"per-sample"'
