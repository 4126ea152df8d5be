"""The torchdiffeq plugin's particulars: its step callbacks on the user's module, the phases of
the harness's counts, the seminorm's reverse step size. Orders, gradients, NFE agreement with
the callbacks and the contract are checked for every plugin in test_conformance.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odebench.backends.base import Batch
from odebench.backends.torch import CountingField, MLPField, make_trainer
from odebench.measure import NFECounter
from odebench.models import MLPSpec, mlp_weights
from odebench.problems import LinearSpiral
from odebench_plugins.torchdiffeq_solvers import TorchdiffeqPlugin

PLUGIN = TorchdiffeqPlugin()
SPEC = MLPSpec((2, 16, 2))


def _batch(n_times=10):
    p = LinearSpiral()
    truth = p.exact()
    starts = np.arange(0, 64, 8)
    return Batch(truth[starts], p.ts[:n_times], np.stack([truth[starts + i] for i in range(n_times)]))


@pytest.mark.parametrize("grad_mode", ["backprop", "adjoint", "adjoint-seminorm"])
def test_instrumented_pass_splits_forward_and_backward(grad_mode):
    """The forward callbacks count only the forward solve; the adjoint's reverse solve (whose
    ``*_adjoint`` callbacks the plugin leaves alone) is counted by the harness as backward."""
    trainer = make_trainer(PLUGIN, SPEC, mlp_weights(SPEC, 1), method="dopri5", rtol=1e-6, atol=1e-8,
                           grad_mode=grad_mode, max_steps=10_000, lr=1e-3, dtype="float64")
    p = trainer.instrumented(trainer.to_batch(_batch()))
    assert p.stats.nfe == p.nfe_fwd > 0
    if grad_mode == "backprop":
        assert p.nfe_bwd == 0 and p.saved_bytes > 0
    else:
        assert p.nfe_bwd > 0 and p.n_vjp == p.nfe_bwd  # one VJP per augmented evaluation


def test_instrumented_pass_leaves_parameters_alone():
    trainer = make_trainer(PLUGIN, SPEC, mlp_weights(SPEC, 2), method="rk4", rtol=1e-7, atol=1e-9,
                           grad_mode="backprop", max_steps=100, lr=1e-2, dtype="float64")
    before = [p.copy() for p in trainer.parameters_numpy()]
    trainer.instrumented(trainer.to_batch(_batch()))
    assert all(np.array_equal(a, b) for a, b in zip(before, trainer.parameters_numpy()))
    trainer.backward(trainer.forward(trainer.to_batch(_batch())))
    assert not all(np.array_equal(a, b) for a, b in zip(before, trainer.parameters_numpy()))


def test_callbacks_do_not_leak_onto_the_users_module():
    f = MLPField(SPEC, mlp_weights(SPEC, 0), torch.float64)
    PLUGIN.odeint(f, torch.ones(1, 2, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64),
                  method="dopri5")
    assert "callback_step" not in vars(f)


def test_seminorm_reverse_solve_keeps_the_step_size():
    """adjoint_options replace options in torchdiffeq: the step size must travel with the norm."""
    counter = NFECounter()
    f = CountingField(MLPField(SPEC, mlp_weights(SPEC, 0), torch.float64), counter)
    y0 = torch.ones(2, 2, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    grads = {}
    for mode in ("adjoint", "adjoint-seminorm"):
        counter.reset()
        sol = PLUGIN.odeint(f, y0, ts, method="rk4", step_size=0.125, grad_mode=mode)
        counter.phase = "bwd"
        sol.ys[-1].sum().backward()
        assert (counter.nfe_fwd, counter.nfe_bwd) == (32, 32), mode
        grads[mode] = [p.grad.clone() for p in f.parameters()]
        f.zero_grad()
    for a, b in zip(grads["adjoint"], grads["adjoint-seminorm"]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
