"""Shared fixtures: the repository root, a small suite written per test, the CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MINI_SUITE = """
[suite]
name = "mini"
workload = "train"

[problem]
name = "linear_spiral"
params = {{ n_points = 60, t1 = 3.0 }}

[model]
sizes = [2, 8, 2]

[training]
lr = 1e-3
iterations = {iterations}
batch_size = 4
batch_time = 5
snapshots = [0, {iterations}]

[measure]
warmup = 1
isolation = "{isolation}"
launch = "{launch}"
threads = {threads}
timeout_s = {timeout}

[matrix]
plugin = {plugins}
method = {methods}
grad_mode = {grads}
tolerances = [{{ rtol = 1e-5, atol = 1e-7 }}]

[profiles.quick]
training = {{ iterations = 2, snapshots = [0, 2] }}
"""


def write_suite(folder: Path, *, iterations: int = 3, isolation: str = "inline", timeout: float = 300,
                plugins=("torchdiffeq",), methods=("euler", "rk4"), grads=("backprop", "adjoint"),
                text: str | None = None, launch: str = "exec", threads: int = 0) -> Path:
    """Write a small spiral-like suite into ``folder`` and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if text is None:
        q = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
        text = MINI_SUITE.format(iterations=iterations, isolation=isolation, timeout=timeout, launch=launch,
                                 threads=threads,
                                 plugins=q(plugins), methods=q(methods), grads=q(grads))
    (folder / "suite.toml").write_text(text)
    return folder


@pytest.fixture
def mini_suite(tmp_path):
    return lambda **kw: write_suite(tmp_path / "suite", **kw)


def odebench_cli(*args: str, cwd: Path | None = None, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    """Run the installed ``odebench`` command line in a subprocess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "odebench.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=env, **popen)


@pytest.fixture
def cli():
    return odebench_cli


def default_sigint() -> None:
    """``preexec_fn`` of a child that a test interrupts with SIGINT: a test run started in the
    background by a shell without job control (``cmd &``) ignores SIGINT, every child inherits
    that, and Python then never raises KeyboardInterrupt; the child gets the default back."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:g} s")
