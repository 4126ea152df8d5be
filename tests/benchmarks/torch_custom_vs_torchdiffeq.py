"""Per-iteration time of torch_custom against torchdiffeq (not a test).

Spiral-suite shape: MLP 2→50→2 (tanh), batch 16, 10 output times, float32, one thread;
an iteration is solve + MSE loss + backward. Run::

    python tests/benchmarks/torch_custom_vs_torchdiffeq.py [--repeats 200] [--cpu] [--compiled]

It also times torch_custom's rk4 against its eager floor (:func:`odebench.backends.torch.floor_replay`:
the field's evaluations of one iteration and their backward alone), and with ``--compiled``
torch_custom_compiled against torchdiffeq, backprop and adjoint (compiling first: a minute or two
on 2 cores). tests/benchmarks/training_iteration.py times whole training iterations of these and
jitted diffrax side by side.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch


def _mlp():
    torch.manual_seed(0)

    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2))
            for m in self.net:
                if isinstance(m, torch.nn.Linear):
                    torch.nn.init.normal_(m.weight, std=0.1)
                    torch.nn.init.zeros_(m.bias)

        def forward(self, t, y):
            return self.net(y)

    return F()


def _time_pair(fa, fb, repeats: int, rounds: int = 10, clock=time.perf_counter_ns):
    """Per-iteration wall times (ms) of ``fa`` and ``fb``, alternating in rounds so both see
    the same machine load; returns ``(median_a, min_a, median_b, min_b)``."""
    for _ in range(5):
        fa()
        fb()
    ta, tb = [], []
    per_round = max(1, repeats // rounds)
    gc.disable()
    try:
        for _ in range(rounds):
            for fn, acc in ((fa, ta), (fb, tb)):
                for _ in range(per_round):
                    t0 = clock()
                    fn()
                    acc.append(clock() - t0)
    finally:
        gc.enable()
    ta.sort()
    tb.sort()
    return ta[len(ta) // 2] / 1e6, ta[0] / 1e6, tb[len(tb) // 2] / 1e6, tb[0] / 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compiled", action="store_true", help="also torch_custom_compiled (compiles first)")
    parser.add_argument("--cpu", action="store_true",
                        help="time the thread's CPU time instead of wall time (robust on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torchdiffeq

    from odebench_plugins.torch_custom import api

    f = _mlp()
    y0 = torch.randn(16, 2)
    t = torch.linspace(0.0, 25.0, 500)[:10]
    target = torch.randn(10, 16, 2)

    def run(odeint, **kw):
        def it():
            ys = odeint(f, y0, t, **kw)
            loss = torch.mean((ys - target) ** 2)
            loss.backward()
        return it

    cases = [
        ("rk4", "backprop", {}), ("rk4", "adjoint", {}),
        ("euler", "backprop", {}),
        ("dopri5", "backprop", dict(rtol=1e-7, atol=1e-9)), ("dopri5", "adjoint", dict(rtol=1e-7, atol=1e-9)),
    ]
    clock = time.thread_time_ns if args.cpu else time.perf_counter_ns
    print(f"per-iteration {'thread CPU' if args.cpu else 'wall'} time, ms: median (min)")
    print(f"{'method':8} {'grad':9} {'torchdiffeq':>16} {'torch_custom':>16} {'speed-up':>16}")
    for method, grad, kw in cases:
        td = torchdiffeq.odeint if grad == "backprop" else torchdiffeq.odeint_adjoint
        tc = api.odeint if grad == "backprop" else api.odeint_adjoint
        a, a_min, b, b_min = _time_pair(run(td, method=method, **kw), run(tc, method=method, **kw), args.repeats,
                                          clock=clock)
        print(f"{method:8} {grad:9} {a:8.3f} ({a_min:5.3f}) {b:8.3f} ({b_min:5.3f}) "
              f"{a / b:7.2f}x ({a_min / b_min:4.2f}x)")

    # The floor of rk4/backprop: the 36 evaluations of f and their backward, nothing else.
    # No solver can beat it; torchdiffeq / floor bounds any speed-up.
    def floor():
        y, ys = y0, [y0]
        for i in range(len(t) - 1):
            for _ in range(4):
                y = f(t[i], y)
            ys.append(y)
        torch.mean((torch.stack(ys) - target) ** 2).backward()

    a, a_min, b, b_min = _time_pair(run(torchdiffeq.odeint, method="rk4"), floor, args.repeats, clock=clock)
    print(f"{'rk4':8} {'f only':9} {a:8.3f} ({a_min:5.3f}) {b:8.3f} ({b_min:5.3f}) "
          f"{a / b:7.2f}x ({a_min / b_min:4.2f}x)  <- upper bound of any rk4/backprop speed-up")
    _against_the_floor(f, y0, t, target, run, args.repeats, clock)
    if args.compiled:
        _compiled(f, y0, t, run, torchdiffeq, args.repeats, clock)


def _against_the_floor(f, y0, t, target, run, repeats: int, clock) -> None:
    """torch_custom (eager) over its eager floor, the suite's ``× floor`` column, for rk4 both ways."""
    from odebench.backends.torch import floor_replay, recording
    from odebench_plugins.torch_custom import api

    print(f"{'method':8} {'grad':9} {'torch_custom':>16} {'eager floor':>16} {'x floor':>16}")
    for grad, odeint in (("backprop", api.odeint), ("adjoint", api.odeint_adjoint)):
        it = run(odeint, method="rk4")
        with recording(f) as states:
            ys = odeint(f, y0, t, method="rk4")
            n_fwd = len(states)
            torch.autograd.grad(torch.mean((ys - target) ** 2), list(f.parameters()))
        floor = floor_replay(f, states[:n_fwd], states[n_fwd:], graph=grad == "backprop")
        a, a_min, b, b_min = _time_pair(it, floor, repeats, clock=clock)
        print(f"{'rk4':8} {grad:9} {a:8.3f} ({a_min:5.3f}) {b:8.3f} ({b_min:5.3f}) "
              f"{a / b:7.2f}x ({a_min / b_min:4.2f}x)")


def _compiled(f, y0, t, run, torchdiffeq, repeats: int, clock) -> None:
    """torch_custom_compiled against torchdiffeq, after compiling (its compile time printed apart)."""
    from odebench_plugins.torch_custom.compiled import TorchCustomCompiledPlugin

    plugin = TorchCustomCompiledPlugin()

    print(f"{'method':8} {'grad':9} {'torchdiffeq':>16} {'compiled':>16} {'speed-up':>16}")
    for method, grad in (("rk4", "backprop"), ("euler", "backprop"), ("rk4", "adjoint")):
        def odeint(f, y0, t, method, grad=grad):
            return plugin.odeint(f, y0, t, method=method, grad_mode=grad).ys

        spent = plugin.prepare(f, y0, t, method=method, grad_mode=grad)
        td = torchdiffeq.odeint if grad == "backprop" else torchdiffeq.odeint_adjoint
        with torch.compiler.set_stance("eager_on_recompile"):  # never compile inside the timer
            a, a_min, b, b_min = _time_pair(run(td, method=method), run(odeint, method=method), repeats, clock=clock)
        print(f"{method:8} {grad:9} {a:8.3f} ({a_min:5.3f}) {b:8.3f} ({b_min:5.3f}) "
              f"{a / b:7.2f}x ({a_min / b_min:4.2f}x)  compile {spent:.1f} s")


if __name__ == "__main__":
    main()
