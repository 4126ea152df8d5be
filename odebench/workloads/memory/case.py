"""One case of the ``memory`` workload (see :mod:`odebench.workloads.memory` for the procedure)."""

from __future__ import annotations

import json
import time
from typing import Any

from odebench.failures import failure_fields
from odebench.measure import (
    PeakRSS,
    floor_fields,
    gc_off,
    release_mmap_threshold,
    set_mmap_threshold,
    summarize,
    timed,
    trim_heap,
)
from odebench.protocol import SolverPlugin, Status
from odebench.workloads.memory.drivers import make_driver, state_shape


def run_case(case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin) -> dict[str, Any]:
    """Measure one depth of one plugin × grad mode × block × device and return its record fields.

    Arguments:
        case: the case's fields, with the workload's axes ``block`` and ``n_steps``.
        config: the suite's validated settings.
        plugin: an instance of the case's plugin.

    A solver failure or an exception is returned as the record's status, never raised.
    """
    measure = config["measure"]
    threshold = config["memory"]["mmap_threshold"]
    rec: dict[str, Any] = {"status": str(Status.OK), "message": "",
                           "class_params": json.dumps(config["classes"], sort_keys=True)}
    t_case = time.perf_counter()
    try:
        # Pinned before anything big is allocated (see set_mmap_threshold); released for timing.
        rec["mmap_threshold"] = threshold if set_mmap_threshold(threshold) else None
        driver = make_driver(plugin, case, config)
        rec.update(batch=state_shape(case["block"], config)[0], state_bytes=driver.state_bytes,
                   n_params=driver.n_params, compile_s=driver.compile_s)
        for _ in range(measure["warmup"]):
            driver.backward(driver.forward())
        driver.sync()
        # The memory passes: forward + backward, peak over each minus what was in use before.
        passes = []
        for _ in range(config["memory"]["passes"]):
            trim_heap()
            driver.gpu_reset()
            with gc_off(), PeakRSS() as mem:
                handle = driver.forward()
                grads = driver.backward(handle)
                driver.sync()
                del handle, grads
            passes.append((mem.delta, driver.gpu_peak()))
        # The smallest peak: a one-off allocation (a new Python arena, a lazily built kernel)
        # lands in one pass only.
        rss, gpu = min(p[0] for p in passes), passes[0][1]
        if gpu is not None:
            gpu = min(p[1] for p in passes)
        rec.update(peak_rss_bytes=rss, rss_method=mem.method, peak_gpu_bytes=gpu,
                   peak_passes=json.dumps([p[1] if gpu is not None else p[0] for p in passes]))
        rec.update(peak_bytes=gpu if gpu is not None else rss,
                   peak_source=driver.gpu_source if gpu is not None else f"rss ({mem.method})")
        # The timed passes, with the allocator back in its steady state (one untimed pass first).
        if rec["mmap_threshold"] is not None:
            release_mmap_threshold()
            driver.backward(driver.forward())
            driver.sync()
        fwd, bwd = [], []
        with gc_off():
            for _ in range(measure["repeats"]):
                handle, tf = timed(driver.forward, driver.sync)
                grads, tb = timed(lambda h=handle: driver.backward(h), driver.sync)
                fwd.append(tf)
                bwd.append(tb)
                del handle, grads
        f, b = summarize(fwd), summarize(bwd)
        rec.update(repeats=len(fwd), fwd_s=f["median"], fwd_s_iqr=f["iqr"], bwd_s=b["median"],
                   bwd_s_iqr=b["iqr"])
        inst = driver.instrumented()
        stats = inst.stats
        rec.update(loss=inst.loss, nfe_fwd=inst.nfe_fwd, nfe_bwd=inst.nfe_bwd, n_vjp=inst.n_vjp,
                   saved_bytes=inst.saved_bytes,
                   saved_source=driver.saved_source if inst.saved_bytes is not None else None,
                   nfe_native=stats.nfe, steps=stats.n_steps,
                   nfe_agree=None if stats.nfe is None else stats.nfe == inst.nfe_fwd)
        # The eager floor beside the timed passes: the field's evaluations and their backward alone.
        rec.update(floor_fields(driver.floor(), driver.sync, f["median"] + b["median"]))
    except Exception as exc:  # noqa: BLE001 - any failure is a row, never an aborted run
        rec.update(failure_fields(exc))
    rec["case_wall_s"] = time.perf_counter() - t_case
    return rec
