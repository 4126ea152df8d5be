"""The work-precision analysis: error measures, reference agreement, walls, interpolation, the matched table."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from odebench.problems.reference import solve_reference
from odebench.workloads.workprecision import problems
from odebench.workloads.workprecision.analysis import (
    check_references,
    cost_at_error,
    detect_wall,
    error_at_cost,
    error_measures,
    ranks,
    relative_l2,
)
from odebench.workloads.workprecision.report import summary
from odebench.workloads.workprecision.schema import DEFAULTS

CONFIG = {"problems": {}, "reference": dict(DEFAULTS["reference"])}


def test_error_measures_are_relative_and_skip_the_initial_state():
    ref = np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    ys = ref + np.array([[5.0, 0.0], [0.0, 0.2], [0.0, 0.4]])  # t0 is the initial state: never an error
    e = error_measures(ys, ref)
    assert e["final"] == pytest.approx(0.4 / 4.0)
    assert e["l2"] == pytest.approx(math.sqrt((0.04 + 0.16) / 4) / math.sqrt((4 + 16) / 4))
    assert e["L∞"] == pytest.approx(0.4 / 4.0)
    assert error_measures(ys * np.nan, ref)["l2"] == math.inf
    with pytest.raises(ValueError, match="shape"):
        error_measures(ys[:2], ref)
    assert relative_l2([1.0, 1.0], [1.0, 0.0]) == pytest.approx(1.0)


def test_the_reference_agreement_check_fires_on_a_deliberately_poor_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("ODEBENCH_CACHE", str(tmp_path))
    config = dict(CONFIG, problems={"vanderpol": {"t1": 2.0, "n_points": 5}})
    problem = problems.build("vanderpol", config, 0)
    good = problems.references(problem, config)
    # A curve that reaches 1e-9: the two tight references vouch for it ...
    curve = [1e-3, 1e-5, 1e-7, 1e-9]
    dis = error_measures(good.second, good.ys)["l2"]
    assert dis < 1e-12
    ok = check_references(dis, curve, margin=10.0)
    assert ok.ok and ok.floor == pytest.approx(10 * dis) and "agree to" in ok.sentence("vdp")
    # ... a reference solved at rtol 1e-5 does not, and the check says where plotting stops.
    poor = solve_reference(problem.rhs, problem.y0, problem.ts, stiff=False, rtol=1e-5, atol=1e-8)
    bad_dis = error_measures(poor, good.ys)["l2"]
    bad = check_references(bad_dis, curve, margin=10.0)
    assert not bad.ok and bad.floor > 1e-9 and bad.smallest == 1e-9
    assert "agree only to" in bad.sentence("vdp") and "nothing below" in bad.sentence("vdp")


def test_the_stiff_references_are_radau_and_bdf(tmp_path, monkeypatch):
    monkeypatch.setenv("ODEBENCH_CACHE", str(tmp_path))
    config = {"problems": {"robertson": {"t1": 1.0, "n_points": 5}}, "reference": dict(DEFAULTS["reference"])}
    refs = problems.references(problems.build("robertson", config, 0), config)
    assert refs.kind.startswith("Radau") and "BDF" in refs.kind
    assert error_measures(refs.second, refs.ys)["l2"] < 1e-10


def test_the_wall_detector_fires_on_a_flattened_curve_and_not_on_a_power_law():
    tol = 10.0 ** -np.arange(3, 11)
    clean = 3.0 * tol ** 0.9
    assert detect_wall(clean, floor=1e-14) is None
    flattened = np.maximum(clean, 3e-7) * (1 + 0.1 * np.cos(np.arange(8)))  # a wobble at the wall
    wall = detect_wall(flattened, floor=1e-14)
    assert wall is not None and wall.points == 3 and 2e-7 < wall.level < 4e-7
    assert wall.at_reference is False and "above the reference" in wall.sentence()
    assert detect_wall(flattened, floor=1e-7).at_reference is True
    assert detect_wall(flattened).at_reference is None
    # Fixed steps doubling with a first-order method: 0.3 decades per point, still a clean curve.
    n = 2.0 ** np.arange(3, 11)
    assert detect_wall(5.0 / n) is None
    # A curve flat from its first point never converged: not a wall. Failed points are skipped.
    assert detect_wall(np.full(8, 0.5)) is None
    with_gaps = flattened.copy()
    with_gaps[2] = np.nan
    assert detect_wall(with_gaps, floor=1e-14) is not None


@pytest.mark.parametrize("a, k", [(1e-2, 0.2), (3.0, 0.5), (0.1, 1.25)])
def test_matched_error_interpolation_is_exact_on_power_laws(a, k):
    # cost = a · error^-k, sampled at tolerances that bracket the targets.
    errors = np.logspace(-2, -11, 7)
    costs = a * errors ** -k
    for target in (1e-3, 1e-6, 1e-9, 3.3e-5):
        m = cost_at_error(errors, costs, target)
        assert m.kind == "interpolated" and m.cost == pytest.approx(a * target ** -k, rel=1e-12)
        assert error_at_cost(costs, errors, a * target ** -k) == pytest.approx(target, rel=1e-12)


def test_matched_error_bounds_gaps_and_misses():
    errors = np.array([1e-2, 1e-4, np.nan, 1e-8])
    costs = np.array([1.0, 10.0, 100.0, 1000.0])
    first = cost_at_error(errors, costs, 0.1)
    assert first.kind == "bound" and first.cost == 1.0  # met by the loosest point already: an upper bound
    gap = cost_at_error(errors, costs, 1e-6)
    assert gap.kind == "bound" and gap.cost == 1000.0  # a failed point is never bridged
    miss = cost_at_error(errors, costs, 1e-10)
    assert miss.kind == "not reached" and math.isnan(miss.cost) and not miss.reached
    assert math.isnan(error_at_cost(costs[:2], errors[:2], 1e4))
    assert ranks({"a": 3.0, "b": 1.0, "c": math.nan}) == {"b": 1, "a": 2}


def _row(problem, plugin, method, rtol, err, time_s, nfe, task="solve", grad="backprop", status="ok"):
    return {"problem": problem, "task": task, "plugin": plugin, "method": method, "grad_mode": grad,
            "rtol": rtol, "n_steps": 0, "status": status, "message": "", "err_l2": err, "err_final": err,
            "err_linf": err, "time_s": time_s, "nfe_fwd": nfe, "nfe_bwd": None, "grad_err": err,
            "ref_l2": 1e-14, "ref_final": 1e-14, "ref_linf": 1e-14, "grad_ref_xcheck": 1e-12,
            "report_params": json.dumps(dict(DEFAULTS["report"], margin=10.0))}


def test_the_matched_error_table_ranks_cheapest_first_and_says_not_reached():
    rtols = [1e-2, 1e-4, 1e-6, 1e-8, 1e-10]
    rows = []
    for (plugin, scale, floor) in (("slow", 10.0, 0.0), ("fast", 1.0, 0.0), ("stuck", 0.1, 1e-5)):
        for r in rtols:
            err = max(r * 0.1, floor)
            rows.append(_row("p", plugin, "dopri5", r, err, scale * err ** -0.2 * 1e-3, 10 * err ** -0.2))
    rows.append(_row("p", "broken", "dopri5", 1e-2, None, None, None, status="max_steps"))
    table = summary(pd.DataFrame(rows))
    assert list(table["plugin"][:2]) == ["fast", "slow"]  # both reach 1e-9: the cheaper first
    fast = table[table["plugin"] == "fast"].iloc[0]
    assert fast["@1e-09 ms"].endswith("(#1)") and fast["@1e-06 ms"].endswith("(#1)")
    stuck = table[table["plugin"] == "stuck"].iloc[0]
    assert stuck["@1e-06 ms"] == "not reached" and stuck["@1e-09 NFE"] == "not reached"
    # 1e-3 is met by every curve's first point: an upper bound, ranked all the same (stuck is cheapest).
    assert stuck["@1e-03 ms"].startswith("≤") and stuck["@1e-03 ms"].endswith("(#1)")
    assert fast["@1e-03 ms"].endswith("(#2)")
    assert table[table["plugin"] == "broken"].iloc[0]["points"] == "max_steps×1"
    assert float(fast["@1e-06 ms"].split()[0]) == pytest.approx(1e3 * 1e-3 * (1e-6) ** -0.2, rel=5e-3)  # 3 digits


@pytest.mark.parametrize("plugins, width", [(2, 1000), (10, 1300)])
def test_a_gradient_figure_widens_to_keep_every_legend_entry_on_the_canvas(tmp_path, plugins, width):
    from PIL import Image

    from odebench.workloads.workprecision.report import LEGEND_ROWS, figures, legend_columns

    rows = [_row("neural", f"plugin{i}", "dopri5", r, r * 0.1, (r * 0.1) ** -0.2 * 1e-3, 10, task="gradient",
                 grad=g)
            for i in range(plugins) for g in ("backprop", "adjoint", "adjoint-seminorm", "checkpoint")
            for r in (1e-3, 1e-5, 1e-7)]
    (path,) = figures(rows, tmp_path)
    assert path.name == "workprecision_neural_gradient.png"
    # 8 lines fit one legend column; 40 need two (LEGEND_ROWS each), and the canvas grows by a column's width.
    assert legend_columns(4 * plugins) == (1 if 4 * plugins <= LEGEND_ROWS else 2)
    assert Image.open(path).size[0] == width
