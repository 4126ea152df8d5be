"""The MNIST models of Chen et al. 2018: parameter counts, a training step, NFE counting."""

from __future__ import annotations

from typing import ClassVar

import pytest

torch = pytest.importorskip("torch")
torchdiffeq = pytest.importorskip("torchdiffeq")

from odebench import SolveFailed  # noqa: E402
from odebench.backends.torch_convnets import (  # noqa: E402
    MODEL_KINDS,
    ODEFunc,
    build_mnist_model,
    count_parameters,
    downsampling,
    head,
)
from odebench.protocol import Solution, SolverPlugin, Status, UnsupportedError  # noqa: E402

try:
    from odebench_plugins.torchdiffeq_solvers import TorchdiffeqPlugin as Plugin
except ImportError:  # the lead's plugin not there yet: a minimal local adapter

    class Plugin(SolverPlugin):
        name: ClassVar[str] = "torchdiffeq-test"
        framework: ClassVar[str] = "torch"
        methods: ClassVar[dict[str, str]] = {"rk4": "rk4", "dopri5": "dopri5"}
        grad_modes: ClassVar[tuple[str, ...]] = ("backprop", "adjoint")

        def odeint(
            self,
            f,
            y0,
            ts,
            *,
            method,
            rtol=1e-7,
            atol=1e-9,
            step_size=None,
            grad_mode="backprop",
            max_steps=100_000,
        ):
            self.check(method, grad_mode)
            solve = torchdiffeq.odeint if grad_mode == "backprop" else torchdiffeq.odeint_adjoint
            options = {"step_size": step_size} if step_size is not None else {}
            return Solution(solve(f, y0, ts, rtol=rtol, atol=atol, method=method, options=options))


class FailingPlugin(Plugin):
    def odeint(self, f, y0, ts, **kwargs):
        return Solution(None, Status.MAX_STEPS, "too many steps")


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: intra-op threads only contend (10-100x slower for these small convs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 1, 28, 28, generator=gen), torch.tensor([3, 1, 4, 1])


def test_parameter_counts():
    plugin = Plugin()
    # Stem: 1·64·9+64 + 2·(64+64) + 2·(64·64·16+64); ODE function: 3 GroupNorms + 2 convs 65→64 3×3;
    # head: GroupNorm + Linear(64, 10); each ResBlock: 2 GroupNorms + 2 bias-free convs 64→64 3×3.
    assert count_parameters(downsampling()) == 640 + 2 * 128 + 2 * 65_600 == 132_096
    assert count_parameters(ODEFunc()) == 3 * 128 + 2 * (65 * 64 * 9 + 64) == 75_392
    assert count_parameters(head()) == 128 + 650 == 778
    assert count_parameters(build_mnist_model("odenet", plugin)) == 208_266
    assert count_parameters(build_mnist_model("rknet", plugin)) == 208_266
    resnet = build_mnist_model("resnet")
    assert count_parameters(resnet) == 132_096 + 6 * (2 * 128 + 2 * 64 * 64 * 9) + 778 == 576_778
    assert resnet.ode_block is None


def test_builder_configs_and_seed():
    plugin = Plugin()
    odenet = build_mnist_model("odenet", plugin, seed=0)
    rknet = build_mnist_model("rknet", plugin, seed=0)
    block = odenet.ode_block
    assert (block.method, block.grad_mode, block.rtol, block.atol) == ("dopri5", "adjoint", 1e-3, 1e-3)
    assert (rknet.ode_block.method, rknet.ode_block.grad_mode, rknet.ode_block.step_size) == (
        "rk4",
        "backprop",
        0.1,
    )
    # Same seed: identical weights, and the same stem in every kind.
    again = build_mnist_model("odenet", plugin, seed=0)
    for a, b in zip(odenet.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    resnet = build_mnist_model("resnet", seed=0)
    for a, b in zip(odenet.downsampling.parameters(), resnet.downsampling.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="valid: odenet, rknet, resnet"):
        build_mnist_model("densenet", plugin)
    with pytest.raises(UnsupportedError):
        build_mnist_model("odenet", plugin, method="radau")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_one_training_step(kind, images):
    x, y = images
    model = build_mnist_model(kind, Plugin(), seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    logits = model(x)
    assert logits.shape == (4, 10)
    loss = torch.nn.functional.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert all(changed), f"{changed.count(False)} parameter tensors unchanged"
    if model.ode_block is not None:
        assert model.ode_block.last_solution.status is Status.OK


@pytest.mark.parametrize("grad_mode", ["backprop", "adjoint"])
def test_nfe_counted_dopri5(grad_mode, images):
    x, _ = images
    model = build_mnist_model(
        "odenet", Plugin(), method="dopri5", rtol=1e-3, atol=1e-3, grad_mode=grad_mode, seed=2
    )
    block = model.ode_block
    out = model(x)
    nfe_fwd = block.last_nfe_fwd
    assert nfe_fwd == block.nfe > 0
    # dopri5 with FSAL: f(t0, y0) + one evaluation for the initial step size + 6 per step.
    assert (nfe_fwd - 2) % 6 == 0
    stats = block.last_solution.stats
    if stats.nfe is not None:  # the library's own count must agree with ours (DESIGN §4)
        assert stats.nfe == nfe_fwd
    out.sum().backward()
    nfe_bwd = block.nfe - nfe_fwd
    if grad_mode == "backprop":
        assert nfe_bwd == 0
    else:
        assert nfe_bwd > 0  # the adjoint's reverse solve
    block.reset_nfe()
    assert block.nfe == 0


def test_rknet_takes_fixed_rk4_steps(images):
    x, _ = images
    model = build_mnist_model("rknet", Plugin(), step_size=0.25, seed=3)
    with torch.no_grad():
        model(x)
    assert model.ode_block.last_nfe_fwd == 4 * 4  # 4 steps of 4 stages


def test_failed_solve_raises_with_status(images):
    x, _ = images
    model = build_mnist_model("odenet", FailingPlugin(), seed=4)
    with pytest.raises(SolveFailed) as err:
        model(x)
    assert err.value.status is Status.MAX_STEPS
    assert model.ode_block.last_solution.status is Status.MAX_STEPS
