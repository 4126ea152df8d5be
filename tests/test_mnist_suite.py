"""The mnist suite (Chen et al.'s Table 1): the smoke profile end to end, a missing dataset, validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")

from conftest import ROOT  # noqa: E402

from odebench import records, report, runner  # noqa: E402
from odebench.data.mnist import MNISTError, find_mnist_dir  # noqa: E402
from odebench.suite import SuiteError, load_suite  # noqa: E402
from odebench.workloads.mnist import case as mnist_case  # noqa: E402
from odebench.workloads.mnist import rules as mnist  # noqa: E402
from odebench.workloads.mnist.schema import MODELS  # noqa: E402

SUITE = ROOT / "suites" / "mnist"


def _real_mnist() -> Path | None:
    candidates = [os.environ.get("ODEBENCH_DATA"), ROOT.parent / "shared" / "data" / "mnist"]
    for c in candidates:
        if c:
            try:
                return find_mnist_dir(c)
            except MNISTError:
                continue
    return None


REAL = _real_mnist()


@pytest.fixture(autouse=True)
def keep_threads():
    """Inline cases apply measure.threads to this process: put it back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run_smoke(tmp_path: Path, data_dir: str, models=None):
    suite = load_suite(SUITE, "smoke")
    suite.config["measure"]["isolation"] = "inline"  # one process: seconds, not a torch import per case
    suite.config["data"]["data_dir"] = data_dir
    cases = [c for c in suite.cases() if models is None or dict(c.axes)["model"] in models]
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    records = runner.run(suite, cases, run_dir, runner.RunSpec(str(SUITE), "smoke"), progress=False)
    return records, run_dir


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if REAL is None:
        pytest.skip("MNIST not found ($ODEBENCH_DATA or ../shared/data/mnist)")
    before = torch.get_num_threads()
    try:
        return _run_smoke(tmp_path_factory.mktemp("mnist"), str(REAL))
    finally:
        torch.set_num_threads(before)


def test_smoke_records(smoke):
    records, _ = smoke
    by = {r["model"] + "/" + r["grad_mode"]: r for r in records}
    assert set(by) == {"odenet/adjoint", "odenet/backprop", "rknet/backprop", "resnet/backprop"}
    for key, r in by.items():
        assert r["status"] == "ok", (key, r["message"])
        assert 0.0 <= r["test_acc"] <= 1.0 and r["test_error_pct"] == pytest.approx(100 * (1 - r["test_acc"]))
        assert r["s_per_epoch"] > 0 and r["fwd_s"] > 0 and r["bwd_s"] > 0 and r["ms_per_image"] > 0
        assert r["saved_bytes"] > 0 and r["peak_rss_bytes"] >= 0
        assert r["epochs_done"] == 1 and r["batches_done"] == r["batches_per_epoch"] == 2
        h = r["history"]
        assert h["epoch"] == [1.0] and len(h["test_acc"]) == len(h["time_s"]) == len(h["nfe_fwd"]) == 1
        assert r["paper_test_error_pct"] is not None and r["paper_params_m"] is not None
    assert by["odenet/adjoint"]["params"] == by["odenet/backprop"]["params"] == 208_266
    assert by["rknet/backprop"]["params"] == 208_266 and by["resnet/backprop"]["params"] == 576_778
    for key in ("odenet/adjoint", "odenet/backprop", "rknet/backprop"):
        r = by[key]
        assert r["nfe_fwd"] > 0 and r["probe_nfe_fwd_start"] > 0 and r["probe_nfe_fwd_end"] > 0
        assert r["nfe_agree"] is True  # the library's own count equals the harness's
    assert by["odenet/adjoint"]["nfe_bwd"] > 0 and by["odenet/adjoint"]["probe_nfe_bwd_start"] > 0
    assert by["odenet/backprop"]["nfe_bwd"] == 0 and by["odenet/backprop"]["n_vjp"] > 0
    assert by["rknet/backprop"]["nfe_fwd"] == 40  # 10 rk4 steps of 4 stages
    assert by["resnet/backprop"]["nfe_fwd"] is None
    # The adjoint keeps far less for backward than backprop through the solver's steps.
    assert by["odenet/adjoint"]["saved_bytes"] < by["odenet/backprop"]["saved_bytes"] / 3


def test_smoke_report(smoke):
    _, run_dir = smoke
    path = report.render(run_dir)
    text = path.read_text()
    for needle in ("ODE-Net", "RK-Net", "ResNet", "test err %", "NFE-F", "peak RSS MB", "0.42", "0.22"):
        assert needle in text, needle
    for fig in ("test_acc_vs_epoch.png", "test_acc_vs_time.png", "nfe_vs_epoch.png"):
        assert (run_dir / "figures" / fig).is_file()
    table = report.summary(report.to_frame(records.read_records(run_dir)))
    assert list(table["model"]) == ["ODE-Net", "ODE-Net", "RK-Net", "ResNet"]


def test_missing_dataset_is_an_error_row(tmp_path):
    records, run_dir = _run_smoke(tmp_path, str(tmp_path / "empty"), models=("resnet", "odenet"))
    assert records and all(r["status"] == "error" for r in records)
    for r in records:
        assert "MNIST files not found" in r["message"] and "\n" not in r["message"]
    assert "MNIST files not found" in report.render(run_dir).read_text()


def _suite_text(matrix: str) -> str:
    return f"""
[suite]
name = "m"
workload = "mnist"
[training]
epochs = 1
[measure]
isolation = "inline"
[matrix]
plugin = ["torchdiffeq"]
tolerances = [{{ rtol = 1e-3, atol = 1e-3 }}]
{matrix}
"""


def test_validation_rejects_unknown_model_and_unusable_pairings(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    toml = folder / "suite.toml"
    toml.write_text(_suite_text('method = ["dopri5"]\ngrad_mode = ["adjoint"]\nmodel = ["odenet", "densenet"]'))
    with pytest.raises(SuiteError, match=r"unknown value 'densenet' for matrix.model\[1\]; "
                                         r"valid: odenet, rknet, resnet"):
        load_suite(folder)
    toml.write_text(_suite_text('method = ["dopri5"]\ngrad_mode = ["adjoint"]\nmodel = ["odenet"]\n'
                                'include = [{ model = "convnet" }]'))
    with pytest.raises(SuiteError, match="valid: odenet, rknet, resnet"):
        load_suite(folder)
    toml.write_text(_suite_text('method = ["dopri5"]\ngrad_mode = ["adjoint"]\nmodel = ["rknet"]'))
    with pytest.raises(SuiteError, match="'rknet' has no case it can run: RK-Net takes fixed steps"):
        load_suite(folder)


def test_pairing_rule_in_a_full_product():
    """A plain product: only Table 1's models (and the review's) run, ResNet once; the rest are 'not applicable'."""
    suite = load_suite(SUITE, "smoke")
    m = suite.config["matrix"]
    m.update(method=["dopri5", "rk4"], grad_mode=["adjoint", "backprop"], model=list(MODELS), include=[])
    cases = [c.to_dict() for c in suite.cases()]
    runs = [(c["model"], c["method"], c["grad_mode"]) for c in cases
            if mnist.not_applicable(c, suite.config, cases) is None]
    assert runs == [("odenet", "dopri5", "adjoint"), ("resnet", "dopri5", "adjoint"),
                    ("odenet", "dopri5", "backprop"), ("review", "rk4", "adjoint"), ("rknet", "rk4", "backprop"),
                    ("review", "rk4", "backprop")]  # the review's model: fixed steps, any grad mode


def test_lr_schedule_and_crop():
    train = {"lr": 0.1, "batch_size": 256, "lr_decay_epochs": [60.0, 100.0, 140.0], "lr_decay": 0.1}
    lrs = [mnist_case.lr_at(itr, train, 10) for itr in (0, 599, 600, 999, 1000, 1400, 5000)]
    assert lrs == pytest.approx([0.2, 0.2, 0.02, 0.02, 0.002, 0.0002, 0.0002])
    x = torch.randn(5, 1, 28, 28)
    out = mnist_case.random_crop(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # Every crop is a window of the padded image: the interior 20×20 always comes from x.
    for i in range(5):
        found = any(torch.equal(out[i, 0, 4:24, 4:24], x[i, 0, 4 - dy:24 - dy, 4 - dx:24 - dx])
                    for dy in range(-4, 5) for dx in range(-4, 5))
        assert found
