"""The ``mnist`` workload's report: Table 1 measured, the paper beside it, and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odebench.tables import fmt, groups

MODEL_NAMES = {"odenet": "ODE-Net", "rknet": "RK-Net", "resnet": "ResNet", "review": "review ODE-Net"}

SUMMARY_NOTE = (
    "Chen et al. 2018, Table 1, measured: one row per model × plugin × method × grad mode (median over "
    "seeds). Test error is after the last training batch on this profile's test set (best seen in "
    "brackets). s/epoch is the timed training time of one epoch of this profile (forward, and backward + "
    "optimiser step, each between device syncs with GC off; data, augmentation and evaluation excluded); "
    "ms/img is that time per training image. NFE-F / NFE-B are vector-field evaluations per training batch "
    "(mean over training), with the instrumented probe batch before → after training. Peak RSS is the "
    "peak resident set over the training loop minus the set before it (freed heap memory returned to the "
    "OS first: glibc malloc_trim); saved MB is what autograd keeps "
    "for backward on one batch. Paper columns: Chen et al.'s test error and parameters (full MNIST, "
    "160 epochs). swap Δacc pp is the solver-swap check (Ott et al. 2021): the trained model's test accuracy "
    "with the suite's reference solver ([swap], dopri5 at a tight tolerance in float64) minus with the solver it "
    "was trained with, in percentage points, untimed after training (0 when they are the same).")


def _applicable(df: pd.DataFrame) -> pd.DataFrame:
    if "not_applicable" not in df:
        return df
    return df[df["not_applicable"].fillna(False).astype(bool) == False]  # noqa: E712


def _nfe_cell(med: pd.Series, mean: str, probe: str) -> str:
    """``mean (probe before→after training)``."""
    return (f"{fmt(med.get(mean), '.1f')} ({fmt(med.get(probe + '_start'), '.0f')}→"
            f"{fmt(med.get(probe + '_end'), '.0f')})")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1's layout: model, test error %, params (M), s/epoch, NFE-F, NFE-B, peak memory."""
    df = _applicable(df)
    if df.empty:
        return pd.DataFrame()
    rows = []
    for key, g, ok, status in groups(df, ["model", "plugin", "method", "grad_mode", "rtol", "atol", "device"]):
        med = ok.median(numeric_only=True) if len(ok) else pd.Series(dtype=float)
        model = key[0]
        solver = model != "resnet"
        best = med.get("best_test_acc", np.nan)
        row = {
            "model": MODEL_NAMES.get(model, model),
            "plugin": key[1] if solver else "–",
            "method": (key[2] if model == "odenet" else f"{key[2]} (fixed)") if solver else "–",
            "grad": key[3] if solver else "–",
            "rtol": ("–" if key[4] == -1 else f"{key[4]:g}") if solver else "–",
            "device": key[6],
            "status": status,
            "test err %": (f"{fmt(med.get('test_error_pct'), '.2f')} ({fmt(100 * (1 - best), '.2f')})"
                           if len(ok) else "–"),
            # The solver-swap check (odebench.swap): test accuracy with the reference solver minus with the
            # trained one, in percentage points.
            "swap Δacc pp": fmt(100 * med.get("swap_acc_delta", np.nan), "+.2f") if solver else "–",
            "params (M)": fmt(med.get("params", np.nan) / 1e6, ".3f"),
            "s/epoch": fmt(med.get("s_per_epoch"), ".1f"),
            "ms/img": fmt(med.get("ms_per_image"), ".2f"),
            "fwd/bwd ms": (f"{fmt(med.get('fwd_s', np.nan) * 1e3, '.0f')}/"
                           f"{fmt(med.get('bwd_s', np.nan) * 1e3, '.0f')}") if len(ok) else "–",
            "NFE-F": _nfe_cell(med, "nfe_fwd", "probe_nfe_fwd") if solver and len(ok) else "–",
            "NFE-B": _nfe_cell(med, "nfe_bwd", "probe_nfe_bwd") if solver and len(ok) else "–",
            "peak RSS MB": fmt(med.get("peak_rss_bytes", np.nan) / 2**20, ".0f"),
            "saved MB": fmt(med.get("saved_bytes", np.nan) / 2**20, ".1f"),
            "seeds": f"{len(ok)}/{len(g)}",
        }
        if "peak_gpu_bytes" in med and np.isfinite(med.get("peak_gpu_bytes", np.nan)):
            row["peak GPU MB"] = fmt(med["peak_gpu_bytes"] / 2**20, ".0f")
        # The suite's [paper] values travel in each record (paper_test_error_pct, paper_params_m).
        row["paper err %"] = fmt(g["paper_test_error_pct"].median(), ".2f")
        row["paper params (M)"] = fmt(g["paper_params_m"].median(), ".2f")
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(MODEL_NAMES.values())}
    return out.sort_values("model", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """Table 1 beside the measurements, and the run's data and training settings."""
    out: list[str] = []
    paper = config.get("paper", {}) if config else {}
    ok = [r for r in records if r["status"] == "ok" and not r.get("not_applicable")]
    if paper.get("rows"):
        out += [f"## Against the paper ({paper.get('source', '')})", "",
                "| model | paper test error % | paper params (M) | paper memory | paper time | "
                "measured test error % (best case) | measured params (M) | measured peak RSS MB (min) | "
                "measured saved MB (min) |", "|---|---|---|---|---|---|---|---|---|"]
        for row in paper["rows"]:
            mine = [r for r in ok if r.get("model") == row.get("model") and r.get("test_error_pct") is not None]
            err = min((r["test_error_pct"] for r in mine), default=np.nan)
            params = mine[0]["params"] / 1e6 if mine else np.nan
            rss = min((r.get("peak_rss_bytes") or np.nan for r in mine), default=np.nan) / 2**20
            saved = min((r.get("saved_bytes") or np.nan for r in mine), default=np.nan) / 2**20
            out.append(f"| {MODEL_NAMES.get(row.get('model'), row.get('model'))} | "
                       f"{fmt(row.get('test_error_pct'), '.2f')} | {fmt(row.get('params_m'), '.2f')} | "
                       f"{row.get('memory', '–')} | {row.get('time', '–')} | {fmt(err, '.2f')} | "
                       f"{fmt(params, '.3f')} | {fmt(rss, '.0f')} | {fmt(saved, '.1f')} |")
        out.append("")
    if ok:
        r = ok[0]
        out += [f"Data and training of this run: {r.get('train_images')} training and {r.get('test_images')} test "
                f"images, batch {r.get('batch_size')}, {r.get('batches_per_epoch')} batches per epoch, "
                f"{r.get('epochs_done')} epoch(s) done; the paper trains on all 60 000 for 160 epochs, so "
                "its error is comparable only on the full profile.", ""]
    return out


def _label(r: dict[str, Any]) -> str:
    name = MODEL_NAMES.get(r.get("model"), r.get("model"))
    if r.get("model") == "resnet":
        return name + (f" s{r['seed']}" if r.get("seed") else "")
    return f"{name} {r['plugin']} {r['method']} {r['grad_mode']}" + (f" s{r['seed']}" if r.get("seed") else "")


def figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Test accuracy against epoch and against timed training time; NFE-F / NFE-B against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if (r.get("history") or {}).get("test_acc")]
    if not runs:
        return []
    out.mkdir(exist_ok=True)
    paths = []
    for xkey, xlabel, name in (("epoch", "epoch", "test_acc_vs_epoch.png"),
                               ("time_s", "training time (s, timed region only)", "test_acc_vs_time.png")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, r in enumerate(runs):
            h = r["history"]
            ax.plot(h[xkey], [100 * a for a in h["test_acc"]], marker="o", ms=3, lw=1.2, label=_label(r),
                    color=f"C{i % 10}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    with_nfe = [r for r in runs if any(x is not None for x in r["history"].get("nfe_fwd", []))]
    if with_nfe:
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, r in enumerate(with_nfe):
            h = r["history"]
            ax.plot(h["epoch"], h["nfe_fwd"], marker="o", ms=3, lw=1.2, color=f"C{i % 10}",
                    label=f"{_label(r)} NFE-F")
            if any(b for b in h["nfe_bwd"] if b):
                ax.plot(h["epoch"], h["nfe_bwd"], marker="s", ms=3, lw=1.2, ls="--", color=f"C{i % 10}",
                        label=f"{_label(r)} NFE-B")
        ax.set_xlabel("epoch")
        ax.set_ylabel("function evaluations per training batch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "nfe_vs_epoch.png", dpi=110)
        plt.close(fig)
        paths.append(out / "nfe_vs_epoch.png")
    return paths
