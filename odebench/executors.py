"""Running a suite's cases on a Dask cluster: ``odebench run --jobs N`` and ``--dask ADDRESS``.

The driver (the ``odebench run`` process) keeps everything that makes a run a run: the run
folder and its lock, ``records.jsonl`` (it alone appends, one record as each case returns),
``env.json``, the logs and the interrupt handling. A Dask task only runs one case the way the
serial runner does, in a fresh ``python -m odebench.worker`` process
(:func:`odebench.caseproc.run_case_process`), and returns its record fields, its log, and
where and beside how many other cases it ran.

* At most as many cases are submitted as the cluster has worker threads, so a case never waits
  queued on a worker: a worker that dies takes down only the case it was running.
* A worker that dies mid-case: the scheduler runs the case again on another worker, as many
  times as its ``distributed.scheduler.allowed-failures`` says (once on the clusters odebench
  starts, :data:`SCHEDULER_CONFIG`); then the case is an ``error`` record and the run goes on.
* A cancelled case (Ctrl-C of the driver, or the driver gone) is killed on its worker within
  :data:`POLL_S` seconds.

Nothing here imports Dask at module level: ``--jobs 1`` never imports it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odebench.caseproc import log_name, run_case_process
from odebench.protocol import Status
from odebench.suite import Case

#: Scheduler settings of the clusters odebench starts (set them on a scheduler you start yourself,
#: e.g. ``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=1 dask scheduler``): a case whose worker
#: dies is run once more on another worker, then recorded as an error.
SCHEDULER_CONFIG = {"distributed.scheduler.allowed-failures": 1}

#: Seconds within which a case notices that it was cancelled, and between counts of the cases
#: running on its host.
POLL_S = 0.5

#: The last characters of a case's log that come back to the driver (a runaway log must not flood it).
LOG_LIMIT = 1_000_000

#: Seconds to wait for a scheduler given by ``--dask`` before giving up.
CONNECT_TIMEOUT_S = 5.0

#: Dask's loggers that write to stderr (each has a handler of its own and does not propagate).
DASK_LOGGERS = ("distributed", "distributed.client")


class ExecutorError(RuntimeError):
    """A cluster cannot be started or reached, or was lost mid-run (message is one line)."""


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ExecutorError("running cases on Dask needs the dask extra: pip install 'odebench[dask]'") from None
    return distributed


class DaskExecutor:
    """Runs cases on a Dask cluster for :func:`odebench.runner.run`; the driver side of it.

    Make one with :meth:`local` or :meth:`connect`, and :meth:`close` it when the run is over
    (it is a context manager). Closing a local cluster stops its workers and their cases.

    Arguments:
        client: a connected ``distributed.Client``.
        cluster: the ``LocalCluster`` this executor started and owns, or None for a cluster
            someone else runs.
        info: what ``env.json`` records about the executor.
    """

    def __init__(self, client: Any, cluster: Any = None, info: dict[str, Any] | None = None):
        self.client = client
        self.cluster = cluster
        distributed = _import_distributed()
        import dask

        self.info: dict[str, Any] = {"kind": "dask", "scheduler": client.scheduler.address,
                                     "case_isolation": "process", "dask": dask.__version__,
                                     "distributed": distributed.__version__, **(info or {})}
        try:
            self.info["retries_after_worker_death"] = client.run_on_scheduler(_allowed_failures)
        except Exception:  # noqa: BLE001 - a scheduler that refuses remote calls: the setting is unknown
            self.info["retries_after_worker_death"] = None
        self.workers: dict[str, dict[str, Any]] = {}
        self._env_path: Path | None = None
        self._log_handler: logging.Handler | None = None
        # Dask logs to stderr (a lost scheduler: pages of tracebacks); a run's console is odebench's
        # one line per case, so Dask's lines go to logs/dask.log instead (see record_environment).
        self._muted = [(h, h.level) for name in DASK_LOGGERS for h in logging.getLogger(name).handlers
                       if type(h) is logging.StreamHandler]
        for handler, _ in self._muted:
            handler.setLevel(logging.CRITICAL + 1)

    @classmethod
    def local(cls, jobs: int) -> DaskExecutor:
        """A cluster of ``jobs`` single-threaded worker processes on this machine (loopback only).

        Raises:
            ExecutorError: when Dask is not installed or the cluster does not start.
        """
        distributed = _import_distributed()
        import dask

        cluster = None
        try:
            # The scheduler runs in this process and reads its settings when it starts. The workers'
            # console lines (a cancelled case, a restart, and on Ctrl-C the traceback of a heartbeat to
            # the scheduler that closed first) would interleave with odebench's: only CRITICAL reaches
            # the console. Nothing is lost: a case's failure comes back through its future as a row,
            # and this process's Dask lines go to logs/dask.log (silence_logs sets console handlers only).
            with dask.config.set(SCHEDULER_CONFIG):
                cluster = distributed.LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                                   host="127.0.0.1", dashboard_address=None,
                                                   silence_logs=logging.CRITICAL)
            client = distributed.Client(cluster)
        except Exception as exc:  # noqa: BLE001 - any failure to start is one line for the user
            if cluster is not None:
                cluster.close()
            raise ExecutorError(f"--jobs {jobs}: the local Dask cluster did not start: "
                                f"{_one_line(exc)}") from None
        return cls(client, cluster, {"cluster": "local", "jobs": jobs})

    @classmethod
    def connect(cls, address: str, timeout: float = CONNECT_TIMEOUT_S) -> DaskExecutor:
        """A running scheduler: ``tcp://host:port``, or the path of its scheduler file.

        Raises:
            ExecutorError: when Dask is not installed, the address is malformed, or no scheduler
                answers within ``timeout`` seconds.
        """
        distributed = _import_distributed()
        where = {"scheduler_file": address} if Path(address).is_file() else {"address": address}
        try:
            client = distributed.Client(**where, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(f"--dask {address!r}: no Dask scheduler answered within {timeout:g} s "
                                f"({_one_line(exc)}); valid: the address a running scheduler prints, "
                                "e.g. tcp://host:8786") from None
        except (ValueError, TypeError) as exc:
            raise ExecutorError(f"--dask {address!r}: {_one_line(exc)}; valid: tcp://host:port or a "
                                "scheduler file") from None
        return cls(client, None, {"cluster": "remote"})

    def describe(self) -> str:
        """One line for the user: which cluster, how many workers now."""
        n = len(self.client.nthreads())
        if self.info.get("cluster") == "local":
            return f"a local Dask cluster of {self.info['jobs']} worker processes"
        return f"the Dask scheduler at {self.info['scheduler']} ({n} workers now)"

    def record_environment(self, env_path: Path) -> None:
        """Add the executor and every worker's environment to ``env.json``, and keep them there.

        Workers that run a case later (a cluster that grows) are added as their first case
        returns. Where the driver and the workers disagree on a library's version,
        ``library_disagreements`` says which has which. Dask's log lines in this process (its
        client; for a local cluster also its scheduler and the workers' nannies) go to
        ``logs/dask.log`` beside it.

        Arguments:
            env_path: the run's ``env.json`` (created when missing).
        """
        self._env_path = Path(env_path)
        try:
            self.workers.update(self.client.run(host_environment, on_error="ignore"))
        except Exception:  # noqa: BLE001 - a worker gone meanwhile: its cases will add it
            pass
        self._write_env()
        logs = self._env_path.parent / "logs"
        logs.mkdir(exist_ok=True)
        self._log_handler = logging.FileHandler(logs / "dask.log")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for name in DASK_LOGGERS:
            logging.getLogger(name).addHandler(self._log_handler)

    def _write_env(self) -> None:
        if self._env_path is None:
            return
        try:
            env = json.loads(self._env_path.read_text())
        except (OSError, json.JSONDecodeError):
            env = {}
        env["executor"] = self.info
        env["workers"] = env.get("workers", {}) | self.workers
        disagreements = library_disagreements({"driver": host_environment(), **env["workers"]})
        env.pop("library_disagreements", None)
        if disagreements:
            env["library_disagreements"] = disagreements
        tmp = self._env_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(env, indent=2))
        os.replace(tmp, self._env_path)

    def run(self, cases: list[Case], config: dict[str, Any], timeout: float, log_dir: Path,
            finish: Callable[[Case, dict[str, Any]], None]) -> None:
        """Run ``cases`` on the cluster; call ``finish(case, fields)`` in this thread as each returns.

        ``fields`` are the case's record fields plus ``worker``, ``worker_host`` and
        ``concurrent_cases``; the case's log is written to ``log_dir``. On any exception here
        (Ctrl-C, SIGTERM) the cases still out are cancelled, which kills them on their workers.

        Arguments:
            cases: the cases to run (unsupported and unavailable ones already taken out).
            config: the suite's settings.
            timeout: seconds per case, enforced on the worker.
            log_dir: where the cases' logs go.
            finish: writes the record (the driver is the only writer of the run folder).

        Raises:
            ExecutorError: when the scheduler is lost mid-run.
        """
        distributed = _import_distributed()
        log_dir.mkdir(exist_ok=True)
        queue = list(cases)
        out: dict[Any, Case] = {}
        done = distributed.as_completed()

        def top_up() -> None:
            # No more cases out than the cluster has threads: none waits on a worker, so a dying
            # worker takes one case with it, and the next case goes to whichever worker is free.
            slots = max(1, sum(self.client.nthreads().values()))
            while queue and len(out) < slots:
                case = queue.pop(0)
                future = self.client.submit(case_task, {"case": case.to_dict(), "config": config}, timeout,
                                            key=f"odebench-case-{uuid.uuid4().hex}", pure=False, retries=0)
                out[future] = case
                done.add(future)

        try:
            top_up()
            for future in done:
                case = out.pop(future)
                fields = self._fields(future)
                future.release()
                log = fields.pop("log", None)
                if log is not None:
                    (log_dir / log_name(case.id)).write_text(log)
                finish(case, fields)
                top_up()
        except BaseException:
            if out:
                self.client.cancel(list(out), force=True)
            raise

    def _fields(self, future: Any) -> dict[str, Any]:
        """A returned case's record fields, or an ``error`` for a case whose workers died."""
        from distributed.scheduler import KilledWorker

        if future.status == "finished":
            result = future.result()
            env = result.pop("worker_env", None)
            if env is not None and result.get("worker") not in self.workers:
                self.workers[result["worker"]] = env
                self._write_env()
            return result
        if future.status != "error":  # cancelled or lost: not by us, so the scheduler went away
            raise ExecutorError(f"the Dask scheduler at {self.info['scheduler']} dropped a case ({future.status}): "
                                "lost or restarted (see logs/dask.log)")
        exc = future.exception()
        if isinstance(exc, KilledWorker):
            tries = exc.allowed_failures + 1
            return {"status": str(Status.ERROR), "worker": exc.last_worker.address,
                    "message": f"the Dask worker running the case died, {tries} time(s) on different workers "
                               f"(last {exc.last_worker.address}); see logs/dask.log"}
        return {"status": str(Status.ERROR), "message": f"Dask task failed: {_one_line(exc)}"}

    def close(self) -> None:
        """Disconnect, and stop the local cluster with its workers (and so their cases)."""
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            if self._log_handler is not None:
                for name in DASK_LOGGERS:
                    logging.getLogger(name).removeHandler(self._log_handler)
                self._log_handler.close()
                self._log_handler = None
            for handler, level in self._muted:
                handler.setLevel(level)
            self._muted = []

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _allowed_failures(dask_scheduler: Any) -> int:
    """Runs on the scheduler: how many times it reruns a task whose worker died."""
    return dask_scheduler.allowed_failures


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------ on the workers

def case_task(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The Dask task: one case in a fresh process on this worker (see :func:`run_case_process`).

    Arguments:
        job: ``{"case": Case.to_dict(), "config": the suite's settings}``.
        timeout: seconds the case may take.

    Returns:
        The case's record fields, ``case_wall_s``, ``worker`` (this worker's address),
        ``worker_host``, ``concurrent_cases`` (the most cases seen running on this host at once
        while it ran, itself included), ``log`` (its output, the last :data:`LOG_LIMIT`
        characters) and ``worker_env`` (:func:`host_environment`).

    Raises:
        odebench.caseproc.CaseCancelled: when the driver cancelled the case (its result is not wanted).
    """
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()

    def cancelled() -> bool:
        # The worker marks a task cancelled (or forgets it) when its client cancels it or goes
        # away; a running task is not interrupted by Dask, so it asks.
        task = worker.state.tasks.get(key)
        return task is None or task.state in ("cancelled", "released", "forgotten")

    with tempfile.TemporaryDirectory(prefix="odebench-") as tmp, HostCases() as here:
        log = Path(tmp) / "case.log"

        def poll() -> bool:
            here.count()
            return cancelled()

        started = time.perf_counter()
        fields = run_case_process(job, log, timeout, poll=poll, poll_s=POLL_S)
        fields.setdefault("case_wall_s", time.perf_counter() - started)
        text = log.read_text(errors="replace")[-LOG_LIMIT:] if log.exists() else ""
    return fields | {"worker": worker.address, "worker_host": socket.gethostname(),
                     "concurrent_cases": here.peak, "log": text, "worker_env": host_environment()}


class HostCases:
    """Marks a case as running on this host, and counts the cases marked (by any worker process).

    A marker is a file named after the process that made it, in a folder of this host's
    temporary directory; a marker whose process is gone (a killed worker) is not counted and is
    removed by whoever finds it.

    Attributes:
        peak: the most cases counted at once since the block started, this one included.
    """

    def __init__(self, folder: Path | None = None):
        self.folder = folder or Path(tempfile.gettempdir()) / f".odebench-running-{os.getuid()}"
        self.peak = 0
        self.marker: Path | None = None

    def __enter__(self) -> HostCases:
        self.folder.mkdir(exist_ok=True)
        self.marker = self.folder / f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
        self.marker.touch()
        self.count()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)

    def count(self) -> int:
        """The cases running on this host now (updates :attr:`peak`)."""
        n = 0
        for marker in self.folder.iterdir():
            try:
                pid = int(marker.name.split("-", 1)[0])
            except ValueError:
                continue
            if _alive(pid):
                n += 1
            else:
                marker.unlink(missing_ok=True)
        self.peak = max(self.peak, n)
        return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@functools.cache
def host_environment() -> dict[str, Any]:
    """This process's host, CPU, Python, odebench and library versions (for ``env.json``'s workers).

    Without the command line and time (a worker serves many runs) and without importing torch or
    JAX (a worker process stays small: its cases run in processes of their own).
    """
    import importlib.metadata

    from odebench.measure import environment

    env = environment(argv=[], probe_devices=False)
    for key in ("command", "time_utc"):
        env.pop(key, None)
    env["host"] = socket.gethostname()
    for dist in ("dask", "distributed"):
        try:
            env["libraries"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            env["libraries"][dist] = None
    return env


#: The fields of an environment compared between the driver and the workers.
COMPARED = ("python", "odebench", "git_commit")


def library_disagreements(envs: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Where machines disagree: library (or Python, odebench, commit) → version → the machines.

    Arguments:
        envs: machine name (``driver``, a worker's address) → its :func:`host_environment`.

    Returns:
        Only the names with more than one version among ``envs``; a library one machine lacks is
        ``"not installed"`` there (``"unknown"`` for a commit or version that cannot be read).
    """
    names = dict.fromkeys(COMPARED)
    for env in envs.values():
        names |= dict.fromkeys(env.get("libraries", {}))
    out: dict[str, dict[str, list[str]]] = {}
    for name in names:
        versions: dict[str, list[str]] = {}
        for machine, env in envs.items():
            value = env.get(name) if name in COMPARED else env.get("libraries", {}).get(name)
            missing = "unknown" if name in COMPARED else "not installed"
            versions.setdefault(str(value) if value is not None else missing, []).append(machine)
        if len(versions) > 1:
            out[name] = versions
    return out
