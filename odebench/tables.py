"""Table helpers every workload and the report share: cell formatting, grouping, benchmark tables.

Workloads build their summary tables with these, so no workload imports the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def fmt(x: Any, spec: str) -> str:
    """``format(x, spec)``, or an en dash for a missing or non-finite value."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return format(x, spec)


def _num(x: Any) -> bool:
    """Whether ``x`` is a finite int or float (not a bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x: Any) -> str:
    """A figure as regress and the benchmark tables show it: integers whole, others to 6 digits."""
    if not _num(x):
        return "–" if x is None else str(x)
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def _ms(x: Any) -> str:
    return f"{x * 1e3:.3f}" if _num(x) else "–"


#: A timing whose interquartile range exceeds this fraction of its median is flagged as unstable
#: (pyperf's rule of thumb): more repeats or an idle machine would change it.
DISPERSION_LIMIT = 0.5
UNSTABLE = "⚠"
UNSTABLE_NOTE = (f"{UNSTABLE} marks a timing whose IQR is more than {DISPERSION_LIMIT:.0%} of its median: the "
                 "figure is unstable on this run. Run more repeats (`--repeats`), on an idle machine, before "
                 "reading it as a difference.")


def unstable(median: Any, iqr: Any) -> bool:
    """Whether a timing's spread makes it unreliable (IQR above :data:`DISPERSION_LIMIT` of the median)."""
    return _num(median) and _num(iqr) and median > 0 and iqr > DISPERSION_LIMIT * median


def clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters for display, cut at a word boundary with an ellipsis.

    Records keep the whole message; only tables shorten it. A single word longer than half the
    width (a path) is cut inside rather than dropped whole.

    Arguments:
        text: the message.
        width: the most characters to show, the ellipsis included.
    """
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    if space > width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + "…"


def groups(df: pd.DataFrame, keys: list[str]) -> Iterator[tuple[Any, pd.DataFrame, pd.DataFrame, str]]:
    """Yield ``(key, group, ok_rows, status_text)`` per group of ``keys`` (missing tolerances kept).

    ``status_text`` counts the statuses of the group (``ok×2, max_steps``) and, when not all
    are ok, appends the first message.
    """
    keyed = df.assign(rtol=df["rtol"].fillna(-1), atol=df["atol"].fillna(-1))
    for key, g in keyed.groupby(keys, sort=False, dropna=False):
        ok = g[g["status"] == "ok"]
        status = ", ".join(f"{s}×{n}" if n > 1 else s for s, n in g["status"].value_counts().items())
        msg = next((m for m in g["message"] if isinstance(m, str) and m), "")
        if status != "ok" and msg:
            status += f" ({clip(msg, 70)})"
        yield key, g, ok, status


def is_pytest_benchmark_json(path: Path) -> bool:
    """Whether ``path`` is a pytest-benchmark ``--benchmark-json`` file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "benchmarks" in data and "machine_info" in data


def pytest_benchmark_table(path: Path) -> str:
    """A pytest-benchmark JSON file as a markdown table: per benchmark median and IQR, and per step."""
    data = json.loads(Path(path).read_text())
    rows = []
    for b in data["benchmarks"]:
        st, info = b.get("stats", {}), b.get("extra_info", {})
        steps = info.get("steps")
        med = st.get("median")
        rows.append({"benchmark": b.get("name", "?"), "plugin": info.get("plugin", ""),
                     "method": info.get("method", ""), "mode": info.get("mode", ""),
                     "median ms": _ms(med), "IQR ms": _ms(st.get("iqr")), "rounds": st.get("rounds"),
                     "steps": _fmt(steps), "NFE-F": _fmt(info.get("nfe_fwd")),
                     "µs/step": f"{med / steps * 1e6:.1f}" if _num(med) and _num(steps) and steps else "–"})
    head = (f"pytest-benchmark {data.get('version', '?')}, {data.get('datetime', '?')}, "
            f"{data.get('machine_info', {}).get('cpu', {}).get('brand_raw', '?')}, "
            f"commit {data.get('commit_info', {}).get('id', '?')[:10]}")
    table = pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) if rows else "(no benchmarks)"
    return head + "\n\n" + table


