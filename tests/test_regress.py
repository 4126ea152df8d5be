"""Regression tracking: the comparison of deterministic figures, the CLI, asv's generated benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, write_suite

from odebench import records
from odebench.regress import Thresholds, compare, compare_records, render

CASE = "torchdiffeq/rk4/backprop/seed=0/cpu"


def _rec(case_id=CASE, status="ok", **figures):
    base = {"nfe_fwd": 36.0, "nfe_bwd": 0.0, "steps": 9.0, "final_mse": 1.4239, "saved_bytes": 121924,
            "s_per_iter": 0.015, "peak_rss_bytes": 49152}
    return {"case_id": case_id, "status": status, "message": "" if status == "ok" else "boom"} | base | figures


# ----------------------------------------------------------------------------- comparison logic

def test_doubled_nfe_is_a_regression_naming_the_benchmark_and_both_values():
    comp = compare_records("spiral", [_rec()], [_rec(nfe_fwd=72.0)])
    assert comp.exit_code == 1
    (reg,) = comp.regressions
    assert reg.metric == "nfe_fwd" and (reg.base, reg.head) == (36.0, 72.0)
    msg = reg.message()
    assert "spiral.asv_bench.NFEForward.track_nfe_fwd" in msg and CASE in msg
    assert "36 -> 72" in msg and "+100.0%" in msg
    text = render(comp, "HEAD~1", "HEAD")
    assert text.splitlines()[0].startswith("REGRESSION spiral.asv_bench.NFEForward.track_nfe_fwd")
    assert "FAIL: 1 regression" in text.splitlines()[-1]


def test_a_regression_accepted_by_the_commit_message_is_reported_and_passes():
    comp = compare_records("spiral", [_rec()], [_rec(nfe_fwd=72.0)])
    comp.accepted = "tighter default tolerance"
    assert comp.exit_code == 0 and len(comp.regressions) == 1
    text = render(comp, "HEAD~1", "HEAD")
    assert text.startswith("REGRESSION ") and "ACCEPTED: 1 regression" in text.splitlines()[-1]


def test_identical_figures_pass():
    comp = compare({"spiral": [_rec(), _rec("b/euler/adjoint/seed=0/cpu")]},
                   {"spiral": [_rec(), _rec("b/euler/adjoint/seed=0/cpu")]})
    assert comp.exit_code == 0 and not comp.regressions
    assert {f.verdict for f in comp.findings} == {"ok", "info"}
    assert render(comp, "a", "b").splitlines()[-1].startswith("PASS: 10 deterministic figures")


def test_timings_are_never_gated():
    comp = compare_records("spiral", [_rec()], [_rec(s_per_iter=10.0, peak_rss_bytes=10**10)])
    assert comp.exit_code == 0
    timing = {f.metric: f for f in comp.findings if f.metric in ("s_per_iter", "peak_rss_bytes")}
    assert {f.verdict for f in timing.values()} == {"info"} and timing["s_per_iter"].head == 10.0
    assert "not gated" in render(comp, "a", "b")


@pytest.mark.parametrize(("figure", "value", "verdict"), [
    ("steps", 9.05, "ok"),              # within 1 %
    ("steps", 18.0, "regression"),
    ("nfe_bwd", 4.0, "regression"),     # from 0: any backward evaluation is new work
    ("saved_bytes", 121924 * 1.02, "regression"),
    ("saved_bytes", 121924 + 4, "ok"),  # a scalar: below the default bytes_rtol
    ("final_mse", 1.4239 * 1.04, "ok"),
    ("final_mse", 1.4239 * 1.2, "regression"),
    ("nfe_fwd", 18.0, "improved"),
])
def test_limits_per_kind_of_figure(figure, value, verdict):
    comp = compare_records("spiral", [_rec()], [_rec(**{figure: value})])
    assert next(f for f in comp.findings if f.metric == figure).verdict == verdict


def test_bytes_up_at_all_with_zero_tolerance():
    comp = compare_records("s", [_rec()], [_rec(saved_bytes=121928)], Thresholds(bytes_rtol=0.0))
    assert [f.metric for f in comp.regressions] == ["saved_bytes"]


def test_error_limit_is_the_noise_of_the_seeds_where_the_base_has_several():
    seeds = ["p/m/g/seed=0/cpu", "p/m/g/seed=1/cpu", "p/m/g/seed=2/cpu"]
    base = [_rec(c, final_mse=v) for c, v in zip(seeds, (1.0, 1.3, 1.1))]
    head = [_rec(c, final_mse=v * 1.25) for c, v in zip(seeds, (1.0, 1.3, 1.1))]
    assert compare_records("s", base, head).exit_code == 0  # +25 % < spread 0.3 / median 1.1
    head[0]["final_mse"] = 1.4
    assert [f.case_id for f in compare_records("s", base, head).regressions] == [seeds[0]]


def test_status_changes():
    comp = compare_records("s", [_rec(), _rec("x/euler/adjoint/seed=0/cpu", status="unavailable")],
                           [_rec(status="error"), _rec("x/euler/adjoint/seed=0/cpu", status="unavailable")])
    (reg,) = comp.regressions
    assert reg.metric == "status" and "ok -> error" in reg.message() and "boom" in reg.message()
    assert any(f.verdict == "skipped" for f in comp.findings)


def test_new_and_gone_cases_and_suites_are_reported_not_gated():
    comp = compare({"spiral": [_rec()], "old": [_rec()]}, {"spiral": [_rec("new/euler/g/seed=0/cpu")],
                                                          "mnist": [_rec()]})
    assert not comp.regressions and comp.exit_code == 1  # fails only because nothing was compared
    assert {f.verdict for f in comp.findings} == {"gone", "new"}
    assert any("'mnist' is only in the head" in n for n in comp.notes)


def test_a_gate_that_compares_nothing_fails_and_says_why():
    empty = compare({"spiral": []}, {"spiral": []})
    assert empty.exit_code == 1 and not empty.regressions
    assert render(empty, "a", "b").splitlines()[-1] == (
        "FAIL: nothing compared between b and a: no case was measured in either tree (timings reported, never gated)")
    unsupported = _rec(status="unsupported")
    comp = compare({"spiral": [unsupported]}, {"spiral": [unsupported]})
    assert comp.exit_code == 1
    assert "no case is ok in both trees (1 not run in the head)" in render(comp, "a", "b").splitlines()[-1]


# ----------------------------------------------------------------------------- command line

def _cli(*args, cwd=ROOT, timeout=600):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "odebench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


def test_cli_user_errors_are_one_line_exit_2(tmp_path):
    r = _cli("regress", "no-such-revision-xyz", "HEAD", "--repo", str(ROOT))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _cli("regress", "--error-rtol", "-1")
    assert r.returncode == 2 and "must not be negative" in r.stderr


def _tree(path, suites):
    """A source tree: the package and plugins of this checkout, and the given suites (name → text)."""
    path.mkdir()
    for name in ("odebench", "plugins", "pyproject.toml"):
        (path / name).symlink_to(ROOT / name)
    for name, text in suites.items():
        write_suite(path / "suites" / name, text=text)
    return path


MINI = """
[suite]
name = "{name}"
[problem]
name = "linear_spiral"
params = {{ n_points = 40, t1 = 2.0 }}
[model]
sizes = [2, 8, 2]
[training]
lr = 1e-3
iterations = 2
batch_size = 4
batch_time = {batch_time}
snapshots = [0, 2]
[measure]
warmup = 0
fairness_steps = 0
[matrix]
plugin = ["torchdiffeq"]
method = ["euler"]
grad_mode = ["backprop"]
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_end_to_end_doubled_steps_fail_and_an_unchanged_suite_passes(tmp_path):
    pytest.importorskip("torchdiffeq")
    # "grid" doubles its steps in the head (8 steps per window instead of 4); "same" is unchanged.
    base = _tree(tmp_path / "base", {"grid": MINI.format(name="grid", batch_time=5),
                                     "same": MINI.format(name="same", batch_time=5)})
    head = _tree(tmp_path / "head", {"grid": MINI.format(name="grid", batch_time=9),
                                     "same": MINI.format(name="same", batch_time=5)})
    out = tmp_path / "findings.json"
    r = _cli("regress", str(base), str(head), "--quiet", "--json", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    regressions = [line for line in r.stdout.splitlines() if line.startswith("REGRESSION")]
    assert "REGRESSION grid.asv_bench.Steps.track_steps('torchdiffeq/euler/backprop/seed=0/cpu'): 4 -> 8 " \
           "(+100.0%; limit +1.0%)" in regressions
    assert regressions and all(line.startswith("REGRESSION grid.") for line in regressions)
    findings = json.loads(out.read_text())["findings"]
    same = [f for f in findings if f["suite"] == "same" and f["verdict"] != "info"]
    assert same and {f["verdict"] for f in same} == {"ok"}
    assert "FAIL" in r.stdout.splitlines()[-1]


def test_report_shows_a_pytest_benchmark_json(tmp_path):
    data = {"machine_info": {"cpu": {"brand_raw": "CPU"}}, "commit_info": {"id": "abc"}, "version": "5.3.1",
            "datetime": "now", "benchmarks": [
                {"name": "test_step_cost[torchdiffeq-rk4-forward]", "stats": {"median": 0.002, "iqr": 1e-4,
                                                                              "rounds": 9},
                 "extra_info": {"plugin": "torchdiffeq", "method": "rk4", "mode": "forward", "steps": 10,
                                "nfe_fwd": 40}}]}
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(data))
    r = _cli("report", str(path))
    assert r.returncode == 0, r.stderr
    assert "torchdiffeq" in r.stdout and "200.0" in r.stdout  # µs per step: 2 ms / 10 steps
    (tmp_path / "other.json").write_text("{}")
    r = _cli("report", str(tmp_path / "other.json"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- asv benchmarks

def test_every_suite_folder_has_its_asv_shim():
    for toml in sorted((ROOT / "suites").glob("*/suite.toml")):
        folder = toml.parent
        assert (folder / "asv_bench.py").is_file(), f"{folder} has no asv_bench.py (copy suites/spiral's)"
        assert (folder / "__init__.py").is_file(), f"{folder} has no __init__.py (asv discovers packages only)"
    assert (ROOT / "suites" / "__init__.py").is_file()


def test_asv_conf():
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    assert conf["environment_type"] == "existing" and conf["benchmark_dir"] == "suites"
    assert conf["results_dir"] == "results/asv" and conf["repo"] == "." and conf["branches"] == ["main"]
    assert conf["env_dir"].startswith(".asv/") and conf["html_dir"].startswith(".asv/")


def test_generated_benchmarks(tmp_path, monkeypatch):
    from odebench.asvbench import make_benchmarks

    folder = write_suite(tmp_path / "mini", plugins=("torchdiffeq", "no_such_plugin"))
    classes = make_benchmarks(folder, "suites.mini.asv_bench")
    assert {"NFEForward", "NFEBackward", "Steps", "FinalError", "SavedBytes", "Case", "GPUMemory"} <= set(classes)
    ids = classes["Steps"].params[0]
    assert "torchdiffeq/euler/backprop/seed=0/cpu" in ids and classes["Steps"].param_names == ["case"]
    # one setup_cache per suite, shared by the track_ classes, keyed by the shim module
    from asv_runner.benchmarks._base import get_setup_cache_key

    monkeypatch.setitem(sys.modules, "suites.mini.asv_bench", type(sys)("suites.mini.asv_bench"))
    keys = {get_setup_cache_key(classes[c].setup_cache) for c in ("Steps", "NFEForward", "FinalError")}
    assert len(keys) == 1 and next(iter(keys)).startswith("mini.asv_bench:")
    # the version is pinned: the same for another matrix, another for other training settings
    assert make_benchmarks(write_suite(tmp_path / "m2", plugins=("torchdiffeq",)), "x").get(
        "Steps").version == classes["Steps"].version
    other = (folder / "suite.toml").read_text().replace("lr = 1e-3", "lr = 1e-2")
    assert make_benchmarks(write_suite(tmp_path / "m3", text=other), "x")["Steps"].version != \
        classes["Steps"].version
    # an unavailable plugin is asv's skip (NotImplementedError in setup), not a failure
    bad = next(i for i in ids if i.startswith("no_such_plugin/"))
    with pytest.raises(NotImplementedError):
        classes["Steps"]().setup({}, bad)
    with pytest.raises(NotImplementedError):
        classes["Case"]().setup(bad)
    cache = {ids[0]: records.slim(_rec(ids[0], steps=4.0)), ids[1]: records.slim(_rec(ids[1], status="error"))}
    assert classes["Steps"]().track_steps(cache, ids[0]) == 4.0
    with pytest.raises(RuntimeError, match="error"):
        classes["Steps"]().track_steps(cache, ids[1])
    monkeypatch.setenv("ODEBENCH_ASV_CASES", "^nothing")
    with pytest.raises(NotImplementedError):
        classes["Steps"]().setup(cache, ids[0])


def test_cli_unknown_profile_or_plugin_is_one_line_exit_2_before_measuring(tmp_path):
    base = _tree(tmp_path / "base", {"grid": MINI.format(name="grid", batch_time=5)})
    head = _tree(tmp_path / "head", {"grid": MINI.format(name="grid", batch_time=5)})
    for flags, needle in ((["--profile", "nosuch"], "unknown profile 'nosuch' for suite 'grid' of "),
                          (["--plugin", "nosuch"], "unknown plugin 'nosuch' for --plugin; registered in ")):
        r = _cli("regress", str(base), str(head), "--quiet", *flags)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert needle in lines[0] and ("valid: default" in lines[0] or "torchdiffeq" in lines[0]), lines[0]
        assert r.stdout == ""
