"""Published claims, measured: each suite lists the claims its runs can test, and every verdict is
computed from the run's records by a named rule.

A claim is data in the suite file, one table per claim under ``[claims]``::

    [claims.capell-spiral]
    source = "Capell et al. 2023, Neural ODEs: Review of Literature, Table 2"
    claim = "The adaptive solver takes more than twice as long for minimal decrease in error."
    figures = ["train_s", "final_mse"]      # the record columns the verdict reads
    rule = "cost_vs_gain"                   # a rule of RULES, by name ...
    params = { slow = "dopri5", fast = "rk4", min_time_ratio = 2.0, max_error_gain = 0.1 }  # ... with parameters
    at_least = { iterations_done = 150 }    # only rows with at least these values count
    only = { grad_mode = ["backprop"] }     # only rows with one of these values count
    profile = "default"                     # the profile whose run measures it
    note = "..."                            # context printed with the verdict, never the verdict

Every key is checked when the suite loads (:func:`validate`), like the rest of the file: an
unknown key, rule, parameter or column is a one-line :class:`~odebench.schema.SuiteError`
naming the valid choices. A rule (:class:`Rule`, registered in :data:`RULES` by :func:`rule`;
the built-in ones in :mod:`odebench.claims.rules`) is a pure function of the run's ok rows
(after ``at_least`` / ``only``) and its parameters; it returns an :class:`Outcome`: the
verdict (:data:`HOLDS`, :data:`FAILS` or :data:`NOT_MEASURED`), one line of explanation and
the measured :class:`Figure` s with the case ids they came from. :func:`evaluate` runs every
claim of a suite over a run's table and :func:`markdown` renders the report's Claims section;
``odebench report RUN_DIR`` recomputes both from ``records.jsonl``.
"""

from __future__ import annotations

from odebench.claims import rules  # noqa: F401 - registers the built-in rules
from odebench.claims.core import (
    CLAIM_KEYS,
    FAILS,
    HOLDS,
    NOT_MEASURED,
    RULES,
    VERDICTS,
    ClaimResult,
    Figure,
    Outcome,
    Rule,
    check_profiles,
    evaluate,
    markdown,
    ok_rows,
    record_columns,
    rule,
    select,
    validate,
)

__all__ = ["CLAIM_KEYS", "FAILS", "HOLDS", "NOT_MEASURED", "RULES", "VERDICTS", "ClaimResult", "Figure", "Outcome",
           "Rule", "check_profiles", "evaluate", "markdown", "ok_rows", "record_columns", "rule", "select", "validate"]
