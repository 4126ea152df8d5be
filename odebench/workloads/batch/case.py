"""One case of the ``batch`` workload (see :mod:`odebench.workloads.batch` for the procedure)."""

from __future__ import annotations

import time
from typing import Any

from odebench.failures import failure_fields
from odebench.measure import gc_off, timed
from odebench.protocol import SolverPlugin, Status
from odebench.workloads.batch import analysis, problem
from odebench.workloads.batch.drivers import MODES, make_driver


def _measure_mode(driver: Any, mode: str, ref: Any, measure: dict[str, Any], stepping: str) -> analysis.ModeResult:
    """Compile, count, warm up and time one mode; its per-sample figures.

    Raises:
        odebench.protocol.SolveFailed: when a solve of the mode does not end ok.
    """
    compile_s = driver.prepare(mode)
    solved = driver.instrumented(mode)
    if mode == "joint":
        only = solved[0]
        steps = analysis.per_sample_steps(only.stats.n_steps, only.stats.extra, ref.shape[1], stepping)
        errors = analysis.sample_errors(only.ys, ref)
    else:
        steps = [s for one in solved for s in analysis.per_sample_steps(one.stats.n_steps, one.stats.extra, 1, stepping)]
        errors = [float(analysis.sample_errors(one.ys, ref[:, i:i + 1])[0]) for i, one in enumerate(solved)]
    for _ in range(measure["warmup"]):
        driver.check(mode, driver.run(mode))
    times = []
    with gc_off():
        for _ in range(measure["repeats"]):
            out, seconds = timed(lambda: driver.run(mode), driver.sync)
            times.append(seconds)
    driver.check(mode, out)  # outside the timer: reading a status may wait for the device
    return analysis.ModeResult(steps=steps, nfe=[s.nfe for s in solved], nfe_native=[s.stats.nfe for s in solved],
                               errors=[float(e) for e in errors], times=times, compile_s=compile_s)


def run_case(case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin) -> dict[str, Any]:
    """Solve one batch jointly and sample by sample through one plugin, and return the record fields.

    Arguments:
        case: the case's fields, with the workload's axes ``problem``, ``batch`` and ``spread``.
        config: the suite's validated settings.
        plugin: an instance of the case's plugin.

    Returns:
        ``status``, ``message``, the plugin's declared ``batch_stepping``, and the
        columns of :func:`odebench.workloads.batch.analysis.columns`. A solver failure or an
        exception is the record's status, never raised.
    """
    rec: dict[str, Any] = {"status": str(Status.OK), "message": "", "batch_stepping": plugin.batch_stepping}
    t_case = time.perf_counter()
    try:
        batch = problem.build(case["problem"], case["batch"], case["spread"], config, case["seed"])
        ref = problem.reference(batch, config["reference"]["rtol"], config["reference"]["atol"])
        driver = make_driver(plugin, batch, case, config)
        modes = {m: _measure_mode(driver, m, ref, config["measure"], plugin.batch_stepping) for m in MODES}
        rec.update(analysis.columns(modes["joint"], modes["solo"]))
        rec["per_sample"] = analysis.per_sample_json(batch.params, modes["joint"], modes["solo"])
    except Exception as exc:  # noqa: BLE001 - any failure is a row, never an aborted run
        rec.update(failure_fields(exc))
    rec["case_wall_s"] = time.perf_counter() - t_case
    return rec
