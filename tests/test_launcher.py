"""``measure.launch = "fork"``: each case's fresh process forked from a pre-imported launcher, with
real processes: the same measurements as a fresh interpreter, each case still contained (its
timeout, an outside kill), the launcher's start-up counted once, and a launcher that cannot fork
safely (threads after its imports) refused, its cases exec'd."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import write_suite

from odebench import runner
from odebench.caseproc import run_case_process
from odebench.launcher import Launcher, LauncherRefused, supported
from odebench.suite import load_suite

pytestmark = pytest.mark.skipif(supported() is not None, reason="forking a launcher is Linux only")

#: What the runner gives a launcher for measure.threads = 1: numpy's OpenBLAS without a thread pool.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1"}

#: Record fields that a case computes the same way however its process began (counted, not timed).
SAME = ("status", "iterations_done", "nfe_fwd", "nfe_bwd", "steps", "final_mse", "final_loss", "gate",
        "gate_max_rel", "saved_bytes", "swap_mse")


def _run(folder: Path, tmp_path: Path, name: str):
    suite = load_suite(folder)
    run_dir = runner.new_run_dir(tmp_path / name, suite.name)
    return runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile), progress=False)


def _processes_under(tmp_path: Path) -> list[int]:
    """Live processes whose command line names a path under ``tmp_path`` (launchers and their children)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(tmp_path).encode() in cmd and state != "Z":
            out.append(int(proc.name))
    return out


def test_forked_cases_measure_what_fresh_interpreters_measure(tmp_path, monkeypatch):
    from odebench.launcher import LauncherPool
    from odebench.swap import reference_modules

    pools = []

    class WatchedPool(LauncherPool):  # the real pool, its arguments noted
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            pools.append(self)

    monkeypatch.setattr(runner, "LauncherPool", WatchedPool)
    kw = dict(iterations=3, isolation="process", threads=1, methods=("euler", "rk4"), grads=("backprop", "adjoint"))
    exec_records = _run(write_suite(tmp_path / "exec", launch="exec", **kw), tmp_path, "r-exec")
    fork_records = _run(write_suite(tmp_path / "fork", launch="fork", **kw), tmp_path, "r-fork")
    # The runner gives its launchers what the swap check's reference needs (torch_custom by default).
    (pool,) = pools
    assert pool.modules == reference_modules(load_suite(tmp_path / "fork").config["swap"]) != ()
    assert [r["launch"] for r in exec_records] == ["exec"] * 4
    assert [r["launch"] for r in fork_records] == ["fork"] * 4
    for e, f in zip(exec_records, fork_records):
        assert e["case_id"] == f["case_id"]
        assert e["status"] == "ok", e["message"]
        for key in SAME:
            assert f[key] == (pytest.approx(e[key], rel=1e-12) if isinstance(e[key], float) else e[key]), key
    # The launcher's own start-up (an interpreter, torch's import) is counted once, in the first
    # case it served; every case's time split still fits in its process time.
    first, *rest = fork_records
    assert first["startup_s"] > max(r["startup_s"] for r in rest)
    for r in fork_records:
        assert 0 < r["startup_s"] < r["process_s"]
    (run_dir,) = (tmp_path / "r-fork" / "mini").iterdir()
    assert (run_dir / "logs" / "launcher-torchdiffeq.log").exists()
    assert json.loads((run_dir / "env.json").read_text())["executor"]["case_launch"] == "fork"
    assert _processes_under(tmp_path) == []  # the launcher stopped with the run


def test_a_forked_case_that_times_out_is_a_row_and_the_launcher_serves_the_next(tmp_path):
    folder = write_suite(tmp_path / "s", iterations=100_000, isolation="process", launch="fork", threads=1,
                         timeout=4, methods=("euler",), grads=("backprop", "adjoint"))
    records = _run(folder, tmp_path, "results")
    assert [(r["status"], r["launch"]) for r in records] == [("timeout", "fork")] * 2
    assert all("killed" in r["message"] for r in records)
    assert _processes_under(tmp_path) == []


def _job(tmp_path: Path, iterations: int) -> Path:
    """A job file for one mini-suite case, as the runner writes it."""
    folder = write_suite(tmp_path / f"suite-{iterations}", iterations=iterations, isolation="process", threads=1,
                         methods=("euler",), grads=("backprop",))
    suite = load_suite(folder)
    (case,) = suite.cases()
    job = tmp_path / f"job-{iterations}.json"
    job.write_text(json.dumps({"case": case.to_dict(), "config": suite.config}))
    return job


def test_a_forked_case_killed_from_outside_dies_alone(tmp_path):
    launcher = Launcher("torch", tmp_path / "launcher.log", plugins=("torchdiffeq",), workload="train", env=ONE_THREAD)
    try:
        long = launcher.start_case(_job(tmp_path, 100_000), tmp_path / "long.json", tmp_path / "long.log",
                                   time.time())
        assert long.pid != os.getpid()
        time.sleep(1.0)
        assert os.getpgid(long.pid) == long.pid  # a session and process group of its own
        os.kill(long.pid, signal.SIGKILL)  # as the OOM killer would
        assert long.wait(timeout=60) == -signal.SIGKILL
        assert not (tmp_path / "long.json").exists()
        # The launcher lives on and forks the next case, which runs to its record.
        short = launcher.start_case(_job(tmp_path, 2), tmp_path / "short.json", tmp_path / "short.log", time.time())
        assert short.wait(timeout=300) == 0, (tmp_path / "short.log").read_text()
        record = json.loads((tmp_path / "short.json").read_text())
        assert record["status"] == "ok" and record["iterations_done"] == 2
        assert short.pid != long.pid
    finally:
        launcher.close()
    assert _processes_under(tmp_path) == []


def test_a_launcher_leaves_a_library_that_starts_threads_to_its_cases(tmp_path, monkeypatch):
    (tmp_path / "threaded_at_import.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    launcher = Launcher("torch", tmp_path / "launcher.log", modules=("threaded_at_import",), workload="train",
                        env=ONE_THREAD)
    job = json.loads(_job(tmp_path, 2).read_text())
    record = run_case_process(job, tmp_path / "case.log", 300, launcher=launcher)
    assert record["launch"] == "fork" and record["status"] == "ok", record
    assert "importing threaded_at_import started threads (2)" in launcher.skipped
    assert launcher.modules == () and launcher.refused is None
    launcher.close()


def test_a_launcher_with_threads_after_the_framework_refuses_and_its_cases_start_interpreters(
        tmp_path, monkeypatch):
    # Started at interpreter start-up (as a BLAS pool is when numpy loads): nothing can leave it out.
    (tmp_path / "sitecustomize.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    launcher = Launcher("torch", tmp_path / "launcher.log", plugins=("torchdiffeq",), workload="train",
                        env=ONE_THREAD)
    with pytest.raises(LauncherRefused, match="2 threads after its imports: forking it is unsafe"):
        launcher.start_case(_job(tmp_path, 2), tmp_path / "x.json", tmp_path / "x.log", time.time())
    job = json.loads(_job(tmp_path, 2).read_text())
    record = run_case_process(job, tmp_path / "case.log", 300, launcher=launcher)
    assert record["launch"] == "exec" and record["status"] == "ok", record
    launcher.close()


def test_a_torch_launcher_imports_what_torch_imports_on_first_use_and_stays_one_thread():
    """The backend's LAZY_IMPORTS (dynamo, which the first optimiser imports: seconds of every case's
    set-up) come with the launcher's imports, which still leave it forkable: one thread."""
    import subprocess
    import sys

    from odebench.backends import get_backend

    pytest.importorskip("torch")
    lazy = get_backend("torch").LAZY_IMPORTS
    assert "torch._dynamo" in lazy
    script = ("import json, os, sys\n"
              "from odebench.launcher import _preload_framework\n"
              "_preload_framework('torch', 'train')\n"
              f"print(json.dumps([[m in sys.modules for m in {list(lazy)!r}], len(os.listdir('/proc/self/task'))]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **ONE_THREAD})
    assert out.returncode == 0, out.stderr
    loaded, threads = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(loaded) and threads == 1


def test_a_jax_launcher_imports_the_swap_references_torch_and_stays_one_thread(tmp_path):
    """The swap check evaluates every model with odebench's own (torch) dopri5: a JAX plugin's launcher
    imports torch and torch_custom ahead (else each case's process imports torch itself), and stays
    forkable."""
    import subprocess
    import sys

    from odebench import registry
    from odebench.launcher import LauncherPool
    from odebench.swap import defaults, reference_modules

    if registry.entry("diffrax").available() is not None or registry.entry("torch_custom").available() is not None:
        pytest.skip("needs diffrax and torch")
    modules = reference_modules(defaults(1e-9, 1e-11)["swap"])
    assert modules[0] == "odebench.backends.torch" and "torch" in modules
    assert reference_modules(dict(defaults(1e-9, 1e-11)["swap"], plugin="own")) == ()
    assert reference_modules(dict(defaults(1e-9, 1e-11)["swap"], enabled=False)) == ()
    pool = LauncherPool(["diffrax"], "train", tmp_path, env=ONE_THREAD, modules=modules)
    assert pool.for_plugin("diffrax").modules == modules
    script = ("import json, os, sys\n"
              "from odebench.launcher import _preload_framework, _preload_libraries\n"
              "_preload_framework('jax', 'train')\n"
              f"_preload_libraries({list(modules)!r}, ['diffrax'])\n"
              "print(json.dumps(['torch' in sys.modules, 'jax' in sys.modules, len(os.listdir('/proc/self/task'))]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **ONE_THREAD})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, True, 1]
