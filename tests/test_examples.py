"""The examples run, in their quick forms (CI runs them through this test)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_the_neural_ode_example_runs_the_work_precision_suite_from_python(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "run_neural_ode.py"), "--quick", "--results",
                          str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| latent_mlp")]
    # the matched-error table: forward solves of both plugins, and gradients of every grad mode
    assert {(r.split("|")[2].strip(), r.split("|")[3].strip()) for r in rows} >= {
        ("solve", "torch_custom"), ("solve", "scipy"), ("gradient", "torch_custom"), ("gradient", "scipy")}
    assert all("ok×4" in r for r in rows), rows
    assert (next((tmp_path / "workprecision").iterdir()) / "report.md").is_file()
