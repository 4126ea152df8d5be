"""The ``memory`` workload's report: its summary table, the per-method fits and classes, and figures."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from odebench.records import to_frame
from odebench.tables import fmt, groups
from odebench.workloads.memory.analysis import _GROUP, Fit, Verdict, _class_params, verdicts
from odebench.workloads.memory.schema import AXES, COLUMNS

#: The record layout :func:`odebench.records.to_frame` needs (the workload's axes and columns).
LAYOUT = SimpleNamespace(axes=AXES, columns=COLUMNS)

SUMMARY_NOTE = (
    "One row per plugin × method × grad mode × block × device, fitted over the depths n that ran ok. "
    "peak: the peak over one forward+backward pass minus the memory in use before it (CPU: resident set "
    "with glibc's mmap threshold pinned so freed buffers leave the process; GPU: the allocator's peak). "
    "slope: least squares of peak against n (MB per step); exp: slope of log peak against log n; saved: "
    "the same slope of the bytes kept for backward (torch saved_tensors_hooks, JAX jax.vjp residuals); "
    "states/step: slope over one ODE state. Times and NFE are at the largest n: forward and backward "
    "medians over the repeats (device synced, GC off), NFE counted by the harness in an untimed pass; loop µs/step "
    "is the forward+backward time beyond the eager floor (the field's evaluations and their backward replayed "
    "alone, torch plugins) per forward step. "
    "class: ✓ in its class, ✗ left it (reason in the check column), ? cannot tell.")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per plugin × method × grad mode × block × device: fits, class check, times at the largest n."""
    checks = verdicts(df)
    rows = []
    for key, _g, ok, status in groups(df, _GROUP):
        v = checks.get(tuple(key))
        top = ok.sort_values("n_steps").iloc[-1] if len(ok) else None
        fit = v.fit if v else Fit(0)
        sfit = v.saved_fit if v else None
        state = float(top["state_bytes"]) if top is not None and pd.notna(top["state_bytes"]) else np.nan
        mark = "–" if v is None else {True: "✓", False: "✗ FLAG", None: "?"}[v.ok]
        ns = sorted(ok["n_steps"].astype(int)) if len(ok) else []

        def at_top(col, scale=1.0, spec=".2f", top=top):
            return fmt(float(top[col]) * scale, spec) if top is not None and pd.notna(top[col]) else "–"

        # A ratio to a saved-bytes slope that is zero (adjoint) or noise says nothing.
        meaningful = sfit is not None and np.isfinite(sfit.slope) and sfit.slope > 0.01 * (
            state if np.isfinite(state) else 2**10)
        rows.append({
            "plugin": key[0], "method": key[1], "grad": key[2], "block": key[3], "device": key[4],
            "status": status,
            "n": f"{ns[0]}–{ns[-1]} ({len(ns)})" if ns else "–",
            "peak MB @n_max": at_top("peak_bytes", 2**-20, ".1f"),
            "slope MB/step": _num(fit.slope / 2**20, ".3f"),
            "exp": _num(fit.exponent, ".2f"),
            "saved MB/step": _num(sfit.slope / 2**20, ".3f") if sfit else "–",
            "slope/saved": _num(fit.slope / sfit.slope, ".2f") if meaningful else "–",
            "states/step": _num(fit.slope / state, ".2f") if np.isfinite(state) else "–",
            "fwd/bwd ms @n_max": f"{at_top('fwd_s', 1e3, '.1f')}/{at_top('bwd_s', 1e3, '.1f')}",
            "NFE-F/B @n_max": f"{at_top('nfe_fwd', 1, '.0f')}/{at_top('nfe_bwd', 1, '.0f')}",
            # The solver's own time per step beyond the field's evaluations and their backward.
            "loop µs/step @n_max": at_top("loop_s_per_step", 1e6, ".1f"),
            "class": f"{mark} {v.expected}" if v else "–",
            "check": (v.reason + (f"; {v.note}" if v.note else "")) if v else "",
        })
    return pd.DataFrame(rows)


def _num(x: float, spec: str) -> str:
    """``format(x, spec)`` without a negative zero; an en dash for a missing value."""
    text = fmt(x, spec)
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """Per-depth table, the class rules, and the quoted reference figures (``[paper]``)."""
    df = to_frame(records, LAYOUT)
    ok = df[df["status"] == "ok"].sort_values(_GROUP + ["n_steps"])
    out = []
    params = _class_params(df)
    lo, hi = params["checkpoint_state_band"]
    out += ["## Class rules", "",
            f"- backprop, O(n) activations: peak slope within ±{params['backprop_rel_tol']:.0%} of the "
            "saved-for-backward slope (bytes per step).",
            f"- adjoint / adjoint-seminorm, O(1): log-log exponent of peak against n below "
            f"{params['adjoint_max_exponent']:g} (peaks under {params['exponent_floor_bytes'] / 2**10:g} KiB "
            "count as that).",
            f"- checkpoint, state-only: slope at most {hi:g} states per step and at most "
            f"{params['checkpoint_max_backprop_frac']:g} × backprop's slope; ≥ {lo:g} states/step reads "
            "\"one state per step\", below it \"sub-linear\".", ""]
    paper = (config or {}).get("paper", {})
    checks = verdicts(df) if len(ok) else {}
    matching = [key for key in checks for row in paper.get("rows", [])
                if key[2] == row.get("grad_mode", key[2]) and key[3] == row.get("block", key[3])]
    if paper.get("rows") and not matching:
        wanted = ", ".join(f"{r.get('grad_mode', '?')} on {r.get('block', '?')}" for r in paper["rows"])
        out += [f"## Against the reference ({paper.get('source', '')})", "",
                f"No ok rows of {wanted} in this run (the default and `odenet-cpu` profiles have them).", ""]
    elif paper.get("rows"):
        out += [f"## Against the reference ({paper.get('source', '')})", "",
                "| plugin | grad | block | device | batch | measured MB/step | NFE/step | measured MB/NFE | "
                "scaled to ref. batch | reference MB/NFE | ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in paper["rows"]:
            for key, v in checks.items():
                if key[2] != row.get("grad_mode", key[2]) or key[3] != row.get("block", key[3]):
                    continue
                g = ok[(ok[_GROUP] == pd.Series(dict(zip(_GROUP, key)))).all(axis=1)]
                per_step = (g["nfe_fwd"] / g["n_steps"]).median()
                batch = float(g["batch"].iloc[0])
                mb_nfe = v.fit.slope / 2**20 / per_step if per_step else np.nan
                scaled = mb_nfe * row["batch"] / batch if row.get("batch") else mb_nfe
                ref = row.get("mb_per_nfe", np.nan)
                out.append(f"| {key[0]} | {key[2]} | {key[3]} | {key[4]} | {batch:.0f} | "
                           f"{fmt(v.fit.slope / 2**20, '.2f')} | {fmt(per_step, '.0f')} | {fmt(mb_nfe, '.2f')} | "
                           f"{fmt(scaled, '.2f')} (batch {row.get('batch', '?')}) | {ref} | "
                           f"{fmt(scaled / ref, '.2f')} |")
        out += ["", "Measured MB/NFE is the fitted peak slope per step over the harness's forward NFE per step; "
                "memory per evaluation scales with the batch, so it is rescaled linearly to the reference's.", ""]
    if len(ok):
        out += ["## Per depth", "",
                "| plugin | grad | block | device | n | peak MB | saved MB | fwd ms | bwd ms | NFE-F | NFE-B | "
                "VJPs | native NFE agrees |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in ok.iterrows():
            saved = fmt(r["saved_bytes"] / 2**20, ".2f") if pd.notna(r["saved_bytes"]) else "–"
            vjp = fmt(r["n_vjp"], ".0f") if pd.notna(r["n_vjp"]) else "–"
            agree = "–" if pd.isna(r["nfe_agree"]) else ("yes" if bool(r["nfe_agree"]) else "NO")
            out.append(f"| {r['plugin']} | {r['grad_mode']} | {r['block']} | {r['device']} | {int(r['n_steps'])} | "
                       f"{fmt(r['peak_bytes'] / 2**20, '.2f')} | {saved} | {fmt(r['fwd_s'] * 1e3, '.1f')} | "
                       f"{fmt(r['bwd_s'] * 1e3, '.1f')} | {fmt(r['nfe_fwd'], '.0f')} | {fmt(r['nfe_bwd'], '.0f')} | "
                       f"{vjp} | {agree} |")
        out.append("")
    return out


def _label(key: tuple, v: Verdict | None) -> str:
    base = f"{key[0]} {key[2]}"
    if v is None or not np.isfinite(v.fit.slope):
        return base
    return f"{base}: {_num(v.fit.slope / 2**20, '.3g')} MB/step, exp {_num(v.fit.exponent, '.2f')}"


def figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Peak memory against n (log-log, fitted slopes in the legend; dotted: saved bytes) and
    forward / backward time against n; one panel per block × device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = to_frame(records, LAYOUT)
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return []
    out.mkdir(exist_ok=True)
    checks = verdicts(df)
    panels = list(ok.groupby(["block", "device"], sort=False))
    lines = list(ok.groupby(_GROUP, sort=False))
    colours = {k: f"C{i % 10}" for i, (k, _) in enumerate(lines)}
    paths = []

    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), squeeze=False)
    for ax, ((block, device), _) in zip(axes[0], panels):
        for key, g in lines:
            if (key[3], key[4]) != (block, device):
                continue
            g = g.sort_values("n_steps")
            y = np.maximum(g["peak_bytes"].to_numpy(float), 1.0) / 2**20
            ax.plot(g["n_steps"], y, "o-", color=colours[key], label=_label(key, checks.get(key)), lw=1.4)
            if g["saved_bytes"].notna().any():
                ax.plot(g["n_steps"], np.maximum(g["saved_bytes"].to_numpy(float), 1.0) / 2**20, ":",
                        color=colours[key], lw=1.0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("rk4 steps n (step size 1/n)")
        ax.set_ylabel("peak memory over forward+backward (MB)")
        ax.set_title(f"{block}, {device} (dotted: saved for backward)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "memory_vs_steps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, len(panels), figsize=(7.5 * len(panels), 9), squeeze=False)
    for j, ((block, device), _) in enumerate(panels):
        for i, (col, what) in enumerate((("fwd_s", "forward"), ("bwd_s", "backward"))):
            ax = axes[i][j]
            for key, g in lines:
                if (key[3], key[4]) != (block, device):
                    continue
                g = g.sort_values("n_steps")
                ax.plot(g["n_steps"], g[col] * 1e3, "o-", color=colours[key], label=f"{key[0]} {key[2]}", lw=1.4)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("rk4 steps n")
            ax.set_ylabel(f"{what} time, median (ms)")
            reps = int(df["repeats"].dropna().min()) if df["repeats"].notna().any() else 0
            # One timed pass per point is noise, not a trend: the title says so.
            caveat = " — 1 repeat per point: noisy" if reps <= 1 else f" — median of {reps} repeats"
            ax.set_title(f"{what}: {block}, {device}{caveat}", fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "time_vs_steps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
