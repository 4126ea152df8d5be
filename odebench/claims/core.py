"""The claims machinery: claim settings and their checks, the rule registry, evaluation, the Claims section.

See :mod:`odebench.claims` for what a claim is; the built-in rules are in :mod:`odebench.claims.rules`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from odebench.records import CASE_COLUMNS, OUTCOME_COLUMNS
from odebench.schema import NAME_RULE, SuiteError, check_value, choices

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured in this run"
VERDICTS = (HOLDS, FAILS, NOT_MEASURED)

#: The keys of one ``[claims.ID]`` table, as :mod:`odebench.schema` field specs.
CLAIM_KEYS: dict[str, tuple[Any, Any]] = {
    "source": (str, None), "claim": (str, None), "figures": ([str], None), "rule": (str, None),
    "params": (dict, None), "at_least": (dict, None), "only": (dict, None), "profile": (str, None),
    "note": (str, None),
}
REQUIRED_KEYS = ("source", "claim", "figures", "rule")


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Figure:
    """One measured figure behind a verdict.

    Attributes:
        name: what it is (``torchdiffeq backprop: dopri5/rk4 training time``).
        value: the number (None where it could not be computed).
        detail: how it was formed, in a few words (``39.1 s / 12.9 s``).
        cases: the case ids of the records it came from.
    """

    name: str
    value: float | None
    detail: str = ""
    cases: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What a rule decides: the verdict, one line saying why, and the figures it read."""

    verdict: str
    why: str
    figures: list[Figure] = field(default_factory=list)


@dataclass
class ClaimResult:
    """A claim of the suite with its outcome in one run (see :func:`evaluate`)."""

    id: str
    source: str
    claim: str
    rule: str
    params: dict[str, Any]
    verdict: str
    why: str
    figures: list[Figure]
    run: str
    profile: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Rule:
    """A named rule: what it decides, the workloads whose records it reads, its parameters.

    Attributes:
        name: the value of a claim's ``rule``.
        fn: ``fn(rows, params) -> Outcome``, pure: ``rows`` are the run's ok rows that pass
            the claim's ``at_least`` / ``only``; ``params`` are complete (defaults filled in).
        summary: what it decides: the first paragraph of ``fn``'s docstring.
        workloads: the workloads whose records carry the columns it reads.
        params: parameter → field spec (:mod:`odebench.schema`); ``(dict, None)`` means a
            table of name → number.
        defaults: parameter → default; a parameter without one must be given.
    """

    name: str
    fn: Callable[[pd.DataFrame, dict[str, Any]], Outcome]
    summary: str
    workloads: tuple[str, ...]
    params: dict[str, tuple[Any, Any]]
    defaults: dict[str, Any]


RULES: dict[str, Rule] = {}


def rule(name: str, *, workloads: tuple[str, ...], params: dict[str, tuple[Any, Any]],
         defaults: dict[str, Any] | None = None) -> Callable:
    """Register the decorated function as the rule ``name`` (see :class:`Rule`).

    Raises:
        ValueError: for a name already taken or a default of no parameter.
    """
    def register(fn: Callable) -> Callable:
        if name in RULES:
            raise ValueError(f"claim rule {name!r} is already registered")
        extra = set(defaults or {}) - set(params)
        if extra:
            raise ValueError(f"claim rule {name!r} has defaults for unknown parameters: {', '.join(sorted(extra))}")
        summary = " ".join(inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0].split())  # the first paragraph
        RULES[name] = Rule(name, fn, summary, workloads, params, dict(defaults or {}))
        return fn
    return register


# --------------------------------------------------------------------------- validation
def record_columns(workload: Any) -> list[str]:
    """The columns of a run's table for ``workload`` (what ``figures``, ``at_least`` and ``only`` may name)."""
    return CASE_COLUMNS + list(workload.axes) + OUTCOME_COLUMNS + list(workload.columns)


def validate(claims: Any, workload: Any, where: str) -> dict[str, dict[str, Any]]:
    """Every ``[claims.ID]`` table checked and completed with its rule's defaults.

    Arguments:
        claims: the ``[claims]`` table as read from the file (claim id → table).
        workload: the suite's :class:`~odebench.workload.Workload` (its name and columns).
        where: the suite file (and profile) for the message.

    Returns:
        claim id → its settings, ``params`` complete.

    Raises:
        SuiteError: one line naming the bad claim, key or value and the valid choices.
    """
    if not isinstance(claims, dict):
        raise SuiteError(f"[claims] in {where} must be a table of claim tables, got {claims!r}")
    columns = record_columns(workload)
    out = {}
    for cid, body in claims.items():
        if not NAME_RULE.fullmatch(cid):
            raise SuiteError(f"claim id {cid!r} is not a valid name; valid: letters, digits, '_', '.' and '-'")
        if not isinstance(body, dict):
            raise SuiteError(f"[claims.{cid}] in {where} must be a table, got {body!r}")
        for key, value in body.items():
            if key not in CLAIM_KEYS:
                raise SuiteError(f"unknown key {key!r} in [claims.{cid}]; valid: {choices(CLAIM_KEYS)}")
            check_value(f"claims.{cid}.{key}", value, *CLAIM_KEYS[key])
        for key in REQUIRED_KEYS:
            if key not in body:
                raise SuiteError(f"{where}: [claims.{cid}] has no {key!r}")
        name = body["rule"]
        if name not in RULES:
            raise SuiteError(f"unknown value {name!r} for claims.{cid}.rule; valid: {choices(RULES)}")
        r = RULES[name]
        if workload.name not in r.workloads:
            raise SuiteError(f"claims.{cid}.rule {name!r} reads {'/'.join(r.workloads)} records, not "
                             f"{workload.name}'s; valid: {choices(n for n, x in RULES.items() if workload.name in x.workloads)}")
        for col in body["figures"]:
            if col not in columns:
                raise SuiteError(f"unknown column {col!r} in claims.{cid}.figures; valid: {choices(columns)}")
        for key in ("at_least", "only"):
            for col, value in body.get(key, {}).items():
                if col not in columns:
                    raise SuiteError(f"unknown column {col!r} in claims.{cid}.{key}; valid: {choices(columns)}")
                if key == "at_least":
                    check_value(f"claims.{cid}.at_least.{col}", value, float, None)
                elif not all(isinstance(v, str | int | float | bool) for v in _listed(value)):
                    raise SuiteError(f"claims.{cid}.only.{col} must be a value or a list of values, got {value!r}")
        out[cid] = dict(body) | {"params": _params(cid, r, body.get("params", {})),
                                 "at_least": dict(body.get("at_least", {})), "only": dict(body.get("only", {})),
                                 "profile": body.get("profile", ""), "note": body.get("note", "")}
    return out


def _params(cid: str, r: Rule, given: dict[str, Any]) -> dict[str, Any]:
    """A claim's rule parameters checked against the rule's specs, defaults filled in."""
    out = dict(r.defaults)
    for key, value in given.items():
        if key not in r.params:
            raise SuiteError(f"unknown parameter {key!r} in claims.{cid}.params for rule {r.name!r}; "
                             f"valid: {choices(r.params)}")
        typ, constraint = r.params[key]
        where = f"claims.{cid}.params.{key}"
        if typ is dict:  # a table of name → number (e.g. a paper's figure per model)
            check_value(where, value, dict, None)
            out[key] = {k: check_value(f"{where}.{k}", v, float, constraint) for k, v in value.items()}
        else:
            out[key] = check_value(where, value, typ, constraint)
    missing = [k for k in r.params if k not in out]
    if missing:
        raise SuiteError(f"claims.{cid}.params has no {missing[0]!r} (rule {r.name!r} needs it)")
    return out


def check_profiles(claims: dict[str, dict[str, Any]], profiles: list[str], where: str) -> None:
    """Each claim's ``profile`` names one of the suite's profiles.

    Raises:
        SuiteError: naming the claim and the valid profiles.
    """
    for cid, c in claims.items():
        if c.get("profile") and c["profile"] not in profiles:
            raise SuiteError(f"unknown profile {c['profile']!r} for claims.{cid}.profile in {where}; "
                             f"valid: {choices(profiles)}")


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------- evaluation
def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of cases that ran to the end (status ok and one of the workload's real cases)."""
    ok = df[df["status"] == "ok"]
    if "not_applicable" in ok:
        ok = ok[ok["not_applicable"].fillna(False).astype(bool) == False]  # noqa: E712
    return ok


def select(df: pd.DataFrame, at_least: dict[str, float], only: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """The ok rows that pass a claim's filters, and, when none do, why (what the run has instead).

    Returns:
        ``(rows, why)``; ``why`` is empty when rows remain.
    """
    rows = ok_rows(df)
    if rows.empty:
        return rows, "no case of this run ended ok"
    for col, values in only.items():
        wanted = _listed(values)
        have = sorted({str(v) for v in rows[col].dropna()}) if col in rows else []
        rows = rows[rows[col].isin(wanted)] if col in rows else rows.iloc[0:0]
        if rows.empty:
            return rows, f"no ok case has {col} in {', '.join(map(str, wanted))} (this run: {', '.join(have) or 'none'})"
    for col, least in at_least.items():
        values = pd.to_numeric(rows[col], errors="coerce") if col in rows else pd.Series(dtype=float)
        top = values.max() if len(values) else np.nan
        rows = rows[values >= least] if col in rows else rows.iloc[0:0]
        if rows.empty:
            return rows, f"no ok case has {col} ≥ {least:g} (this run: {_g(top) if np.isfinite(top) else 'none'})"
    return rows, ""


def evaluate(claims: dict[str, dict[str, Any]], df: pd.DataFrame, *, run: str, profile: str) -> list[ClaimResult]:
    """Every claim decided by its rule over one run's table.

    Arguments:
        claims: the suite's validated claims (:func:`validate`).
        df: the run's table (:func:`odebench.report.to_frame`).
        run: the run's id (its folder name), carried by each result.
        profile: the profile the run used (said when a claim needs another).

    Returns:
        One :class:`ClaimResult` per claim, in the suite's order. A rule that raises is
        reported as not measured with the error, never as a verdict.
    """
    out = []
    for cid, c in claims.items():
        r = RULES[c["rule"]]
        rows, why = select(df, c["at_least"], c["only"])
        if why:
            outcome = Outcome(NOT_MEASURED, why)
        else:
            try:
                outcome = r.fn(rows, c["params"])
            except Exception as exc:  # noqa: BLE001 - a broken rule must not take the report down
                outcome = Outcome(NOT_MEASURED, f"rule {r.name} failed: {type(exc).__name__}: {exc}")
        why = outcome.why
        if outcome.verdict == NOT_MEASURED and c["profile"]:
            why += (f"; profile {c['profile']} measures it" if c["profile"] != profile else
                    f"; this run is profile {profile}, which should measure it: see the cases' status")
        out.append(ClaimResult(cid, c["source"], c["claim"], r.name, c["params"], outcome.verdict, why,
                               outcome.figures, run, c["profile"], c["note"]))
    return out


# --------------------------------------------------------------------------- helpers for rules
def _g(x: Any, spec: str = ".3g") -> str:
    """``format(x, spec)`` (no negative zero), or an en dash for a missing or non-finite value."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x + 0.0 if isinstance(x, float) else x, spec)


def groups(rows: pd.DataFrame, keys: list[str]) -> Iterator[tuple[str, pd.DataFrame]]:
    """``(label, rows)`` per group of the keys the table has (``model`` only where there is one)."""
    keys = [k for k in keys if k in rows]
    for key, g in rows.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        yield " ".join(str(k) for k in key if k is not None and k == k), g


def median(g: pd.DataFrame, col: str) -> float:
    """The median of a column over a group's rows (seeds), NaN where none has it."""
    values = pd.to_numeric(g[col], errors="coerce").dropna() if col in g else pd.Series(dtype=float)
    return float(values.median()) if len(values) else float("nan")


def case_ids(*frames: pd.DataFrame) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for f in frames for c in f["case_id"]))


def decide(checks: list[tuple[str, bool]], figures: list[Figure], what: str) -> Outcome:
    """One verdict from per-group checks: holds when every measured group holds.

    Arguments:
        checks: ``(group label with its numbers, held)`` per measured group.
        figures: the figures behind the checks.
        what: what the groups are, for the line when there are none (``plugins with both methods``).
    """
    if not checks:
        return Outcome(NOT_MEASURED, f"no {what} in this run", figures)
    good = [label for label, ok in checks if ok]
    bad = [label for label, ok in checks if not ok]
    if not bad:
        groups_ = "the one measured group" if len(good) == 1 else f"all {len(good)} measured groups"
        return Outcome(HOLDS, f"holds for {groups_}: " + "; ".join(good), figures)
    held = f"; holds for {'; '.join(good)}" if good else ""
    return Outcome(FAILS, f"does not hold for {'; '.join(bad)}{held}", figures)


# --------------------------------------------------------------------------- rendering
def markdown(results: list[ClaimResult]) -> list[str]:
    """The report's Claims section: a verdict table, then each claim's measured figures."""
    if not results:
        return []
    run = results[0].run
    out = ["## Claims", "",
           f"Published claims this suite can test, decided by the named rules of `odebench.claims` from run "
           f"`{run}`'s records (recomputed by `odebench report`; none is written by hand). Only cases that ended "
           "ok and pass each claim's row filters count.", "",
           "| claim | source | verdict | why |", "|---|---|---|---|"]
    for r in results:
        out.append(f"| {_cell(r.id)} | {_cell(r.source)} | **{r.verdict}** | {_cell(r.why)} |")
    out.append("")
    for r in results:
        params = ", ".join(f"{k} = {_value(v)}" for k, v in r.params.items())
        rule_ = RULES.get(r.rule)
        out += [f"### {r.id}: {r.verdict}", "", f"> {r.claim} ({r.source})", "",
                f"Rule `{r.rule}` ({params})" + (f": {rule_.summary}" if rule_ and rule_.summary else "")
                + (f" Measured by profile `{r.profile}`." if r.profile else ""), "", f"Why: {r.why}.", ""]
        if r.note:
            out += [r.note, ""]
        if r.figures:
            out += ["| measured | value | from | run, cases |", "|---|---|---|---|"]
            out += [f"| {_cell(f.name)} | {_g(f.value, '.4g')} | {_cell(f.detail)} | `{run}`: "
                    f"{', '.join(f'`{c}`' for c in f.cases)} |" for f in r.figures]
            out.append("")
    return out


def _value(v: Any) -> str:
    """A rule parameter as the suite file spells it, without Python's quotes."""
    if isinstance(v, list):
        return "[" + ", ".join(map(_value, v)) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


__all__ = ["CLAIM_KEYS", "FAILS", "HOLDS", "NOT_MEASURED", "RULES", "VERDICTS", "ClaimResult", "Figure", "Outcome",
           "Rule", "case_ids", "check_profiles", "decide", "evaluate", "groups", "markdown", "median", "ok_rows",
           "record_columns", "rule", "select", "validate"]
