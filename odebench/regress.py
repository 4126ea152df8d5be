"""Regression check: the deterministic figures of two source trees, compared case by case.

``odebench regress [BASE] [HEAD]`` (default ``HEAD~1`` and ``HEAD``) exports each git
revision with ``git archive`` into a temporary folder (the working tree, the index and
HEAD are never touched), runs every suite's small profile from *that tree's own code and
suite files* in the current Python environment, and compares the figures a code change
can only move on purpose:

* NFE-F, NFE-B and steps: a regression when they go up by more than ``count_rtol``;
* bytes saved for backward: a regression when they go up by more than ``bytes_rtol``
  (0.5 %: a few scalars of run-to-run wobble in the current count; 0 gates any rise);
* the final error: a regression when it goes up by more than the noise of the seeds
  (``error_rtol``, or the base's own spread over seeds where the profile has several);
* a case that was ok and is not any more.

A commit that changes a figure on purpose says so in its message with a line
``Regress-OK: <reason>``: its regressions are then reported as accepted and the check passes.

Timings and peak RSS are reported next to them and never gated. The figures are the ones
the asv ``track_`` benchmarks record (:mod:`odebench.asvbench`), and a regression names its
asv benchmark and both values.

Why not ``asv run`` + ``asv compare``: asv's ``existing`` environment cannot install a
commit, so each commit's tree would have to be exported anyway; asv then starts one process
per benchmark and parameter, gates every figure by one ratio, and ``asv compare`` does not
fail on a regression. Here each tree is run once, in one process per suite by default
(``--isolation inline``, single-threaded: the figures are deterministic and do not need a
fresh process), with thresholds per kind of figure.

Each tree runs with ``PYTHONPATH`` pointing at a shim folder that maps the tree's packages
(``odebench``, ``odebench_plugins`` → ``plugins/``, from its ``pyproject.toml``) and carries
its plugin entry points, so the tree's plugins, not the installed ones, are measured.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from odebench.records import METRICS, NOT_RUN
from odebench.suite import pick_profile
from odebench.tables import _fmt, _num
from odebench.trees import (  # the measuring half, re-exported for callers of regress
    Options,
    RegressError,
    Tree,
    measure_tree,
    prepare_tree,
    suite_names,
)

GATED_KINDS = ("count", "bytes", "error")
EXIT_OK, EXIT_REGRESSION = 0, 1


def asv_name(suite: str, metric: str, case_id: str) -> str:
    """The asv benchmark that tracks ``metric`` of ``case_id`` (as ``asv compare`` shows it)."""
    cls = METRICS[metric][2]
    return f"{suite}.asv_bench.{cls}.track_{metric}('{case_id}')"


@dataclass
class Thresholds:
    """How far a deterministic figure may rise before it is a regression (relative to the base).

    Arguments:
        count_rtol: NFE-F, NFE-B and steps (0.01: a 1 % rise; fixed-step counts are exact).
        bytes_rtol: bytes saved for backward (0.5 %: the count dedupes storages by address,
            and a freed storage's address can be reused, so it moves by a few scalars from run
            to run; 0 gates any rise once the count is exact).
        error_rtol: the final error; the noise of the seeds. Where the base has several
            seeds of a case, their relative spread is used if it is larger.
        error_atol: an absolute floor for the final error (float round-off near zero).
    """

    count_rtol: float = 0.01
    bytes_rtol: float = 0.005
    error_rtol: float = 0.05
    error_atol: float = 1e-12

    def limit(self, kind: str, noise: float = 0.0) -> float:
        return {"count": self.count_rtol, "bytes": self.bytes_rtol,
                "error": max(self.error_rtol, noise)}.get(kind, math.inf)


@dataclass
class Finding:
    """One figure of one case in both trees, and the verdict.

    ``verdict``: ``regression`` (fails the check), ``ok``, ``improved``, ``info`` (timings),
    ``new`` / ``gone`` (a case or suite in one tree only), ``skipped`` (not run in either).
    """

    suite: str
    case_id: str
    metric: str
    base: Any
    head: Any
    verdict: str
    limit: float | None = None
    note: str = ""

    @property
    def benchmark(self) -> str:
        if self.metric in METRICS:
            return asv_name(self.suite, self.metric, self.case_id)
        return f"{self.suite} [{self.case_id}]"

    @property
    def change(self) -> float | None:
        if _num(self.base) and _num(self.head) and self.base != 0:
            return self.head / self.base - 1.0
        return None

    def message(self) -> str:
        if self.metric == "status":
            return f"{self.benchmark}: status {self.base} -> {self.head}{f' ({self.note})' if self.note else ''}"
        ch = self.change
        pct = f" ({ch:+.1%}; limit +{self.limit:.1%})" if ch is not None and self.limit is not None else ""
        return f"{self.benchmark}: {_fmt(self.base)} -> {_fmt(self.head)}{pct}{f' ({self.note})' if self.note else ''}"


@dataclass
class Comparison:
    """Findings of a comparison. ``accepted``: the reason the head's commit message gives for
    accepting its regressions (an ``Regress-OK: <reason>`` line); they are reported, not failed."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    accepted: str | None = None

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == "regression"]

    @property
    def compared(self) -> int:
        """How many gated figures were compared (of cases ok in both trees)."""
        return sum(f.verdict in ("ok", "improved", "regression") for f in self.findings)

    @property
    def exit_code(self) -> int:
        # A gate that compared nothing has checked nothing: it must not pass.
        if not self.compared:
            return EXIT_REGRESSION
        return EXIT_REGRESSION if self.regressions and not self.accepted else EXIT_OK

    def nothing_compared_reason(self) -> str:
        """Why no figure was compared: what became of the cases, or that there were none."""
        if not self.findings:
            return "no case was measured in either tree"
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.verdict] = counts.get(f.verdict, 0) + 1
        words = {"new": "only in the head", "gone": "only in the base", "skipped": "not run in the head",
                 "info": "not ok in either tree"}
        return "no case is ok in both trees (" + ", ".join(f"{n} {words.get(v, v)}" for v, n in counts.items()) + ")"


def _seedless(case_id: str) -> str:
    return re.sub(r"/seed=\d+", "/seed=*", case_id)


def seed_noise(records: Iterable[dict[str, Any]], metric: str = "final_mse") -> dict[str, float]:
    """Relative spread (max − min) / median of ``metric`` over the seeds of each case, where it has ≥ 2."""
    values: dict[str, list[float]] = {}
    for r in records:
        if r.get("status") == "ok" and _num(r.get(metric)):
            values.setdefault(_seedless(r["case_id"]), []).append(float(r[metric]))
    out = {}
    for key, v in values.items():
        if len(v) >= 2:
            med = sorted(v)[len(v) // 2]
            out[key] = (max(v) - min(v)) / abs(med) if med else 0.0
    return out


def compare_records(suite: str, base: list[dict[str, Any]], head: list[dict[str, Any]],
                    thresholds: Thresholds | None = None) -> Comparison:
    """Compare one suite's records of two trees (each record: ``case_id``, ``status``, figures).

    Returns:
        A :class:`Comparison`; its ``regressions`` are the gated figures that rose beyond
        their limit and the cases that were ok in the base and are not in the head.
    """
    th = thresholds or Thresholds()
    out = Comparison()
    b_by, h_by = {r["case_id"]: r for r in base}, {r["case_id"]: r for r in head}
    noise = seed_noise(base)
    for cid in list(b_by) + [c for c in h_by if c not in b_by]:
        b, h = b_by.get(cid), h_by.get(cid)
        if b is None or h is None:
            out.findings.append(Finding(suite, cid, "case", None if b is None else b.get("status"),
                                        None if h is None else h.get("status"), "new" if b is None else "gone"))
            continue
        bs, hs = b.get("status"), h.get("status")
        if bs == "ok" and hs != "ok":
            out.findings.append(Finding(suite, cid, "status", bs, hs, "regression", note=h.get("message") or ""))
            continue
        if bs != "ok" or hs != "ok":
            out.findings.append(Finding(suite, cid, "status", bs, hs,
                                        "skipped" if hs in NOT_RUN else ("improved" if hs == "ok" else "info"),
                                        note=h.get("message") or ""))
            continue
        for metric, (kind, _unit, _cls) in METRICS.items():
            bv, hv = b.get(metric), h.get(metric)
            if not (_num(bv) and _num(hv)):
                continue
            if kind not in GATED_KINDS:
                out.findings.append(Finding(suite, cid, metric, bv, hv, "info", note="timing, not gated"))
                continue
            limit = th.limit(kind, noise.get(_seedless(cid), 0.0))
            atol = th.error_atol if kind == "error" else 0.0
            if hv > bv * (1.0 + limit) + atol:
                verdict = "regression"
            elif hv < bv * (1.0 - limit) - atol or (limit == 0 and hv < bv):
                verdict = "improved"
            else:
                verdict = "ok"
            out.findings.append(Finding(suite, cid, metric, bv, hv, verdict, limit))
    return out


def compare(base: dict[str, list[dict[str, Any]]], head: dict[str, list[dict[str, Any]]],
            thresholds: Thresholds | None = None) -> Comparison:
    """:func:`compare_records` over every suite (suite name → records) of both trees."""
    out = Comparison()
    for suite in list(base) + [s for s in head if s not in base]:
        if suite not in head or suite not in base:
            out.notes.append(f"suite {suite!r} is only in the {'base' if suite in base else 'head'}: not compared")
            continue
        c = compare_records(suite, base[suite], head[suite], thresholds)
        out.findings += c.findings
        out.notes += c.notes
    return out


_MARK = {"regression": " ✗", "improved": " ✓", "ok": "", "info": ""}


def _cell(f: Finding) -> str:
    if f.base == f.head:
        return _fmt(f.base)
    ch = f"{f.change:+.0%}" if f.change is not None else "new"
    b, h = _fmt(f.base), _fmt(f.head)
    if b == h:  # differs beyond 6 digits
        b, h = f"{f.base:.10g}", f"{f.head:.10g}"
    return f"{b} → {h} ({ch}){_MARK.get(f.verdict, '')}"


def render(comp: Comparison, base_label: str, head_label: str) -> str:
    """The comparison as text: one line per regression, a table per suite (one row per case, one
    column per figure: the value, or ``base → head (change)`` with ✗ for a regression and ✓ for an
    improvement), the cases that did not run, and the verdict."""
    lines = [f"REGRESSION {f.message()}" for f in comp.regressions]
    by_suite: dict[str, dict[str, dict[str, str]]] = {}
    for f in comp.findings:
        if f.metric in METRICS:
            by_suite.setdefault(f.suite, {}).setdefault(f.case_id, {})[f.metric] = _cell(f)
    if by_suite:
        import pandas as pd

        lines += ["", f"Figures of {head_label} against {base_label} (timings and measured memory are "
                      "not gated):"]
    for suite, cases in by_suite.items():
        cols = [m for m in METRICS if any(m in row for row in cases.values())]
        df = pd.DataFrame([{"case": cid} | {m: row.get(m, "–") for m in cols} for cid, row in cases.items()])
        lines += ["", f"{suite}:", "", df.to_markdown(index=False, disable_numparse=True)]
    from odebench.tables import clip

    statuses = [f for f in comp.findings if f.metric in ("status", "case") and f.verdict != "regression"]
    if statuses:
        lines.append("")
    not_run: dict[str, int] = {}
    for f in statuses:
        if f.verdict == "skipped":
            not_run[str(f.head)] = not_run.get(str(f.head), 0) + 1
        else:
            lines.append(f"{f.verdict}: {f.suite} [{f.case_id}] {f.base} -> {f.head}"
                         f"{f' ({clip(f.note, 90)})' if f.note else ''}")
    if not_run:
        lines.append("not run in the head: " + ", ".join(f"{n} {s}" for s, n in sorted(not_run.items())))
    lines += [""] + comp.notes if comp.notes else []
    gated = comp.compared
    verdict = (f"FAIL: {len(comp.regressions)} regression(s) of {head_label} against {base_label}"
               if comp.regressions else
               f"PASS: {gated} deterministic figures of {head_label} within limits of {base_label}")
    if not gated:
        verdict = (f"FAIL: nothing compared between {head_label} and {base_label}: "
                   f"{comp.nothing_compared_reason()}")
    if comp.regressions and comp.accepted:
        verdict = (f"ACCEPTED: {len(comp.regressions)} regression(s) of {head_label} against {base_label}, "
                   f"accepted by its commit message (Regress-OK: {comp.accepted})")
    lines += ["", verdict + " (timings reported, never gated)"]
    return "\n".join(lines).lstrip("\n")


def run_check(repo: Path, base_rev: str, head_rev: str, opts: Options, thresholds: Thresholds,
              log=print) -> tuple[Comparison, str, str]:
    """Measure both trees and compare them. Returns the comparison and the two labels."""
    with tempfile.TemporaryDirectory(prefix="odebench-regress-") as tmp:
        tmp = Path(tmp)
        head = prepare_tree(repo, head_rev, tmp / "head" / "tree")
        base = prepare_tree(repo, base_rev, tmp / "base" / "tree")
        found = suite_names(head.path, opts.suites_dir)
        if opts.suites:
            unknown = [s for s in opts.suites if s not in found]
            if unknown:
                raise RegressError(f"no suite {unknown[0]!r} in {head.label}; valid: {', '.join(found) or 'none'}")
            found = {k: v for k, v in found.items() if k in opts.suites}
        check_selection(head, found, opts)
        profiles = {name: opts.profile or pick_profile(path) for name, path in found.items()}
        if opts.jobs > 1:  # both trees at once (each single-threaded by default)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                h = pool.submit(measure_tree, head, tmp / "head", opts, profiles, log)
                b = pool.submit(measure_tree, base, tmp / "base", opts, profiles, log)
                (head_recs, head_notes), (base_recs, base_notes) = h.result(), b.result()
        else:
            head_recs, head_notes = measure_tree(head, tmp / "head", opts, profiles, log)
            base_recs, base_notes = measure_tree(base, tmp / "base", opts, profiles, log)
    comp = compare(base_recs, head_recs, thresholds)
    comp.notes = base_notes + head_notes + comp.notes
    if any("did not finish" in n for n in head_notes):
        comp.findings.append(Finding("-", "-", "status", "finished", "did not finish", "regression",
                                     note="; ".join(n for n in head_notes if "did not finish" in n)))
    accept = re.search(r"^Regress-OK:[ \t]*(\S.*)$", head.message, re.M | re.I)
    comp.accepted = accept.group(1).strip() if accept else None
    return comp, _short(base.label), _short(head.label)


def check_selection(tree: Tree, suites: dict[str, Path], opts: Options) -> None:
    """Refuse a ``--profile`` or ``--plugin`` the measured tree does not have, before measuring.

    Arguments:
        tree: the head tree (its suites and plugin entry points are what is measured).
        suites: the selected suites of that tree, by name.
        opts: the options, with the profile and plugins asked for.

    Raises:
        RegressError: naming the value and the valid ones.
    """
    if opts.profile:
        for name, path in suites.items():
            valid = suite_profiles(path)
            if opts.profile not in valid:
                raise RegressError(f"unknown profile {opts.profile!r} for suite {name!r} of {tree.label}; "
                                   f"valid: {', '.join(valid)}")
    known = tree_plugins(tree.path)
    for plugin in opts.plugins or []:
        if plugin not in known:
            raise RegressError(f"unknown plugin {plugin!r} for --plugin; registered in {tree.label}: "
                               f"{', '.join(known) or 'none'}")


def suite_profiles(suite_dir: Path) -> list[str]:
    """The profile names ``--profile`` takes for a suite folder: ``default`` and those it defines."""
    profiles = tomllib.loads((suite_dir / "suite.toml").read_text()).get("profiles", {})
    return ["default", *profiles]


def tree_plugins(tree: Path) -> list[str]:
    """Plugins a tree is measured with: its own ``odebench.plugins`` entry points (see
    :func:`make_shim`) and those of other installed distributions."""
    from odebench import registry

    pyproject = tree / "pyproject.toml"
    meta = tomllib.loads(pyproject.read_text()) if pyproject.is_file() else {}
    own = meta.get("project", {}).get("entry-points", {}).get("odebench.plugins", {})
    return sorted({*own, *registry.plugin_names()})


def _short(label: str) -> str:
    return label if len(label) <= 28 else "…" + label[-27:]


# ------------------------------------------------------------------------------ command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``odebench regress`` options (the CLI calls this, then :func:`main`)."""
    p.add_argument("base", nargs="?", default="HEAD~1", help="git revision or source folder (default: HEAD~1)")
    p.add_argument("head", nargs="?", default="HEAD", help="git revision or source folder (default: HEAD)")
    p.add_argument("--repo", default=".", help="the git repository (default: .)")
    p.add_argument("--suite", action="extend", type=lambda v: [x for x in v.split(",") if x],
                   help="only these suites, comma-separated (default: every suites/*/suite.toml of HEAD)")
    p.add_argument("--plugin", action="extend", type=lambda v: [x for x in v.split(",") if x],
                   help="only these plugins (comma-separated)")
    p.add_argument("--profile", help="profile to run (default: each suite's 'asv' profile, else 'quick')")
    p.add_argument("--count-rtol", type=float, default=Thresholds.count_rtol,
                   help="allowed relative rise of NFE-F/NFE-B/steps (default: %(default)s)")
    p.add_argument("--bytes-rtol", type=float, default=Thresholds.bytes_rtol,
                   help="allowed relative rise of bytes saved for backward (default: %(default)s)")
    p.add_argument("--error-rtol", type=float, default=Thresholds.error_rtol,
                   help="allowed relative rise of the final error, the seeds' noise (default: %(default)s)")
    p.add_argument("--isolation", choices=["inline", "process", "suite"], default="inline",
                   help="inline (default: one process per suite), process (one per case), suite (as the suite says)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per framework (default: 1, deterministic and fair on a shared machine; 0: leave)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per tree (default: 3600)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not reuse figures of a git tree measured before (.asv/regress-cache/)")
    p.add_argument("--json", metavar="PATH", help="also write every finding as JSON")
    p.add_argument("--jobs", type=int, choices=[1, 2], default=1,
                   help="measure both trees at once (2) or one after the other (1, default)")
    p.add_argument("--quiet", action="store_true", help="no per-case progress on stderr")


def main(args: argparse.Namespace) -> int:
    """Run the check for parsed ``args``; prints the report and returns 0 (pass) or 1 (a regression,
    or nothing compared).

    Raises:
        RegressError: for a bad revision, repository, suite, profile or plugin name (the CLI shows it as a
            usage error).
    """
    for name in ("count_rtol", "bytes_rtol", "error_rtol"):
        if getattr(args, name) < 0:
            raise RegressError(f"--{name.replace('_', '-')} must not be negative")
    repo = Path(args.repo).resolve()
    opts = Options(suites=args.suite, plugins=args.plugin, profile=args.profile,
                   isolation=None if args.isolation == "suite" else args.isolation,
                   threads=args.threads or None, timeout=args.timeout,
                   cache=None if args.no_cache else repo / ".asv" / "regress-cache", progress=not args.quiet,
                   jobs=args.jobs)
    th = Thresholds(count_rtol=args.count_rtol, bytes_rtol=args.bytes_rtol, error_rtol=args.error_rtol)
    started = time.perf_counter()
    comp, base_label, head_label = run_check(repo, args.base, args.head, opts, th,
                                             log=lambda m: print(m, file=sys.stderr, flush=True))
    print(render(comp, base_label, head_label))
    print(f"(took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"base": base_label, "head": head_label,
                                               "findings": [asdict(f) | {"benchmark": f.benchmark}
                                                            for f in comp.findings],
                                               "notes": comp.notes}, indent=2, default=str))
    return comp.exit_code
