"""A pre-imported process that forks each case's fresh process (``measure.launch = "fork"``).

Under process isolation every case starts an interpreter and imports odebench, its framework and
its plugin's library: one to three seconds per case on 2 cores, paid again by every case. A
launcher pays that once per plugin: it imports what the plugin's cases need, runs nothing of the
framework, and forks one child per case. Each child is still a fresh process
of its own: its own memory (a copy-on-write copy of the launcher's, holding no tensors, no
compiled programs and no allocator pools), its own session and process group (killed whole on a
timeout), tied to the launcher as the launcher is to the runner. So a case's peak memory, timeout
and crash are as contained as under a fresh interpreter, and what a case measures does not change;
only its ``startup_s`` shrinks. The launcher starts within the first case it serves, so that case's
``startup_s`` and ``process_s`` hold the launcher's start-up, and a run's totals stay what it cost.

Forking a process that runs threads is undefined (a lock held by another thread stays locked in
the child). The launcher checks before it reports ready, and before every fork, that it has
exactly one thread. A plugin library whose import starts threads (torchode's TorchScript does) is
left to the cases to import; a framework whose import starts threads (numpy's OpenBLAS pool, unless
``measure.threads`` pins it) makes the launcher refuse, and the runner starts those cases with fresh
interpreters instead (their records say ``launch = "exec"``).
Linux only (elsewhere every case is exec'd): the check reads ``/proc/self/task``, and macOS's
system libraries are not fork-safe.

Runner and launcher talk in JSON lines: requests on the launcher's stdin, replies on a pipe of
their own (an import that prints to stdout cannot garble them).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from odebench.worker import PARENT_ENV, STARTED_ENV, set_parent_death_signal

#: Seconds a launcher may take to import its modules before the runner gives up on it.
READY_TIMEOUT_S = 300.0


class LauncherRefused(RuntimeError):
    """The launcher cannot fork safely here (or failed to start); the message says why."""


def supported() -> str | None:
    """None when this platform can fork cases from a launcher, else why not."""
    if not sys.platform.startswith("linux"):
        return f"forking a pre-imported process is not safe on {sys.platform} (Linux only)"
    return None


def thread_count() -> int:
    """Threads of this process, from the kernel (``threading`` does not see threads started in C)."""
    return len(os.listdir("/proc/self/task"))


class Launcher:
    """The runner's handle on one launcher process, started on the first case it serves.

    Arguments:
        framework: the framework its cases train in (``torch``, ``jax``, or another the backend
            names), imported by the launcher.
        modules: further modules to import (the plugins' libraries, the workload's module).
        plugins: plugin names whose classes to load in the launcher.
        workload: the name of the workload its cases run.
        log: the file that receives the launcher's own output (its imports' warnings), appended to;
            its path is on the launcher's command line, so a process listing tells which run a
            launcher and its children (which keep that command line) belong to.
        env: environment variables for the launcher and its cases beyond this process's (see
            :func:`odebench.worker.thread_env`).
    """

    def __init__(self, framework: str, log: Path, *, modules: tuple[str, ...] = (), plugins: tuple[str, ...] = (),
                 workload: str = "", env: dict[str, str] | None = None):
        self.framework, self.log, self.modules, self.plugins, self.workload = (
            framework, Path(log), modules, plugins, workload)
        self.env = dict(env or {})
        #: Why the launcher runs without the plugins' libraries (their import started threads), or None.
        self.skipped: str | None = None
        self._proc: subprocess.Popen | None = None
        self._replies = None
        self._buffer = b""
        self.refused: str | None = supported()

    # -- the runner's side ------------------------------------------------------------------------
    def start_case(self, job: Path, out: Path, log: Path, started: float) -> ForkedCase:
        """Fork a child that runs ``python -m odebench.worker JOB OUT`` as a fresh process would.

        The child appends its stdout and stderr to ``log``; ``started`` (``time.time()``) is its
        launch time for ``startup_s``. Starts the launcher first if it is not running: ``started``
        taken before this call, the first case's ``startup_s`` then holds the launcher's start-up.

        Raises:
            LauncherRefused: the launcher cannot fork safely (or died and cannot restart): the
                caller starts the case with a fresh interpreter.
        """
        if self.refused:
            raise LauncherRefused(self.refused)
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        reply = self._request({"job": str(job), "out": str(out), "log": str(log), "started": started})
        if "pid" not in reply:
            self.refused = reply.get("error", "the launcher did not fork")
            self.close()
            raise LauncherRefused(self.refused)
        return ForkedCase(self, reply["pid"])

    def close(self) -> None:
        """Stop the launcher (its children are the caller's to have stopped)."""
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._replies is not None:
            os.close(self._replies)
        self._proc, self._replies, self._buffer = None, None, b""

    def _start(self) -> None:
        self.close()
        read_end, write_end = os.pipe()
        args = [sys.executable, "-m", "odebench.launcher", str(write_end), self.framework, self.workload,
                ",".join(self.modules), ",".join(self.plugins), str(self.log)]
        # A session of its own: a terminal's Ctrl-C reaches the runner, which stops the cases itself.
        with open(self.log, "a") as fh:
            self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.STDOUT,
                                          pass_fds=(write_end,), start_new_session=True,
                                          env=os.environ | self.env | {PARENT_ENV: str(os.getpid())})
        os.close(write_end)
        self._replies = read_end
        try:
            ready = self._reply(READY_TIMEOUT_S)
        except (subprocess.TimeoutExpired, EOFError) as exc:
            self.refused = f"the {self.framework} launcher did not start ({type(exc).__name__})"
            self.close()
            raise LauncherRefused(self.refused) from None
        if not ready.get("ready"):
            self.close()
            if ready.get("libraries") and (self.modules or self.plugins):
                # Forking is safe before the plugin's own libraries: the cases import those themselves.
                self.skipped = ready.get("reason", "")
                self.modules, self.plugins = (), ()
                return self._start()
            self.refused = ready.get("reason", "the launcher refused")
            raise LauncherRefused(self.refused)

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            self._proc.stdin.write((json.dumps(message) + "\n").encode())
            self._proc.stdin.flush()
            return self._reply(READY_TIMEOUT_S)
        except (OSError, EOFError, subprocess.TimeoutExpired):
            return {"error": f"the {self.framework} launcher stopped answering"}

    def _reply(self, timeout: float | None) -> dict[str, Any]:
        """The launcher's next reply within ``timeout`` seconds (None: wait for it).

        Raises:
            subprocess.TimeoutExpired: none came in time.
            EOFError: the launcher has gone.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not select.select([self._replies], [], [], left)[0]:
                raise subprocess.TimeoutExpired(self.framework, timeout)
            chunk = os.read(self._replies, 65536)
            if not chunk:
                raise EOFError("launcher gone")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)


class ForkedCase:
    """A case's process forked by a launcher, used as :class:`subprocess.Popen` is (``pid``,
    ``wait``, ``returncode``): the launcher, its parent, reports its exit status."""

    def __init__(self, launcher: Launcher, pid: int):
        self.launcher, self.pid, self.args = launcher, pid, f"forked case {pid}"
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: killed by that signal) within ``timeout`` seconds.

        Raises:
            subprocess.TimeoutExpired: the case is still running.
        """
        if self.returncode is not None:
            return self.returncode
        try:
            reply = self.launcher._reply(timeout)
        except EOFError:
            # The launcher died under its case (killed from outside): the case died with it, tied
            # to it. Its next case starts a fresh launcher.
            self.launcher.close()
            self.returncode = -signal.SIGKILL
            return self.returncode
        self.returncode = int(reply["code"])
        return self.returncode


class LauncherPool:
    """A run's launchers: one per plugin, started when its first case runs.

    One per plugin, not per framework: a plugin whose library starts threads when imported (torchode's
    TorchScript does) then costs only its own cases their launcher, not its framework's others.

    Arguments:
        plugins: the names of the plugins whose cases the run will fork.
        workload: the workload the cases run.
        log_dir: the run's log folder (``launcher-<plugin>.log`` for each launcher's output).
        env: environment variables for the launchers (and so their cases) beyond this process's.
        warn: called once with a one-line notice for each launcher that refuses to fork.
        modules: further modules every launcher imports (what every case needs beyond its own
            plugin: the solver-swap check's reference, :func:`odebench.swap.reference_modules`).
    """

    def __init__(self, plugins: list[str], workload: str, log_dir: Path, *, env: dict[str, str] | None = None,
                 warn: Any = None, modules: tuple[str, ...] = ()):
        from odebench import registry

        self._framework: dict[str, str] = {}
        for name in dict.fromkeys(plugins):
            try:
                self._framework[name] = registry.entry(name).load().backend_framework()
            except Exception:  # noqa: BLE001 - a plugin that does not load is exec'd, and fails there
                continue
        self.workload, self.log_dir, self.env, self.warn = workload, Path(log_dir), dict(env or {}), warn
        self.modules = tuple(modules)
        self._launchers: dict[str, Launcher] = {}
        self._warned: set[str] = set()

    def for_plugin(self, plugin: str) -> Launcher | None:
        """The launcher for ``plugin``'s cases; None when they must start an interpreter."""
        if plugin not in self._framework:
            return None
        if plugin not in self._launchers:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._launchers[plugin] = Launcher(self._framework[plugin], self.log_dir / f"launcher-{plugin}.log",
                                               modules=self.modules, plugins=(plugin,), workload=self.workload,
                                               env=self.env)
        return self._launchers[plugin]

    def notice(self) -> None:
        """Say once, through ``warn``, which launchers refused (their cases ran as fresh interpreters)."""
        for plugin, launcher in self._launchers.items():
            if launcher.refused and plugin not in self._warned and self.warn is not None:
                self._warned.add(plugin)
                self.warn(f"odebench: {plugin} cases start fresh interpreters: {launcher.refused}")

    def close(self) -> None:
        for launcher in self._launchers.values():
            launcher.close()


# -- the launcher's side ----------------------------------------------------------------------------
def _preload_framework(framework: str, workload: str) -> None:
    """Import odebench's worker, the workload and the framework with its backend. Nothing here may
    run framework code (that could start threads)."""
    import odebench.worker  # noqa: F401
    from odebench import registry
    from odebench.backends import BACKENDS, get_backend

    if workload:
        registry.get_workload(workload)
    if framework in BACKENDS:
        importlib.import_module(framework)
        for name in getattr(get_backend(framework), "LAZY_IMPORTS", ()):
            importlib.import_module(name)


def _preload_libraries(modules: list[str], plugins: list[str]) -> None:
    """Import the plugins' classes and libraries, and any further ``modules``."""
    from odebench import registry

    for name in modules:
        importlib.import_module(name)
    for name in plugins:
        for module in registry.entry(name).load().requires:
            importlib.import_module(module)


def _send(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def _child(request: dict[str, Any], reply_fd: int) -> None:
    """In the forked child: become a fresh case process and run the worker; never returns."""
    code = 1
    try:
        os.setsid()  # its own process group: a timeout kills it and whatever it starts
        os.close(reply_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        # The runner's environment for the worker: its launch time, and the parent to die with.
        os.environ[STARTED_ENV] = repr(request["started"])
        os.environ[PARENT_ENV] = str(os.getppid())
        from odebench import worker

        code = worker.main([request["job"], request["out"]])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the log gets it; the exit code says it failed
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str]) -> int:
    reply_fd, framework, workload = int(argv[0]), argv[1], argv[2]
    modules = [m for m in argv[3].split(",") if m]
    plugins = [p for p in argv[4].split(",") if p]
    parent = int(os.environ[PARENT_ENV])
    # Die with the runner. The kernel's signal only: a watching thread would make forking unsafe.
    set_parent_death_signal()
    if os.getppid() != parent:
        return 1
    try:
        _preload_framework(framework, workload)
    except Exception as exc:  # noqa: BLE001 - the runner falls back to fresh interpreters
        _send(reply_fd, {"ready": False, "reason": f"the {framework} launcher's imports failed: {exc}"})
        return 1
    threads = thread_count()
    if threads != 1:
        _send(reply_fd, {"ready": False, "reason": f"the {framework} launcher has {threads} threads after "
                                                   "its imports: forking it is unsafe"})
        return 1
    if modules or plugins:
        try:
            _preload_libraries(modules, plugins)
        except Exception as exc:  # noqa: BLE001
            _send(reply_fd, {"ready": False, "libraries": True,
                             "reason": f"importing {', '.join(modules + plugins)} failed: {exc}"})
            return 1
        threads = thread_count()
        if threads != 1:
            # The framework alone was safe: the runner starts a launcher without these libraries.
            _send(reply_fd, {"ready": False, "libraries": True,
                             "reason": f"importing {', '.join(modules + plugins)} started threads ({threads})"})
            return 1
    # What the imports allocated is never freed; moving it out of the collector's reach keeps a
    # child's collections from touching (and so copying) the launcher's pages.
    gc.collect()
    gc.freeze()
    _send(reply_fd, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        threads = thread_count()
        if threads != 1:
            _send(reply_fd, {"error": f"the {framework} launcher has {threads} threads: forking it is unsafe"})
            return 1
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, reply_fd)
        _send(reply_fd, {"pid": pid})
        _, status = os.waitpid(pid, 0)
        _send(reply_fd, {"pid": pid, "code": os.waitstatus_to_exitcode(status)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
