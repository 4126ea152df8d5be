"""A run's processes, with real processes: an interrupted run stops its case's worker and removes its
temporary folder, a killed run's worker does not outlive it, and a run folder has one writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, default_sigint, wait_for, write_suite

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="scans /proc for workers")


def _long_suite(tmp_path: Path, launch: str = "exec") -> Path:
    """One case that trains far longer than any test waits."""
    return write_suite(tmp_path / "suite", iterations=100_000, isolation="process", timeout=600,
                       methods=("euler",), grads=("backprop",), launch=launch, threads=1)


def _odebench(tmp_path: Path, *args: str) -> subprocess.Popen:
    """``odebench ARGS`` in a session of its own (a signal to it must not reach pytest), with its
    temporary folders under ``tmp_path/tmp`` so leftovers can be counted."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "odebench.cli", *args, "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint)


def _workers(tmp_path: Path) -> list[int]:
    """Live case processes of runs under ``tmp_path``: ``odebench.worker`` processes, launchers
    (``measure.launch = "fork"``) and the cases they forked (which keep the launcher's command line)."""
    return sorted(_processes(tmp_path))


def _processes(tmp_path: Path) -> dict[int, int]:
    """``{pid: parent pid}`` of the live worker and launcher processes whose command line names ``tmp_path``."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state, ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue  # exited meanwhile
        if ((b"odebench.worker" in cmd or b"odebench.launcher" in cmd)
                and any(str(tmp_path).encode() in a for a in cmd) and state != "Z"):
            out[int(proc.name)] = int(ppid)
    return out


def _case_process(tmp_path: Path, launch: str) -> list[int]:
    """The running case's process: the worker, or the child a launcher forked (its parent is a launcher)."""
    procs = _processes(tmp_path)
    return [pid for pid, parent in procs.items() if (parent in procs) == (launch == "fork")]


@pytest.fixture(autouse=True)
def _no_stray_workers(tmp_path):
    """Whatever a failing test leaves behind, no worker of it keeps computing."""
    yield
    for pid in _workers(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _leftovers(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob("odebench-*"))


@pytest.mark.parametrize("launch", ["exec", "fork"])
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_stops_its_worker_and_says_what_to_resume(tmp_path, sig, code, launch):
    proc = _odebench(tmp_path, "run", str(_long_suite(tmp_path, launch)), "--results", str(tmp_path / "results"))
    (worker,) = wait_for(lambda: _case_process(tmp_path, launch), 120, "a worker starts")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    (run_dir,) = (tmp_path / "results" / "mini").iterdir()
    assert err.strip().splitlines()[-1] == (f"odebench: interrupted ({signal.Signals(sig).name}): finished cases "
                                            f"are kept; continue with: odebench run --resume {run_dir}")
    assert "Traceback" not in err
    wait_for(lambda: not _workers(tmp_path), 5, "the worker is gone")
    assert not Path(f"/proc/{worker}/cmdline").exists() or worker not in _workers(tmp_path)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("launch", ["exec", "fork"])
def test_the_worker_of_a_killed_run_stops_within_seconds(tmp_path, launch):
    proc = _odebench(tmp_path, "run", str(_long_suite(tmp_path, launch)), "--results", str(tmp_path / "results"))
    wait_for(lambda: _case_process(tmp_path, launch), 120, "a worker starts")
    proc.kill()  # SIGKILL: the runner cannot clean up; the orphaned worker (and launcher) must notice by itself
    proc.communicate(timeout=20)
    wait_for(lambda: not _workers(tmp_path), 5, "the orphaned worker is gone")


def test_a_run_folder_has_one_writer(tmp_path):
    results = tmp_path / "results"
    first = _odebench(tmp_path, "run", str(_long_suite(tmp_path)), "--results", str(results))
    try:
        wait_for(lambda: _workers(tmp_path), 120, "a worker starts")
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
        wait_for(lambda: _workers(tmp_path), 120, "the resumed run's worker starts")
        third = _odebench(tmp_path, "run", "--resume", str(run_dir))  # while a resume holds it
        _, err = third.communicate(timeout=60)
        assert third.returncode == 2 and f"in use by another odebench process (pid {resumed.pid})" in err, err
    finally:
        resumed.terminate()
        resumed.communicate(timeout=20)
    assert not (run_dir / "records.jsonl").exists() or not (run_dir / "records.jsonl").read_text()


def test_the_portable_watch_alone_stops_an_orphan(tmp_path):
    """Without PR_SET_PDEATHSIG (as on macOS) the polling thread notices the re-parenting."""
    child = ("import sys, time\nsys.platform = 'darwin'  # the portable path only: no prctl\n"
             "from odebench.worker import tie_to_parent\ntie_to_parent(int(sys.argv[1]), poll_s=0.1)\n"
             "print('tied', flush=True)\ntime.sleep(60)\n")
    parent = ("import os, subprocess, sys, time\n"
              f"c = subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())], start_new_session=True,"
              " stdout=subprocess.PIPE, text=True)\n"
              "c.stdout.readline()\nprint(c.pid, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    orphan = int(proc.stdout.readline())
    proc.kill()
    proc.wait()

    def gone() -> bool:
        try:
            return Path(f"/proc/{orphan}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    wait_for(gone, 3, "the orphan is gone")
