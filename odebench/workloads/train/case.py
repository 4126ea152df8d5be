"""One case of the ``train`` workload: fit an MLP vector field to a problem's trajectory.

Per case: warm-up iterations on the trainer, a reset to the shared initial weights, then
the timed loop: forward and backward each timed between device syncs with GC off, and
peak RSS over the loop. At the snapshot iterations, untimed, the harness counts NFE in an
instrumented pass and records the model's full trajectory for the figures.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from odebench.backends import Batch, get_backend
from odebench.failures import failure_fields
from odebench.fairness import GATE_RTOL, GateResult, fairness_gate, isolated_fairness_gate
from odebench.measure import PeakRSS, Phases, floor_fields, gc_off, summarize, timed
from odebench.models import MLPSpec, mlp_weights
from odebench.problems import PROBLEMS
from odebench.protocol import SolveFailed, SolverPlugin, Status
from odebench.swap import Solver, mlp_trajectory, reference_solver, trained_solver


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
    method = case["method"]
    # The problem's settings travel with the record so a report can redraw the truth from
    # records.jsonl alone.
    rec: dict[str, Any] = {"status": str(Status.OK), "message": "", "iterations_done": 0,
                           "problem_config": config["problem"]}
    t_case = time.perf_counter()
    # Where the case's wall time goes besides the timed iterations (the report's time split).
    phases = Phases()
    try:
        phases.start("setup")
        problem = make_problem(config)
        ts = problem.ts
        truth = problem.reference(ts)
        spec = MLPSpec(tuple(model["sizes"]), model["activation"], model["weight_std"], model["bias"])
        weights = mlp_weights(spec, case["seed"])
        backend = get_backend(plugin.backend_framework())
        trainer = backend.make_trainer(
            plugin, spec, weights, method=method,
            rtol=case["rtol"] if case["rtol"] is not None else 1e-7,
            atol=case["atol"] if case["atol"] is not None else 1e-9,
            grad_mode=case["grad_mode"], max_steps=measure["max_steps"], lr=train["lr"],
            optimizer=train["optimizer"], dtype=measure["dtype"], device=case["device"])
        batches = make_batches(truth, ts, n=train["iterations"], batch_size=train["batch_size"],
                               batch_time=train["batch_time"], seed=case["seed"])
        phases.stop()
        if measure["fairness_steps"]:
            with phases("gate"):
                gate = case_gate(case, config, plugin, spec, weights, batches)
            if "gate_s" in case:  # gated in the plugin's shared gate process: its share of that wall time
                phases.seconds["gate"] = case["gate_s"]
                rec["gate_shared"] = True
            rec.update(gate.record())
            if gate.passed is False:
                rec.update(status=str(Status.UNFAIR),
                           message=f"losses {gate.losses} vs {gate.reference_plugin} {gate.reference} "
                                   f"(max relative difference {gate.max_rel:.2e} > {GATE_RTOL:g})")
                rec.update(phases.record(), case_wall_s=time.perf_counter() - t_case)
                return rec
        warm = make_batches(truth, ts, n=measure["warmup"], batch_size=train["batch_size"],
                            batch_time=train["batch_time"], seed=case["seed"], stream=2)
        with phases("warmup"):  # a compiling plugin compiles here (to_batch): compile_s is taken out below
            _warm_up(trainer, warm)
        compiled_in_warmup = trainer.compile_s or 0.0
        repeats = []
        with phases("repeats"):  # the timed iterations and the untimed snapshots between them
            for r in range(measure["repeats"]):
                trainer.reset()
                result = _train_once(trainer, batches, train, problem, truth, record_history=(r == 0))
                repeats.append(result)
                if result["status"] != str(Status.OK):
                    break
        rec.update(_combine(repeats))
        # The time split (each part apart, so they add up to no more than the case's wall time):
        # the timed iterations of every repeat, and the rest of the repeats' wall time (snapshots,
        # instrumented passes) less any compiling done there.
        rec["measured_s"] = float(sum(r["train_s"] for r in repeats))
        compiled_later = (trainer.compile_s or 0.0) - compiled_in_warmup
        rec["untimed_s"] = max(phases.seconds.pop("repeats") - rec["measured_s"] - compiled_later, 0.0)
        phases.seconds["warmup"] = max(phases.seconds["warmup"] - compiled_in_warmup, 0.0)
        if rec["status"] == str(Status.OK):
            start = time.perf_counter()
            rec.update(floor_fields(trainer.floor(trainer.to_batch(batches[0])), trainer.sync, rec["s_per_iter"]))
            rec["untimed_s"] += time.perf_counter() - start
        rec["compile_s"] = trainer.compile_s
        # What a user waits for the whole training run: compiling (JAX) plus the timed iterations.
        rec["end_to_end_s"] = rec["train_s"] + (trainer.compile_s or 0.0)
        rec["n_traces"] = trainer.n_traces
        rec["fused"] = trainer.fused
        if rec["status"] == str(Status.OK) and config["swap"]["enabled"]:
            with phases("swap"):
                rec.update(solver_swap(trainer, plugin, case, config, spec, problem, truth))
    except Exception as exc:  # noqa: BLE001 - any failure is a row, never an aborted run
        rec.update(failure_fields(exc))
    rec.update(phases.record())
    rec["case_wall_s"] = time.perf_counter() - t_case
    return rec


def case_gate(case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin, spec: MLPSpec | None = None,
              weights=None, batches: list[Batch] | None = None, *, isolate: bool = True) -> GateResult:
    """The fairness gate of one training case, or its result computed before the case's process started.

    Arguments:
        case: the case's fields; ``case["gate_result"]``, when there, is the gate's record
            (:meth:`GateResult.record`) from the runner's gate process for the case's plugin, which
            gated every case of that plugin in one interpreter before any of them was timed.
        config, plugin: the suite's settings and the case's plugin.
        spec, weights, batches: the model, its initial weights and the training batches (built
            from ``config`` and the case when None).
        isolate: run a JAX plugin's gate in a child process (its float64 switch is process-wide);
            False in a process that times nothing (the runner's gate process).
    """
    if case.get("gate_result") is not None:
        return GateResult.from_record(case["gate_result"])
    train, measure, model = config["training"], config["measure"], config["model"]
    if spec is None:
        problem = make_problem(config)
        spec = MLPSpec(tuple(model["sizes"]), model["activation"], model["weight_std"], model["bias"])
        weights = mlp_weights(spec, case["seed"])
        batches = make_batches(problem.reference(problem.ts), problem.ts, n=measure["fairness_steps"],
                               batch_size=train["batch_size"], batch_time=train["batch_time"], seed=case["seed"])
    gate = isolated_fairness_gate if isolate else fairness_gate
    return gate(plugin, spec, weights, batches[: measure["fairness_steps"]], method=case["method"],
                grad_mode=case["grad_mode"], lr=train["lr"], optimizer=train["optimizer"],
                max_steps=measure["max_steps"])


def solver_swap(trainer, plugin: SolverPlugin, case: dict[str, Any], config: dict[str, Any], spec: MLPSpec,
                problem, truth: np.ndarray, reference: Solver | None = None) -> dict[str, Any]:
    """The solver-swap check of a trained model (:mod:`odebench.swap`), untimed, after training.

    The trained parameters are solved over the problem's times twice, with the solver they
    were trained with and with the reference, through the same code, so the difference is
    the swap's effect alone (exactly 0 when the two solvers are the same).

    Arguments:
        trainer: the trained trainer (its current parameters are evaluated).
        plugin, case, config: the case's plugin, fields and suite settings.
        spec: the model's MLP spec.
        problem, truth: the problem and its reference trajectory at ``problem.ts``.
        reference: the solver to swap in; None: the suite's ``[swap]`` reference.

    Returns:
        ``swap_solver``, ``swap_mse`` (final MSE with the reference) and ``swap_mse_delta``
        (that minus the final MSE with the trained solver); on a failed evaluation the MSEs
        are None and ``swap_message`` says why. Never raises.
    """
    measure = config["measure"]
    trained = trained_solver(plugin, case, measure["dtype"])
    out: dict[str, Any] = {"swap_solver": "", "swap_mse": None, "swap_mse_delta": None}
    try:
        reference = reference or reference_solver(plugin, config["swap"], case["device"])
        out["swap_solver"] = reference.label()
        params = trainer.parameters_numpy()
        y0 = np.asarray(problem.y0)
        kw = dict(max_steps=measure["max_steps"], grad_mode=case["grad_mode"], device=case["device"])
        base = final_mse(mlp_trajectory(spec, params, problem.ts, y0, trained, **kw), truth)
        swapped = final_mse(mlp_trajectory(spec, params, problem.ts, y0, reference, **kw), truth)
        out.update(swap_mse=swapped, swap_mse_delta=swapped - base)
    except Exception as exc:  # noqa: BLE001 - a failed check is a note on a case that trained fine
        failed = failure_fields(exc)
        out["swap_message"] = f"{failed['status']}: {failed['message']}"
    return out


def _warm_up(trainer, batches: list[Batch]) -> None:
    for batch in batches:
        b = trainer.to_batch(batch)
        trainer.backward(trainer.forward(b))
    trainer.sync()


def final_mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared error of the model's full trajectory against the truth, over every time and component.

    Arguments:
        pred: the model's trajectory at the problem's times, shape ``(T, d)``.
        truth: the problem's reference trajectory at the same times, shape ``(T, d)``.

    Raises:
        ValueError: when the shapes differ (a broadcast would silently average something else).
    """
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction of shape {pred.shape} against a truth of shape {truth.shape}")
    return float(np.mean((pred - truth) ** 2))


def _train_once(trainer, batches: list[Batch], train: dict[str, Any], problem, truth: np.ndarray,
                record_history: bool) -> dict[str, Any]:
    """One training run from the trainer's current (initial) parameters.

    The peak-RSS region covers the training iterations only: it is closed before each untimed
    snapshot (prediction, instrumented pass, and their JIT compiles on JAX) and reopened after,
    and the figure is the largest segment's peak over the resident set at that segment's start.
    Without snapshots one instrumented pass runs after training, so NFE is always counted.
    """
    snaps = set(train["snapshots"])
    device_batches = [trainer.to_batch(b) for b in batches]
    fwd, bwd, losses, clock = [], [], [], []
    passes, snapshots = [], {}
    status, message = str(Status.OK), ""
    elapsed = 0.0
    segments: list[PeakRSS] = []

    def snapshot(k: int, batch) -> None:
        if record_history:
            snapshots[str(k)] = trainer.predict(problem.ts, np.asarray(problem.y0)).tolist()
            passes.append((k, trainer.instrumented(batch)))

    with gc_off():
        region = PeakRSS().__enter__()
        try:
            for k, batch in enumerate(device_batches):
                if k in snaps:
                    region.__exit__(None, None, None)
                    segments.append(region)
                    snapshot(k, batch)
                    region = PeakRSS().__enter__()
                handle, tf = timed(lambda b=batch: trainer.forward(b), trainer.sync)
                _, tb = timed(lambda h=handle: trainer.backward(h), trainer.sync)
                fwd.append(tf)
                bwd.append(tb)
                elapsed += tf + tb
                losses.append(trainer.loss_value(handle))
                clock.append(elapsed)
            region.__exit__(None, None, None)
            segments.append(region)
            if len(device_batches) in snaps:
                snapshot(len(device_batches), device_batches[-1])
            elif record_history and not passes and device_batches:
                passes.append((len(device_batches), trainer.instrumented(device_batches[-1])))
        except SolveFailed as exc:
            region.__exit__(None, None, None)
            segments.append(region)
            status, message = str(exc.status), exc.message
    iter_s = np.add(fwd, bwd)
    deltas = [seg.delta for seg in segments]
    out: dict[str, Any] = {
        "status": status, "message": message, "iterations_done": len(losses),
        "train_s": float(iter_s.sum()), "iter_s": iter_s.tolist(),
        "fwd_s": summarize(fwd)["median"], "bwd_s": summarize(bwd)["median"],
        "peak_rss_bytes": max(deltas) if deltas and all(np.isfinite(deltas)) else float("nan"),
        "rss_method": segments[0].method if segments else "",
    }
    if record_history:
        out["history"] = {"loss": losses, "time_s": clock}
        out["snapshots"] = snapshots
        out["passes"] = [{"iteration": k, "loss": p.loss, "nfe_fwd": p.nfe_fwd, "nfe_bwd": p.nfe_bwd,
                          "n_vjp": p.n_vjp, "saved_bytes": p.saved_bytes, "native": p.stats.to_dict()}
                         for k, p in passes]
    if status == str(Status.OK):
        # A snapshot at the last iteration already predicted with the final parameters: the same call.
        last = snapshots.get(str(len(device_batches)))
        pred = np.asarray(last) if last is not None else trainer.predict(problem.ts, np.asarray(problem.y0))
        out["final_mse"] = final_mse(pred, truth)
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
    # Peak memory varies run to run like a timing (allocator state, JIT caches): median and IQR.
    peak = summarize([r["peak_rss_bytes"] for r in repeats])
    rec.update(repeats=len(repeats), train_s=train_s["median"], train_s_iqr=train_s["iqr"],
               s_per_iter=per_iter["median"], s_per_iter_iqr=per_iter["iqr"],
               peak_rss_bytes=peak["median"], peak_rss_iqr=peak["iqr"])
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


