"""``python -m odebench.selfcheck``: CI fails, with the reason, when a built-in plugin's framework
or the MNIST data is missing; and under ``CI=true`` the test suite fails too instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
from conftest import ROOT

from odebench import registry, selfcheck


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "odebench.selfcheck", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)


def test_builtin_plugins_are_the_entry_points_of_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][registry.GROUP]
    assert selfcheck.builtin_plugins() == sorted(declared)
    assert {"torchdiffeq", "torch_custom", "diffrax", "scipy"} <= set(declared)


def test_an_unavailable_builtin_is_one_line_naming_it_and_the_fix(monkeypatch):
    cls = registry.entry("diffrax").load()
    monkeypatch.setattr(cls, "requires", ("odebench_no_such_framework_xyz",))
    problems = selfcheck.plugin_problems()
    assert [p for p in problems if p.startswith("plugin diffrax:")] == [
        "plugin diffrax: unavailable: odebench_no_such_framework_xyz is not installed — `pip install odebench[jax]`"
    ]


def test_missing_data_folder_and_files(tmp_path):
    assert selfcheck.data_problems(None) == [
        "MNIST: no data folder: set $ODEBENCH_DATA (or pass --data-dir) to the folder with the MNIST files"]
    (problem,) = selfcheck.data_problems(str(tmp_path))
    assert problem.startswith(f"MNIST in {tmp_path}: MNIST files not found")


def test_corrupted_data_fails_its_checksum(tmp_path):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{name}.gz").write_bytes(b"not the MNIST file")
    (problem,) = selfcheck.data_problems(str(tmp_path))
    assert "MD5 mismatch" in problem and "train-images-idx3-ubyte.gz" in problem


def test_exit_code_and_one_line_per_problem(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ODEBENCH_DATA"}
    out = _run("--data-dir", str(tmp_path), env=env)
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert lines and all(line.startswith("selfcheck: ") for line in lines)
    assert any(line.startswith(f"selfcheck: MNIST in {tmp_path}") for line in lines)
    out = _run(env=env)  # no folder at all
    assert out.returncode == 1 and "set $ODEBENCH_DATA" in out.stdout


def test_plugins_only_passes_where_every_builtin_is_installed():
    if selfcheck.plugin_problems():
        pytest.skip("not every built-in plugin's framework is installed here")
    out = _run("--no-data")
    assert out.returncode == 0 and out.stdout.startswith("selfcheck ok: built-in plugins diffrax, scipy, ")


@pytest.mark.skipif(os.environ.get("CI", "").lower() != "true", reason="enforced only under CI=true")
def test_ci_has_every_builtin_plugin_and_the_data():
    """Under CI a missing framework or data set is a failure, never a row of skipped tests."""
    problems = selfcheck.plugin_problems() + selfcheck.data_problems(os.environ.get("ODEBENCH_DATA"))
    assert not problems, "; ".join(problems)
