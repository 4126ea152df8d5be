"""Bad input is refused before anything runs: one line on stderr naming the value and the valid
choices, exit code 2, no traceback, no results folder, nothing written anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT, odebench_cli, write_suite


def _files(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` (path → size, -1 for a folder)."""
    return {str(p.relative_to(root)): (-1 if p.is_dir() else p.stat().st_size) for p in root.rglob("*")}


def refused(tmp_path: Path, *args: str, needles=(), results: Path | None = None):
    """Run ``odebench ARGS`` from a folder of its own and check the refusal; returns the one line.

    ``--results`` points into the scratch folder for ``run``; nothing under ``tmp_path`` may change.
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    results = results or cwd / "deep" / "er" / "results"
    if args[0] == "run":
        args = (*args, "--results", str(results))
    before = _files(tmp_path)
    proc = odebench_cli(*args, cwd=cwd)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert _files(tmp_path) == before  # no results folder, nothing escaped, nothing else touched
    return lines[0]


def _suite(tmp_path: Path, old: str = "", new: str = "", **kw) -> Path:
    folder = write_suite(tmp_path / "suite", **kw)
    toml = folder / "suite.toml"
    if old:
        assert old in toml.read_text(), old
        toml.write_text(toml.read_text().replace(old, new, 1))
    return folder


SPAN = "params = { n_points = 60, t1 = 3.0 }"


@pytest.mark.parametrize("old, new, needles", [
    ('name = "mini"', 'name = "../../../escaped"',
     ["suite.name '../../../escaped' is not a valid name", "^[A-Za-z0-9][A-Za-z0-9_.-]*$"]),
    ('name = "mini"', 'name = ""', ["suite.name '' is not a valid name"]),
    ('name = "mini"', 'name = ".."', ["suite.name '..' is not a valid name"]),
    ("timeout_s = 300", "timeout_s = inf", ["measure.timeout_s must be a finite number, got inf"]),
    ("lr = 1e-3", "lr = nan", ["training.lr must be a finite number, got nan"]),
    ("rtol = 1e-5", "rtol = inf", ["matrix.tolerances[0].rtol must be a finite number, got inf"]),
    (SPAN, "params = { n_points = 60, t0 = 3.0, t1 = 1.0 }",
     ["problem.params.t1 = 1.0 must be greater than t0 = 3.0"]),
    (SPAN, 'params = { n_points = 60, t1 = "3" }', ["problem.params.t1 must be a finite number, got '3'"]),
    (SPAN, "params = { n_points = 1 }", ["problem.params.n_points must be at least 2, got 1"]),
    (SPAN, "params = { n_points = 60, y0 = [1.0, 0.0, 0.0] }",
     ["problem.params.y0 has 3 values; the state of 'linear_spiral' has 2"]),
    ("sizes = [2, 8, 2]", "sizes = [3, 8, 3]", ["model.sizes [3, 8, 3] must start and end with 2"]),
    ("sizes = [2, 8, 2]", "sizes = [2, 8, 1]", ["model.sizes [2, 8, 1] must start and end with 2"]),
    ("batch_time = 5", "batch_time = 1", ["training.batch_time must be at least 2", "got 1"]),
    ("batch_time = 5", "batch_time = 60", ["training.batch_time = 60 leaves no window", "valid: 2 to 59"]),
    ("batch_size = 4", "batch_size = 56", ["training.batch_size = 56 is more than the 55 windows", "valid: 1 to 55"]),
    ('plugin = ["torchdiffeq"]', 'plugin = ["torchdiffeq", "nosuch"]',
     ["unknown plugin 'nosuch' in matrix.plugin", "registered:", "torchdiffeq"]),
    ("tolerances = [", 'include = [{ plugin = "nosuch", method = "rk4", grad_mode = "backprop" }]\ntolerances = [',
     ["unknown plugin 'nosuch' in matrix.include[0].plugin", "registered:", "torchdiffeq"]),
    ("[matrix]", '[swap]\nplugin = "nosuch"\n\n[matrix]',
     ["unknown plugin 'nosuch' in swap.plugin", "valid: own (the case's own)", "torch_custom"]),
])
def test_a_bad_suite_is_refused_before_the_run(tmp_path, old, new, needles):
    refused(tmp_path, "run", str(_suite(tmp_path, old, new)), needles=needles)


def test_a_valid_suite_of_another_problem_loads(tmp_path):
    """The dimension checks follow the problem: Lorenz has a 3-dimensional state."""
    from odebench.suite import load_suite

    folder = _suite(tmp_path, SPAN, 'name = "lorenz"\nparams = { n_points = 30 }')
    toml = folder / "suite.toml"
    toml.write_text(toml.read_text().replace('name = "linear_spiral"\n', "").replace("sizes = [2, 8, 2]",
                                                                                    "sizes = [3, 8, 3]"))
    assert load_suite(folder).config["model"]["sizes"] == [3, 8, 3]
    toml.write_text(toml.read_text().replace("sizes = [3, 8, 3]", "sizes = [2, 8, 2]"))
    with pytest.raises(ValueError, match="must start and end with 3, the state dimension of 'lorenz'"):
        load_suite(folder)


@pytest.mark.parametrize("flags, needles", [
    (["--timeout", "nan"], ["--timeout must be a positive, finite number of seconds, got nan"]),
    (["--timeout", "inf"], ["--timeout must be a positive, finite number of seconds, got inf"]),
    (["--plugin", ""], ["--plugin '' is not in suite 'mini'", "valid: torchdiffeq"]),
    (["--plugin", "torchdiffeq,"], ["--plugin '' is not in suite 'mini'", "valid: torchdiffeq"]),
    (["--method", ""], ["--method '' is not in suite 'mini'", "valid: euler, rk4"]),
])
def test_bad_flags_are_refused(tmp_path, flags, needles):
    refused(tmp_path, "run", str(_suite(tmp_path)), *flags, needles=needles)


def test_results_that_is_a_file_or_cannot_be_written(tmp_path):
    suite = str(_suite(tmp_path))
    (tmp_path / "cwd").mkdir()
    afile = tmp_path / "cwd" / "results.txt"
    afile.write_text("not a folder")
    refused(tmp_path, "run", suite, results=afile,
            needles=[f"--results {str(afile)!r} is not a folder", "valid: a folder"])
    refused(tmp_path, "run", suite, results=afile / "sub",
            needles=[f"--results {str(afile / 'sub')!r} is not a folder ({str(afile)!r} is a file)"])
    if os.geteuid() != 0:  # root writes through permissions
        locked = tmp_path / "cwd" / "locked"
        locked.mkdir(mode=0o500)
        refused(tmp_path, "run", suite, results=locked / "results",
                needles=[f"--results {str(locked / 'results')!r} is not writable"])
    if Path("/proc/self").is_dir():  # a folder no one can create anything in, root included
        refused(tmp_path, "run", suite, results=Path("/proc/odebench-results"),
                needles=["--results '/proc/odebench-results': cannot create a run folder there"])


def _finished_run(tmp_path: Path) -> Path:
    """A run folder as `odebench run` leaves it after one quick case."""
    out = odebench_cli("run", str(_suite(tmp_path, iterations=1, methods=("euler",), grads=("backprop",))),
                       "--results", str(tmp_path / "results"), "--no-progress")
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "results" / "mini").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return _finished_run(tmp_path_factory.mktemp("finished"))


def _copy_run(finished_run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(finished_run, tmp_path / "cwd" / "results" / "mini" / finished_run.name))


@pytest.mark.parametrize("name, text, needles", [
    ("run.json", '{"suite_path": "/x", "prof', ["run.json is not valid JSON (cut off?)"]),
    ("run.json", '{"profile": "default", "filters": {}, "overrides": {}}',
     ["run.json has no valid 'suite_path' (got None); valid: a run.json with suite_path, profile, filters"]),
    ("run.json", "[1, 2]", ["run.json is not a JSON object"]),
    ("records.jsonl", "[1, 2]\n", ["line 1 of", "records.jsonl is not a JSON object (a list)"]),
    ("records.jsonl", "garbage\n{}\n", ["line 1 of", "records.jsonl is not JSON"]),
    ("records.jsonl", '{"status": "ok"}\n', ["line 1 of", "has no 'case_id'"]),
])
def test_a_damaged_run_is_not_resumed(tmp_path, finished_run, name, text, needles):
    run_dir = _copy_run(finished_run, tmp_path)
    (run_dir / name).write_text(text)
    refused(tmp_path, "run", "--resume", str(run_dir), needles=[f"--resume {str(run_dir)!r}: ", *needles])


@pytest.mark.parametrize("text, needles", [
    ("", ["no record in", "(empty)"]),
    ("garbage\n", ["line 1 of", "is not JSON"]),
    ('{"case_id": "a/b", "stat', ["no record in", "(only a cut-off line)"]),
    ("[]\n[]\n", ["line 1 of", "is not a JSON object (a list)"]),
    ('{"case_id": "a/b", "status": "ok", "workload": "nosuch"}\n', ["unknown workload 'nosuch'", "valid: ", "memory, mnist, train"]),
])
def test_report_of_damaged_records(tmp_path, finished_run, text, needles):
    run_dir = _copy_run(finished_run, tmp_path)
    (run_dir / "records.jsonl").write_text(text)
    refused(tmp_path, "report", str(run_dir), needles=needles)


def test_a_killed_runs_last_line_is_not_damage(tmp_path, finished_run):
    run_dir = _copy_run(finished_run, tmp_path)
    with open(run_dir / "records.jsonl", "a") as fh:
        fh.write('{"case_id": "torchdiffeq/rk4/adj')
    out = odebench_cli("report", str(run_dir))
    assert out.returncode == 0, out.stderr


def test_resume_from_another_folder_and_of_an_old_relative_suite_path(tmp_path, finished_run):
    """run.json holds the suite's absolute path; an older relative one is read from where the run started."""
    import json

    run_dir = _copy_run(finished_run, tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    assert Path(info["suite_path"]).is_absolute() and info["cwd"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = odebench_cli("run", "--resume", str(run_dir), "--no-progress", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    suite = Path(info["suite_path"])
    old = {k: v for k, v in info.items() if k != "cwd"} | {"suite_path": os.path.relpath(suite, ROOT)}
    (run_dir / "run.json").write_text(json.dumps(old))
    out = odebench_cli("run", "--resume", str(run_dir), "--no-progress", cwd=ROOT)  # where it was started
    assert out.returncode == 0, out.stderr
    refused(tmp_path, "run", "--resume", str(run_dir),
            needles=[f"the run's suite {old['suite_path']!r} is not found", "valid: resume from the folder"])


def test_help_says_what_report_and_the_list_flags_take():
    report = odebench_cli("report", "--help").stdout
    assert "pytest-benchmark" in report and "FILE.json" in report
    run = " ".join(odebench_cli("run", "--help").stdout.split())
    for flag in ("--plugin", "--method", "--grad", "--seed", "--device"):
        assert f"{flag} {flag[2:].upper()} only these" in run and "comma-separated" in run.split(flag)[2][:80]


@pytest.mark.parametrize("env", ["ODEBENCH_JAX_CACHE", "ODEBENCH_TORCH_CACHE"])
def test_a_compile_cache_that_is_a_file_is_refused(tmp_path, monkeypatch, env):
    not_a_folder = tmp_path / "cache.txt"
    not_a_folder.write_text("x")
    monkeypatch.setenv(env, str(not_a_folder))
    refused(tmp_path, "run", str(_suite(tmp_path)), needles=(env, "not a folder"))
