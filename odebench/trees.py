"""Source trees for ``odebench regress``: a git revision exported to a folder, and its suites measured.

Each tree is measured by *that tree's own code and suite files* in the current Python
environment: a shim puts the tree's ``odebench`` first on the path, and one driver process
runs every suite of the tree through the long-standing public API.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odebench.records import read_records, slim

#: Runs in the measured tree (its ``odebench`` first on the path), every suite in one process: its
#: own suite files, its own runner, through the long-standing public API only (``load_suite``,
#: ``Suite.cases``, ``runner.run``). A suite that cannot be loaded leaves its message in ``error.txt``.
DRIVER = r"""
import json, sys, traceback
from pathlib import Path
spec = json.loads(sys.argv[1])
from odebench.suite import load_suite
from odebench import runner
for job in spec["suites"]:
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        overrides = {k: v for k, v in (("measure.isolation", spec["isolation"]),
                                       ("measure.threads", spec["threads"])) if v is not None}
        try:
            suite = load_suite(job["suite_dir"], job["profile"], overrides)
        except TypeError:  # a tree from before load_suite took overrides: set them by hand
            suite = load_suite(job["suite_dir"], job["profile"])
            for key, value in overrides.items():
                suite.config["measure"][key.split(".")[1]] = value
        plugins = spec["plugins"]
        if plugins is not None:
            plugins = [p for p in plugins if p in suite.config["matrix"]["plugin"]]
            if not plugins:
                (run_dir / "done").write_text("")
                continue
        cases = suite.cases(plugins=plugins)
        if spec["progress"]:
            print(f"{job['label']} {suite.name} ({suite.profile}): {len(cases)} cases", file=sys.stderr, flush=True)
        runner.run(suite, cases, run_dir, runner.RunSpec(job["suite_dir"], suite.profile),
                   progress=spec["progress"])
        (run_dir / "done").write_text("")
    except Exception as exc:
        (run_dir / "error.txt").write_text(f"{type(exc).__name__}: {exc}".splitlines()[0])
        traceback.print_exc()
"""


class RegressError(RuntimeError):
    """A tree cannot be prepared (bad revision, not a git repository): a one-line user error."""


@dataclass
class Tree:
    label: str
    path: Path
    tree_sha: str | None  # None: a folder, never cached
    message: str = ""  # the commit message, for a git revision


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode:
        raise RegressError(f"git {' '.join(args)}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
    return proc.stdout.strip()


def prepare_tree(repo: Path, rev: str, dest: Path) -> Tree:
    """``rev`` as a folder: an existing folder is used as it is, a git revision is exported to ``dest``."""
    p = Path(rev)
    if not _is_rev(repo, rev):
        if p.is_dir():
            return Tree(str(p), p.resolve(), None)
        raise RegressError(f"{rev!r} is neither a commit of the repository {str(repo)!r} nor a folder")
    sha = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
    tree_sha = _git(repo, "rev-parse", f"{sha}^{{tree}}")
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", sha], capture_output=True)
    if archive.returncode:
        raise RegressError(f"git archive {rev}: {archive.stderr.decode().strip()}")
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return Tree(f"{rev} ({sha[:10]})", dest, tree_sha, _git(repo, "log", "-1", "--format=%B", sha))


def _is_rev(repo: Path, rev: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True).returncode == 0


def make_shim(tree: Path, dest: Path) -> Path:
    """A folder that puts ``tree``'s packages and plugin entry points first on ``PYTHONPATH``."""
    dest.mkdir(parents=True, exist_ok=True)
    pyproject = tree / "pyproject.toml"
    meta = tomllib.loads(pyproject.read_text()) if pyproject.is_file() else {}
    package_dir = meta.get("tool", {}).get("setuptools", {}).get("package-dir", {}) or {"": "."}
    for pkg, folder in package_dir.items():
        if pkg and not (dest / pkg).exists():
            (dest / pkg).symlink_to((tree / folder).resolve(), target_is_directory=True)
    project = meta.get("project", {})
    # A distribution named like the installed one, found first, so importlib.metadata's
    # entry points are the tree's (it keeps the first distribution of each name).
    dist = dest / f"{project.get('name', 'odebench')}-0.0.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project.get('name', 'odebench')}\n"
                                   "Version: 0.0.0\n")
    eps = project.get("entry-points", {})
    text = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) + "\n"
                   for group, items in eps.items())
    (dist / "entry_points.txt").write_text(text)
    return dest


def suite_names(tree: Path, suites_dir: str = "suites") -> dict[str, Path]:
    """Every suite folder of a tree (``<suites_dir>/*/suite.toml``), by folder name."""
    root = tree / suites_dir
    return {p.parent.name: p.parent for p in sorted(root.glob("*/suite.toml"))} if root.is_dir() else {}


def _fingerprint() -> dict[str, Any]:
    import importlib.metadata as md
    import platform

    libs = {}
    for dist in ("numpy", "scipy", "torch", "torchdiffeq", "jax", "jaxlib", "diffrax", "equinox"):
        try:
            libs[dist] = md.version(dist)
        except md.PackageNotFoundError:
            libs[dist] = None
    return {"python": sys.version, "machine": platform.machine(), "libs": libs}


@dataclass
class Options:
    suites: list[str] | None = None
    plugins: list[str] | None = None
    profile: str | None = None
    suites_dir: str = "suites"
    isolation: str | None = "inline"
    threads: int | None = 1
    timeout: float = 3600.0
    cache: Path | None = None
    progress: bool = True
    python: str = sys.executable
    jobs: int = 1


def measure_tree(tree: Tree, work: Path, opts: Options, profiles: dict[str, str],
                 log=print) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Run each suite of ``profiles`` (name → profile) from ``tree``; records by suite, and notes.

    All suites of a tree run in one process (one framework import); figures of a git tree
    measured before in the same environment come from the cache.
    """
    shim = make_shim(tree.path, work / "shim")
    env = dict(os.environ, PYTHONPATH=str(shim), PYTHONWARNINGS="ignore")
    env.pop("PYTHONHOME", None)
    if opts.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(opts.threads)
    available = suite_names(tree.path, opts.suites_dir)
    out: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    jobs, keys = [], {}
    for name, profile in profiles.items():
        if name not in available:
            notes.append(f"{tree.label}: no suite {name!r}")
            continue
        if opts.cache and tree.tree_sha:
            blob = json.dumps([tree.tree_sha, name, profile, opts.plugins, opts.isolation, opts.threads,
                               opts.suites_dir, _fingerprint()], sort_keys=True)
            keys[name] = opts.cache / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.json"
            if keys[name].is_file():
                out[name] = json.loads(keys[name].read_text())
                log(f"[{tree.label}] {name} ({profile}): {len(out[name])} cases from the cache {keys[name]}")
                continue
        jobs.append({"name": name, "suite_dir": str(available[name]), "profile": profile,
                     "run_dir": str(work / "runs" / name), "label": f"[{tree.label}]"})
    if not jobs:
        return out, notes
    spec = {"suites": jobs, "isolation": opts.isolation, "threads": opts.threads, "plugins": opts.plugins,
            "progress": opts.progress}
    log(f"[{tree.label}] running {', '.join(j['name'] for j in jobs)}")
    started = time.perf_counter()
    proc = subprocess.Popen([opts.python, "-c", DRIVER, json.dumps(spec)], cwd=tree.path, env=env,
                            stdout=subprocess.DEVNULL, stderr=None if opts.progress else subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=opts.timeout)
        code, err = proc.returncode, (err or "").strip()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        code, err = -1, f"no result within {opts.timeout:g} s"
    except BaseException:  # e.g. Ctrl-C: take the driver down with us
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    for job in jobs:
        run_dir = Path(job["run_dir"])
        records = read_records(run_dir)
        error = (run_dir / "error.txt").read_text() if (run_dir / "error.txt").is_file() else ""
        done = (run_dir / "done").is_file()
        if error or not done:
            why = error or f"exit {code}{': ' + err.splitlines()[-1] if err else ''}"
            notes.append(f"{tree.label}: suite {job['name']!r} did not finish ({why}); "
                         f"{len(records)} cases measured")
        out[job["name"]] = [slim(r) for r in records]
        if opts.isolation == "inline":  # the RSS of a shared process is no case's own: not shown
            for r in out[job["name"]]:
                r.pop("peak_rss_bytes", None)
        if done and not error and job["name"] in keys:
            keys[job["name"]].parent.mkdir(parents=True, exist_ok=True)
            keys[job["name"]].write_text(json.dumps(out[job["name"]]))
    log(f"[{tree.label}] {sum(len(out[j['name']]) for j in jobs)} cases in {time.perf_counter() - started:.0f} s")
    return out, notes


