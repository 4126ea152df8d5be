"""The fairness gate: passes on the same set-up, and fails (it can) when the weights differ."""

from __future__ import annotations

import json

import numpy as np
from conftest import write_suite

from odebench import registry, runner
from odebench.fairness import compare, fairness_gate
from odebench.models import MLPSpec, mlp_weights
from odebench.problems import LinearSpiral
from odebench.suite import load_suite
from odebench.workloads.train.case import make_batches

SPEC = MLPSpec((2, 16, 2))


def _batches(n=3):
    p = LinearSpiral(n_points=100, t1=5.0)
    return make_batches(p.exact(p.ts), p.ts, n=n, batch_size=8, batch_time=6, seed=0)


def test_compare_is_relative_and_strict():
    assert compare([1.0, 2.0], [1.0, 2.0 * (1 + 1e-7)])[0]
    ok, worst = compare([1.0, 2.0], [1.0, 2.0 * (1 + 1e-5)])
    assert not ok and 9e-6 < worst < 1.1e-5
    assert not compare([1.0], [1.0, 2.0])[0]
    assert not compare([float("nan")], [1.0])[0]


def test_gate_passes_for_the_same_weights():
    plugin = registry.get_plugin("torchdiffeq")
    for method in ("rk4", "dopri5"):
        result = fairness_gate(plugin, SPEC, mlp_weights(SPEC, 0), _batches(), method=method,
                               grad_mode="adjoint", lr=1e-3, optimizer="rmsprop", max_steps=10_000)
        assert result.passed is True, result
        assert len(result.losses) == 3 and result.max_rel < 1e-6


def test_gate_fails_when_the_weights_differ():
    plugin = registry.get_plugin("torchdiffeq")
    w = mlp_weights(SPEC, 0)
    shifted = [(a * (1 + 1e-4), b) for a, b in w]
    result = fairness_gate(plugin, SPEC, w, _batches(), method="rk4", grad_mode="backprop", lr=1e-3,
                           optimizer="rmsprop", max_steps=1000, reference_weights=shifted)
    assert result.passed is False and result.max_rel > 1e-6
    assert not np.allclose(result.losses, result.reference, rtol=1e-6, atol=0)


def test_a_training_record_carries_the_gate(tmp_path):
    folder = write_suite(tmp_path / "s", iterations=3, methods=("rk4",), grads=("adjoint",))
    suite = load_suite(folder)
    run_dir = runner.new_run_dir(tmp_path / "r", suite.name)
    (rec,) = runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile), progress=False)
    assert rec["status"] == "ok" and rec["gate"] == "pass" and len(rec["gate_losses"]) == 3
    assert json.loads((run_dir / "records.jsonl").read_text())["gate_max_rel"] < 1e-6
