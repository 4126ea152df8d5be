"""The ``train`` workload: fit an MLP vector field to a problem's trajectory, timing each iteration.

Per case: warm-up iterations on the trainer, a reset to the shared initial weights, then
the timed loop: forward and backward each timed between device syncs with GC off, and
peak RSS over the loop. At the snapshot iterations, untimed, the harness counts NFE in an
instrumented pass and records the model's full trajectory for the figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odebench.backends import Batch, SolveFailed, get_backend
from odebench.fairness import GATE_RTOL, isolated_fairness_gate
from odebench.measure import PeakRSS, gc_off, summarize, timed
from odebench.models import MLPSpec, mlp_weights
from odebench.problems import PROBLEMS
from odebench.protocol import SolverPlugin, Status

OPTIMIZERS = ("rmsprop", "adam", "sgd")
LOSSES = ("mse",)

SECTIONS = {
    "problem": {"name": (str, None), "params": (dict, None)},
    "model": {"kind": (str, ("mlp",)), "sizes": ([int], "pos"), "activation": (str, None),
              "weight_std": (float, "nonneg"), "bias": (float, None)},
    "training": {"optimizer": (str, OPTIMIZERS), "lr": (float, "pos"), "iterations": (int, "pos"),
                 "batch_size": (int, "pos"), "batch_time": (int, "pos"), "loss": (str, LOSSES),
                 "snapshots": ([int], "nonneg")},
    # Optimiser steps the fairness gate checks against the reference before timing (0: off).
    "measure": {"fairness_steps": (int, "nonneg")},
}
DEFAULTS = {
    "problem": {"params": {}},
    "model": {"kind": "mlp", "activation": "tanh", "weight_std": 0.1, "bias": 0.0},
    "training": {"optimizer": "rmsprop", "loss": "mse", "snapshots": []},
    "measure": {"fairness_steps": 3},
}
REQUIRED = ("problem", "model", "training")
AXES: dict = {}
#: record fields of this workload, in the order results.csv shows them.
COLUMNS = ["iterations_done", "repeats", "train_s", "train_s_iqr", "s_per_iter", "s_per_iter_iqr", "fwd_s",
           "bwd_s", "fused", "compile_s", "n_traces", "final_mse", "final_loss", "nfe_fwd", "nfe_bwd", "n_vjp",
           "nfe_native", "nfe_agree", "steps", "peak_rss_bytes", "rss_method", "saved_bytes", "gate", "gate_max_rel", "gate_reference_plugin"]


def validate(config: dict[str, Any], where: str) -> None:
    """Problem, model and training cross-checks (see :func:`odebench.suite.check_problem_and_model`)."""
    from odebench.suite import check_problem_and_model

    check_problem_and_model(config, where)


def make_problem(config: dict[str, Any]):
    """The suite's problem instance (lists in the TOML become tuples: problems are frozen)."""
    params = {k: _tupled(v) for k, v in config["problem"]["params"].items()}
    return PROBLEMS[config["problem"]["name"]](**params)


def _tupled(v: Any) -> Any:
    return tuple(_tupled(x) for x in v) if isinstance(v, list) else v


def make_batches(truth: np.ndarray, ts: np.ndarray, *, n: int, batch_size: int, batch_time: int,
                 seed: int, stream: int = 1) -> list[Batch]:
    """``n`` minibatches of random windows of ``batch_time`` consecutive observations.

    Every framework gets the same batches: they are drawn in numpy from ``(seed, stream)``.
    Each window starts at its own observation and is integrated over the first
    ``batch_time`` times from 0 (the system is autonomous), as in torchdiffeq's ode_demo.
    """
    if batch_time > len(ts) or batch_size > len(ts) - batch_time:
        raise ValueError(f"training.batch_size {batch_size} windows of batch_time {batch_time} do not "
                         f"fit in {len(ts)} observations")
    rng = np.random.default_rng([seed, stream])
    window_ts = ts[:batch_time] - ts[0]
    out = []
    for _ in range(n):
        starts = rng.choice(len(ts) - batch_time, size=batch_size, replace=False)
        ys = np.stack([truth[starts + i] for i in range(batch_time)])
        out.append(Batch(y0=truth[starts], ts=window_ts, ys=ys))
    return out


def run_case(case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin) -> dict[str, Any]:
    """Train one case and return its record fields (status, timings, errors, NFE, memory, history).

    Arguments:
        case: the case's fields (see :class:`odebench.suite.Case`).
        config: the suite's validated settings.
        plugin: an instance of the case's plugin.

    A solver failure or an exception ends training early and is returned as the status
    with what was measured up to then; it is never raised.
    """
    train, measure, model = config["training"], config["measure"], config["model"]
    problem = make_problem(config)
    ts = problem.ts
    truth = problem.reference(ts)
    spec = MLPSpec(tuple(model["sizes"]), model["activation"], model["weight_std"], model["bias"])
    weights = mlp_weights(spec, case["seed"])
    backend = get_backend(plugin.backend_framework())
    method = case["method"]
    # The problem's settings travel with the record so a report can redraw the truth from
    # records.jsonl alone.
    rec: dict[str, Any] = {"status": str(Status.OK), "message": "", "iterations_done": 0,
                           "problem_config": config["problem"]}
    t_case = time.perf_counter()
    try:
        trainer = backend.make_trainer(
            plugin, spec, weights, method=method,
            rtol=case["rtol"] if case["rtol"] is not None else 1e-7,
            atol=case["atol"] if case["atol"] is not None else 1e-9,
            grad_mode=case["grad_mode"], max_steps=measure["max_steps"], lr=train["lr"],
            optimizer=train["optimizer"], dtype=measure["dtype"], device=case["device"])
        batches = make_batches(truth, ts, n=train["iterations"], batch_size=train["batch_size"],
                               batch_time=train["batch_time"], seed=case["seed"])
        if measure["fairness_steps"]:
            gate = isolated_fairness_gate(plugin, spec, weights, batches[: measure["fairness_steps"]],
                                          method=method, grad_mode=case["grad_mode"], lr=train["lr"],
                                          optimizer=train["optimizer"], max_steps=measure["max_steps"])
            rec.update(gate.record())
            if gate.passed is False:
                rec.update(status=str(Status.UNFAIR),
                           message=f"losses {gate.losses} vs {gate.reference_plugin} {gate.reference} "
                                   f"(max relative difference {gate.max_rel:.2e} > {GATE_RTOL:g})")
                rec["case_wall_s"] = time.perf_counter() - t_case
                return rec
        warm = make_batches(truth, ts, n=measure["warmup"], batch_size=train["batch_size"],
                            batch_time=train["batch_time"], seed=case["seed"], stream=2)
        _warm_up(trainer, warm)
        repeats = []
        for r in range(measure["repeats"]):
            trainer.reset()
            result = _train_once(trainer, batches, train, problem, truth, record_history=(r == 0))
            repeats.append(result)
            if result["status"] != str(Status.OK):
                break
        rec.update(_combine(repeats))
        rec["compile_s"] = trainer.compile_s
        rec["n_traces"] = trainer.n_traces
        rec["fused"] = trainer.fused
    except SolveFailed as exc:  # during warm-up or setup
        rec.update(status=str(exc.status), message=exc.message)
    except MemoryError as exc:
        rec.update(status=str(Status.OOM), message=f"MemoryError: {exc}")
    except Exception as exc:  # noqa: BLE001 - any failure is a row, never an aborted run
        rec.update(status=str(Status.ERROR), message=f"{type(exc).__name__}: {exc}".splitlines()[0])
    rec["case_wall_s"] = time.perf_counter() - t_case
    return rec


def _warm_up(trainer, batches: list[Batch]) -> None:
    for batch in batches:
        b = trainer.to_batch(batch)
        trainer.backward(trainer.forward(b))
    trainer.sync()


def _train_once(trainer, batches: list[Batch], train: dict[str, Any], problem, truth: np.ndarray,
                record_history: bool) -> dict[str, Any]:
    snaps = set(train["snapshots"])
    device_batches = [trainer.to_batch(b) for b in batches]
    fwd, bwd, losses, clock = [], [], [], []
    passes, snapshots = [], {}
    status, message = str(Status.OK), ""
    elapsed = 0.0

    def snapshot(k: int, batch) -> None:
        if record_history:
            snapshots[str(k)] = trainer.predict(problem.ts, np.asarray(problem.y0)).tolist()
            passes.append((k, trainer.instrumented(batch)))

    with PeakRSS() as mem, gc_off():
        try:
            for k, batch in enumerate(device_batches):
                if k in snaps:
                    snapshot(k, batch)
                handle, tf = timed(lambda b=batch: trainer.forward(b), trainer.sync)
                _, tb = timed(lambda h=handle: trainer.backward(h), trainer.sync)
                fwd.append(tf)
                bwd.append(tb)
                elapsed += tf + tb
                losses.append(trainer.loss_value(handle))
                clock.append(elapsed)
            if len(device_batches) in snaps:
                snapshot(len(device_batches), device_batches[-1])
        except SolveFailed as exc:
            status, message = str(exc.status), exc.message
    iter_s = np.add(fwd, bwd)
    out: dict[str, Any] = {
        "status": status, "message": message, "iterations_done": len(losses),
        "train_s": float(iter_s.sum()), "iter_s": iter_s.tolist(),
        "fwd_s": summarize(fwd)["median"], "bwd_s": summarize(bwd)["median"],
        "peak_rss_bytes": mem.delta, "rss_method": mem.method,
    }
    if record_history:
        out["history"] = {"loss": losses, "time_s": clock}
        out["snapshots"] = snapshots
        out["passes"] = [{"iteration": k, "loss": p.loss, "nfe_fwd": p.nfe_fwd, "nfe_bwd": p.nfe_bwd,
                          "n_vjp": p.n_vjp, "saved_bytes": p.saved_bytes, "native": p.stats.to_dict()}
                         for k, p in passes]
    if status == str(Status.OK):
        pred = trainer.predict(problem.ts, np.asarray(problem.y0))
        out["final_mse"] = float(np.mean((pred - truth) ** 2))
        out["final_loss"] = losses[-1] if losses else None
    return out


def _combine(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from the repeats: timing medians and IQRs across them, the rest from the first."""
    first = repeats[0]
    rec = {k: v for k, v in first.items() if k not in ("iter_s",)}
    last = repeats[-1]
    rec["status"], rec["message"] = last["status"], last["message"]
    train_s = summarize([r["train_s"] for r in repeats if r["status"] == str(Status.OK)] or
                        [first["train_s"]])
    per_iter = summarize(np.concatenate([r["iter_s"] for r in repeats]))
    rec.update(repeats=len(repeats), train_s=train_s["median"], train_s_iqr=train_s["iqr"],
               s_per_iter=per_iter["median"], s_per_iter_iqr=per_iter["iqr"],
               peak_rss_bytes=max(r["peak_rss_bytes"] for r in repeats))
    passes = first.get("passes", [])
    if passes:
        rec["nfe_fwd"] = float(np.mean([p["nfe_fwd"] for p in passes]))
        rec["nfe_bwd"] = float(np.mean([p["nfe_bwd"] for p in passes]))
        vjps = [p["n_vjp"] for p in passes if p["n_vjp"] is not None]
        rec["n_vjp"] = float(np.mean(vjps)) if vjps else None
        saved = [p["saved_bytes"] for p in passes if p["saved_bytes"] is not None]
        rec["saved_bytes"] = max(saved) if saved else None
        native = [p["native"]["nfe"] for p in passes if p["native"]["nfe"] is not None]
        rec["nfe_native"] = float(np.mean(native)) if native else None
        steps = [p["native"]["n_steps"] for p in passes if p["native"]["n_steps"] is not None]
        rec["steps"] = float(np.mean(steps)) if steps else None
        # The library's own count must equal what the harness counted, pass by pass.
        bad = [p for p in passes if p["native"]["nfe"] is not None and p["native"]["nfe"] != p["nfe_fwd"]]
        rec["nfe_agree"] = None if not native else not bad
    return rec


# --------------------------------------------------------------------------- report
SUMMARY_NOTE = (
    "Median over seeds; s/iter is the median over iterations (IQR in brackets), forward and backward "
    "timed apart between device syncs; NFE-F / NFE-B are counted by the harness in untimed instrumented "
    "passes (mean over the snapshot iterations); peak RSS is the peak over the training loop minus the "
    "resident set before it; saved KB is what autograd keeps for backward (torch only). compile s is JAX "
    "compile time, or a compiled torch plugin's (torchode_compiled), never part of the timings.")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per plugin × method × grad mode × tolerance × device: medians over seeds, as display strings."""
    from odebench.report import fmt, groups

    rows = []
    for key, g, ok, status in groups(df, ["plugin", "method", "grad_mode", "rtol", "atol", "device"]):
        med = ok.median(numeric_only=True) if len(ok) else pd.Series(dtype=float)
        spi, spi_iqr = med.get("s_per_iter", np.nan), med.get("s_per_iter_iqr", np.nan)
        rows.append({
            "plugin": key[0], "method": key[1], "grad": key[2],
            "rtol": "grid" if key[3] == -1 else f"{key[3]:g}",
            "status": status,
            "train s": fmt(med.get("train_s"), ".2f"),
            "s/iter (IQR)": f"{fmt(spi * 1e3, '.2f')} ({fmt(spi_iqr * 1e3, '.2f')}) ms" if np.isfinite(spi) else "–",
            # A fused (jitted) step cannot be split: its whole time is in fwd_s.
            "fwd/bwd ms": "fused" if len(ok) and ok["fused"].fillna(False).astype(bool).all() else
                          (f"{fmt(med.get('fwd_s', np.nan) * 1e3, '.2f')}/"
                           f"{fmt(med.get('bwd_s', np.nan) * 1e3, '.2f')}") if len(ok) else "–",
            "compile s": fmt(med.get("compile_s"), ".2f"),
            "final MSE": fmt(med.get("final_mse"), ".4g"),
            "NFE-F": fmt(med.get("nfe_fwd"), ".1f"),
            "NFE-B": fmt(med.get("nfe_bwd"), ".1f"),
            "peak RSS MB": fmt(med.get("peak_rss_bytes", np.nan) / 2**20, ".1f"),
            "saved KB": fmt(med.get("saved_bytes", np.nan) / 2**10, ".1f"),
            "seeds": f"{len(ok)}/{len(g)}",
        })
    return pd.DataFrame(rows)


def sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """The paper's figures beside the measured ones, where the suite quotes a paper."""
    from odebench.report import fmt

    paper = config.get("paper", {})
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
                   f"{fmt(ts, '.2f')} | {fmt(mse, '.4g')} |")
    return out + ["", "Measured columns are medians over every ok plugin × grad mode of that method.", ""]




def _label(r: dict[str, Any]) -> str:
    return f"{r['plugin']} {r['method']} {r['grad_mode']}" + (f" s{r['seed']}" if r.get("seed") else "")


def figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Loss against iteration and wall time; fitted trajectories against the truth."""
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
        fig, ax = plt.subplots(figsize=(9, 5.5))
        # Colour names the method × grad mode, the line style the plugin, so twenty-odd
        # curves stay tellable apart.
        combos = list(dict.fromkeys((r["method"], r["grad_mode"]) for r in with_history))
        plugins = list(dict.fromkeys(r["plugin"] for r in with_history))
        styles = ["-", "--", ":", "-."]
        for r in with_history:
            loss = r["history"]["loss"]
            x = np.arange(1, len(loss) + 1) if xkey == "iteration" else r["history"]["time_s"]
            ax.plot(x, loss, label=_label(r), lw=1.2,
                    color=plt.cm.tab10(combos.index((r["method"], r["grad_mode"])) % 10),
                    linestyle=styles[plugins.index(r["plugin"]) % len(styles)])
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
    return problem.reference(problem.ts)
