"""One meaning for "default": the settings a suite runs with when no --profile is given."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, odebench_cli, write_suite

from odebench.suite import SuiteError, load_suite


def test_default_is_what_runs_without_a_profile():
    mnist = ROOT / "suites" / "mnist"
    plain, named = load_suite(mnist), load_suite(mnist, "default")
    assert plain.profile == named.profile == plain.default_profile == "quick"
    assert named.config == plain.config and plain.config["training"]["epochs"] == 1
    assert load_suite(mnist, "full").config["training"]["epochs"] == 160  # the base settings, the paper's
    assert plain.profiles == ["quick", "full", "smoke", "asv", "review", "review-quick"]
    spiral = load_suite(ROOT / "suites" / "spiral")
    assert spiral.profile == spiral.default_profile == "default" and spiral.profiles == ["default", "quick", "full"]
    with pytest.raises(SuiteError, match=r"unknown profile 'huge' for suite 'mnist'; valid: quick \(the default\), "
                                         r"full, smoke, asv, review, review-quick$"):
        load_suite(mnist, "huge")


def test_a_profile_called_default_or_a_default_profile_that_is_none_is_refused(tmp_path):
    folder = write_suite(tmp_path)
    toml = folder / "suite.toml"
    text = toml.read_text()
    toml.write_text(text.replace("[profiles.quick]", "[profiles.default]"))
    with pytest.raises(SuiteError, match=r"\[profiles.default\] .*'default' is reserved"):
        load_suite(folder)
    toml.write_text(text.replace('workload = "train"', 'workload = "train"\ndefault_profile = "fast"'))
    with pytest.raises(SuiteError, match=r"unknown value 'fast' for suite.default_profile; valid: quick$"):
        load_suite(folder)


def test_list_marks_the_profile_used_by_default():
    out = odebench_cli("list", "--json")
    suites = {s["name"]: s for s in json.loads(out.stdout)["suites"]}
    assert suites["mnist"]["default_profile"] == "quick" and suites["spiral"]["default_profile"] == "default"
    text = odebench_cli("list").stdout
    assert "profiles: quick (default), full, smoke, asv, review, review-quick" in text
    assert "profiles: default (base settings), quick, full" in text


def test_an_older_run_of_the_base_settings_called_default_is_not_resumed_with_other_settings(tmp_path):
    folder = write_suite(tmp_path / "suite")
    toml = folder / "suite.toml"
    toml.write_text(toml.read_text().replace('workload = "train"', 'workload = "train"\ndefault_profile = "quick"'))
    run_dir = tmp_path / "results" / "mini" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"suite_path": str(folder), "profile": "default", "filters": {},
                                                  "overrides": {}}))
    out = odebench_cli("run", "--resume", str(run_dir))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "the run used suite 'mini''s base settings, then called 'default'" in out.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]
