"""The review's MNIST experiment (Capell et al. 2023) as the mnist suite's review profiles."""

from __future__ import annotations

import pytest
from conftest import ROOT

from odebench.schema import SuiteError
from odebench.suite import load_suite

torch = pytest.importorskip("torch")


def test_the_review_profiles_train_the_reviews_model_with_euler_and_adam():
    for profile, images in (("review", 0), ("review-quick", 2000)):
        suite = load_suite(ROOT / "suites/mnist", profile)
        assert [c.id for c in suite.cases()] == ["torch_custom/euler/adjoint/model=review/seed=0/cpu",
                                                 "torchdiffeq/euler/adjoint/model=review/seed=0/cpu"]
        train = suite.config["training"]
        assert (train["optimizer"], train["lr"], train["scale_lr"], train["batch_size"]) == ("adam", 1e-3, False, 32)
        assert suite.config["model"]["step_size"] == 0.05 and suite.config["data"]["train_subset"] == images
    assert load_suite(ROOT / "suites/mnist", "review").config["training"]["epochs"] == 5


def test_adam_at_its_default_rate_without_batch_scaling():
    from odebench.backends.torch_convnets import build_mnist_model
    from odebench.workloads.mnist.case import lr_at, make_optimizer

    train = load_suite(ROOT / "suites/mnist", "review-quick").config["training"]
    assert lr_at(0, train, 62) == 1e-3 and lr_at(61, train, 62) == 1e-3
    opt = make_optimizer(build_mnist_model("review", seed=0), train, lr_at(0, train, 62))
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-3
    # Chen et al.'s SGD keeps torchdiffeq's rule: lr × batch / 128.
    quick = load_suite(ROOT / "suites/mnist", "quick").config["training"]
    assert lr_at(0, quick, 562) == pytest.approx(0.1 * 16 / 128)


def test_the_reviews_model_has_a_batch_normalised_euler_block_on_a_64x6x6_state():
    from odebench.backends.torch_convnets import build_mnist_model

    model = build_mnist_model("review", seed=0)
    block = model.ode_block
    assert (block.method, block.step_size, block.grad_mode) == ("euler", 0.05, "adjoint")
    assert model.downsampling(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 6, 6)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in block.odefunc.modules())
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert block.nfe == 20  # 20 Euler steps of 0.05 on [0, 1], one evaluation each


def test_the_reviews_model_takes_fixed_steps_only(tmp_path):
    text = (ROOT / "suites/mnist/suite.toml").read_text().replace(
        'matrix = { plugin = ["torch_custom", "torchdiffeq"], method = ["euler"], grad_mode = ["adjoint"], '
        'model = ["review"], include = [] }\nmeasure',
        'matrix = { plugin = ["torch_custom"], method = ["dopri5"], grad_mode = ["adjoint"], '
        'model = ["review"], include = [] }\nmeasure')
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with pytest.raises(SuiteError, match="matrix.model 'review' has no case it can run: the review's model takes "
                                         "fixed steps of model.step_size"):
        load_suite(path)


def test_the_instrumented_probe_leaves_batchnorms_running_statistics_alone():
    from odebench.backends.torch_convnets import build_mnist_model
    from odebench.workloads.mnist.case import instrumented

    model = build_mnist_model("review", seed=0)
    before = {n: b.clone() for n, b in model.named_buffers()}
    probe = instrumented(model, torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
    assert probe["nfe_fwd"] == 20
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())
