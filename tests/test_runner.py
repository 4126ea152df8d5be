"""The runner: failures are rows, records are written as cases finish, and a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, write_suite

from odebench import runner
from odebench.suite import load_suite


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


def _run(suite_dir, tmp_path, **kw):
    suite = load_suite(suite_dir)
    cases = suite.cases(**kw)
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    spec = runner.RunSpec(str(suite_dir), suite.profile)
    return runner.run(suite, cases, run_dir, spec, progress=False), run_dir


def test_unsupported_and_unavailable_are_rows(tmp_path):
    folder = write_suite(tmp_path / "s", iterations=1, methods=("euler",), grads=("checkpoint", "backprop"),
                         plugins=("torchdiffeq",))
    toml = folder / "suite.toml"
    toml.write_text(toml.read_text().replace('device = ["cpu"]', "") .replace(
        "[matrix]", '[matrix]\ndevice = ["cpu", "cuda"]'))
    records, _ = _run(folder, tmp_path)
    by = {(r["grad_mode"], r["device"]): r for r in records}
    assert by[("checkpoint", "cpu")]["status"] == "unsupported"
    assert "no grad mode 'checkpoint'" in by[("checkpoint", "cpu")]["message"]
    assert by[("backprop", "cpu")]["status"] == "ok"
    import torch

    if not torch.cuda.is_available():
        assert by[("backprop", "cuda")]["status"] == "unsupported"
        assert "no CUDA device" in by[("backprop", "cuda")]["message"]


def test_solver_failure_is_a_row_not_an_abort(tmp_path):
    folder = write_suite(tmp_path / "s", iterations=2, methods=("dopri5", "rk4"), grads=("backprop",))
    toml = folder / "suite.toml"
    # A step budget of 1 cannot integrate a window: max_steps, yet rk4 on the data grid
    # (torchdiffeq budgets adaptive steps only) still runs.
    toml.write_text(toml.read_text().replace("[measure]", "[measure]\nmax_steps = 1"))
    records, _ = _run(folder, tmp_path)
    by = {r["method"]: r for r in records}
    assert by["dopri5"]["status"] == "max_steps", by["dopri5"]
    assert by["rk4"]["status"] == "ok"


def test_timeout_is_a_row(tmp_path):
    folder = write_suite(tmp_path / "s", iterations=100000, isolation="process", timeout=4,
                         methods=("euler",), grads=("backprop",))
    records, run_dir = _run(folder, tmp_path)
    assert [r["status"] for r in records] == ["timeout"]
    assert "killed" in records[0]["message"]


def test_killed_run_resumes_every_case_exactly_once(tmp_path):
    folder = write_suite(tmp_path / "s", iterations=2, isolation="process",
                         methods=("euler", "rk4"), grads=("backprop", "adjoint"))
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "odebench.cli", "run", str(folder), "--results", str(results), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    rec_file = None
    while time.time() < deadline:
        found = list(results.glob("mini/*/records.jsonl"))
        if found and found[0].read_text().count("\n") >= 1:
            rec_file = found[0]
            break
        time.sleep(0.2)
    assert rec_file is not None, "no case finished in time"
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its worker, mid-run
    proc.wait()
    before = _records(rec_file.parent)
    assert 1 <= len(before) < 4
    # Simulate the worst moment of a kill: a half-written line at the end of the file.
    with open(rec_file, "a") as fh:
        fh.write('{"case_id": "torchdiffeq/rk4/adj')
    out = subprocess.run([*cmd[:3], "run", "--resume", str(rec_file.parent), "--no-progress"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    after = _records(rec_file.parent)
    ids = [r["case_id"] for r in after]
    assert len(ids) == len(set(ids)) == 4
    assert after[: len(before)] == before  # nothing finished was rewritten
    assert all(r["status"] == "ok" for r in after)
