"""``odebench cluster slurm``: a Dask scheduler here and its workers as Slurm jobs, for ``odebench run --dask``.

A thin front to dask-jobqueue's ``SLURMCluster``: the scheduler runs in this process with
odebench's scheduler settings (:data:`odebench.executors.SCHEDULER_CONFIG`), each Slurm job
runs ``--cores`` single-threaded worker processes (one case at a time each), and the command
keeps the cluster up until Ctrl-C or SIGTERM, which cancels the jobs.
"""

from __future__ import annotations

import argparse
import sys
import time


class ClusterError(RuntimeError):
    """The cluster cannot be started (message is one line)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``odebench cluster slurm`` options (the CLI calls this, then :func:`main`)."""
    p.add_argument("--jobs", type=int, default=1, metavar="K", help="Slurm jobs to submit (default: 1)")
    p.add_argument("--cores", type=int, default=1, metavar="C",
                   help="cores per job, each a single-threaded worker running one case at a time (default: 1; "
                        "more than 1 puts cases side by side on a node, and the report marks their timings)")
    p.add_argument("--memory", default="8GB", help="memory per job, shared by its workers (default: 8GB)")
    p.add_argument("--walltime", default="04:00:00", help="time limit per job (default: 04:00:00)")
    p.add_argument("--queue", help="Slurm partition (sbatch -p)")
    p.add_argument("--account", help="Slurm account (sbatch -A)")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="another sbatch option, e.g. --sbatch=--exclusive (repeatable)")
    p.add_argument("--host", help="address the scheduler listens on; the compute nodes must reach it "
                                  "(default: dask-jobqueue's choice)")
    p.add_argument("--interface", help="network interface of the scheduler and workers (e.g. ib0)")
    p.add_argument("--port", type=int, default=8786, help="scheduler port (default: 8786; 0: any free port)")
    p.add_argument("--dry-run", action="store_true", help="print the job script and exit, submitting nothing")


def main(args: argparse.Namespace) -> int:
    """Start the cluster for parsed ``args`` and hold it until interrupted; 0 on a clean stop.

    Raises:
        ClusterError: when dask-jobqueue is not installed, a number is out of range, or the
            cluster does not start (``sbatch`` missing, a bad option).
    """
    for flag in ("jobs", "cores"):
        if getattr(args, flag) < 1:
            raise ClusterError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    try:
        import dask
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ClusterError("odebench cluster slurm needs the slurm extra: pip install 'odebench[slurm]'") from None
    from odebench.executors import SCHEDULER_CONFIG
    from odebench.stopping import Terminated

    scheduler = {"port": args.port, "dashboard_address": None}
    if args.host:
        scheduler["host"] = args.host
    try:
        with dask.config.set(SCHEDULER_CONFIG):  # read by the scheduler this starts, in this process
            cluster = SLURMCluster(cores=args.cores, processes=args.cores, memory=args.memory,
                                   walltime=args.walltime, queue=args.queue, account=args.account,
                                   interface=args.interface, scheduler_options=scheduler,
                                   job_extra_directives=args.sbatch, python=sys.executable)
    except Exception as exc:  # noqa: BLE001 - any failure to start is one line for the user
        raise ClusterError(f"the Slurm cluster did not start: {type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    try:
        if args.dry_run:
            print(cluster.job_script())
            return 0
        try:
            cluster.scale(jobs=args.jobs)
        except Exception as exc:  # noqa: BLE001 - sbatch refused the job
            raise ClusterError(f"submitting {args.jobs} Slurm job(s) failed: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
        print(f"odebench: scheduler at {cluster.scheduler_address}; {args.jobs} Slurm job(s) of {args.cores} "
              f"worker(s) submitted. Run, from any shell that reaches it:\n"
              f"  odebench run SUITE --dask {cluster.scheduler_address}\n"
              "Ctrl-C here stops the workers and cancels the jobs.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except (KeyboardInterrupt, Terminated):
            print("odebench: stopping the cluster", file=sys.stderr)
        return 0
    finally:
        cluster.close()
