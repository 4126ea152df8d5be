"""The ``odebench`` command: run, list, report, env, data.

User errors (a bad suite, filter, value or folder) print one line to stderr and exit 2,
with no traceback; nothing already written is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path

from odebench import __version__

EXIT_USAGE = 2


class UsageError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _csv(value: str) -> list[str]:
    # Empty items are kept: the suite's matrix then refuses '' by name, listing the valid values,
    # where dropping them would let `--plugin ''` quietly select every plugin.
    return [v.strip() for v in value.split(",")]


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="a profile of the suite (e.g. quick, full); default: the suite's default "
                   "profile (`odebench list` marks it), else its base settings")
    p.add_argument("--plugin", type=_csv, action="extend", help="only these plugins (comma-separated)")
    p.add_argument("--method", type=_csv, action="extend", help="only these methods (comma-separated)")
    p.add_argument("--grad", type=_csv, action="extend", help="only these grad modes (comma-separated)")
    p.add_argument("--seed", type=_csv, action="extend", help="only these seeds (comma-separated integers)")
    p.add_argument("--device", type=_csv, action="extend", help="only these devices (comma-separated: cpu, cuda)")
    p.add_argument("--repeats", type=int, help="timed repetitions per case (overrides measure.repeats)")
    p.add_argument("--timeout", type=float, help="seconds per case (overrides measure.timeout_s)")
    p.add_argument("--data-dir", help="dataset folder for suites that read one (overrides data.data_dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="odebench", description="Benchmark neural-ODE solvers and gradient methods.")
    parser.add_argument("--version", action="version", version=f"odebench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a suite and write results/<suite>/<run-id>/")
    run.add_argument("suite", nargs="?", help="a suite folder, e.g. suites/spiral (optional with --resume)")
    _add_filters(run)
    run.add_argument("--problem", metavar="MODULE:FUNCTION",
                     help="run the suite on a problem of yours: a function returning an odebench.Problem "
                          "(its module found on PYTHONPATH, in the current folder or in the suite's folder), or the "
                          "name of an odebench.problems entry point; the workprecision suites take one")
    run.add_argument("--results", default="results", help="results root (default: results)")
    run.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run in RUN_DIR")
    run.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="run N cases at once on this machine, on a local Dask cluster of N single-threaded "
                            "worker processes (needs the dask extra); default 1: one after the other, without "
                            "Dask. Timings of cases that shared a machine are marked in the report")
    where.add_argument("--dask", metavar="ADDRESS",
                       help="run the cases on the Dask scheduler at ADDRESS (tcp://host:8786, or a scheduler "
                            "file); `odebench cluster slurm` starts one with workers on Slurm")

    ls = sub.add_parser("list", help="list plugins (availability, methods, grad modes), suites and installed problems")
    ls.add_argument("--suites-dir", default="suites", help="where to look for suites (default: suites)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    rep = sub.add_parser("report", help="re-render report.md, results.csv and figures of a run folder from its "
                         "records.jsonl, or print a pytest-benchmark FILE.json as a table")
    rep.add_argument("run_dir", metavar="RUN_DIR|FILE.json",
                     help="a run folder (e.g. results/spiral/20260101-120000), or a pytest-benchmark "
                          "--benchmark-json file")

    data = sub.add_parser("data", help="check (or fetch) a dataset: where it is and whether it verifies")
    data.add_argument("dataset", choices=["mnist"], help="the dataset")
    data.add_argument("--data-dir", help="folder with the files (default: $ODEBENCH_DATA, then the user cache)")
    data.add_argument("--fetch", action="store_true", help="download missing files (checksums verified)")

    env = sub.add_parser("env", help="print the environment that env.json records")
    env.add_argument("--no-devices", action="store_true", help="do not import torch/jax to probe devices")

    cluster = sub.add_parser("cluster", help="start Dask workers for `odebench run --dask`")
    kinds = cluster.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    from odebench.slurm import add_arguments as _slurm_arguments

    _slurm_arguments(kinds.add_parser("slurm", help="a Dask scheduler here, and workers as Slurm jobs "
                                      "(dask-jobqueue's SLURMCluster; needs the slurm extra); runs until Ctrl-C"))

    from odebench.regress import add_arguments as _regress_arguments

    _regress_arguments(sub.add_parser("regress", help="benchmark the parent commit and HEAD; exit 1 when a "
                                      "deterministic figure (NFE, steps, saved bytes, error) regresses, or "
                                      "when nothing could be compared"))
    return parser


#: Command-line flags that change a suite's settings → the setting they override.
OVERRIDE_FLAGS = {"repeats": "measure.repeats", "timeout": "measure.timeout_s", "data_dir": "data.data_dir"}


def overrides_from(args) -> dict[str, object]:
    """The suite overrides the flags ask for, as dotted settings (see :func:`odebench.suite.load_suite`)."""
    out: dict[str, object] = {}
    for flag, setting in OVERRIDE_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None or value == "":
            continue
        if flag == "timeout" and not (math.isfinite(value) and value > 0):  # nan or inf would break run.json
            raise UsageError(f"--timeout must be a positive, finite number of seconds, got {value:g}")
        if flag == "data_dir":
            if not Path(value).is_dir():
                raise UsageError(f"--data-dir {value!r} is not a folder")
            value = str(Path(value).resolve())
        out[setting] = value
    return out


def _load(args):
    from odebench.problem import ProblemError
    from odebench.schema import SuiteError
    from odebench.suite import load_suite

    problem = getattr(args, "problem", None)
    try:
        overrides = overrides_from(args)
        suite = load_suite(args.suite, args.profile)
        _check_suite_plugins(suite)
        if "data.data_dir" in overrides and "data" not in suite.config:
            raise UsageError(f"--data-dir: suite {suite.name!r} reads no dataset")
        if overrides or problem:
            suite = load_suite(args.suite, args.profile, overrides, problem=problem)
        seeds = None
        if args.seed:
            try:
                seeds = [int(s) for s in args.seed]
            except ValueError:
                raise UsageError(f"--seed takes integers, got {','.join(args.seed)!r}") from None
        cases = suite.cases(plugins=args.plugin, methods=args.method, grad_modes=args.grad, seeds=seeds,
                            devices=args.device)
        # The data the cases will read is checked now, before the run folder exists.
        suite.workload.preflight(suite.config)
    except SuiteError as exc:
        message = str(exc)
        for flag, setting in OVERRIDE_FLAGS.items():  # name the flag when the bad value came from it
            if getattr(args, flag, None) is not None and message.startswith(setting):
                message = f"--{flag.replace('_', '-')} ({setting})" + message[len(setting):]
        raise UsageError(message) from None
    except ProblemError as exc:
        raise UsageError(f"--problem: {exc}") from None
    _check_plugins(args.plugin or [])
    return suite, cases


def _check_plugins(names: list[str]) -> None:
    from odebench import registry

    for name in names:
        try:
            registry.entry(name)
        except registry.UnknownPluginError as exc:
            raise UsageError(str(exc)) from None


def _check_suite_plugins(suite) -> None:
    """Every plugin a suite's matrix names, and its ``swap.plugin`` (unless ``own``), must be registered
    (a suite file is read without the registry; a run needs it).

    Raises:
        UsageError: naming the plugin, where the suite names it, and the registered plugins.
    """
    from odebench import registry

    matrix = suite.config["matrix"]
    named = [("matrix.plugin", name) for name in matrix["plugin"]]
    for i, inc in enumerate(matrix["include"]):
        value = inc.get("plugin", [])
        named += [(f"matrix.include[{i}].plugin", name) for name in (value if isinstance(value, list) else [value])]
    known = registry.plugin_names()
    for where, name in named:
        if name not in known:
            raise UsageError(f"unknown plugin {name!r} in {where} of suite {suite.name!r}; "
                             f"registered: {', '.join(known) or 'none'}")
    from odebench.swap import OWN

    swap_plugin = suite.config.get("swap", {}).get("plugin", OWN)
    if swap_plugin != OWN and swap_plugin not in known:
        raise UsageError(f"unknown plugin {swap_plugin!r} in swap.plugin of suite {suite.name!r}; "
                         f"valid: {OWN} (the case's own), {', '.join(known)}")


def cmd_run(args) -> int:
    from odebench import report

    records, path = execute_run(args)
    df = report.to_frame(records)
    note = report.concurrency_note(records)
    if note:
        print(note + "\n")
    print(report.summary_markdown(df))
    skipped = report.not_run(df)
    if skipped:
        print("\nNot run:\n" + "\n".join(skipped))
    print(f"\nreport: {path}")
    return 0


def execute_run(args) -> tuple[list[dict], Path]:
    """Run what ``odebench run``'s arguments ask for, and render its report.

    Returns:
        ``(records, report.md's path)``; the run folder is the report's.

    Raises:
        UsageError: for bad input, before anything runs.
        Stopped: when the run is interrupted.
    """
    from odebench import registry, report, runner

    if args.resume:
        info = _resume_info(args)
        f = info["filters"]
        args.suite, args.profile = info["suite_path"], info["profile"]
        args.plugin, args.method, args.grad = f.get("plugin"), f.get("method"), f.get("grad_mode")
        args.seed, args.device = f.get("seed"), f.get("device")
        args.problem = info.get("problem")
        saved = info["overrides"]
        for flag, setting in OVERRIDE_FLAGS.items():
            # run.json of older runs keys the overrides by the setting's last part.
            value = saved.get(setting, saved.get(setting.split(".")[1]))
            if value is not None:
                setattr(args, flag, value)
    elif not args.suite:
        raise UsageError("odebench run: give a suite folder (e.g. suites/spiral) or --resume RUN_DIR")
    suite, cases = _load(args)
    if args.resume and info["profile"] == "default" != suite.profile:
        # Recorded before "default" came to mean the suite's default profile: it was the base settings.
        raise UsageError(f"--resume {args.resume!r}: the run used suite {suite.name!r}'s base settings, then called "
                         f"'default', which now means its default profile {suite.profile!r}; valid: a new run with "
                         f"the profile of {', '.join(suite.profiles)} that holds the base settings")
    if not cases:
        raise UsageError("the filters leave no case to run")
    # backends.jax.CACHE_ENV and backends.torch.CACHE_ENV, without importing JAX or torch here
    for env, what in (("ODEBENCH_JAX_CACHE", "persistent JAX cache"), ("ODEBENCH_TORCH_CACHE", "shared inductor cache")):
        cache = os.environ.get(env)
        if cache and Path(cache).exists() and not Path(cache).is_dir():
            raise UsageError(f"{env}={cache!r} is not a folder; valid: a folder (made when missing), "
                             f"or unset for no {what}")
    spec = runner.RunSpec(
        suite_path=str(Path(args.suite).resolve()), profile=suite.profile,
        filters={"plugin": args.plugin, "method": args.method, "grad_mode": args.grad,
                 "seed": args.seed, "device": args.device},
        overrides=overrides_from(args), problem=args.problem)
    # The cluster is reached (or started) before the run folder exists: a scheduler that does not
    # answer leaves nothing behind.
    executor = _executor(args)
    try:
        run_dir = Path(args.resume) if args.resume else _new_run_dir(args.results, suite.name)
        unavailable = sorted({c.plugin for c in cases if registry.entry(c.plugin).available()})
        if not args.no_progress:
            print(f"odebench: {suite.name} ({suite.profile}): {len(cases)} cases → {run_dir}", file=sys.stderr)
            if executor is not None:
                print(f"odebench: cases run on {executor.describe()}", file=sys.stderr)
            for name in unavailable:
                print(f"odebench: plugin {name!r} {registry.entry(name).available()}", file=sys.stderr)
        with _writer(run_dir):
            records = runner.run(suite, cases, run_dir, spec, resume=bool(args.resume),
                                 progress=not args.no_progress, argv=sys.argv, executor=executor)
            path = report.render(run_dir)
    finally:
        if executor is not None:
            executor.close()
    return records, path


def _executor(args):
    """The Dask executor ``--jobs N`` (N > 1) or ``--dask ADDRESS`` asks for, started or connected;
    None for a serial run (Dask is then never imported).

    Raises:
        UsageError: for ``--jobs`` below 1, Dask not installed, a cluster that does not start, or a
            scheduler that does not answer within a few seconds.
    """
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.dask is None and args.jobs == 1:
        return None
    from odebench import executors

    try:
        if args.dask is not None:
            return executors.DaskExecutor.connect(args.dask)
        return executors.DaskExecutor.local(args.jobs)
    except executors.ExecutorError as exc:
        raise UsageError(str(exc)) from None


def _resume_info(args) -> dict:
    """The checked ``run.json`` of the run ``--resume`` names, its suite path made absolute.

    Raises:
        UsageError: for a folder that is not a run, a damaged ``run.json`` or ``records.jsonl``,
            a suite that is no longer where the run found it, or a SUITE that is not the run's.
    """
    from odebench import rundir
    from odebench.suite import SuiteError, suite_file

    try:
        info = rundir.read_run_info(args.resume)
        rundir.check_records(args.resume)
    except rundir.RunDirError as exc:
        raise UsageError(f"--resume {args.resume!r}: {exc}") from None
    recorded = Path(info["suite_path"])
    # Runs made before suite paths were stored absolute hold the path as typed, relative to the
    # folder the run started in: run.json's "cwd" where recorded, else the current folder.
    suite = recorded if recorded.is_absolute() else Path(info.get("cwd") or os.getcwd()) / recorded
    try:
        suite_file(suite)
    except SuiteError:
        raise UsageError(f"--resume {args.resume!r}: the run's suite {info['suite_path']!r} is not found "
                         f"(looked at {str(suite)!r}); valid: resume from the folder the run started in, "
                         "with its suite in place") from None
    if args.suite and Path(args.suite).resolve() != suite.resolve():
        raise UsageError(f"--resume {args.resume!r} is a run of {info['suite_path']!r}, not {args.suite!r}")
    info["suite_path"] = str(suite.resolve())
    return info


def _new_run_dir(results: str, suite_name: str) -> Path:
    """A fresh run folder under ``--results``, once the root is known to be usable.

    Raises:
        UsageError: when ``results`` is a file, not writable, or the folder cannot be made.
    """
    from odebench import rundir, runner

    try:
        rundir.check_results_root(results)
        return runner.new_run_dir(Path(results), suite_name)
    except rundir.RunDirError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, runner.RunError) as exc:
        raise UsageError(f"--results {results!r}: cannot create a run folder there: {exc}") from None


class Stopped(BaseException):
    """The run was interrupted: ``main`` prints ``message`` and exits with ``code``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@contextlib.contextmanager
def _writer(run_dir: Path):
    """Hold the run folder for the block (one writer at a time), and turn Ctrl-C or SIGTERM into
    :class:`Stopped` with the line that says which folder to resume.

    Raises:
        UsageError: when another process is writing the run folder.
        Stopped: on SIGINT (exit 130) or SIGTERM (exit 143), once the case's worker is stopped; when the
            Dask scheduler is lost mid-run (exit 1).
    """
    from odebench import rundir
    from odebench.executors import ExecutorError  # no Dask import: only the error class
    from odebench.stopping import Terminated, exit_code

    try:
        with rundir.hold(run_dir):
            yield
    except rundir.RunDirError as exc:
        raise UsageError(str(exc)) from None
    except ExecutorError as exc:
        raise Stopped(1, f"{exc}: finished cases are kept; continue with: odebench run --resume {run_dir}") from None
    except (KeyboardInterrupt, Terminated) as exc:
        raise Stopped(exit_code(exc), f"interrupted ({'SIGINT' if isinstance(exc, KeyboardInterrupt) else exc}): "
                                      f"finished cases are kept; continue with: odebench run --resume {run_dir}") from None


def cmd_list(args) -> int:
    from odebench import registry
    from odebench.schema import SuiteError
    from odebench.suite import load_suite

    plugins = registry.describe_all()
    suites = []
    root = Path(args.suites_dir)
    for toml in sorted(root.glob("*/suite.toml")) if root.is_dir() else []:
        try:
            s = load_suite(toml.parent)
            suites.append({"path": str(toml.parent), "name": s.name, "profiles": s.profiles,
                           "default_profile": s.default_profile, "description": s.config["suite"]["description"]})
        except SuiteError as exc:
            suites.append({"path": str(toml.parent), "name": toml.parent.name, "profiles": [],
                           "default_profile": None, "description": f"INVALID: {exc}"})
    from odebench.problemload import problem_names

    problems = problem_names()
    if args.json:
        print(json.dumps({"plugins": plugins, "suites": suites, "problems": problems}, indent=2))
        return 0
    print("Plugins:")
    w = max((len(p["name"]) for p in plugins), default=0)  # the longest name sets the first column
    for p in plugins:
        state = "available" if not p["available"] else p["available"]
        print(f"  {p['name']:<{w}} {p['framework'] or '?':<6} {p['version'] or '':<10} {state}")
        if p["methods"]:
            print(f"  {'':<{w}} methods: {', '.join(p['methods'])}")
            print(f"  {'':<{w}} grad modes: {', '.join(p['grad_modes'])}; devices: {', '.join(p['devices'])}")
            print(f"  {'':<{w}} batch stepping: {p.get('batch_stepping')}; NFE figure: {p.get('nfe_source')}"
                  + ("; compiled" if p.get("compiled") else ""))
    print("\nSuites:" if suites else f"\nNo suites under {root}/")
    for s in suites:
        print(f"  {s['path']:<18} profiles: {_profile_list(s['profiles'], s['default_profile'])}\n"
              f"  {'':<18} {s['description']}")
    # Installed packages' problems (entry points); a file of your own runs as --problem file.py:function.
    print(f"\nProblems (--problem NAME): {', '.join(problems)}" if problems else
          "\nNo installed problems (--problem also takes module:function or file.py:function)")
    return 0


def _profile_list(names: list[str], default: str | None) -> str:
    """A suite's profiles for ``odebench list``, marking the one used without ``--profile``."""
    def label(name: str) -> str:
        if name == "default":
            return "default (base settings)"
        return f"{name} (default)" if name == default else name

    return ", ".join(label(n) for n in names)


def cmd_report(args) -> int:
    from odebench import report, rundir

    run_dir = Path(args.run_dir)
    if run_dir.is_file():  # a pytest-benchmark --benchmark-json file
        from odebench.tables import is_pytest_benchmark_json, pytest_benchmark_table

        if not is_pytest_benchmark_json(run_dir):
            raise UsageError(f"{args.run_dir!r} is not a pytest-benchmark JSON file nor a run folder")
        print(pytest_benchmark_table(run_dir))
        return 0
    if not (run_dir / "records.jsonl").is_file():
        raise UsageError(f"no records.jsonl in {args.run_dir!r}: give a folder made by `odebench run`")
    try:
        rundir.check_records(run_dir, need_one=True)
    except rundir.RunDirError as exc:
        raise UsageError(str(exc)) from None
    path = report.render(run_dir)
    print(f"report: {path}")
    return 0


def cmd_env(args) -> int:
    from odebench.measure import environment

    print(json.dumps(environment(probe_devices=not args.no_devices), indent=2))
    return 0


def cmd_data(args) -> int:
    from odebench.data import MNISTError, fetch_mnist, mnist_status

    try:
        if args.fetch:
            fetch_mnist(args.data_dir)
        print(mnist_status(args.data_dir))
    except MNISTError as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_cluster(args) -> int:
    from odebench import slurm

    try:
        return slurm.main(args)
    except slurm.ClusterError as exc:
        raise UsageError(str(exc)) from None


def cmd_regress(args) -> int:
    from odebench import regress

    try:
        return regress.main(args)
    except regress.RegressError as exc:
        raise UsageError(str(exc)) from None


COMMANDS = {"run": cmd_run, "list": cmd_list, "report": cmd_report, "env": cmd_env, "data": cmd_data,
            "regress": cmd_regress, "cluster": cmd_cluster}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``odebench`` script; returns the exit code."""
    from odebench.stopping import Terminated, exit_code, terminate_raises

    parser = build_parser()
    try:
        with terminate_raises():
            args = parser.parse_args(argv)
            return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Stopped as exc:
        print(f"odebench: {exc.message}", file=sys.stderr)
        return exc.code
    except (KeyboardInterrupt, Terminated) as exc:  # before a run folder was made: nothing to resume
        print("odebench: interrupted", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
