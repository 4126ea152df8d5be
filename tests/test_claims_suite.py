"""Claims in suite files: validated like every other key, one line naming the bad key and the choices."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MINI_SUITE, ROOT

from odebench.claims import RULES
from odebench.schema import SuiteError
from odebench.suite import load_suite

BASE = MINI_SUITE.format(iterations=3, isolation="inline", launch="exec", threads=0, timeout=300, plugins='["torchdiffeq"]',
                         methods='["rk4", "dopri5"]', grads='["backprop"]')
GOOD = """
[claims.capell]
source = "Capell et al. 2023"
claim = "dopri5 takes more than twice as long as rk4 for little gain"
figures = ["train_s", "final_mse"]
rule = "cost_vs_gain"
params = { min_time_ratio = 2.0 }
at_least = { iterations_done = 3 }
only = { grad_mode = ["backprop"] }
profile = "quick"
"""


def suite(tmp_path: Path, claims: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(BASE + claims)
    return path


def test_a_claim_loads_with_its_rules_defaults_filled_in(tmp_path):
    c = load_suite(suite(tmp_path, GOOD)).config["claims"]["capell"]
    assert c["params"] == RULES["cost_vs_gain"].defaults | {"min_time_ratio": 2.0}
    assert c["profile"] == "quick" and c["at_least"] == {"iterations_done": 3.0}


@pytest.mark.parametrize("change, message", [
    (("figures = ", "figure = "), "unknown key 'figure' in [claims.capell]; valid: source, claim, figures"),
    (('rule = "cost_vs_gain"', 'rule = "cost"'), "unknown value 'cost' for claims.capell.rule; valid: cost_vs_gain"),
    (('rule = "cost_vs_gain"', 'rule = "memory_class"'), "claims.capell.rule 'memory_class' reads memory records, "
                                                        "not train's; valid: cost_vs_gain, nfe_ratio"),
    (("min_time_ratio = 2.0", "min_ratio = 2.0"), "unknown parameter 'min_ratio' in claims.capell.params for rule "
                                                  "'cost_vs_gain'; valid: slow, fast, min_time_ratio, max_error_gain"),
    (("min_time_ratio = 2.0", "min_time_ratio = -1.0"), "claims.capell.params.min_time_ratio must be positive"),
    (("min_time_ratio = 2.0", 'slow = "dopri9"'), "unknown value 'dopri9' for claims.capell.params.slow; valid: euler"),
    (('"final_mse"]', '"final_error"]'), "unknown column 'final_error' in claims.capell.figures; valid: suite,"),
    (("iterations_done = 3", "iterations = 3"), "unknown column 'iterations' in claims.capell.at_least; valid:"),
    (('profile = "quick"', 'profile = "fast"'), "unknown profile 'fast' for claims.capell.profile"),
    (('source = "Capell et al. 2023"\n', ""), "[claims.capell] has no 'source'"),
    (("[claims.capell]", "[claims.'capell et al']"), "claim id 'capell et al' is not a valid name"),
])
def test_a_bad_claim_is_one_line_naming_the_key_and_the_choices(tmp_path, change, message):
    with pytest.raises(SuiteError) as err:
        load_suite(suite(tmp_path, GOOD.replace(*change)))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_rule_parameter_without_a_default_must_be_given(tmp_path):
    text = GOOD.replace('rule = "cost_vs_gain"', 'rule = "nfe_ratio"').replace("min_time_ratio = 2.0", "") \
        .replace('"final_mse"', '"nfe_bwd"')
    assert load_suite(suite(tmp_path, text)).config["claims"]["capell"]["params"]["low"] == 0.25
    mnist = (ROOT / "suites/mnist/suite.toml").read_text().replace("expected = { odenet = 0.22, resnet = 0.60, "
                                                                   "rknet = 0.22 }, ", "")
    path = tmp_path / "mnist.toml"
    path.write_text(mnist)
    with pytest.raises(SuiteError, match="params has no 'expected' \\(rule 'parameter_count' needs it\\)"):
        load_suite(path)


def test_an_unknown_section_lists_claims_among_the_valid_ones(tmp_path):
    with pytest.raises(SuiteError, match=r"unknown section \[claim\].*valid: .*claims"):
        load_suite(suite(tmp_path, GOOD.replace("[claims.capell]", "[claim.capell]")))


def test_a_profile_may_change_a_claims_parameters(tmp_path):
    text = GOOD + '\n[profiles.strict]\nclaims = { capell = { params = { min_time_ratio = 3.0 } } }\n'
    assert load_suite(suite(tmp_path, text), "strict").config["claims"]["capell"]["params"]["min_time_ratio"] == 3.0


@pytest.mark.parametrize("name", ["spiral", "mnist", "memory"])
def test_every_shipped_suite_lists_claims_that_load_in_every_profile(name):
    base = load_suite(ROOT / "suites" / name)
    assert base.config["claims"], f"suites/{name} lists no claims"
    for profile in base.profiles:
        assert load_suite(ROOT / "suites" / name, profile).config["claims"].keys() == base.config["claims"].keys()
