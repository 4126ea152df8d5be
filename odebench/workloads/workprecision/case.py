"""One case of the ``workprecision`` workload (see :mod:`odebench.workloads.workprecision`)."""

from __future__ import annotations

import json
import time
from typing import Any

from odebench.failures import failure_fields
from odebench.measure import (
    PeakRSS,
    gc_off,
    loop_s_per_step,
    release_mmap_threshold,
    set_mmap_threshold,
    summarize,
    timed,
    trim_heap,
)
from odebench.protocol import SolveFailed, SolverPlugin, Status, UnsupportedError
from odebench.workloads.workprecision import problems
from odebench.workloads.workprecision.analysis import error_measures, relative_l2
from odebench.workloads.workprecision.drivers import Driver, make_driver, solve_kwargs
from odebench.workloads.workprecision.schema import ERRORS, NEURAL


def run_case(case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin) -> dict[str, Any]:
    """Measure one point of one work-precision curve and return its record fields.

    Arguments:
        case: the case's fields, with the workload's axes ``problem``, ``task`` and ``n_steps``
            (0 for an adaptive method, whose tolerances are the case's ``rtol``/``atol``).
        config: the suite's validated settings.
        plugin: an instance of the case's plugin.

    Returns:
        The record fields (:data:`~.schema.COLUMNS`). A failed solve or any exception is the
        record's status, never raised.
    """
    t_case = time.perf_counter()
    report = dict(config["report"], margin=config["reference"]["margin"])
    rec: dict[str, Any] = {"status": str(Status.OK), "message": "", "report_params": json.dumps(report, sort_keys=True)}
    try:
        task = case["task"]
        user = config.get("user_problem")
        why = unsupported_reason(case, config, plugin)
        if why:
            raise UnsupportedError(why)
        if user:
            _gate(user, plugin, case, rec)
        elif task == "gradient" and case["problem"] not in NEURAL:
            raise UnsupportedError(f"the gradient task differentiates a neural vector field; problem "
                                   f"{case['problem']!r} has none (valid: {', '.join(NEURAL)})")
        problem = problems.build(case["problem"], config, case["seed"])
        refs = problems.references(problem, config)
        rec.update(n_outputs=len(problem.ts), state_size=int(problem.y0.size), ref_kind=refs.kind)
        if refs.second is not None:
            dis = error_measures(refs.second, refs.ys)
            rec.update(ref_final=dis["final"], ref_l2=dis["l2"], ref_linf=dis["L∞"])
        kw = solve_kwargs(case, problem)
        rec["max_steps_used"] = kw["max_steps"]
        measure = config["measure"]
        if task == "solve":
            driver = make_driver(plugin, problem, kw, task="solve", threads=measure["threads"])
            rec.update(compile_s=driver.compile_s, compile_reused=getattr(driver, "compile_reused", None))
            _solve(driver, refs, measure, rec)
        else:
            _gradient(plugin, problem, refs, kw, case, config, rec)
    except Exception as exc:  # noqa: BLE001 - any failure is a row, never an aborted run
        rec.update(failure_fields(exc))
    rec["case_wall_s"] = time.perf_counter() - t_case
    return rec


def unsupported_reason(case: dict[str, Any], config: dict[str, Any], plugin: Any) -> str | None:
    """Why a case on a user's problem cannot run (None when it can, or for the built-in problems):
    its framework not provided, no shared weights for a gradient, a step grid that misses an output time.

    Arguments:
        case: the case's fields; config: the suite's settings; plugin: the plugin (class or instance).
    """
    user = config.get("user_problem")
    if not user:
        return None
    fw = plugin.framework if case["task"] == "solve" else plugin.backend_framework()
    if fw not in user["frameworks"]:
        return (f"problem {user['name']!r} provides no {fw} vector field (it provides "
                f"{', '.join(user['frameworks'])}); {plugin.name} {case['task']}s in {fw}")
    if case["task"] == "gradient" and not user["has_weights"]:
        return f"problem {user['name']!r} shares no weights(): the gradient task differentiates with respect to them"
    n, outputs = int(case.get("n_steps") or 0), user["n_outputs"]
    if n and not (user["uniform"] and n % (outputs - 1) == 0):
        return (f"n_steps {n} does not put a step on each of problem {user['name']!r}'s {outputs} output times "
                f"(equally spaced ones, and n_steps a multiple of {outputs - 1})")
    return None


def _gate(user: dict[str, Any], plugin: SolverPlugin, case: dict[str, Any], rec: dict[str, Any]) -> None:
    """The problem's fairness gate in the record.

    Raises:
        SolveFailed: ``unfair`` when the problem's frameworks failed the gate and the case computes
            in another than the gate's reference framework.
    """
    gate = user["gate"]
    rec.update(gate={None: "skipped", True: "pass", False: "fail"}[gate["passed"]], gate_max_rel=gate["max_rel"],
               gate_note=gate["note"])
    fw = plugin.framework if case["task"] == "solve" else plugin.backend_framework()
    if gate["passed"] is False and fw != gate["reference"]:
        raise SolveFailed(Status.UNFAIR, gate["note"])


def _repeat(fn, driver: Driver, measure: dict[str, Any]) -> tuple[Any, list[float]]:
    """``measure.repeats`` timed calls of ``fn`` with the GC off, fewer when they have taken
    ``measure.repeat_budget_s`` (> 0) in all (at least one always runs); the last result and the
    seconds of each."""
    out, times = None, []
    budget = measure["repeat_budget_s"]
    with gc_off():
        for _ in range(measure["repeats"]):
            out, dt = timed(fn, driver.sync)
            times.append(dt)
            if budget and sum(times) >= budget:
                break  # a slow point (an implicit solve at rtol 1e-10) has its repeats cut, not its run
    return out, times


def _errors(rec: dict[str, Any], ys, refs: problems.References) -> None:
    errs = error_measures(ys, refs.ys)
    if errs["final"] == float("inf"):
        # The plugin called it a success, but the numbers say otherwise.
        raise SolveFailed(Status.NONFINITE, "the solution has non-finite values at the output times")
    rec.update({col: errs[name] for name, col in ERRORS.items()})


def _steps(rec: dict[str, Any], stats) -> None:
    rec.update(steps=stats.n_steps, steps_accepted=stats.n_accepted, steps_rejected=stats.n_rejected,
               nfe_native=stats.nfe)


def _solve(driver: Driver, refs: problems.References, measure: dict[str, Any], rec: dict[str, Any]) -> None:
    """The forward solve: status, time, errors, NFE, steps, and the loop time per step."""
    handle = driver.solve()  # the first call: its status, and the first warm-up
    for _ in range(measure["warmup"] - 1):
        driver.solve()
    handle, times = _repeat(driver.solve, driver, measure)
    s = summarize(times)
    rec.update(time_s=s["median"], time_s_iqr=s["iqr"], time_s_min=min(times), repeats=len(times))
    _errors(rec, driver.trajectory(handle), refs)
    nfe, stats, states = driver.instrumented_solve()
    rec["nfe_fwd"] = nfe
    _steps(rec, stats)
    # The vector field alone, at the very states the solve evaluated it, one call after another:
    # what is left of the solve's time is the solver's own loop (steps, controller, output).
    replay = driver.field_replay(states)
    replay()
    _, field = _repeat(replay, driver, measure)
    rec["field_s"] = min(field)
    if stats.n_steps:
        # Minima of both: the least disturbed run of each on a shared machine.
        rec["loop_s_per_step"] = loop_s_per_step(rec["time_s_min"], rec["field_s"], stats.n_steps)


def _gradient(plugin: SolverPlugin, problem: problems.Problem, refs: problems.References, kw: dict[str, Any],
              case: dict[str, Any], config: dict[str, Any], rec: dict[str, Any]) -> None:
    """Forward + backward: status, time, peak memory, gradient error, NFE-F/B, saved bytes."""
    from odebench.workloads.workprecision.gradref import reference_gradient

    measure = config["measure"]
    targets = problem.parts.targets
    if targets is None:
        targets = problems.loss_targets(problem, case["seed"], config["gradient"]["target_scale"])
    ref = reference_gradient(problem, targets, config, case["seed"])
    rec.update(grad_ref_kind=ref.kind, grad_ref_xcheck=ref.xcheck, grad_ref_fd=ref.fd)
    # Pinned before the case allocates: freed buffers then leave the process, and the resident
    # set follows what is live (see odebench.measure.set_mmap_threshold).
    pinned = set_mmap_threshold(config["memory"]["mmap_threshold"])
    driver = make_driver(plugin, problem, kw, task="gradient", targets=targets, threads=measure["threads"])
    rec.update(compile_s=driver.compile_s, compile_reused=getattr(driver, "compile_reused", None))
    handle = driver.gradient()
    for _ in range(measure["warmup"] - 1):
        driver.gradient()
    trim_heap()
    with gc_off(), PeakRSS() as mem:
        peak_handle = driver.gradient()
        del peak_handle
    rec.update(peak_bytes=mem.delta, peak_source=f"rss ({mem.method})")
    if pinned:
        release_mmap_threshold()
        driver.gradient()
    handle, times = _repeat(driver.gradient, driver, measure)
    s = summarize(times)
    rec.update(time_s=s["median"], time_s_iqr=s["iqr"], time_s_min=min(times), repeats=len(times))
    loss, grad, ys = driver.flat_gradient(handle)
    n = ref.n_params
    rec.update(loss=loss, grad_err=relative_l2(grad, ref.grad), grad_err_params=relative_l2(grad[:n], ref.grad[:n]),
               grad_err_y0=relative_l2(grad[n:], ref.grad[n:]))
    _errors(rec, ys, refs)
    inst = driver.instrumented_gradient()
    rec.update(nfe_fwd=inst.nfe_fwd, nfe_bwd=inst.nfe_bwd, n_vjp=inst.n_vjp, saved_bytes=inst.saved_bytes)
    _steps(rec, inst.stats)
