"""The ``train`` workload's report: its summary table, the paper comparison and its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odebench.tables import UNSTABLE, fmt, groups, unstable
from odebench.workloads.train import SUMMARY_NOTE  # noqa: F401 - the note beside the table it explains
from odebench.workloads.train.case import make_problem


def _warm(ok: pd.DataFrame) -> bool:
    """Whether any of these records' compiles was read back from a compilation cache (JAX's or inductor's)."""
    return bool(len(ok)) and any(ok.get(col, pd.Series(dtype=object)).isin(["warm", "mixed"]).any()
                                 for col in ("jax_cache", "torch_cache"))


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per plugin × method × grad mode × tolerance × device: medians over seeds, as display strings."""
    rows = []
    for key, g, ok, status in groups(df, ["plugin", "method", "grad_mode", "rtol", "atol", "device"]):
        med = ok.median(numeric_only=True) if len(ok) else pd.Series(dtype=float)
        spi, spi_iqr = med.get("s_per_iter", np.nan), med.get("s_per_iter_iqr", np.nan)
        rows.append({
            "plugin": key[0], "method": key[1], "grad": key[2],
            "rtol": "grid" if key[3] == -1 else f"{key[3]:g}",
            "status": status,
            "train s": fmt(med.get("train_s"), ".2f"),
            "s/iter (IQR)": (f"{fmt(spi * 1e3, '.2f')} ({fmt(spi_iqr * 1e3, '.2f')}) ms"
                             + (f" {UNSTABLE}" if unstable(spi, spi_iqr) else "")) if np.isfinite(spi) else "–",
            # A fused (jitted) step cannot be split: its whole time is in fwd_s.
            "fwd/bwd ms": "fused" if len(ok) and ok["fused"].fillna(False).astype(bool).all() else
                          (f"{fmt(med.get('fwd_s', np.nan) * 1e3, '.2f')}/"
                           f"{fmt(med.get('bwd_s', np.nan) * 1e3, '.2f')}") if len(ok) else "–",
            # The eager floor (the field's evaluations and their backward alone) and the solver's gap to it.
            "floor ms": fmt(med.get("floor_s", np.nan) * 1e3, ".2f"),
            "× floor": fmt(med.get("floor_ratio"), ".2f"),
            "loop µs/step": fmt(med.get("loop_s_per_step", np.nan) * 1e6, ".1f"),
            # A compile read back from JAX's or inductor's cache is not a cold compile: said so in the cell.
            "compile s": fmt(med.get("compile_s"), ".2f") + (" (cache)" if _warm(ok) else ""),
            "end-to-end s": fmt(med.get("end_to_end_s"), ".2f"),
            "final MSE": fmt(med.get("final_mse"), ".4g"),
            # The solver-swap check (odebench.swap): final MSE with the reference solver minus with the trained one.
            "swap ΔMSE": fmt(med.get("swap_mse_delta", np.nan), "+.3g"),
            "NFE-F": fmt(med.get("nfe_fwd"), ".1f"),
            # NFE-B is every evaluation during the backward pass. A "backprop" that evaluates the
            # field again there recomputes its steps: checkpointing, not storing, and said so.
            "NFE-B": fmt(med.get("nfe_bwd"), ".1f") + (" (recomputes)" if key[2] == "backprop" and
                                                       (med.get("nfe_bwd") or 0) > 0 else ""),
            "peak RSS MB": fmt(med.get("peak_rss_bytes", np.nan) / 2**20, ".1f"),
            "saved KB": fmt(med.get("saved_bytes", np.nan) / 2**10, ".1f"),
            "seeds": f"{len(ok)}/{len(g)}",
        })
    return pd.DataFrame(rows)


def sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """The time split of the run's cases, then the paper's figures beside the measured ones."""
    return time_split(records) + paper_sections(records, config)


#: The time split's columns: record field → heading, in the order the parts happen.
SPLIT = {"startup_s": "start-up", "setup_s": "set-up", "gate_s": "gate", "warmup_s": "warm-up",
         "compile_s": "compile", "measured_s": "measured", "untimed_s": "NFE & snapshots", "swap_s": "swap"}


def time_split(records: list[dict[str, Any]]) -> list[str]:
    """Where the cases' wall time went, summed per plugin: process start-up, set-up, fairness gate,
    warm-up, compiling, the measured iterations, the untimed NFE passes and snapshots, the swap check,
    and the rest (process exit, the report of the record); and the wall time over the measured work
    (measured iterations plus compiling), the figure the harness's fixed cost is judged by."""
    rows = [r for r in records if r.get("process_s") is not None and r.get("measured_s") is not None]
    if not rows:
        return []
    lines = ["## Where the wall time went", "",
             "| plugin | cases | wall s | " + " | ".join(SPLIT.values()) + " | other | wall / measured work |",
             "|---" * (len(SPLIT) + 5) + "|"]
    total: dict[str, float] = {}
    for plugin in dict.fromkeys(r["plugin"] for r in rows):
        mine = [r for r in rows if r["plugin"] == plugin]
        sums = _split_sums(mine)
        for k, v in sums.items():
            total[k] = total.get(k, 0.0) + v
        lines.append(_split_row(plugin, len(mine), sums))
    lines += [_split_row("**all**", len(rows), total), "",
              "Seconds summed over the plugin's cases. wall s is each case's process, launch to exit, plus its "
              "share of a shared gate process (a JAX plugin's cases are gated together before any is timed; under "
              "`launch = \"fork\"` the launcher's own start-up is in the first case it served); "
              "other is what the parts leave of it. The measured work is the timed iterations plus compiling.", ""]
    return lines


def _split_sums(records: list[dict[str, Any]]) -> dict[str, float]:
    sums = {k: float(sum(r.get(k) or 0.0 for r in records)) for k in SPLIT}
    shared_gate = sum(r.get("gate_s") or 0.0 for r in records if r.get("gate_shared"))
    sums["wall"] = float(sum(r["process_s"] for r in records)) + shared_gate
    return sums


def _split_row(label: str, n: int, sums: dict[str, float]) -> str:
    work = sums["measured_s"] + sums["compile_s"]
    other = sums["wall"] - sum(sums[k] for k in SPLIT)
    ratio = f"{sums['wall'] / work:.1f}×" if work > 0 else "–"
    return (f"| {label} | {n} | {sums['wall']:.1f} | " + " | ".join(f"{sums[k]:.1f}" for k in SPLIT)
            + f" | {other:.1f} | {ratio} |")


def paper_sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """The paper's figures beside the measured ones, like for like only.

    A paper row names its plugin and its number of iterations; it is compared with this run's
    cases of that plugin and method (one line per grad mode) only when they trained as many
    iterations, and otherwise the section says why it compares nothing.
    """
    paper = config.get("paper", {})
    if not paper.get("rows"):
        return []
    out = [f"## Against the paper ({paper.get('source', '')})", ""]
    done = {r.get("iterations_done") for r in records if r.get("status") == "ok"}
    lines = []
    for row in paper["rows"]:
        want = row.get("iterations")
        mine = [r for r in records if r.get("method") == row.get("method") and r.get("status") == "ok"
                and r.get("plugin") == row.get("plugin", r.get("plugin"))
                and (want is None or r.get("iterations_done") == want)]
        for grad in dict.fromkeys(r["grad_mode"] for r in mine):
            ok = [r for r in mine if r["grad_mode"] == grad]
            ts = np.median([r["train_s"] for r in ok])
            mse = np.median([r["final_mse"] for r in ok])
            lines.append(f"| {row.get('method')} | {row.get('plugin', '–')} {grad} | {row.get('train_s', '–')} | "
                         f"{row.get('mse', '–')} | {fmt(ts, '.2f')} | {fmt(mse, '.4g')} |")
    if not lines:
        wanted = sorted({row.get("iterations") for row in paper["rows"] if row.get("iterations")})
        return out + [f"Not compared: the paper's rows are {', '.join(map(str, wanted))} iterations of "
                      f"{', '.join(sorted({row.get('plugin', '?') for row in paper['rows']}))}; this run trained "
                      f"{', '.join(str(d) for d in sorted(x for x in done if x is not None)) or 'no'} "
                      "iterations. Run the suite's default profile to compare like for like.", ""]
    return out + ["| method | plugin, grad mode | paper train s | paper MSE | measured train s | measured MSE |",
                  "|---|---|---|---|---|---|", *lines, "",
                  "Only cases of the paper's plugin that trained the paper's number of iterations are compared "
                  "(medians over seeds); the paper's times come from another machine.", ""]


def _label(r: dict[str, Any]) -> str:
    return f"{r['plugin']} {r['method']} {r['grad_mode']}" + (f" s{r['seed']}" if r.get("seed") else "")


def _facets(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["method"], r["grad_mode"]) for r in records))


def _plugin_styles(records: list[dict[str, Any]]):
    plugins = list(dict.fromkeys(r["plugin"] for r in records))
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1))]
    return {p: (f"C{i % 10}", styles[i % len(styles)]) for i, p in enumerate(plugins)}


def figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Loss against iteration and against training time, and the fitted trajectories against the truth.

    One panel per method × grad mode (curves of the same setting across plugins lie on top of each
    other when the plugins agree, so each plugin gets its own colour and line style there), log
    axes where the data spans decades, legends outside the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    with_history = [r for r in records if r.get("history", {}).get("loss")]
    if not with_history:
        return []
    out.mkdir(exist_ok=True)
    facets, style = _facets(with_history), _plugin_styles(with_history)
    cols = min(3, len(facets))
    rows = -(-len(facets) // cols)
    paths = []
    for xkey, xlabel, name in (("iteration", "iteration", "loss_vs_iteration.png"),
                               ("time_s", "training time (s, timed region, log)", "loss_vs_time.png")):
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 2.2, 2.8 * rows), squeeze=False,
                                 sharey=True)
        for ax, (method, grad) in zip(axes.flat, facets):
            for r in (r for r in with_history if (r["method"], r["grad_mode"]) == (method, grad)):
                loss = r["history"]["loss"]
                x = np.arange(1, len(loss) + 1) if xkey == "iteration" else r["history"]["time_s"]
                colour, dash = style[r["plugin"]]
                ax.plot(x, loss, color=colour, linestyle=dash, lw=1.4,
                        label=r["plugin"] + (f" seed {r['seed']}" if r.get("seed") else ""))
            ax.set_title(f"{method}, {grad}", fontsize=9)
            ax.set_yscale("log")
            if xkey == "time_s":  # torch and JAX times differ by decades
                ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=7)
            # Minor ticks on log axes get labels by default: they crowd out the decades.
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        for ax in axes.flat[len(facets):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel(xlabel, fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("training loss (MSE)", fontsize=8)
        handles = {line.get_label(): line for ax in axes.flat for line in ax.get_lines()}
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5),
                   fontsize=8, title="plugin", title_fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(out / name)
    trajectories = _trajectory_figure(with_history, out, plt)
    return paths + ([trajectories] if trajectories else [])


def _trajectory_figure(records, out: Path, plt) -> Path | None:
    """Rows: method × grad mode; columns: the snapshot iterations; one curve per plugin over the truth."""
    with_snaps = [r for r in records if r.get("snapshots")]
    iters = sorted({int(k) for r in with_snaps for k in r["snapshots"]})
    if not with_snaps or not iters:  # a run without snapshots (training.snapshots = []) has none to draw
        return None
    facets, style = _facets(with_snaps), _plugin_styles(with_snaps)
    fig, axes = plt.subplots(len(facets), len(iters), figsize=(2.5 * len(iters) + 2.0, 2.3 * len(facets)),
                             squeeze=False, sharex=True, sharey=True)
    truth = _truth_for(with_snaps[0], make_problem)
    for i, (method, grad) in enumerate(facets):
        for j, k in enumerate(iters):
            ax = axes[i][j]
            if truth is not None:
                ax.plot(truth[:, 0], truth[:, 1], color="0.65", lw=2.2, label="truth")
            for r in with_snaps:
                traj = r["snapshots"].get(str(k)) if (r["method"], r["grad_mode"]) == (method, grad) else None
                if traj is not None:
                    traj = np.asarray(traj)
                    colour, dash = style[r["plugin"]]
                    ax.plot(traj[:, 0], traj[:, 1], color=colour, linestyle=dash, lw=1.1, label=r["plugin"])
            if truth is not None:  # frame the truth: a diverging fit must not shrink it
                pad = 0.15 * np.ptp(truth, axis=0)
                ax.set_xlim(truth[:, 0].min() - pad[0], truth[:, 0].max() + pad[0])
                ax.set_ylim(truth[:, 1].min() - pad[1], truth[:, 1].max() + pad[1])
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(f"iteration {k}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{method}, {grad}\ny₂", fontsize=8)
            if i == len(facets) - 1:
                ax.set_xlabel("y₁", fontsize=8)
    handles = {line.get_label(): line for ax in axes.flat for line in ax.get_lines()}
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    path = out / "trajectories.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _truth_for(record: dict[str, Any], make_problem) -> np.ndarray | None:
    cfg = record.get("problem_config")
    if not cfg:
        return None
    problem = make_problem({"problem": cfg})
    return problem.reference(problem.ts)
