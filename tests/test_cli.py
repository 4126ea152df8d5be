"""The command line: user errors are one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_suite


def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_version_from_the_console_script():
    script = Path(sys.executable).parent / "odebench"  # the script pip installed beside python
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("odebench 0.")


@pytest.mark.parametrize("args, needles", [
    (["run", "suites/spiral", "--plugin", "nosuch"], ["'nosuch'", "torchdiffeq"]),
    (["run", "suites/spiral", "--method", "rk5"], ["'rk5'", "valid: euler, rk4, dopri5"]),
    (["run", "suites/spiral", "--grad", "magic"], ["'magic'", "backprop, adjoint"]),
    (["run", "suites/spiral", "--profile", "huge"], ["'huge'", "default, quick, full"]),
    (["run", "suites/nosuch"], ["no suite at"]),
    (["run", "suites/spiral", "--repeats", "0"], ["--repeats"]),
    (["run", "suites/spiral", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["report", "/nonexistent"], ["no records.jsonl"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
])
def test_bad_input_is_one_line_exit_2(cli, args, needles):
    _one_line_error(cli(*args), *needles)


def test_malformed_toml_and_negative_tolerance(cli, tmp_path):
    bad = write_suite(tmp_path / "a", text="[suite\nname = 'x'")
    _one_line_error(cli("run", str(bad)), "malformed TOML")
    neg = write_suite(tmp_path / "b")
    toml = neg / "suite.toml"
    toml.write_text(toml.read_text().replace("atol = 1e-7", "atol = -1e-7"))
    _one_line_error(cli("run", str(neg), "--results", str(tmp_path / "r")),
                    "matrix.tolerances[0].atol must be positive, got -1e-07")
    assert not (tmp_path / "r").exists()  # nothing written for a rejected run


def test_list_shows_plugins_and_suites(cli):
    out = cli("list", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    names = {p["name"] for p in data["plugins"]}
    assert "torchdiffeq" in names
    td = next(p for p in data["plugins"] if p["name"] == "torchdiffeq")
    assert td["available"] is None and "rk4" in td["methods"] and "adjoint" in td["grad_modes"]
    assert any(s["name"] == "spiral" for s in data["suites"])
    assert isinstance(data["problems"], list)  # the odebench.problems entry points installed
    text = cli("list")
    assert text.returncode == 0 and "torchdiffeq" in text.stdout and "suites/spiral" in text.stdout


def test_env_prints_versions(cli):
    out = cli("env", "--no-devices")
    env = json.loads(out.stdout)
    assert env["python"] and env["libraries"]["numpy"] and env["cpu_count"] >= 1


def test_resume_of_a_folder_that_is_not_a_run(cli, tmp_path):
    _one_line_error(cli("run", "--resume", str(tmp_path)), "not a run folder")


def test_spiral_suite_runs_end_to_end(cli, tmp_path):
    """The user's first command on the real spiral suite, narrowed to stay quick."""
    out = cli("run", str(ROOT / "suites" / "spiral"), "--profile", "quick", "--plugin", "torchdiffeq",
              "--method", "rk4", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "spiral").iterdir()
    for name in ("records.jsonl", "results.csv", "results.parquet", "report.md", "env.json", "run.json",
                 "figures/loss_vs_iteration.png", "figures/loss_vs_time.png", "figures/trajectories.png"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert {r["grad_mode"] for r in records} == {"backprop", "adjoint"}
    for r in records:
        assert r["status"] == "ok", r
        assert r["iterations_done"] == 6
        assert r["nfe_fwd"] == 4 * 9  # rk4 on the 10-point window grid: 9 steps × 4 stages
        assert r["nfe_native"] == r["nfe_fwd"] and r["nfe_agree"] is True
        assert r["nfe_bwd"] == (0 if r["grad_mode"] == "backprop" else 36)
        assert r["final_mse"] > 0 and r["peak_rss_bytes"] >= 0 and r["train_s"] > 0
    assert "| torchdiffeq | rk4" in out.stdout


def test_data_mnist_reports_verified_files_or_a_one_line_error(cli, tmp_path):
    _one_line_error(cli("data", "mnist", "--data-dir", str(tmp_path)), "MNIST files not found")
    shared = ROOT.parent / "shared" / "data" / "mnist"
    import os

    folder = os.environ.get("ODEBENCH_DATA") or (str(shared) if shared.is_dir() else None)
    if folder:
        out = cli("data", "mnist", "--data-dir", folder)
        assert out.returncode == 0, out.stderr
        assert "verified: 60000 train + 10000 test examples" in out.stdout
