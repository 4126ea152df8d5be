"""Suite loading and validation: every mistake is one line naming the bad value and the choices."""

from __future__ import annotations

import pytest
from conftest import ROOT, write_suite

from odebench.suite import SuiteError, load_suite


def test_spiral_suite_is_the_papers_setting():
    suite = load_suite(ROOT / "suites" / "spiral")
    cfg = suite.config
    assert suite.profile == "default"
    assert cfg["problem"]["params"]["A"] == [[-0.1, 2.0], [-2.0, -0.1]]
    assert cfg["problem"]["params"]["n_points"] == 500 and cfg["problem"]["params"]["t1"] == 25.0
    assert cfg["model"]["sizes"] == [2, 50, 2] and cfg["model"]["activation"] == "tanh"
    assert cfg["training"]["optimizer"] == "rmsprop" and cfg["training"]["lr"] == 1e-3
    assert (cfg["training"]["iterations"], cfg["training"]["batch_size"], cfg["training"]["batch_time"]) == (150, 16, 10)
    assert cfg["training"]["snapshots"] == [0, 50, 100, 150]
    assert cfg["matrix"]["method"] == ["euler", "rk4", "dopri5"]
    assert cfg["matrix"]["tolerances"] == [{"rtol": 1e-7, "atol": 1e-9}]
    assert load_suite(ROOT / "suites" / "spiral", "full").config["matrix"]["seed"] == [0, 1, 2]


def test_fixed_step_methods_ignore_tolerances(tmp_path):
    suite = load_suite(write_suite(tmp_path, methods=("euler", "dopri5")))
    ids = [c.id for c in suite.cases()]
    assert "torchdiffeq/euler/backprop/seed=0/cpu" in ids
    assert "torchdiffeq/dopri5/adjoint/rtol=1e-05,atol=1e-07/seed=0/cpu" in ids
    assert len(ids) == len(set(ids)) == 4


def test_profile_overrides_and_filters(tmp_path):
    suite = load_suite(write_suite(tmp_path), "quick")
    assert suite.config["training"]["iterations"] == 2
    cases = suite.cases(methods=["rk4"], grad_modes=["adjoint"])
    assert [c.id for c in cases] == ["torchdiffeq/rk4/adjoint/seed=0/cpu"]


BAD = [
    ("[suite]\nname='x'\nbogus=1\n", "unknown key 'bogus' in [suite]; valid: name"),
    ("[nonsense]\n", "unknown section [nonsense]"),
    ("[suite\nname=", "malformed TOML"),
]


@pytest.mark.parametrize("text, expected", BAD)
def test_structural_errors(tmp_path, text, expected):
    write_suite(tmp_path, text=text)
    with pytest.raises(SuiteError) as err:
        load_suite(tmp_path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("old, new, expected", [
    ('method = ["euler", "rk4"]', 'method = ["euler", "rk5"]',
     "unknown value 'rk5' for matrix.method[1]; valid: euler, midpoint"),
    ('grad_mode = ["backprop", "adjoint"]', 'grad_mode = ["magic"]',
     "unknown value 'magic' for matrix.grad_mode[0]; valid: backprop, adjoint, adjoint-seminorm, checkpoint"),
    ("rtol = 1e-5", "rtol = -1e-5", "matrix.tolerances[0].rtol must be positive, got -1e-05"),
    ("lr = 1e-3", "lr = 0", "training.lr must be positive, got 0.0"),
    ('name = "linear_spiral"', 'name = "lorenz96"', "unknown problem 'lorenz96'; valid: linear_spiral, vanderpol"),
    ("n_points = 60", "npoints = 60", "unknown key 'npoints' in problem.params for 'linear_spiral'; valid: A, y0"),
    ("iterations = 3", 'iterations = "3"', "training.iterations must be int, got '3'"),
    ("sizes = [2, 8, 2]", "sizes = [2, 8, 2]\nactivation = 'gelu'", "unknown value 'gelu' for model.activation"),
])
def test_value_errors_name_the_value_and_choices(tmp_path, old, new, expected):
    folder = write_suite(tmp_path)
    toml = folder / "suite.toml"
    assert old in toml.read_text()
    toml.write_text(toml.read_text().replace(old, new, 1))
    with pytest.raises(SuiteError) as err:
        load_suite(folder)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_profile_and_filter_list_the_choices(tmp_path):
    folder = write_suite(tmp_path)
    with pytest.raises(SuiteError, match=r"unknown profile 'fast' for suite 'mini'; valid: default, quick"):
        load_suite(folder, "fast")
    with pytest.raises(SuiteError, match=r"--method 'dopri5' is not in suite 'mini'.*valid: euler, rk4"):
        load_suite(folder).cases(methods=["dopri5"])


def test_missing_suite_folder(tmp_path):
    with pytest.raises(SuiteError, match="no suite at"):
        load_suite(tmp_path / "nowhere")


def test_matrix_include_adds_cases_without_widening_the_product(tmp_path):
    folder = write_suite(tmp_path)
    toml = folder / "suite.toml"
    toml.write_text(toml.read_text().replace(
        "tolerances = [", 'include = [{ plugin = "torchdiffeq", method = "dopri5", grad_mode = "adjoint" }]\n'
                          "tolerances = ["))
    suite = load_suite(folder)
    ids = [c.id for c in suite.cases()]
    assert len(ids) == 5 and ids[-1] == "torchdiffeq/dopri5/adjoint/rtol=1e-05,atol=1e-07/seed=0/cpu"
    assert [c.id for c in suite.cases(methods=["dopri5"])] == ids[-1:]
    toml.write_text(toml.read_text().replace('grad_mode = "adjoint" }', 'grad = "adjoint" }'))
    with pytest.raises(SuiteError, match="unknown key 'grad' in matrix.include\\[0\\]; valid: plugin, method"):
        load_suite(folder)


def test_an_include_block_may_sweep_tolerances_of_its_own(tmp_path):
    folder = write_suite(tmp_path, methods=("euler", "dopri5"), grads=("backprop",))
    toml = folder / "suite.toml"
    base = toml.read_text()
    own = ('include = [{ method = "dopri5", grad_mode = "adjoint", tolerances = [{ rtol = 1e-3, atol = 1e-5 }, '
           '{ rtol = 1e-4, atol = 1e-6 }] }]\ntolerances = [')
    toml.write_text(base.replace("tolerances = [", own, 1))
    ids = [c.id for c in load_suite(folder).cases()]
    # The base block keeps the matrix's sweep; the include block has its own two points only.
    assert ids == ["torchdiffeq/euler/backprop/seed=0/cpu", "torchdiffeq/dopri5/backprop/rtol=1e-05,atol=1e-07/seed=0/cpu",
                   "torchdiffeq/dopri5/adjoint/rtol=0.001,atol=1e-05/seed=0/cpu",
                   "torchdiffeq/dopri5/adjoint/rtol=0.0001,atol=1e-06/seed=0/cpu"]
    toml.write_text(base.replace("tolerances = [", own.replace("atol = 1e-6", "tol = 1e-6"), 1))
    with pytest.raises(SuiteError, match=r"unknown key 'tol' in matrix.include\[0\].tolerances\[1\]; valid: rtol, atol"):
        load_suite(folder)
    toml.write_text(base.replace("tolerances = [", own.replace("rtol = 1e-3", "rtol = -1e-3"), 1))
    with pytest.raises(SuiteError, match=r"matrix.include\[0\].tolerances\[0\].rtol must be positive, got -0.001"):
        load_suite(folder)


def test_fork_launch_needs_a_thread_count(tmp_path):
    load_suite(write_suite(tmp_path / "ok", isolation="process", launch="fork", threads=1))
    with pytest.raises(SuiteError, match="measure.launch = 'fork' needs measure.threads > 0"):
        load_suite(write_suite(tmp_path / "bad", isolation="process", launch="fork", threads=0))
    with pytest.raises(SuiteError, match="unknown value 'spawn' for measure.launch; valid: exec, fork"):
        load_suite(write_suite(tmp_path / "worse", isolation="process", launch="spawn", threads=1))
