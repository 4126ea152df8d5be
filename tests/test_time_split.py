"""Where a case's wall time went: the split's columns add up, a JAX plugin's cases share one gate
process whose verdict is the one a per-case gate gives, and the report shows the split."""

from __future__ import annotations

import json
import os

import pytest
from conftest import write_suite

from odebench import registry, report, runner
from odebench.measure import Phases, loop_s_per_step
from odebench.suite import load_suite
from odebench.workloads.train import TIME_SPLIT
from odebench.workloads.train.case import case_gate

#: The parts of the split that run in the case's own process.
IN_PROCESS = ("startup_s", "setup_s", "warmup_s", "compile_s", "measured_s", "untimed_s", "swap_s")


def _run(tmp_path, isolation="process", **kw):
    folder = write_suite(tmp_path / "s", isolation=isolation, **kw)
    suite = load_suite(folder)
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    records = runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile),
                         progress=False)
    return suite, run_dir, records


def test_the_time_split_is_present_non_negative_and_within_the_process_wall_time(tmp_path):
    _, run_dir, records = _run(tmp_path, iterations=2, plugins=("torch_custom",), methods=("rk4",),
                               grads=("backprop",))
    (rec,) = records
    assert rec["status"] == "ok", rec["message"]
    for key in (*IN_PROCESS, "gate_s", "process_s", "case_wall_s"):
        if key == "compile_s":
            assert rec[key] is None  # an eager plugin compiles nothing
            continue
        assert isinstance(rec[key], float) and rec[key] >= 0.0, (key, rec[key])
    assert not rec.get("gate_shared")  # a torch plugin gates in its own process
    parts = sum(rec[k] or 0.0 for k in IN_PROCESS) + rec["gate_s"]
    assert parts <= rec["process_s"] + 1e-6
    # The case's own timer starts after start-up: both fit in the process.
    assert rec["startup_s"] + rec["case_wall_s"] <= rec["process_s"] + 1e-6
    # The measured work is the timed iterations, which train_s is the median of (one repeat: equal).
    assert rec["measured_s"] == pytest.approx(rec["train_s"])
    # The eager floor beside the solver: its time, the ratio to it, the loop time per step.
    assert rec["floor_s"] > 0 and rec["floor_ratio"] == pytest.approx(rec["s_per_iter"] / rec["floor_s"])
    assert rec["loop_s_per_step"] == pytest.approx(max(rec["s_per_iter"] - rec["floor_s"], 0.0) / rec["steps"])
    md = report.render(run_dir).read_text()
    assert "## Where the wall time went" in md and "| torch_custom | 1 |" in md


def test_an_inline_case_has_no_process_figures_but_the_rest_of_the_split(tmp_path):
    _, _, (rec,) = _run(tmp_path, "inline", iterations=2, plugins=("torch_custom",), methods=("euler",),
                        grads=("backprop",))
    assert rec["status"] == "ok", rec["message"]
    assert rec.get("startup_s") is None and rec.get("process_s") is None
    assert all(k in rec for k in TIME_SPLIT if k != "gate_shared")
    assert sum(rec[k] or 0.0 for k in IN_PROCESS[1:]) + rec["gate_s"] <= rec["case_wall_s"] + 1e-6


def test_a_compiled_torch_case_records_its_cold_compile_and_the_cache_state(tmp_path):
    """torch_custom_compiled's adjoint in its own process: the compile is compile_s, cold (a fresh
    inductor folder of the case's own), and the record says so."""
    _, _, (rec,) = _run(tmp_path, iterations=2, plugins=("torch_custom_compiled",), methods=("euler",),
                        grads=("adjoint",))
    assert rec["status"] == "ok", rec["message"]
    assert rec["compile_s"] > 0 and rec["nfe_bwd"] > 0
    assert rec["torch_cache"] == "off" and rec["torch_cache_misses"] >= 1 and rec["torch_cache_hits"] == 0
    assert rec.get("jax_cache") is None


@pytest.mark.slow
def test_a_jax_plugins_cases_share_one_gate_process_with_the_per_case_verdict(tmp_path):
    if registry.entry("diffrax").available() is not None:
        pytest.skip("diffrax is not installed")
    suite, run_dir, records = _run(tmp_path, iterations=2, plugins=("diffrax",), methods=("euler", "rk4"),
                                   grads=("backprop",))
    assert [r["status"] for r in records] == ["ok", "ok"], [r["message"] for r in records]
    assert (run_dir / "logs" / "gate_diffrax.log").exists()
    for rec in records:
        assert rec["gate_shared"] is True and rec["gate"] == "pass" and rec["gate_s"] > 0
        assert rec["jax_cache"] == "off"  # no $ODEBENCH_JAX_CACHE: every compile is cold
        # The shared gate's losses are those the case's own (isolated) gate computes.
        case = next(c for c in suite.cases() if c.id == rec["case_id"]).to_dict()
        alone = case_gate(case, suite.config, registry.get_plugin("diffrax"))
        assert rec["gate_losses"] == pytest.approx(alone.losses, rel=1e-12)
        assert rec["gate_reference"] == pytest.approx(alone.reference, rel=1e-12)


def test_phases_accumulate_and_the_loop_time_is_clipped_and_none_without_figures():
    phases = Phases()
    with phases("a"):
        pass
    with phases("a"):
        pass
    phases.start("b")
    phases.stop()
    rec = phases.record()
    assert set(rec) == {"a_s", "b_s"} and all(v >= 0.0 for v in rec.values())
    assert loop_s_per_step(1.0, 0.6, 4) == pytest.approx(0.1)
    assert loop_s_per_step(0.5, 0.6, 4) == 0.0  # inside the timer's noise: clipped, never negative
    assert loop_s_per_step(1.0, None, 4) is None and loop_s_per_step(1.0, 0.5, 0) is None
    assert loop_s_per_step(float("nan"), 0.5, 3) is None


def _small_spiral_trainer(grad_mode: str):
    """A torch_custom rk4 trainer of a 2-8-2 MLP on the spiral, and one batch of 4 windows of 5 points."""
    pytest.importorskip("torch")
    import numpy as np

    from odebench.backends.base import Batch
    from odebench.backends.torch import make_trainer
    from odebench.models import MLPSpec, mlp_weights
    from odebench.problems import PROBLEMS

    spec = MLPSpec((2, 8, 2), "tanh", 0.1, 0.0)
    problem = PROBLEMS["linear_spiral"](n_points=60, t1=3.0)
    truth = problem.reference(problem.ts)
    starts = np.arange(0, 40, 10)
    batch = Batch(truth[starts], problem.ts[:5], np.stack([truth[starts + i] for i in range(5)]))
    trainer = make_trainer(registry.get_plugin("torch_custom"), spec, mlp_weights(spec, 0), method="rk4",
                           rtol=1e-7, atol=1e-9, grad_mode=grad_mode, max_steps=1000, lr=1e-3)
    return trainer, trainer.to_batch(batch)


@pytest.mark.parametrize("grad_mode", ["backprop", "adjoint"])
def test_the_eager_floor_replays_exactly_the_iterations_evaluations_and_its_backward(grad_mode):
    """The floor evaluates the field as often as the harness counted in the iteration, forward and
    backward, and differentiates backprop's forward evaluations in one backward pass."""
    from odebench.backends.torch import counting
    from odebench.measure import NFECounter

    trainer, tb = _small_spiral_trainer(grad_mode)
    counted = trainer.instrumented(tb)
    replay, steps = trainer.floor(tb)
    assert steps == 4
    counter = NFECounter()
    with counting(trainer.field, counter):
        replay()
    assert counter.nfe_fwd == counted.nfe_fwd + counted.nfe_bwd == (16 if grad_mode == "backprop" else 32)
    # backprop: one VJP through each forward evaluation; adjoint: one per reverse evaluation.
    assert counter.n_vjp == 16
    assert all(p.grad is None for p in trainer.field.parameters())  # the floor updates nothing


@pytest.mark.parametrize("grad_mode", ["backprop", "adjoint"])
def test_the_eager_floor_differentiates_through_the_same_states_as_the_iteration(grad_mode):
    """A solve's backward carries the gradient back through each evaluation's input (but the first,
    whose state is the data): the floor's backward must too, or it leaves out a matrix product per
    evaluation that no solver can avoid. The evaluations whose input receives a gradient are the
    same, in order, in a real training iteration and in the floor's replay."""
    import contextlib

    trainer, tb = _small_spiral_trainer(grad_mode)
    replay, _ = trainer.floor(tb)

    @contextlib.contextmanager
    def inputs_reached(module):
        """Indices of the module's calls whose input ``y`` received a gradient."""
        calls, reached = [0], set()

        def hook(_module, inputs, _out):
            i, y = calls[0], inputs[1]
            calls[0] += 1
            if y.requires_grad:
                y.register_hook(lambda g, i=i: reached.add(i))

        handle = module.register_forward_hook(hook)
        try:
            yield reached
        finally:
            handle.remove()

    with inputs_reached(trainer.field) as in_iteration:
        handle = trainer.forward(tb)
        trainer.backward(handle)
    with inputs_reached(trainer.field) as in_floor:
        replay()
    expected = set(range(1, 16)) if grad_mode == "backprop" else set(range(16, 32))
    assert in_iteration == expected
    assert in_floor == in_iteration


def test_a_field_evaluated_inside_a_vmap_has_no_floor_and_its_case_still_ends_ok(tmp_path):
    """torchode's adjoint vmaps the field's VJP over the samples: the floor cannot record those
    states (wrapped tensors must not leave the transform), so its columns are empty, and the
    training figures are kept."""
    if registry.entry("torchode").available() is not None:
        pytest.skip("torchode is not installed")
    _, _, (rec,) = _run(tmp_path, "inline", iterations=2, plugins=("torchode",), methods=("dopri5",),
                        grads=("adjoint",))
    assert rec["status"] == "ok", rec["message"]
    assert rec["s_per_iter"] > 0 and rec["nfe_bwd"] > 0
    assert rec.get("floor_s") is None and rec.get("loop_s_per_step") is None


def test_the_jax_cache_state_says_off_cold_warm_mixed_or_unused():
    from odebench.backends.jax import CacheWatch

    def state(folder, hits, misses):
        w = CacheWatch(folder)
        w._on_event("/jax/compilation_cache/cache_hits")  # outside a timed compile: not counted
        w.in_compile = 1
        for _ in range(hits):
            w._on_event("/jax/compilation_cache/cache_hits")
        for _ in range(misses):
            w._on_event("/jax/compilation_cache/cache_misses")
        w._on_event("/jax/something_else")
        return w.record()

    assert state(None, 0, 3)["jax_cache"] == "off"
    assert state("/c", 0, 3) == {"jax_cache": "cold", "jax_cache_hits": 0, "jax_cache_misses": 3}
    assert state("/c", 2, 0)["jax_cache"] == "warm" and state("/c", 2, 1)["jax_cache"] == "mixed"
    assert state("/c", 0, 0)["jax_cache"] == "unused"


def test_a_timed_compile_reads_cold_then_warm_from_the_persistent_cache(tmp_path):
    """In a fresh interpreter (the cache folder is a process-wide JAX setting): the first compile of a
    program misses the cache, a second process's compile of it hits, and compiles outside compile_s
    (untimed passes) do not count."""
    pytest.importorskip("jax")
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from odebench.backends.jax import persistent_cache, timed_compile\n"
        "watch = persistent_cache(sys.argv[1])\n"
        "import jax, jax.numpy as jnp\n"
        "jax.jit(lambda x: jnp.cos(x) - 1).lower(jnp.ones(5)).compile()  # untimed: not counted\n"
        "timed_compile(jax.jit(lambda x: jnp.sin(x) * 3).lower(jnp.ones(4)).compile)\n"
        "print(json.dumps(watch.record()))\n")
    states = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        states.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert states[0]["jax_cache"] == "cold" and states[0]["jax_cache_hits"] == 0
    assert states[1]["jax_cache"] == "warm" and states[1]["jax_cache_misses"] == 0


def test_a_torch_case_process_imports_no_other_framework_nor_the_reporting_stack():
    """What a spiral case's process loads before its work: not JAX, pandas, matplotlib or scipy's
    integrators (seconds of start-up per case on a small machine)."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from odebench.worker import execute\n"
              "from odebench import registry\n"
              "registry.get_plugin('torch_custom'); registry.get_workload('train')\n"
              "from odebench.workloads.train import case\n"
              "print(sorted(m for m in ('jax', 'pandas', 'matplotlib', 'scipy.integrate', 'odebench.claims') "
              "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_compiled_torch_case_compiles_cold_in_its_own_folder_unless_a_shared_cache_is_named(tmp_path):
    """In fresh interpreters (inductor's cache folder is process-wide): with ``$ODEBENCH_TORCH_CACHE``
    the first process misses the shared cache and a second reads its graph back (warm); without it a
    process compiles into a fresh folder of its own, removed after, and misses what the shared folder
    (or inductor's default one) holds."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    script = (
        "import json, os, sys\n"
        "import torch\n"
        "from odebench.backends.torch import inductor_cache\n"
        "cache = inductor_cache(sys.argv[1] or None)\n"
        "torch.compile(lambda x: torch.sin(x) * 3 + 1)(torch.ones(4))\n"
        "print(json.dumps(cache.record() | {'path': cache.path}))\n"
        "cache.close()\n")
    shared = str(tmp_path / "shared")
    states = []
    for folder in (shared, shared, ""):
        out = subprocess.run([sys.executable, "-c", script, folder], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        states.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second, own = states
    assert first["torch_cache"] == "cold" and first["torch_cache_misses"] >= 1 and first["torch_cache_hits"] == 0
    assert second["torch_cache"] == "warm" and second["torch_cache_misses"] == 0
    assert own["torch_cache"] == "off" and own["torch_cache_misses"] >= 1 and own["torch_cache_hits"] == 0
    assert not os.path.exists(own["path"]) and os.path.isdir(shared)
