"""Each claim rule on constructed records: a case that holds, one that does not, and one without its rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from odebench.claims import FAILS, HOLDS, NOT_MEASURED, RULES, evaluate


def frame(*rows: dict) -> pd.DataFrame:
    """A run's table from partial records: every row ok on cpu, seed 0, with a case id naming it."""
    out = []
    for i, r in enumerate(rows):
        r = {"status": "ok", "message": "", "device": "cpu", "seed": 0, "rtol": None, "atol": None,
             "grad_mode": "backprop", "plugin": "torchdiffeq", "method": "rk4"} | r
        r.setdefault("case_id", f"{r['plugin']}/{r['method']}/{r['grad_mode']}/{r.get('model', '')}/"
                                f"seed={r['seed']}/{i}")
        out.append(r)
    return pd.DataFrame(out)


def decide(name: str, df: pd.DataFrame, **params):
    r = RULES[name]
    return r.fn(df, r.defaults | params)


def spiral(dopri5_s: float, dopri5_mse: float) -> pd.DataFrame:
    return frame({"method": "rk4", "train_s": 12.95, "final_mse": 0.0173},
                 {"method": "dopri5", "train_s": dopri5_s, "final_mse": dopri5_mse},
                 {"method": "euler", "train_s": 13.43, "final_mse": 0.0183})


# --------------------------------------------------------------------------- cost_vs_gain
def test_cost_vs_gain_holds_on_the_papers_own_figures():
    out = decide("cost_vs_gain", spiral(39.06, 0.0167))
    assert out.verdict == HOLDS, out.why
    ratio = next(f for f in out.figures if "training time" in f.name)
    assert ratio.value == pytest.approx(39.06 / 12.95)
    assert len(ratio.cases) == 2 and all("torchdiffeq" in c for c in ratio.cases)


@pytest.mark.parametrize("dopri5_s, dopri5_mse, why", [(20.0, 0.0167, "time ×1.54"), (39.06, 0.010, "MSE 42.2% lower")])
def test_cost_vs_gain_does_not_hold_when_dopri5_is_cheap_or_much_better(dopri5_s, dopri5_mse, why):
    out = decide("cost_vs_gain", spiral(dopri5_s, dopri5_mse))
    assert out.verdict == FAILS and why in out.why


def test_cost_vs_gain_is_judged_per_plugin():
    df = pd.concat([spiral(39.06, 0.0167), spiral(20.0, 0.0167).assign(plugin="torch_custom")])
    out = decide("cost_vs_gain", df)
    assert out.verdict == FAILS
    assert "does not hold for torch_custom" in out.why and "holds for torchdiffeq" in out.why


def test_cost_vs_gain_is_not_measured_without_both_methods():
    out = decide("cost_vs_gain", spiral(39.06, 0.0167).query("method != 'dopri5'"))
    assert out.verdict == NOT_MEASURED and "dopri5 and rk4" in out.why


# --------------------------------------------------------------------------- accuracy_reached
def review(acc: float) -> pd.DataFrame:
    return frame({"model": "review", "plugin": "torch_custom", "method": "euler", "grad_mode": "adjoint",
                  "test_acc": acc, "s_per_epoch": 690.0, "epochs_done": 5})


def test_accuracy_reached_holds_and_fails_on_the_target():
    assert decide("accuracy_reached", review(0.9925), accuracy_pct=99.23).verdict == HOLDS
    out = decide("accuracy_reached", review(0.985), accuracy_pct=99.23, tolerance_pct=0.2)
    assert out.verdict == FAILS and "98.50 % < 99.03 %" in out.why
    minutes = next(f for f in out.figures if "minutes" in f.name)
    assert minutes.value == pytest.approx(11.5)


def test_accuracy_reached_is_not_measured_without_rows():
    assert decide("accuracy_reached", review(0.99).iloc[0:0], accuracy_pct=99.23).verdict == NOT_MEASURED


# --------------------------------------------------------------------------- memory_class
def memory(grad: str, peaks, saved=None) -> list[dict]:
    ns = [4, 16, 64]
    return [{"plugin": "torchdiffeq", "method": "rk4", "grad_mode": grad, "block": "mlp", "n_steps": n,
             "peak_bytes": p, "saved_bytes": None if saved is None else saved[i], "state_bytes": 65536.0,
             "class_params": json.dumps({})} for i, (n, p) in enumerate(zip(ns, peaks))]


BACKPROP = memory("backprop", [2e6 + 1.25e6 * n for n in (4, 16, 64)], [1.25e6 * n for n in (4, 16, 64)])


def test_memory_class_holds_for_a_flat_adjoint_and_a_linear_backprop():
    out = decide("memory_class", frame(*BACKPROP, *memory("adjoint", [3e6, 3e6, 3.01e6])))
    assert out.verdict == HOLDS, out.why
    assert {f.name.split(":")[0] for f in out.figures} == {"torchdiffeq rk4 backprop mlp cpu",
                                                           "torchdiffeq rk4 adjoint mlp cpu"}


def test_memory_class_does_not_hold_for_a_growing_adjoint():
    out = decide("memory_class", frame(*BACKPROP, *memory("adjoint", [1e6 * n for n in (4, 16, 64)])))
    assert out.verdict == FAILS and "adjoint" in out.why.split("does not hold for")[1]


def test_memory_class_is_not_measured_with_backprop_alone():
    assert decide("memory_class", frame(*BACKPROP)).verdict == NOT_MEASURED


# --------------------------------------------------------------------------- nfe_ratio
def nfe(bwd: float, grad: str = "adjoint") -> pd.DataFrame:
    return frame({"method": "dopri5", "grad_mode": grad, "nfe_fwd": 26.0, "nfe_bwd": bwd},
                 {"method": "rk4", "grad_mode": grad, "nfe_fwd": 40.0, "nfe_bwd": 80.0})


def test_nfe_ratio_holds_near_half_and_fails_far_from_it():
    assert decide("nfe_ratio", nfe(13.0)).verdict == HOLDS
    out = decide("nfe_ratio", nfe(40.0))
    assert out.verdict == FAILS and "1.54 outside [0.25, 0.75]" in out.why
    assert out.figures[0].value == pytest.approx(40 / 26)


def test_nfe_ratio_is_not_measured_without_adjoint_rows():
    assert decide("nfe_ratio", nfe(13.0, grad="backprop")).verdict == NOT_MEASURED


# --------------------------------------------------------------------------- parameter_count / test_error
TABLE1 = {"odenet": 0.22, "resnet": 0.60, "rknet": 0.22}


def mnist(errors: dict[str, float]) -> pd.DataFrame:
    params = {"odenet": 208266, "resnet": 576778, "rknet": 208266}
    return frame(*({"model": m, "params": params[m], "test_error_pct": e} for m, e in errors.items()))


def test_parameter_count_holds_within_tolerance_and_fails_outside():
    df = mnist({"odenet": 4.0, "resnet": 4.0, "rknet": 4.0})
    assert decide("parameter_count", df, expected=TABLE1).verdict == HOLDS
    out = decide("parameter_count", df, expected=TABLE1, rel_tolerance=0.02)
    assert out.verdict == FAILS and "0.208 M vs 0.22 M" in out.why


def test_parameter_count_is_not_measured_without_the_models():
    assert decide("parameter_count", frame({"model": "review", "params": 1e5}), expected=TABLE1).verdict == NOT_MEASURED


def test_parameter_count_names_the_models_the_run_lacks():
    out = decide("parameter_count", mnist({"odenet": 4.0}), expected=TABLE1)
    assert out.verdict == HOLDS and "not in this run: resnet, rknet" in out.why


def test_test_error_holds_and_fails():
    assert decide("test_error", mnist({"odenet": 0.40, "resnet": 0.45}), expected=TABLE1 | {"odenet": 0.42,
                  "resnet": 0.41}).verdict == HOLDS
    out = decide("test_error", mnist({"odenet": 1.5}), expected={"odenet": 0.42})
    assert out.verdict == FAILS and "1.50 % > 0.42 + 0.1 %" in out.why


def test_test_error_is_not_measured_without_the_models():
    assert decide("test_error", mnist({}).reindex(columns=["status"]), expected={"odenet": 0.42}).verdict == NOT_MEASURED


# --------------------------------------------------------------------------- seminorm_saving
def adjoints(semi_bwd: float | None) -> pd.DataFrame:
    rows = [{"method": "dopri5", "grad_mode": "adjoint", "rtol": 1e-7, "seed": s, "nfe_fwd": 60.0, "nfe_bwd": 100.0 + s}
            for s in (0, 1, 2)]
    if semi_bwd is not None:
        rows += [{"method": "dopri5", "grad_mode": "adjoint-seminorm", "rtol": 1e-7, "seed": s, "nfe_fwd": 60.0,
                  "nfe_bwd": semi_bwd} for s in (0, 1, 2)]
    return frame(*rows)


def test_seminorm_saving_holds_for_half_and_fails_for_a_fifth():
    out = decide("seminorm_saving", adjoints(50.0))
    assert out.verdict == HOLDS and out.figures[0].value == pytest.approx(1 - 50 / 101)
    assert len(out.figures[0].cases) == 6
    assert decide("seminorm_saving", adjoints(80.0)).verdict == FAILS


def test_seminorm_saving_without_seminorm_rows_says_what_the_plain_adjoint_gives():
    out = decide("seminorm_saving", adjoints(None))
    assert out.verdict == NOT_MEASURED
    assert "no adjoint-seminorm rows" in out.why and "101.0" in out.why
    assert out.figures and out.figures[0].value == 101.0


def test_seminorm_saving_pairs_work_precision_rows_of_the_same_problem_only():
    # The seminorm halves NFE-B on one problem; on the other it saves nothing. Pairing across
    # problems would mix the two into one spurious verdict.
    rows = [{"task": "gradient", "problem": prob, "method": "dopri5", "grad_mode": mode, "rtol": 1e-6,
             "nfe_fwd": 60.0, "nfe_bwd": bwd}
            for prob, plain, semi in (("neural_spiral", 100.0, 50.0), ("neural_wide", 100.0, 100.0))
            for mode, bwd in (("adjoint", plain), ("adjoint-seminorm", semi))]
    out = decide("seminorm_saving", frame(*rows))
    assert out.verdict == FAILS
    cuts = {f.name.split(" ")[0]: f.value for f in out.figures}
    assert cuts == {"neural_spiral": pytest.approx(0.5), "neural_wide": pytest.approx(0.0)}


# --------------------------------------------------------------------------- solver_swap
def swapped(delta: float, method: str = "euler") -> pd.DataFrame:
    return frame({"method": method, "swap_mse": 0.01 + delta, "swap_mse_delta": delta,
                  "swap_solver": "torchdiffeq dopri5 rtol=1e-09 atol=1e-11 float64"})


def test_solver_swap_on_mse_holds_for_a_doubling_and_fails_for_a_small_change():
    out = decide("solver_swap", swapped(0.01), methods=["euler"], min_change=0.1)
    assert out.verdict == HOLDS and out.figures[0].value == pytest.approx(1.0)
    assert decide("solver_swap", swapped(0.0001), methods=["euler"], min_change=0.1).verdict == FAILS


def test_solver_swap_on_accuracy_counts_percentage_points():
    df = frame({"model": "rknet", "method": "rk4", "swap_test_acc": 0.95, "swap_acc_delta": -0.02})
    out = decide("solver_swap", df, methods=["rk4"], min_change=0.5)
    assert out.verdict == HOLDS and out.figures[0].value == pytest.approx(2.0)
    assert decide("solver_swap", df, methods=["rk4"], min_change=3.0).verdict == FAILS


def test_solver_swap_is_not_measured_without_rows_of_the_method():
    assert decide("solver_swap", swapped(0.01, method="dopri5"), methods=["euler"]).verdict == NOT_MEASURED


# --------------------------------------------------------------------------- evaluate
CLAIM = {"source": "Capell et al. 2023", "claim": "dopri5 costs twice rk4 for little gain", "figures": ["train_s"],
         "rule": "cost_vs_gain", "params": RULES["cost_vs_gain"].defaults, "at_least": {"iterations_done": 150},
         "only": {}, "profile": "default", "note": ""}


def test_evaluate_applies_the_row_filters_and_names_the_profile_that_measures_it():
    df = spiral(39.06, 0.0167).assign(iterations_done=6)
    [res] = evaluate({"capell": CLAIM}, df, run="20260101-000000", profile="quick")
    assert res.verdict == NOT_MEASURED
    assert "iterations_done ≥ 150 (this run: 6)" in res.why and "profile default measures it" in res.why
    [res] = evaluate({"capell": CLAIM}, df.assign(iterations_done=150), run="r1", profile="default")
    assert res.verdict == HOLDS and res.run == "r1"


def test_evaluate_ignores_rows_that_did_not_end_ok():
    df = spiral(39.06, 0.0167).assign(iterations_done=150)
    df.loc[df["method"] == "dopri5", "status"] = "max_steps"
    [res] = evaluate({"capell": CLAIM}, df, run="r", profile="default")
    assert res.verdict == NOT_MEASURED
