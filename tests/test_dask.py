"""Cases on a Dask cluster, with real Dask (loopback only): the same deterministic records as a serial
run, a worker killed mid-case, an interrupt, a scheduler that does not answer, and a cluster started
the way one is used (a scheduler and workers as processes of their own)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, default_sigint, wait_for, write_suite

from odebench import report, runner
from odebench.caseproc import log_name
from odebench.executors import DaskExecutor, HostCases, library_disagreements
from odebench.suite import load_suite

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="scans /proc for processes")

#: Record fields that do not depend on the machine's load: they must not change with the executor.
DETERMINISTIC = ("case_id", "status", "nfe_fwd", "nfe_bwd", "steps", "final_mse", "saved_bytes",
                 "iterations_done", "nfe_native")


def _suite(tmp_path: Path, **kw) -> Path:
    """A spiral-like suite of two cases (two plugins, rk4, adjoint: every deterministic column is non-zero),
    each in a process of its own with one torch thread (the same arithmetic on every executor)."""
    kw = {"iterations": 2, "isolation": "process", "threads": 1, "plugins": ("torchdiffeq", "torch_custom"),
          "methods": ("rk4",), "grads": ("adjoint",)} | kw
    return write_suite(tmp_path / "suite", **kw)


def _env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process under test: its temporary folders (the cases' jobs, the host's
    running-case markers) under ``tmp_path/tmp``, so that its processes can be told from others'."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONWARNINGS="ignore")


def _odebench(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "odebench.cli", *args, "--no-progress"], cwd=ROOT,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)


def _cases_running(tmp_path: Path) -> dict[int, tuple[int, str]]:
    """Live case processes (``odebench.worker``) of this test: pid → (parent pid, case id)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state, parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if b"odebench.worker" not in cmd or state == "Z":
                continue
            job = cmd[cmd.index(b"odebench.worker") + 1].decode()  # python -m odebench.worker JOB OUT
            if not job.startswith(str(tmp_path)):
                continue
            case_id = json.loads(Path(job).read_text())["case"]["case_id"]
        except (OSError, IndexError, ValueError, KeyError):
            continue  # exited meanwhile, or not one of ours
        out[int(proc.name)] = (int(parent), case_id)
    return out


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_stray_cases(tmp_path):
    """Whatever a failing test leaves behind, no case of it keeps computing."""
    yield
    for pid in _cases_running(tmp_path):
        os.kill(pid, signal.SIGKILL)


def test_two_local_workers_give_the_serial_records(tmp_path, monkeypatch):
    folder = _suite(tmp_path)
    suite = load_suite(folder)
    serial_dir = runner.new_run_dir(tmp_path / "serial", suite.name)
    serial = runner.run(suite, suite.cases(), serial_dir, runner.RunSpec(str(folder), suite.profile), progress=False)

    run_dir = runner.new_run_dir(tmp_path / "dask", suite.name)
    monkeypatch.setenv("TMPDIR", str(_env(tmp_path)["TMPDIR"]))  # the workers' (spawned) host markers: ours
    with DaskExecutor.local(2) as executor:
        runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile), progress=False,
                   executor=executor)
    report.render(run_dir)
    parallel = _records(run_dir)
    assert [r["status"] for r in serial] == ["ok"] * 2, serial
    by_id = {r["case_id"]: r for r in parallel}
    assert len(parallel) == len(by_id) == 2
    for expected in serial:
        got = by_id[expected["case_id"]]
        assert {k: got.get(k) for k in DETERMINISTIC} == {k: expected.get(k) for k in DETERMINISTIC}
        assert got["worker_host"] == socket.gethostname() and 1 <= got["concurrent_cases"] <= 2
        assert (run_dir / "logs" / log_name(got["case_id"])).is_file()
        assert "worker_host" not in expected and "concurrent_cases" not in expected  # serial: as before
    env = json.loads((run_dir / "env.json").read_text())
    assert env["executor"]["kind"] == "dask" and env["executor"]["cluster"] == "local"
    assert env["executor"]["retries_after_worker_death"] == 1
    assert len(env["workers"]) == 2 and "library_disagreements" not in env
    assert all(w["libraries"]["torch"] == env["libraries"]["torch"] for w in env["workers"].values())
    assert json.loads((serial_dir / "env.json").read_text())["executor"]["kind"] == "serial"
    text = (run_dir / "report.md").read_text()
    if any(r["concurrent_cases"] > 1 for r in parallel):
        assert "ran while other cases ran on the same host" in text
        assert text.index("ran while other cases") < text.index("| plugin")
    assert "- executor: Dask, a local cluster, 2 workers" in text


def test_a_worker_killed_mid_case_leaves_every_case_recorded_once(tmp_path):
    folder = _suite(tmp_path, iterations=30)
    proc = _odebench(tmp_path, "run", str(folder), "--jobs", "2", "--results", str(tmp_path / "r"))
    running = wait_for(lambda: _cases_running(tmp_path), 120, "a case starts")
    pid, (worker, case_id) = next(iter(running.items()))
    os.kill(worker, signal.SIGKILL)  # the Dask worker process running the case; the case dies with it
    wait_for(lambda: pid not in _cases_running(tmp_path), 5, "the killed worker's case stops")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (run_dir,) = (tmp_path / "r" / "mini").iterdir()
    records = _records(run_dir)
    assert sorted(r["case_id"] for r in records) == sorted(c.id for c in load_suite(folder).cases())
    assert all(r["status"] == "ok" for r in records), records  # the killed case ran again elsewhere
    assert next(r for r in records if r["case_id"] == case_id)["worker"]


def test_a_case_whose_worker_dies_twice_is_an_error_and_the_run_completes(tmp_path):
    folder = _suite(tmp_path, iterations=30)
    proc = _odebench(tmp_path, "run", str(folder), "--jobs", "2", "--results", str(tmp_path / "r"))
    first = wait_for(lambda: _cases_running(tmp_path), 120, "a case starts")
    pid, (worker, case_id) = next(iter(first.items()))
    os.kill(worker, signal.SIGKILL)
    again = wait_for(lambda: [(p, w) for p, (w, c) in _cases_running(tmp_path).items() if c == case_id and p != pid],
                      120, "the case starts again on another worker")
    os.kill(again[0][1], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (run_dir,) = (tmp_path / "r" / "mini").iterdir()
    records = {r["case_id"]: r for r in _records(run_dir)}
    assert len(records) == 2 == len(_records(run_dir))
    assert records[case_id]["status"] == "error"
    assert "the Dask worker running the case died, 2 time(s)" in records[case_id]["message"]
    (other,) = [r for c, r in records.items() if c != case_id]
    assert other["status"] == "ok"


def test_an_interrupted_dask_run_stops_its_cases_and_names_the_folder_to_resume(tmp_path):
    folder = _suite(tmp_path, iterations=100_000, timeout=600)
    proc = _odebench(tmp_path, "run", str(folder), "--jobs", "2", "--results", str(tmp_path / "r"))
    wait_for(lambda: len(_cases_running(tmp_path)) == 2, 120, "two cases start")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (run_dir,) = (tmp_path / "r" / "mini").iterdir()
    assert err.strip().splitlines() == [f"odebench: interrupted (SIGINT): finished cases are kept; continue with: "
                                        f"odebench run --resume {run_dir}"]
    wait_for(lambda: not _cases_running(tmp_path), 5, "the cases stop")
    assert not (run_dir / "records.jsonl").exists() or not _records(run_dir)
    assert not list((tmp_path / "tmp").glob("odebench-*"))  # the tasks' and cases' folders are removed


def test_a_scheduler_that_does_not_answer_is_one_line_exit_2_and_no_run_folder(cli, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    out = cli("run", str(_suite(tmp_path)), "--dask", address, "--results", str(tmp_path / "r"))
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: --dask '{address}': no Dask scheduler answered within 5 s")
    assert not (tmp_path / "r").exists()


def test_a_scheduler_and_two_workers_started_as_processes(tmp_path):
    dask = Path(sys.executable).parent / "dask"  # the command pip installed beside python
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = _env(tmp_path) | {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "cwd": tmp_path}
    started = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                 "--no-dashboard"], **quiet)]
    try:
        for _ in range(2):
            started.append(subprocess.Popen([str(dask), "worker", address, "--host", "127.0.0.1", "--nthreads",
                                             "1", "--no-dashboard"], **quiet))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        proc = _odebench(tmp_path, "run", str(_suite(tmp_path)), "--dask", address, "--results",
                         str(tmp_path / "r"))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        for p in reversed(started):
            p.terminate()
        for p in started:
            p.wait(timeout=30)
    (run_dir,) = (tmp_path / "r" / "mini").iterdir()
    records = _records(run_dir)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records), records
    env = json.loads((run_dir / "env.json").read_text())
    assert env["executor"] | {"scheduler": address, "cluster": "remote", "retries_after_worker_death": 1} \
        == env["executor"]
    assert len(env["workers"]) == 2
    assert {r["worker"] for r in records} <= set(env["workers"])
    assert "the scheduler at " + address in (run_dir / "report.md").read_text()


def test_library_disagreements_name_each_version_and_its_machines():
    driver = {"python": "3.11.7", "odebench": "0.4.0", "git_commit": "abc",
              "libraries": {"torch": "2.13.0", "numpy": "2.4.6", "jax": None}}
    same = json.loads(json.dumps(driver))
    other = json.loads(json.dumps(driver))
    other["libraries"] |= {"torch": "2.12.0", "jax": "0.10.2"}
    other["git_commit"] = None
    assert library_disagreements({"driver": driver, "w1": same}) == {}
    assert library_disagreements({"driver": driver, "w1": same, "w2": other}) == {
        "git_commit": {"abc": ["driver", "w1"], "unknown": ["w2"]},
        "torch": {"2.13.0": ["driver", "w1"], "2.12.0": ["w2"]},
        "jax": {"not installed": ["driver", "w1"], "0.10.2": ["w2"]},
    }


def test_host_cases_counts_live_markers_and_drops_those_of_dead_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "running"
    folder.mkdir()
    (folder / f"{int(dead.stdout)}-1-gone").touch()  # a worker killed mid-case left its marker
    with HostCases(folder) as one, HostCases(folder) as two:
        assert two.count() == 2 and one.peak == 1
        one.count()
        assert one.peak == 2
    assert list(folder.iterdir()) == []


def test_cluster_slurm_dry_run_prints_the_job_script(cli):
    pytest.importorskip("dask_jobqueue")
    out = cli("cluster", "slurm", "--jobs", "2", "--cores", "2", "--memory", "4GB", "--host", "127.0.0.1",
              "--port", "0", "--sbatch=--exclusive", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --exclusive" in out.stdout and "#SBATCH --cpus-per-task=2" in out.stdout
    assert "--nthreads 1" in out.stdout and "--nworkers 2" in out.stdout and "tcp://127.0.0.1:" in out.stdout


def test_a_serial_run_does_not_import_dask(tmp_path):
    """--jobs 1 is the runner as it was: Dask is not even imported (cases here: all unsupported)."""
    folder = write_suite(tmp_path / "s", methods=("euler",), grads=("checkpoint",), plugins=("torchdiffeq",))
    code = ("import sys\nfrom odebench.cli import main\n"
            f"rc = main(['run', {str(folder)!r}, '--results', {str(tmp_path / 'r')!r}, '--no-progress'])\n"
            "print(rc, any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stderr
