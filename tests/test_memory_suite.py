"""The memory-vs-depth workload: saved bytes are exact, the class check can fail, cuda without a GPU
is a row, and a tiny suite runs end to end through the runner and the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from odebench import registry, report, runner
from odebench.backends.torch import MLPField
from odebench.backends.torch_convnets import odefunc_from_weights
from odebench.measure import saved_tensor_bytes
from odebench.models import MLPSpec, mlp_weights
from odebench.suite import SuiteError, load_suite
from odebench.workloads.memory.analysis import check_class, fit_memory
from odebench.workloads.memory.drivers import initial_state
from odebench.workloads.memory.report import summary as memory_summary
from odebench.workloads.memory.schema import DEFAULT_CLASSES

MB = 2**20

TINY = """
[suite]
name = "memory-tiny"
workload = "memory"

[mlp]
sizes = [16, 64, 16]
batch = 64

[measure]
warmup = 1
repeats = 2
isolation = "{isolation}"
threads = 1
timeout_s = 300

[matrix]
plugin = ["torchdiffeq"]
method = ["rk4"]
grad_mode = {grads}
device = {devices}
block = ["mlp"]
n_steps = [2, 8]
"""


def _tiny(tmp_path, *, isolation="process", grads=("backprop", "adjoint", "checkpoint"), devices=("cpu", "cuda")):
    folder = tmp_path / "memory-tiny"
    folder.mkdir()
    q = lambda xs: json.dumps(list(xs))  # noqa: E731
    (folder / "suite.toml").write_text(TINY.format(isolation=isolation, grads=q(grads), devices=q(devices)))
    return folder


def _run(folder, tmp_path):
    suite = load_suite(folder)
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    records = runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile), progress=False)
    return records, run_dir


# --------------------------------------------------------------------------- saved bytes
def _rk4_step(f, y, h):
    k1 = f(0.0, y)
    k2 = f(h / 2, y + (h / 2) * k1)
    k3 = f(h / 2, y + (h / 2) * k2)
    k4 = f(h, y + h * k3)
    return y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def test_saved_bytes_exact_for_one_rk4_step_of_the_mlp_block():
    b, d, w = 8, 4, 16
    spec = MLPSpec((d, w, d), "tanh")
    f = MLPField(spec, mlp_weights(spec, 0))
    y0 = torch.randn(b, d)
    with saved_tensor_bytes() as saved:
        y1 = _rk4_step(f, y0, 0.25)
        loss = (y1 ** 2).sum()
    # Per evaluation: the first Linear keeps its input (b×d), tanh its output (b×w), which the
    # second Linear keeps too (same storage). Four stages, then pow keeps y1 (b×d). Scalar
    # multiplies keep nothing. The parameters, and the transposed weights the Linears keep
    # (W.T, views of them), are not counted: they exist whatever the solver does.
    activations = 4 * (b * d + b * w) * 4 + b * d * 4
    assert saved["bytes"] == activations
    assert saved["tensors"] == 4 * 2 + 1
    loss.backward()


@pytest.mark.parametrize("plugin", ["torchdiffeq", "torch_custom"])
def test_saved_bytes_per_step_through_a_plugin_are_the_block_activations(plugin):
    if registry.entry(plugin).available():
        pytest.skip(f"{plugin} unavailable")
    p = registry.get_plugin(plugin)
    b, d, w = 8, 4, 16
    spec = MLPSpec((d, w, d), "tanh")
    f = MLPField(spec, mlp_weights(spec, 0))
    y0, ts = torch.randn(b, d), torch.tensor([0.0, 1.0])

    def saved_for(n):
        with saved_tensor_bytes() as saved:
            sol = p.odeint(f, y0, ts, method="rk4", step_size=1 / n, grad_mode="backprop")
            (sol.ys[-1] ** 2).sum()
        return saved["bytes"]

    per_step = [saved_for(n + 1) - saved_for(n) for n in (2, 4)]
    # Each extra rk4 step keeps exactly four evaluations' activations (time scalars aside).
    for delta in per_step:
        assert 0 <= delta - 4 * (b * d + b * w) * 4 <= 64, per_step


# --------------------------------------------------------------------------- class check
N = np.array([4, 8, 16, 32, 64])
STATE = 32 * 2**10


def test_fit_recovers_slope_and_exponent():
    fit = fit_memory(N, 3 * MB + 0.5 * MB * N)
    assert fit.slope == pytest.approx(0.5 * MB) and fit.intercept == pytest.approx(3 * MB)
    assert fit.r2 == pytest.approx(1.0)
    assert fit_memory(N, 1e3 * N ** 2).exponent == pytest.approx(2.0)
    one = fit_memory([8], [1.0])
    assert one.n_points == 1 and np.isnan(one.slope)


def test_backprop_class_passes_on_right_input_and_flags_wrong_input():
    saved = 0.2 * MB + 0.6 * MB * N
    right = check_class("backprop", N, 1.5 * MB + 0.66 * MB * N, saved_bytes=saved)
    assert right.ok is True, right
    # A peak that grows at half the saved-for-backward rate cannot be what backprop keeps.
    wrong = check_class("backprop", N, 1.5 * MB + 0.3 * MB * N, saved_bytes=saved)
    assert wrong.ok is False and "outside" in wrong.reason
    flat = check_class("backprop", N, np.full(5, 2.0 * MB))
    assert flat.ok is False  # no saved bytes: must at least grow linearly


def test_adjoint_class_passes_on_flat_peak_and_flags_growth():
    flat = 2.5 * MB + np.array([0.01, -0.02, 0.0, 0.03, -0.01]) * MB
    assert check_class("adjoint", N, flat).ok is True
    growing = check_class("adjoint-seminorm", N, 1.0 * MB + 0.2 * MB * N)
    assert growing.ok is False and ">=" in growing.reason


def test_checkpoint_class_flags_a_backprop_like_slope():
    bp_slope = 0.6 * MB
    right = check_class("checkpoint", N, 1.5 * MB + 1.1 * STATE * N, state_bytes=STATE,
                               backprop_slope=bp_slope)
    assert right.ok is True and right.note == "one state per step"
    sub = check_class("checkpoint", N, 2.0 * MB + 0.1 * STATE * N, state_bytes=STATE,
                             backprop_slope=bp_slope)
    assert sub.ok is True and sub.note == "sub-linear"
    wrong = check_class("checkpoint", N, 1.5 * MB + 0.55 * MB * N, state_bytes=STATE,
                               backprop_slope=bp_slope)
    assert wrong.ok is False
    assert "not state-only" in wrong.reason and "backprop's slope" in wrong.reason
    # Against a backprop that itself keeps states only (diffrax), "well below" is not asked.
    vs_states = check_class("checkpoint", N, 2.0 * MB + 0.45 * STATE * N, state_bytes=STATE,
                                   backprop_slope=1.0 * STATE)
    assert vs_states.ok is True and "not compared" in vs_states.reason


def test_class_check_cannot_tell_from_one_depth():
    v = check_class("adjoint", [16], [2 * MB])
    assert v.ok is None and "two depths" in v.reason


def test_summary_flags_a_method_that_leaves_its_class():
    base = {"suite": "memory", "workload": "memory", "plugin": "p", "method": "rk4", "rtol": None, "atol": None,
            "seed": 0, "device": "cpu", "block": "mlp", "status": "ok", "message": "", "state_bytes": STATE,
            "batch": 128, "class_params": json.dumps(DEFAULT_CLASSES), "nfe_fwd": 0, "nfe_bwd": 0}
    rows = []
    for n in N:
        rows.append(base | {"grad_mode": "backprop", "n_steps": int(n), "peak_bytes": 1.5 * MB + 0.66 * MB * n,
                            "saved_bytes": 0.2 * MB + 0.6 * MB * n, "case_id": f"b{n}"})
        rows.append(base | {"grad_mode": "adjoint", "n_steps": int(n), "peak_bytes": 1.0 * MB + 0.2 * MB * n,
                            "saved_bytes": 65536, "case_id": f"a{n}"})
    table = memory_summary(report.to_frame(rows)).set_index("grad")
    assert table.loc["backprop", "class"].startswith("✓")
    assert table.loc["adjoint", "class"].startswith("✗ FLAG")
    assert table.loc["backprop", "slope MB/step"] == "0.660"


# --------------------------------------------------------------------------- suites and runs
def test_suite_profiles_load_and_adaptive_methods_are_rejected(tmp_path):
    from conftest import ROOT

    for profile in ("default", "quick", "odenet-cpu", "full"):
        suite = load_suite(ROOT / "suites" / "memory", profile)
        assert suite.workload.name == "memory"
        assert all(dict(c.axes)["n_steps"] > 0 for c in suite.cases())
    folder = _tiny(tmp_path)
    toml = folder / "suite.toml"
    toml.write_text(toml.read_text().replace('method = ["rk4"]', 'method = ["dopri5"]'))
    with pytest.raises(SuiteError, match="adaptive"):
        load_suite(folder)


def test_jax_convnet_matches_the_torch_block():
    pytest.importorskip("equinox")
    import jax.numpy as jnp

    from odebench.backends import jax_convnets

    cfg = {"convnet": {"channels": 8, "height": 5, "width": 5, "batch": 3}}
    y = initial_state("convnet", cfg, 0)
    ft = odefunc_from_weights(8, 0, torch.float64, "cpu")
    fj = jax_convnets.jax_convnet(8, 0, jnp.float64 if _x64() else jnp.float32)
    want = ft(torch.tensor(0.3, dtype=torch.float64), torch.as_tensor(y)).detach().numpy()
    got = np.transpose(np.asarray(fj(jnp.asarray(0.3), jnp.asarray(jax_convnets.to_jax_layout("convnet", y)))),
                       (0, 3, 1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _x64() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


def test_tiny_profile_runs_end_to_end_and_cuda_without_gpu_is_unsupported(tmp_path):
    # In-process, to stay within the test budget (the quick profile runs each case in a fresh process).
    folder = _tiny(tmp_path, isolation="inline")
    records, run_dir = _run(folder, tmp_path)
    by = {(r["grad_mode"], r["device"], r["n_steps"]): r for r in records}
    assert len(records) == 3 * 2 * 2
    for n in (2, 8):
        for grad in ("backprop", "adjoint"):
            r = by[(grad, "cpu", n)]
            assert r["status"] == "ok", r
            assert r["nfe_fwd"] == 4 * n and r["nfe_agree"] is True
            assert r["nfe_bwd"] == (0 if grad == "backprop" else 4 * n)
            assert r["peak_bytes"] >= 0 and r["saved_bytes"] > 0 and r["fwd_s"] > 0 and r["bwd_s"] > 0
            # The eager floor beside the timed passes, and the loop time per step over it.
            iter_s = r["fwd_s"] + r["bwd_s"]
            assert r["floor_s"] > 0 and r["floor_ratio"] == pytest.approx(iter_s / r["floor_s"])
            assert r["loop_s_per_step"] == pytest.approx(max(iter_s - r["floor_s"], 0.0) / n)
        assert by[("checkpoint", "cpu", n)]["status"] == "unsupported"  # torchdiffeq has no checkpoint
    # Backprop keeps every step's activations: 4 × 64 × (16 + 64) float32 per step.
    saved = by[("backprop", "cpu", 8)]["saved_bytes"] - by[("backprop", "cpu", 2)]["saved_bytes"]
    assert saved >= 6 * 4 * 64 * 80 * 4
    if not torch.cuda.is_available():
        for key, r in by.items():
            if key[1] == "cuda" and key[0] != "checkpoint":
                assert r["status"] == "unsupported" and "no CUDA device" in r["message"], r
    md = report.render(run_dir).read_text()
    assert "slope MB/step" in md and "loop µs/step @n_max" in md and "## Class rules" in md and "## Per depth" in md
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == ["memory_vs_steps.png", "time_vs_steps.png"]
    df = pd.read_csv(run_dir / "results.csv")
    assert {"block", "n_steps", "peak_bytes", "saved_bytes", "nfe_fwd", "nfe_bwd"} <= set(df.columns)
