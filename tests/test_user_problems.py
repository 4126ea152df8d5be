"""A problem of the user's (odebench.Problem) through the workprecision suite: from the command
line and from Python, its unsupported frameworks, its fairness gate, and bad input."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from conftest import ROOT as REPO

import odebench
from odebench import cli, problemload
from odebench.problem import ProblemError
from odebench.problems import builtin

SUITE = str(REPO / "suites" / "workprecision")

# A module outside the package: a 2-8-2 tanh MLP, its frameworks and mistakes chosen by the test.
MODULE = textwrap.dedent('''
    import numpy as np
    from odebench import Problem

    W = [np.random.default_rng(0).normal(0, 0.5, s) for s in ((8, 2), (8,), (2, 8), (2,))]

    def _np(w):
        return lambda t, y: np.tanh(y @ w[0].T + w[1]) @ w[2].T + w[3]

    class Mlp(Problem):
        name = "tiny_mlp"
        frameworks = FRAMEWORKS

        def initial_state(self):
            return Y0

        def times(self):
            return np.linspace(0.0, 1.0, 5)

        def weights(self):
            return WEIGHTS

        def reference(self, ts):
            return REFERENCE

        def numpy_field(self, w):
            return _np(w)

        def torch_field(self, w):
            import torch

            class F(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a, self.b = torch.nn.Linear(2, 8).double(), torch.nn.Linear(8, 2).double()
                    if LOAD:
                        with torch.no_grad():
                            for p, x in zip(self.parameters(), w):
                                p.copy_(torch.as_tensor(x))

                def forward(self, t, y):
                    out = self.b(torch.tanh(self.a(y)))
                    return out[..., :1] if CUT else out

            return F()

        def jax_field(self, w):
            import jax
            import jax.numpy as jnp

            return jax.tree_util.Partial(_jax, [jnp.asarray(x) for x in w])

    def _jax(p, t, y):
        import jax.numpy as jnp

        return SIGN * (jnp.tanh(y @ p[0].T + p[1]) @ p[2].T + p[3])

    def make_problem():
        return Mlp()

    def not_a_problem():
        return 42
''')
DEFAULTS = {"FRAMEWORKS": ("torch", "numpy"), "Y0": "np.array([[1.0, -0.5], [0.3, 0.8]])", "WEIGHTS": "W",
            "LOAD": True, "CUT": False, "SIGN": 1.0, "REFERENCE": "None"}


def write_module(folder, name: str, **settings) -> str:
    """The module ``name`` in ``folder`` with its constants set; returns ``name:make_problem``."""
    values = DEFAULTS | settings
    head = "\n".join(f"{k} = {v}" if isinstance(v, str) else f"{k} = {v!r}" for k, v in values.items())
    anchor = "((8, 2), (8,), (2, 8), (2,))]\n"
    (folder / f"{name}.py").write_text(MODULE.replace(anchor, f"{anchor}{head}\n", 1))
    return f"{name}:make_problem"


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A folder outside the package, the current one (as a user's project would be)."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _rows(table, task):
    return table[(table["task"] == task) & (table["status"] == "ok")]


def test_a_problem_outside_the_package_runs_the_quick_profile_from_the_command_line(user_dir, capsys):
    spec = write_module(user_dir, "cli_problem")
    code = cli.main(["run", SUITE, "--profile", "quick", "--problem", spec, "--plugin", "torch_custom",
                     "--method", "dopri5", "--grad", "backprop", "--results", str(user_dir / "results"),
                     "--no-progress"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "tiny_mlp" in out and "| solve" in out and "| gradient" in out
    import pandas as pd

    (run_dir,) = (user_dir / "results" / "workprecision").iterdir()
    df = pd.read_csv(run_dir / "results.csv")
    assert set(df["problem"]) == {"tiny_mlp"}
    assert len(_rows(df, "solve")) == 4 and len(_rows(df, "gradient")) == 4
    # the truth: two scipy references of the numpy field; the gradient against the reference gradient
    assert df["ref_kind"].str.contains("DOP853").all()
    assert (_rows(df, "gradient")["grad_err"] < 1e-2).all()
    assert (_rows(df, "solve")["err_l2"] < 1e-2).all()


def test_the_python_function_runs_the_suite_on_the_problem_and_returns_its_tables(user_dir):
    spec = write_module(user_dir, "py_problem")
    result = odebench.run(SUITE, problem=spec, profile="quick", plugins=["torch_custom"], methods=["dopri5"],
                          grad_modes=["backprop"], results=user_dir / "results")
    assert (result.run_dir / "records.jsonl").is_file() and result.report.name == "report.md"
    assert len(_rows(result.table, "solve")) == 4 and len(_rows(result.table, "gradient")) == 4
    assert set(result.summary["problem"]) == {"tiny_mlp"}
    assert set(result.table["state_size"]) == {4}
    assert (_rows(result.table, "gradient")["grad_ref_kind"].str.contains("central differences")).all()
    assert "tiny_mlp**, fairness gate: the fields of torch, numpy agree" in result.report.read_text()


def test_a_torch_only_problem_is_unsupported_for_jax_and_scipy_with_the_reason(user_dir):
    spec = write_module(user_dir, "torch_only", FRAMEWORKS=("torch",))
    result = odebench.run(SUITE, problem=spec, profile="problem", plugins=["torch_custom", "diffrax", "scipy"],
                          methods=["dopri5"], grad_modes=["adjoint"], results=user_dir / "results")
    df = result.table
    jax_rows = df[df["plugin"] == "diffrax"]
    assert len(jax_rows) and (jax_rows["status"] == "unsupported").all()
    assert jax_rows["message"].str.contains("provides no jax vector field").all()
    scipy_solves = df[(df["plugin"] == "scipy") & (df["task"] == "solve") & (df["grad_mode"] == "adjoint")]
    assert len(scipy_solves) and (scipy_solves["status"] == "unsupported").all()
    assert scipy_solves["message"].str.contains("provides no numpy vector field").all()
    # torch runs, in a fresh process per case (the profile's isolation): the module is found again there
    torch_rows = df[df["plugin"] == "torch_custom"]
    assert len(torch_rows) and (torch_rows["status"] == "ok").all()
    assert (torch_rows["gate"] == "skipped").all()
    # no numpy field: the references are tight solves through two torch plugins
    assert torch_rows["ref_kind"].str.contains("torch_custom dopri5 vs torchdiffeq dopri5").all()


def test_torch_and_jax_sharing_weights_pass_the_fairness_gate(user_dir):
    spec = write_module(user_dir, "shared", FRAMEWORKS=("torch", "jax", "numpy"))
    info = problemload.check(*problemload.load_problem(spec))
    assert info["gate"]["passed"] is True and info["gate"]["max_rel"] < 1e-12
    assert info["frameworks"] == ["torch", "jax", "numpy"]


def test_a_jax_field_that_computes_another_problem_fails_the_gate_and_its_cases_are_unfair(user_dir):
    spec = write_module(user_dir, "unfair", FRAMEWORKS=("torch", "jax"), SIGN=-1.0)
    info = problemload.check(*problemload.load_problem(spec))
    assert info["gate"]["passed"] is False and "do not compute the same problem" in info["gate"]["note"]
    suite = odebench.load_suite(SUITE, "problem", problem=spec)
    assert suite.config["user_problem"]["gate"]["passed"] is False
    workload, config = suite.workload, suite.config
    case = {"problem": "tiny_mlp", "task": "solve", "method": "dopri5", "grad_mode": "backprop", "rtol": 1e-6,
            "atol": 1e-9, "n_steps": 0, "seed": 0}
    rec = workload.run_case(case, config, odebench.get_plugin("diffrax"))
    assert rec["status"] == "unfair" and rec["gate"] == "fail"


def test_the_problem_replaces_every_problem_of_the_matrix(user_dir):
    spec = write_module(user_dir, "matrix")
    suite = odebench.load_suite(SUITE, "quick", problem=spec)
    assert {c.to_dict()["problem"] for c in suite.cases()} == {"tiny_mlp"}
    assert {c.to_dict()["task"] for c in suite.cases()} == {"solve", "gradient"}


@pytest.mark.parametrize("settings, spec_of, needle", [
    ({}, lambda s: "no_such_module:make_problem", "cannot import 'no_such_module'"),
    ({}, lambda s: s.replace("make_problem", "missing"), "has no 'missing'"),
    ({}, lambda s: s.replace("make_problem", "not_a_problem"), "returned int, not an odebench.Problem"),
    ({"CUT": True}, None, "the torch field returns shape (2, 1), but the state has shape (2, 2)"),
    ({"Y0": "np.array([[1.0, np.nan], [0.3, 0.8]])"}, None, "initial_state() has non-finite values"),
    ({"LOAD": False}, None, "parameter 0 is not weights()[0]"),
    ({"REFERENCE": "np.zeros((3, 2))"}, None, "reference(times()) has shape (3, 2), expected (5, 2, 2)"),
    ({"WEIGHTS": "W[:2]"}, None, "parameters have shapes [(8, 2), (8,), (2, 8), (2,)], but weights() has "
                                 "[(8, 2), (8,)]"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_case_runs(user_dir, capsys, settings, spec_of, needle):
    spec = write_module(user_dir, f"bad_{abs(hash(needle)) % 10**6}", **settings)
    if spec_of is not None:
        spec = spec_of(spec)
    results = user_dir / "results"
    code = cli.main(["run", SUITE, "--profile", "quick", "--problem", spec, "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert err.count("\n") == 1 and err.startswith("error: --problem:")
    assert not results.exists()
    with pytest.raises(ValueError, match="--problem"):
        odebench.run(SUITE, problem=spec, profile="quick", results=results)
    assert not results.exists()


def test_a_suite_whose_workload_takes_no_problem_refuses_one(user_dir, capsys):
    spec = write_module(user_dir, "spiral_problem")
    code = cli.main(["run", str(REPO / "suites" / "spiral"), "--profile", "quick", "--problem", spec])
    err = capsys.readouterr().err
    assert code == 2 and "takes no problem of yours" in err and err.count("\n") == 1


def test_a_problem_is_found_by_file_path_and_its_folder_travels_with_the_cases(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    write_module(folder, "by_path")
    problem, target, where = problemload.load_problem(str(folder / "by_path.py") + ":make_problem")
    assert target == "by_path:make_problem" and where == str(folder.resolve())
    with pytest.raises(ProblemError, match="neither module:function nor an entry point"):
        problemload.load_problem("no-such-entry-point")
    assert isinstance(problem.times(), np.ndarray)


def test_a_problem_is_found_through_the_odebench_problems_entry_point_group(user_dir, monkeypatch):
    import importlib.metadata

    write_module(user_dir, "installed")
    real = importlib.metadata.entry_points

    def entry_points(**kw):
        if kw.get("group") == problemload.GROUP:
            return [importlib.metadata.EntryPoint("tiny", "installed:make_problem", problemload.GROUP)]
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert problemload.problem_names() == ["tiny"]
    problem, target, _ = problemload.load_problem("tiny")
    assert target == "installed:make_problem" and problem.name == "tiny_mlp"
    suite = odebench.load_suite(SUITE, "quick", problem="tiny")
    assert suite.config["user_problem"]["spec"] == "installed:make_problem"


@pytest.mark.parametrize("make", [
    lambda: builtin.classic("linear_spiral", t1=1.0, n_points=5),
    lambda: builtin.classic("vanderpol_stiff", t1=1.0, n_points=5),
    lambda: builtin.neural("neural_wide", 0, t1=1.0, n_points=5, batch=3),
], ids=["linear_spiral", "vanderpol_stiff", "neural_wide"])
def test_the_built_in_problems_are_on_the_same_contract_and_pass_its_checks_and_gate(make):
    problem = make()
    assert isinstance(problem, odebench.Problem)
    info = problemload.check(problem, "builtin", None)
    assert info["frameworks"] == ["torch", "jax", "numpy"] and info["gate"]["passed"] is True


def test_a_run_on_a_problem_resumes_on_the_same_problem(user_dir, capsys):
    spec = write_module(user_dir, "resumed")
    results = user_dir / "results"
    args = ["--profile", "quick", "--plugin", "torch_custom", "--method", "dopri5", "--grad", "backprop",
            "--no-progress"]
    assert cli.main(["run", SUITE, "--problem", spec, "--results", str(results), *args]) == 0
    (run_dir,) = (results / "workprecision").iterdir()
    records = (run_dir / "records.jsonl").read_text().splitlines()
    (run_dir / "records.jsonl").write_text("\n".join(records[:3]) + "\n")  # as if killed after three cases
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(run_dir), "--no-progress"]) == 0, capsys.readouterr().err
    import json

    again = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert len(again) == len(records) and {r["problem"] for r in again} == {"tiny_mlp"}
    assert all(r["status"] == "ok" for r in again)


def test_a_problem_with_its_own_reference_is_measured_against_it(user_dir):
    import scipy.integrate

    folder = user_dir
    write_module(folder, "own_ref")
    problem = problemload.load_problem("own_ref:make_problem")[0]
    w, y0, ts = problem.weights(), problem.initial_state(), problem.times()
    f = problem.numpy_field(w)
    sol = scipy.integrate.solve_ivp(lambda t, y: f(t, y.reshape(y0.shape)).ravel(), (ts[0], ts[-1]), y0.ravel(),
                                    t_eval=ts, rtol=1e-12, atol=1e-12, method="DOP853")
    np.save(folder / "ref.npy", sol.y.T.reshape(len(ts), *y0.shape))
    spec = write_module(folder, "own_ref2", REFERENCE=f"np.load({str(folder / 'ref.npy')!r})")
    result = odebench.run(SUITE, problem=spec, profile="quick", plugins=["torch_custom"], methods=["dopri5"],
                          grad_modes=["backprop"], results=folder / "results")
    solves = _rows(result.table, "solve")
    assert len(solves) == 4 and (solves["ref_kind"] == "the problem's own reference").all()
    assert solves["ref_l2"].isna().all() and (solves["err_l2"] < 1e-3).all()
    assert "one reference, with no independent second one" in result.report.read_text()
