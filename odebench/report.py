"""Records → tidy DataFrame → ``results.csv`` (+ parquet), ``report.md`` and ``figures/``.

Everything here is rendered from ``records.jsonl`` alone, so ``odebench report RUN_DIR``
reproduces a report without re-running anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odebench.runner import read_records

#: Columns of the tidy table, in order; nested history stays in records.jsonl.
COLUMNS = [
    "suite", "profile", "case_id", "plugin", "framework", "plugin_version", "method", "grad_mode",
    "rtol", "atol", "seed", "device", "status", "message", "iterations_done", "repeats",
    "train_s", "train_s_iqr", "s_per_iter", "s_per_iter_iqr", "fwd_s", "bwd_s", "compile_s", "n_traces",
    "final_mse", "final_loss", "nfe_fwd", "nfe_bwd", "n_vjp", "nfe_native", "nfe_agree", "steps",
    "peak_rss_bytes", "rss_method", "saved_bytes", "case_wall_s",
]
_KEYS = ["plugin", "method", "grad_mode", "rtol", "atol", "device"]


def to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record with the :data:`COLUMNS` (missing values are NaN)."""
    df = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in records], columns=COLUMNS)
    for col in ("rtol", "atol", "train_s", "s_per_iter", "final_mse", "nfe_fwd", "nfe_bwd",
                "peak_rss_bytes", "saved_bytes", "compile_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _fmt(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return format(x, spec)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per plugin × method × grad mode × tolerance × device: medians over seeds, as display strings."""
    rows = []
    keyed = df.assign(rtol=df["rtol"].fillna(-1), atol=df["atol"].fillna(-1))
    for key, g in keyed.groupby(_KEYS, sort=False, dropna=False):
        ok = g[g["status"] == "ok"]
        statuses = ", ".join(f"{s}×{n}" if n > 1 else s for s, n in g["status"].value_counts().items())
        first_msg = next((m for m in g["message"] if isinstance(m, str) and m), "")
        med = ok.median(numeric_only=True) if len(ok) else pd.Series(dtype=float)
        spi, spi_iqr = med.get("s_per_iter", np.nan), med.get("s_per_iter_iqr", np.nan)
        rows.append({
            "plugin": key[0], "method": key[1], "grad": key[2],
            "rtol": "grid" if key[3] == -1 else f"{key[3]:g}",
            "status": statuses + (f" ({first_msg[:60]})" if statuses != "ok" and first_msg else ""),
            "train s": _fmt(med.get("train_s"), ".2f"),
            "s/iter (IQR)": f"{_fmt(spi * 1e3, '.2f')} ({_fmt(spi_iqr * 1e3, '.2f')}) ms" if np.isfinite(spi) else "–",
            "fwd/bwd ms": (f"{_fmt(med.get('fwd_s', np.nan) * 1e3, '.2f')}/"
                           f"{_fmt(med.get('bwd_s', np.nan) * 1e3, '.2f')}") if len(ok) else "–",
            "compile s": _fmt(med.get("compile_s"), ".2f"),
            "final MSE": _fmt(med.get("final_mse"), ".4g"),
            "NFE-F": _fmt(med.get("nfe_fwd"), ".1f"),
            "NFE-B": _fmt(med.get("nfe_bwd"), ".1f"),
            "peak RSS MB": _fmt(med.get("peak_rss_bytes", np.nan) / 2**20, ".1f"),
            "saved KB": _fmt(med.get("saved_bytes", np.nan) / 2**10, ".1f"),
            "seeds": f"{len(ok)}/{len(g)}",
        })
    return pd.DataFrame(rows)


def render(run_dir: str | Path) -> Path:
    """Write ``results.csv`` (+ ``results.parquet``), ``figures/*.png`` and ``report.md``.

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: when the folder has no records.
    """
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    if not records:
        raise FileNotFoundError(f"no records in {run_dir / 'records.jsonl'}")
    df = to_frame(records)
    df.to_csv(run_dir / "results.csv", index=False)
    try:
        df.to_parquet(run_dir / "results.parquet", index=False)
    except ImportError:
        pass  # parquet needs pyarrow, an optional extra
    figures = _figures(records, run_dir / "figures")
    table = summary(df)
    info = _read_json(run_dir / "run.json")
    env = _read_json(run_dir / "env.json")
    lines = [f"# odebench report: {records[0].get('suite', '?')} ({info.get('profile', '?')} profile)", ""]
    lines += [f"- run: `{run_dir.name}`, {len(records)} cases, "
              f"{sum(r['status'] == 'ok' for r in records)} ok",
              f"- machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores; python {env.get('python', '?')}; "
              + ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items() if v),
              f"- commit: `{env.get('git_commit') or 'unknown'}`; command: `{env.get('command', '')}`",
              f"- wall time of all cases: {sum(r.get('case_wall_s') or 0 for r in records):.1f} s", ""]
    lines += ["## Summary", "",
              "Median over seeds; s/iter is the median over iterations (IQR in brackets), forward and "
              "backward timed apart between device syncs; NFE-F / NFE-B are counted by the harness in "
              "untimed instrumented passes (mean over the snapshot iterations); peak RSS is the peak over "
              "the training loop minus the resident set before it; saved KB is what autograd keeps for "
              "backward (torch only). compile s is JAX compile time, never part of the timings.", ""]
    lines += [table.to_markdown(index=False), ""]
    mismatch = df[df["nfe_agree"] == False]  # noqa: E712 - explicit False, None means "no native count"
    if len(mismatch):
        lines += ["**NFE mismatch** between the harness and the library in: "
                  + ", ".join(mismatch["case_id"]), ""]
    paper = _paper_rows(info, records)
    if paper:
        lines += paper
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _paper_rows(info: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    from odebench.suite import SuiteError, load_suite

    try:
        suite = load_suite(info["suite_path"], info.get("profile"))
    except (KeyError, SuiteError):
        return []
    paper = suite.config.get("paper", {})
    if not paper.get("rows"):
        return []
    out = [f"## Against the paper ({paper.get('source', '')})", "",
           "| method | paper train s | paper MSE | measured train s (median) | measured MSE (median) |",
           "|---|---|---|---|---|"]
    for row in paper["rows"]:
        ok = [r for r in records if r.get("method") == row.get("method") and r["status"] == "ok"]
        ts = np.median([r["train_s"] for r in ok]) if ok else np.nan
        mse = np.median([r["final_mse"] for r in ok]) if ok else np.nan
        out.append(f"| {row.get('method')} | {row.get('train_s', '–')} | {row.get('mse', '–')} | "
                   f"{_fmt(ts, '.2f')} | {_fmt(mse, '.4g')} |")
    return out + ["", "Measured columns are medians over every ok plugin × grad mode of that method.", ""]


def _label(r: dict[str, Any]) -> str:
    return f"{r['plugin']} {r['method']} {r['grad_mode']}" + (f" s{r['seed']}" if r.get("seed") else "")


def _figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_history = [r for r in records if r.get("history", {}).get("loss")]
    if not with_history:
        return []
    out.mkdir(exist_ok=True)
    paths = []
    for xkey, xlabel, name in (("iteration", "iteration", "loss_vs_iteration.png"),
                               ("time_s", "training wall time (s, timed region only)", "loss_vs_time.png")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in with_history:
            loss = r["history"]["loss"]
            x = np.arange(1, len(loss) + 1) if xkey == "iteration" else r["history"]["time_s"]
            ax.plot(x, loss, label=_label(r), lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss (MSE)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    paths.append(_trajectory_figure(with_history, out, plt))
    return paths


def _trajectory_figure(records, out: Path, plt) -> Path:
    from odebench.training import make_problem

    with_snaps = [r for r in records if r.get("snapshots")]
    iters = sorted({int(k) for r in with_snaps for k in r["snapshots"]})
    fig, axes = plt.subplots(len(with_snaps), len(iters), figsize=(2.6 * len(iters), 2.4 * len(with_snaps)),
                             squeeze=False)
    truth = None
    for i, r in enumerate(with_snaps):
        if truth is None:
            truth = _truth_for(r, make_problem)
        for j, k in enumerate(iters):
            ax = axes[i][j]
            if truth is not None:
                ax.plot(truth[:, 0], truth[:, 1], color="0.6", lw=1.5, label="truth")
            traj = r["snapshots"].get(str(k))
            if traj is not None:
                traj = np.asarray(traj)
                ax.plot(traj[:, 0], traj[:, 1], color="C3", lw=1, label="model")
            if truth is not None:  # frame the truth: a diverging fit must not shrink it
                pad = 0.15 * np.ptp(truth, axis=0)
                ax.set_xlim(truth[:, 0].min() - pad[0], truth[:, 0].max() + pad[0])
                ax.set_ylim(truth[:, 1].min() - pad[1], truth[:, 1].max() + pad[1])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"iteration {k}", fontsize=9)
            if j == 0:
                ax.set_ylabel(_label(r), fontsize=7)
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    path = out / "trajectories.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _truth_for(record: dict[str, Any], make_problem) -> np.ndarray | None:
    cfg = record.get("problem_config")
    if not cfg:
        return None
    problem = make_problem({"problem": cfg})
    return problem.exact(problem.ts)
