"""Steady-state time of one spiral training iteration through odebench's trainers, plugins side by
side in one process (not a test).

Spiral-suite shape: MLP 2→50→2 (tanh), batch 16, 10 output times, float32, RMSprop, one thread.
An iteration is what the suite times: the solve, the MSE loss, the gradient and the optimiser
update, device work synchronised. Each trainer is built (and a compiling plugin compiled, its
seconds printed apart) first; then the plugins take turns in rounds, so that every one sees the
same machine state. Run::

    python tests/benchmarks/training_iteration.py [--repeats 400] [--cpu]
        [--cases torchdiffeq:rk4:backprop,torch_custom_compiled:rk4:backprop,diffrax:rk4:backprop,...]

The default cases give the README's compiled ratios: torchdiffeq and jitted diffrax against
torch_custom_compiled, rk4 with backprop and with the adjoint.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

DEFAULT_CASES = ",".join(f"{p}:rk4:{g}" for g in ("backprop", "adjoint")
                         for p in ("torchdiffeq", "torch_custom", "torch_custom_compiled", "diffrax"))


def _parse(cases: str) -> list[tuple[str, str, str]]:
    out = []
    for item in cases.split(","):
        parts = item.split(":")
        if len(parts) != 3:
            raise SystemExit(f"bad case {item!r}: expected plugin:method:grad_mode")
        out.append(tuple(parts))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400, help="timed iterations per case (default 400)")
    parser.add_argument("--rounds", type=int, default=20, help="turns the cases take (default 20)")
    parser.add_argument("--cases", default=DEFAULT_CASES, help="plugin:method:grad_mode, comma-separated")
    parser.add_argument("--cpu", action="store_true", help="time the process's CPU time instead of wall time")
    args = parser.parse_args(argv)
    cases = _parse(args.cases)
    # one thread everywhere, before torch or JAX starts its pools
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    import torch

    torch.set_num_threads(1)
    from odebench.backends.torch import CACHE_ENV, inductor_cache

    # compiles cold, as in a suite's case, unless a shared inductor cache is named
    cache = inductor_cache(os.environ.get(CACHE_ENV) or None)
    try:
        _measure(args, cases)
    finally:
        print(f"inductor cache: {cache.record()['torch_cache']}")
        cache.close()


def _measure(args, cases: list[tuple[str, str, str]]) -> None:
    """Build each case's trainer (compiling where its plugin does), then time the cases in turns."""
    import numpy as np

    from odebench import registry
    from odebench.backends import get_backend
    from odebench.models import MLPSpec, mlp_weights
    from odebench.problems import PROBLEMS
    from odebench.workloads.train.case import make_batches

    spec = MLPSpec((2, 50, 2), "tanh", 0.1, 0.0)
    problem = PROBLEMS["linear_spiral"](t1=25.0, n_points=500)
    truth = problem.reference(problem.ts)
    batches = make_batches(truth, problem.ts, n=8, batch_size=16, batch_time=10, seed=0)
    runs = []
    for name, method, grad in cases:
        plugin = registry.get_plugin(name)
        why = plugin.unsupported_reason(method, grad, "cpu")
        if why:
            print(f"{name} {method} {grad}: skipped ({why})")
            continue
        trainer = get_backend(plugin.backend_framework()).make_trainer(
            plugin, spec, mlp_weights(spec, 0), method=method, rtol=1e-7, atol=1e-9, grad_mode=grad,
            max_steps=100_000, lr=1e-3, optimizer="rmsprop", dtype="float32", device="cpu")
        tbs = [trainer.to_batch(b) for b in batches]  # a compiling torch plugin compiles here
        started = time.perf_counter()
        for tb in tbs[:3]:  # warm-up: a JAX trainer compiles its step on the first
            trainer.backward(trainer.forward(tb))
        trainer.sync()
        print(f"{name} {method} {grad}: ready (compile {trainer.compile_s or 0.0:.1f} s, "
              f"warm-up {time.perf_counter() - started:.1f} s)", flush=True)
        runs.append(((name, method, grad), trainer, tbs, trainer.compile_s or 0.0))

    clock = time.process_time_ns if args.cpu else time.perf_counter_ns
    times: dict[tuple, list[int]] = {key: [] for key, *_ in runs}
    per_round = max(1, args.repeats // args.rounds)
    gc.collect()
    gc.disable()
    try:
        for r in range(args.rounds):
            for key, trainer, tbs, *_ in runs:
                for i in range(per_round):
                    tb = tbs[(r * per_round + i) % len(tbs)]
                    t0 = clock()
                    trainer.backward(trainer.forward(tb))
                    trainer.sync()
                    times[key].append(clock() - t0)
    finally:
        gc.enable()
    print(f"per-iteration {'process CPU' if args.cpu else 'wall'} time over {per_round * args.rounds} "
          f"iterations in {args.rounds} rounds, ms")
    print(f"{'plugin':24} {'method':7} {'grad':9} {'median':>8} {'IQR':>7} {'compile s':>10}")
    medians = {}
    for key, _, _, compile_s in runs:
        arr = np.array(times[key]) / 1e6
        q1, med, q3 = np.percentile(arr, [25, 50, 75])
        medians[key] = med
        print(f"{key[0]:24} {key[1]:7} {key[2]:9} {med:8.3f} {q3 - q1:7.3f} {compile_s:10.1f}")
    compiled = [k for k in medians if k[0] == "torch_custom_compiled"]
    for key in compiled:
        for other in ("torchdiffeq", "diffrax", "torch_custom"):
            ref = (other, key[1], key[2])
            if ref in medians:
                print(f"{other} / torch_custom_compiled, {key[1]} {key[2]}: {medians[ref] / medians[key]:.2f}x")


if __name__ == "__main__":
    main()
