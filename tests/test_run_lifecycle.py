"""A run's processes, with real processes: a run folder has one writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, write_suite

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="scans /proc for workers")


def _long_suite(tmp_path: Path) -> Path:
    """One case that trains far longer than any test waits."""
    return write_suite(tmp_path / "suite", iterations=100_000, isolation="process", timeout=600,
                       methods=("euler",), grads=("backprop",))


def _odebench(tmp_path: Path, *args: str) -> subprocess.Popen:
    """``odebench ARGS`` in a session of its own (a signal to it must not reach pytest), with its
    temporary folders under ``tmp_path/tmp`` so leftovers can be counted."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "odebench.cli", *args, "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _workers(tmp_path: Path) -> list[int]:
    """Live ``odebench.worker`` processes whose job is under ``tmp_path``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited meanwhile
        if b"odebench.worker" in cmd and any(str(tmp_path).encode() in a for a in cmd) and state != "Z":
            out.append(int(proc.name))
    return out


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:g} s")


@pytest.fixture(autouse=True)
def _no_stray_workers(tmp_path):
    """Whatever a failing test leaves behind, no worker of it keeps computing."""
    yield
    for pid in _workers(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _leftovers(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob("odebench-*"))


def test_a_run_folder_has_one_writer(tmp_path):
    results = tmp_path / "results"
    first = _odebench(tmp_path, "run", str(_long_suite(tmp_path)), "--results", str(results))
    try:
        _wait_for(lambda: _workers(tmp_path), 120, "a worker starts")
        (run_dir,) = (results / "mini").iterdir()
        second = _odebench(tmp_path, "run", "--resume", str(run_dir))  # while the fresh run holds it
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        assert err.strip().splitlines() == [
            f"error: run folder {str(run_dir)!r} is in use by another odebench process (pid {first.pid}); one "
            "writer at a time: wait for it to finish or stop it, then --resume"]
    finally:
        first.terminate()
        first.communicate(timeout=20)
    resumed = _odebench(tmp_path, "run", "--resume", str(run_dir))
    try:
        _wait_for(lambda: _workers(tmp_path), 120, "the resumed run's worker starts")
        third = _odebench(tmp_path, "run", "--resume", str(run_dir))  # while a resume holds it
        _, err = third.communicate(timeout=60)
        assert third.returncode == 2 and f"in use by another odebench process (pid {resumed.pid})" in err, err
    finally:
        resumed.terminate()
        resumed.communicate(timeout=20)
    assert not (run_dir / "records.jsonl").exists() or not (run_dir / "records.jsonl").read_text()

