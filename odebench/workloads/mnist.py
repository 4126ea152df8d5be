"""The ``mnist`` workload: Chen et al. 2018's Table 1, measured (DESIGN §6, mnist).

One case trains one of the three MNIST models of :mod:`odebench.backends.torch_convnets`
(``odenet``, ``rknet``, ``resnet``; the workload's matrix axis ``model``) as torchdiffeq's
``examples/odenet_mnist.py`` does: SGD with momentum 0.9, learning rate ``lr × batch / 128``
decayed ×``lr_decay`` at the epochs ``lr_decay_epochs`` (set per iteration, boundaries at
``int(batches_per_epoch × epoch)``, so fractional epochs work), cross-entropy loss, optional
random-crop augmentation (28×28 crops of the image padded by 4).

Which cases run (the pairing rule). A suite lists its cases with the common matrix plus
``matrix.include`` blocks (``suites/mnist``: ODE-Net in the base product, one block for RK-Net
and one for ResNet), and each model only runs where it is one of Table 1's models:

* ``odenet`` solves adaptively (Chen et al.: dopri5 at tol 1e-3): adaptive methods with any
  grad mode the plugin declares; a fixed-step method is not ODE-Net (that is ``rknet``);
* ``rknet`` is fixed-step (``model.step_size``) with ``backprop`` through the steps: fixed-step
  methods only, grad mode ``backprop`` only;
* ``resnet`` has no ODE solve, so it runs once per seed and device: in the first ResNet case of
  the (unfiltered) matrix; its plugin, method and grad mode are labels only.

Any other point a product produces is a record with status ``unsupported``, its reason, and
``not_applicable = true`` (the report lists it under "Not run"); :func:`validate` rejects a
matrix in which a model has no case it can run.

Measured per case: test accuracy / error (after the last batch, and the best seen), parameter
count, timed seconds per epoch (forward and backward+step apart, each between device syncs with
GC off; data shuffling, augmentation and evaluation are outside the timed region), NFE-F and
NFE-B per training batch (the ODE function's own counter read between the timed regions, mean
over training and per eval point), instrumented passes on a fixed probe batch before training
and after every epoch (harness hook counter, VJPs through ``f``, the library's own count, saved
bytes), peak RSS over each epoch's training loop after returning freed heap memory to the OS
(CUDA: peak allocated), and a history at each evaluation point for the figures. A missing dataset, a failed solve or any exception is the
record's status and one-line message, never an exception.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odebench.measure import PeakRSS, gc_off, summarize, timed
from odebench.protocol import FIXED_METHODS, SolverPlugin, Status

#: The models of Table 1 (kept in sync with ``odebench.backends.torch_convnets.MODEL_KINDS``,
#: repeated here so loading a suite does not import torch).
MODELS = ("odenet", "rknet", "resnet")
OPTIMIZERS = ("sgd",)
#: The learning rate is ``lr × batch_size / LR_BATCH_DENOM`` (torchdiffeq's example).
LR_BATCH_DENOM = 128
MNIST_TRAIN, MNIST_TEST = 60_000, 10_000

SECTIONS = {
    "data": {"train_subset": (int, "nonneg"), "test_subset": (int, "nonneg"), "subset_seed": (int, "nonneg"),
             "data_dir": (str, None), "augment": (bool, None), "test_batch_size": (int, "pos")},
    "model": {"step_size": (float, "pos")},
    "training": {"optimizer": (str, OPTIMIZERS), "lr": (float, "pos"), "momentum": (float, "nonneg"),
                 "batch_size": (int, "pos"), "epochs": (int, "pos"), "lr_decay_epochs": ([float], "nonneg"),
                 "lr_decay": (float, "pos"), "evals_per_epoch": (int, "pos"), "max_batches": (int, "nonneg")},
}
DEFAULTS = {
    # 0 = the whole split; data_dir "" = $ODEBENCH_DATA, then the user cache.
    "data": {"train_subset": 0, "test_subset": 0, "subset_seed": 0, "data_dir": "", "augment": True,
             "test_batch_size": 1000},
    "model": {"step_size": 0.1},
    "training": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 128, "epochs": 160,
                 "lr_decay_epochs": [60.0, 100.0, 140.0], "lr_decay": 0.1, "evals_per_epoch": 1,
                 "max_batches": 0},
}
REQUIRED = ("training",)
AXES = {"model": ([str], MODELS)}
#: record fields of this workload, in the order results.csv shows them.
COLUMNS = ["params", "test_acc", "test_error_pct", "best_test_acc", "epochs_done", "batches_done",
           "batches_per_epoch", "batch_size", "train_images", "test_images", "repeats", "s_per_epoch",
           "s_per_epoch_iqr", "s_per_batch", "s_per_batch_iqr", "fwd_s", "bwd_s", "train_s", "ms_per_image",
           "final_loss", "nfe_fwd", "nfe_bwd", "nfe_fwd_first_epoch", "nfe_fwd_last_epoch",
           "nfe_bwd_first_epoch", "nfe_bwd_last_epoch", "probe_nfe_fwd_start", "probe_nfe_fwd_end",
           "probe_nfe_bwd_start", "probe_nfe_bwd_end", "n_vjp", "nfe_native", "nfe_agree", "steps",
           "peak_rss_bytes", "rss_method", "peak_gpu_bytes", "saved_bytes", "paper_test_error_pct",
           "paper_params_m", "not_applicable"]


# --------------------------------------------------------------------------- validation
def _choices(xs) -> str:
    return ", ".join(str(x) for x in xs)


def validate(config: dict[str, Any], where: str) -> None:
    """Cross-checks: subsets fit MNIST, the batch fits the subset, the schedule ascends, the paper rows
    name models, and every model in the matrix has at least one case it can run (see
    :func:`not_applicable`)."""
    from odebench.suite import SuiteError

    data, train = config["data"], config["training"]
    if data["train_subset"] > MNIST_TRAIN:
        raise SuiteError(f"{where}: data.train_subset {data['train_subset']} exceeds MNIST's {MNIST_TRAIN} "
                         "training images (0 = all)")
    if data["test_subset"] > MNIST_TEST:
        raise SuiteError(f"{where}: data.test_subset {data['test_subset']} exceeds MNIST's {MNIST_TEST} "
                         "test images (0 = all)")
    n_train = data["train_subset"] or MNIST_TRAIN
    if train["batch_size"] > n_train:
        raise SuiteError(f"{where}: training.batch_size {train['batch_size']} exceeds the {n_train} "
                         "training images")
    decay = train["lr_decay_epochs"]
    if any(b <= a for a, b in zip(decay, decay[1:])):
        raise SuiteError(f"{where}: training.lr_decay_epochs must increase, got {decay}")
    for i, row in enumerate(config["paper"]["rows"]):
        if row.get("model") not in MODELS:
            raise SuiteError(f"unknown value {row.get('model')!r} for paper.rows[{i}].model; "
                             f"valid: {_choices(MODELS)}")
    cases = [c.to_dict() for c in _all_cases(config)]
    for model in dict.fromkeys(c["model"] for c in cases):
        mine = [c for c in cases if c["model"] == model]
        reasons = [not_applicable(c, config, cases) for c in mine]
        if all(reasons):
            raise SuiteError(f"{where}: matrix.model {model!r} has no case it can run: {reasons[0]}")


def _all_cases(config: dict[str, Any]):
    """Every case of the suite's matrix, unfiltered, in the suite's order."""
    from odebench.suite import Suite

    return Suite(config["suite"].get("name", "?"), Path("."), "", config).cases()


def not_applicable(case: dict[str, Any], config: dict[str, Any],
                   cases: list[dict[str, Any]] | None = None) -> str | None:
    """Why this point of the matrix is not one of Table 1's models (None: it runs). See the module doc.

    Arguments:
        case: the case's fields, with ``model``.
        config: the suite's validated settings.
        cases: the suite's unfiltered cases (computed from ``config`` when None); ResNet runs in
            the first of them with its seed and device.
    """
    model, method, grad = case["model"], case["method"], case["grad_mode"]
    if model == "odenet" and method in FIXED_METHODS:
        return (f"ODE-Net solves adaptively (Chen et al.: dopri5); fixed-step {method} is RK-Net "
                "(model = rknet)")
    if model == "rknet":
        if method not in FIXED_METHODS:
            return (f"RK-Net takes fixed steps of model.step_size; {method} is adaptive "
                    f"(use one of {_choices(FIXED_METHODS)})")
        if grad != "backprop":
            return f"RK-Net backpropagates through the solver's steps; grad mode {grad!r} is ODE-Net's"
    if model == "resnet":
        if cases is None:
            cases = [c.to_dict() for c in _all_cases(config)]
        home = next((c for c in cases if c["model"] == "resnet" and c["seed"] == case["seed"]
                     and c["device"] == case["device"]), None)
        if home is not None and home["case_id"] != case.get("case_id"):
            return (f"resnet has no ODE solve: measured once per seed and device, in case "
                    f"{home['plugin']}/{home['method']}/{home['grad_mode']}")
    return None


def _paper_rows(config: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The suite's ``[paper]`` rows by model."""
    rows = (config or {}).get("paper", {}).get("rows", [])
    return {r.get("model"): r for r in rows if r.get("model")}


# --------------------------------------------------------------------------- data
def load_data(config: dict[str, Any], device, dtype):
    """``(x_train, y_train, x_test, y_test)`` as tensors on ``device`` (images normalised, N×1×28×28).

    Raises:
        MNISTError: the files are missing or fail verification (one-line message).
    """
    import torch

    from odebench.data.mnist import load_mnist, mnist_subset, normalize_images

    data = config["data"]
    out = []
    for split, n in (("train", data["train_subset"]), ("test", data["test_subset"])):
        images, labels = load_mnist(split, data["data_dir"] or None)
        if n:
            images, labels = mnist_subset(images, labels, n, seed=data["subset_seed"])
        out.append(torch.as_tensor(normalize_images(images), device=device).to(dtype))
        out.append(torch.as_tensor(labels.astype(np.int64), device=device))
    return tuple(out)


def random_crop(x, generator, pad: int = 4):
    """Random 28×28 crops of the batch padded by ``pad`` (torchvision's ``RandomCrop(28, padding=4)``).

    The padding is the normalised value of a black pixel, as when the crop precedes ``Normalize``.
    """
    import torch
    import torch.nn.functional as F

    from odebench.data.mnist import MNIST_MEAN, MNIST_STD

    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-MNIST_MEAN / MNIST_STD)
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)


def lr_at(itr: int, train: dict[str, Any], batches_per_epoch: int) -> float:
    """The example's piecewise-constant schedule at iteration ``itr``."""
    base = train["lr"] * train["batch_size"] / LR_BATCH_DENOM
    passed = sum(itr >= int(batches_per_epoch * e) for e in train["lr_decay_epochs"])
    return base * train["lr_decay"] ** passed


# --------------------------------------------------------------------------- one case
def build_model(case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin, device, dtype):
    from odebench.backends.torch_convnets import build_mnist_model

    kind = case["model"]
    kw: dict[str, Any] = {}
    if kind != "resnet":
        kw = dict(method=case["method"], grad_mode=case["grad_mode"], max_steps=config["measure"]["max_steps"])
        if kind == "odenet":
            kw.update(rtol=case["rtol"], atol=case["atol"])
        else:
            kw.update(step_size=config["model"]["step_size"])
    model = build_mnist_model(kind, plugin if kind != "resnet" else None, seed=case["seed"], **kw)
    return model.to(device=device, dtype=dtype)


def run_case(case: dict[str, Any], config: dict[str, Any], plugin: SolverPlugin) -> dict[str, Any]:
    """Train one model and return its record fields (see the module docstring).

    Arguments:
        case: the case's fields (see :class:`odebench.suite.Case`), with ``model``.
        config: the suite's validated settings.
        plugin: an instance of the case's plugin (unused by ``resnet``).

    Never raises for a failed case: the failure is the record's status and message.
    """
    paper = _paper_rows(config).get(case["model"], {})
    rec: dict[str, Any] = {"status": str(Status.OK), "message": "", "model": case["model"],
                           "paper_test_error_pct": paper.get("test_error_pct"), "paper_params_m": paper.get("params_m")}
    t_case = time.perf_counter()
    reason = not_applicable(case, config)
    if reason:
        return rec | {"status": str(Status.UNSUPPORTED), "message": reason, "not_applicable": True,
                      "case_wall_s": time.perf_counter() - t_case}
    try:
        rec.update(_run(case, config, plugin))
    except MemoryError as exc:
        rec.update(status=str(Status.OOM), message=f"MemoryError: {exc}")
    except Exception as exc:  # noqa: BLE001 - any failure is a row, never an aborted run
        from odebench.backends.base import SolveFailed
        from odebench.data.mnist import MNISTError

        if isinstance(exc, SolveFailed):
            rec.update(status=str(exc.status), message=exc.message)
        elif isinstance(exc, MNISTError):
            rec.update(status=str(Status.ERROR), message=str(exc).splitlines()[0])
        else:
            rec.update(status=str(Status.ERROR), message=f"{type(exc).__name__}: {exc}".splitlines()[0])
    rec["case_wall_s"] = time.perf_counter() - t_case
    return rec


def _run(case, config, plugin) -> dict[str, Any]:
    import torch

    from odebench.backends.torch import DTYPES
    from odebench.backends.torch_convnets import count_parameters

    device = torch.device(case["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    dtype = DTYPES[config["measure"]["dtype"]]
    data = load_data(config, device, dtype)
    train = config["training"]
    n_train = len(data[1])
    batches_per_epoch = n_train // train["batch_size"]  # drop_last, as the example's loader
    if train["max_batches"]:
        batches_per_epoch = min(batches_per_epoch, train["max_batches"])
    label = f"[mnist {case['model']} {case['plugin']}/{case['method']}/{case['grad_mode']} seed {case['seed']}]"
    print(f"{label} {n_train} training / {len(data[3])} test images, {batches_per_epoch} batches of "
          f"{train['batch_size']} per epoch, {train['epochs']} epochs", file=sys.stderr, flush=True)

    _warm_up(build_model(case, config, plugin, device, dtype), data, config, device)
    runs = []
    for r in range(config["measure"]["repeats"]):
        model = build_model(case, config, plugin, device, dtype)
        runs.append(_train(model, data, case, config, device, batches_per_epoch,
                           label=label if r == 0 else None))
        if runs[-1]["status"] != str(Status.OK):
            break
    out = _combine(runs)
    out.update(params=count_parameters(model), batches_per_epoch=batches_per_epoch,
               batch_size=train["batch_size"], train_images=n_train, test_images=len(data[3]))
    return out


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Without it, memory freed by the warm-up, the probe pass or the previous segment stays in
    the resident set, so a region's peak minus its baseline hides what the region allocates.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sync_fn(device):
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _warm_up(model, data, config, device) -> None:
    """``measure.warmup`` untimed training steps on a throwaway copy of the model."""
    import torch
    import torch.nn.functional as F

    x, y = data[0], data[1]
    b = config["training"]["batch_size"]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=config["training"]["momentum"])
    for i in range(config["measure"]["warmup"]):
        lo = (i * b) % max(1, len(y) - b + 1)
        loss = F.cross_entropy(model(x[lo:lo + b]), y[lo:lo + b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync_fn(device)()


def evaluate(model, x, y, batch_size: int) -> tuple[float, float | None]:
    """Test accuracy and mean forward NFE per test batch (None without an ODE block), untimed."""
    import torch

    block = model.ode_block
    correct, nfes = 0, []
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, len(y), batch_size):
                start = block.nfe if block is not None else 0
                logits = model(x[lo:lo + batch_size])
                if block is not None:
                    nfes.append(block.nfe - start)
                correct += int((logits.argmax(dim=1) == y[lo:lo + batch_size]).sum())
    finally:
        model.train()
    return correct / max(1, len(y)), (float(np.mean(nfes)) if nfes else None)


def instrumented(model, x, y) -> dict[str, Any]:
    """One untimed forward+backward on ``(x, y)``: NFE counted by a harness hook, VJPs through ``f``,
    the library's own count, and the bytes autograd saves for backward. Parameters are not updated."""
    import torch
    import torch.nn.functional as F

    from odebench.measure import NFECounter, saved_tensor_bytes

    block = model.ode_block
    counter = NFECounter()
    handle = None
    if block is not None:
        def hook(_module, _inputs, out):
            counter.call()
            if out.requires_grad:
                out.register_hook(counter.vjp)

        handle = block.odefunc.register_forward_hook(hook)
    try:
        with saved_tensor_bytes() as saved:
            loss = F.cross_entropy(model(x), y)
        counter.phase = "bwd"
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        del grads
    finally:
        if handle is not None:
            handle.remove()
    out: dict[str, Any] = {"loss": float(loss.detach()), "saved_bytes": saved["bytes"], "nfe_fwd": None,
                           "nfe_bwd": None, "n_vjp": None, "nfe_native": None, "steps": None}
    if block is not None:
        stats = block.last_solution.stats if block.last_solution is not None else None
        out.update(nfe_fwd=counter.nfe_fwd, nfe_bwd=counter.nfe_bwd, n_vjp=counter.n_vjp,
                   nfe_native=getattr(stats, "nfe", None), steps=getattr(stats, "n_steps", None))
    return out


def _eval_points(batches_per_epoch: int, per_epoch: int) -> list[int]:
    """Batch counts within an epoch after which the test set is evaluated (the last is the epoch's end)."""
    n = min(per_epoch, batches_per_epoch)
    return sorted({int(round(batches_per_epoch * (k + 1) / n)) for k in range(n)})


def _train(model, data, case, config, device, batches_per_epoch: int, label: str | None) -> dict[str, Any]:
    """Train from the model's initial weights; returns the run's measurements (partial on failure).

    Each epoch is cut into segments at the evaluation points; a segment's training batches run
    with GC off inside a :class:`PeakRSS` region (CUDA: a peak-allocated window), and the test
    evaluation between segments is outside both, so the peak is training's own.
    """
    import torch
    import torch.nn.functional as F

    from odebench.backends.base import SolveFailed

    x_train, y_train, x_test, y_test = data
    train, dcfg = config["training"], config["data"]
    bs = train["batch_size"]
    block = model.ode_block
    sync = _sync_fn(device)
    cuda = device.type == "cuda"
    opt = torch.optim.SGD(model.parameters(), lr=lr_at(0, train, batches_per_epoch), momentum=train["momentum"])
    gen = torch.Generator().manual_seed(case["seed"])
    # Copies, not views: a view would make saved_tensor_bytes count the whole dataset's storage.
    probe = (x_train[:bs].clone(), y_train[:bs].clone())
    evals = _eval_points(batches_per_epoch, train["evals_per_epoch"])

    fwd: list[float] = []
    bwd: list[float] = []
    epoch_s: list[float] = []
    epoch_nfe: list[tuple[float | None, float | None]] = []
    hist: dict[str, list] = {k: [] for k in ("epoch", "test_acc", "train_loss", "time_s", "wall_s", "nfe_fwd",
                                             "nfe_bwd", "test_nfe", "lr")}
    probes = [instrumented(model, *probe) | {"epoch": 0}]
    peak_rss, rss_method, peak_gpu = 0, "", None
    status, message = str(Status.OK), ""
    elapsed, itr, epochs_done = 0.0, 0, 0
    t_wall = time.perf_counter()

    def one_batch(xb, yb) -> tuple[float, int, int]:
        n0 = block.nfe if block is not None else 0
        loss, tf = timed(lambda: F.cross_entropy(model(xb), yb), sync)
        n1 = block.nfe if block is not None else 0

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        _, tb = timed(step, sync)
        n2 = block.nfe if block is not None else 0
        fwd.append(tf)
        bwd.append(tb)
        return float(loss.detach()), n1 - n0, n2 - n1

    try:
        for epoch in range(train["epochs"]):
            perm = torch.randperm(len(y_train), generator=gen).to(device)
            e_time, e_nf, e_nb = 0.0, [], []
            k = 0
            for seg_end in evals:
                losses, nf, nb = [], [], []
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                    gpu_base = torch.cuda.memory_allocated(device)
                release_free_memory()
                with PeakRSS() as mem, gc_off():
                    while k < seg_end:
                        idx = perm[k * bs:(k + 1) * bs]
                        xb, yb = x_train[idx], y_train[idx]
                        if dcfg["augment"]:
                            xb = random_crop(xb, gen)
                        for group in opt.param_groups:
                            group["lr"] = lr_at(itr, train, batches_per_epoch)
                        loss, n_f, n_b = one_batch(xb, yb)
                        e_time += fwd[-1] + bwd[-1]
                        elapsed += fwd[-1] + bwd[-1]
                        itr += 1
                        k += 1
                        losses.append(loss)
                        if block is not None:
                            nf.append(n_f)
                            nb.append(n_b)
                peak_rss, rss_method = max(peak_rss, mem.delta), mem.method
                if cuda:
                    peak_gpu = max(peak_gpu or 0, torch.cuda.max_memory_allocated(device) - gpu_base)
                acc, test_nfe = evaluate(model, x_test, y_test, dcfg["test_batch_size"])
                e_nf += nf
                e_nb += nb
                hist["epoch"].append(epoch + k / batches_per_epoch)
                hist["test_acc"].append(acc)
                hist["train_loss"].append(float(np.mean(losses)))
                hist["time_s"].append(elapsed)
                hist["wall_s"].append(time.perf_counter() - t_wall)
                hist["nfe_fwd"].append(_mean(nf))
                hist["nfe_bwd"].append(_mean(nb))
                hist["test_nfe"].append(test_nfe)
                hist["lr"].append(opt.param_groups[0]["lr"])
                if label:
                    nfe_txt = f", NFE-F {np.mean(nf):.1f}, NFE-B {np.mean(nb):.1f}" if nf else ""
                    print(f"{label} epoch {hist['epoch'][-1]:.2f}/{train['epochs']}: train loss "
                          f"{np.mean(losses):.4f}, test acc {100 * acc:.2f}%, timed {elapsed:.1f} s, "
                          f"wall {hist['wall_s'][-1]:.1f} s{nfe_txt}", file=sys.stderr, flush=True)
            epoch_s.append(e_time)
            epoch_nfe.append((_mean(e_nf), _mean(e_nb)))
            epochs_done += 1
            probes.append(instrumented(model, *probe) | {"epoch": epoch + 1})
    except SolveFailed as exc:
        status, message = str(exc.status), exc.message
    except MemoryError as exc:
        status, message = str(Status.OOM), f"MemoryError: {exc}"
    return {"status": status, "message": message, "fwd": fwd, "bwd": bwd, "epoch_s": epoch_s,
            "epoch_nfe": epoch_nfe, "history": hist, "probes": probes, "epochs_done": epochs_done,
            "batches_done": len(fwd), "batch_size": bs, "peak_rss_bytes": peak_rss, "rss_method": rss_method,
            "peak_gpu_bytes": peak_gpu}


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from the repeats: timing statistics over all of them, the rest from the first."""
    first, last = runs[0], runs[-1]
    hist = first["history"]
    fwd = np.concatenate([r["fwd"] for r in runs]) if any(r["fwd"] for r in runs) else np.array([])
    bwd = np.concatenate([r["bwd"] for r in runs]) if any(r["bwd"] for r in runs) else np.array([])
    per_batch = summarize(fwd + bwd)
    per_epoch = summarize([s for r in runs for s in r["epoch_s"]])
    accs = hist["test_acc"]
    rec: dict[str, Any] = {
        "status": last["status"], "message": last["message"], "repeats": len(runs),
        "epochs_done": first["epochs_done"], "batches_done": first["batches_done"],
        "test_acc": accs[-1] if accs else None,
        "test_error_pct": 100 * (1 - accs[-1]) if accs else None,
        "best_test_acc": max(accs) if accs else None,
        "s_per_epoch": per_epoch["median"], "s_per_epoch_iqr": per_epoch["iqr"],
        "s_per_batch": per_batch["median"], "s_per_batch_iqr": per_batch["iqr"],
        "fwd_s": summarize(fwd)["median"], "bwd_s": summarize(bwd)["median"],
        "train_s": float(np.sum(first["fwd"]) + np.sum(first["bwd"])),
        "final_loss": hist["train_loss"][-1] if hist["train_loss"] else None,
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs), "rss_method": first["rss_method"],
        "peak_gpu_bytes": first["peak_gpu_bytes"],
        "history": hist, "epoch_s": first["epoch_s"],
        "epoch_nfe": [{"nfe_fwd": f, "nfe_bwd": b} for f, b in first["epoch_nfe"]],
    }
    if first["batches_done"]:
        rec["ms_per_image"] = 1e3 * rec["train_s"] / (first["batches_done"] * first["batch_size"])
    # ResNet has no ODE solve: its NFE fields are None, not missing.
    rec.update({k: None for k in COLUMNS if k.startswith(("nfe_", "probe_nfe_")) or k in ("n_vjp", "steps")})
    nfe_f = [x for x in hist["nfe_fwd"] if x is not None]
    if nfe_f:
        # Mean over every training batch, weighted by the batches between evaluations.
        weights = np.diff([0.0] + list(hist["epoch"]))
        rec["nfe_fwd"] = float(np.average(hist["nfe_fwd"], weights=weights))
        rec["nfe_bwd"] = float(np.average(hist["nfe_bwd"], weights=weights))
        ep = first["epoch_nfe"]
        rec.update(nfe_fwd_first_epoch=ep[0][0] if ep else None, nfe_fwd_last_epoch=ep[-1][0] if ep else None,
                   nfe_bwd_first_epoch=ep[0][1] if ep else None, nfe_bwd_last_epoch=ep[-1][1] if ep else None)
    probes = first["probes"]
    rec["probes"] = probes
    if probes:
        rec["saved_bytes"] = probes[0]["saved_bytes"]
        if probes[0]["nfe_fwd"] is not None:
            rec.update(probe_nfe_fwd_start=probes[0]["nfe_fwd"], probe_nfe_fwd_end=probes[-1]["nfe_fwd"],
                       probe_nfe_bwd_start=probes[0]["nfe_bwd"], probe_nfe_bwd_end=probes[-1]["nfe_bwd"],
                       n_vjp=_mean(p["n_vjp"] for p in probes), steps=_mean(p["steps"] for p in probes))
            native = [p for p in probes if p["nfe_native"] is not None]
            rec["nfe_native"] = _mean(p["nfe_native"] for p in native)
            # The library's own count must equal what the harness counted, pass by pass (DESIGN §4).
            rec["nfe_agree"] = all(p["nfe_native"] == p["nfe_fwd"] for p in native) if native else None
    return rec


# --------------------------------------------------------------------------- report
MODEL_NAMES = {"odenet": "ODE-Net", "rknet": "RK-Net", "resnet": "ResNet"}

SUMMARY_NOTE = (
    "Chen et al. 2018, Table 1, measured: one row per model × plugin × method × grad mode (median over "
    "seeds). Test error is after the last training batch on this profile's test set (best seen in "
    "brackets). s/epoch is the timed training time of one epoch of this profile (forward, and backward + "
    "optimiser step, each between device syncs with GC off; data, augmentation and evaluation excluded); "
    "ms/img is that time per training image. NFE-F / NFE-B are vector-field evaluations per training batch "
    "(mean over training), with the instrumented probe batch before → after training. Peak RSS is the "
    "peak resident set over the training loop minus the set before it (freed heap memory returned to the "
    "OS first: glibc malloc_trim); saved MB is what autograd keeps "
    "for backward on one batch. Paper columns: Chen et al.'s test error and parameters (full MNIST, "
    "160 epochs).")


def _applicable(df: pd.DataFrame) -> pd.DataFrame:
    if "not_applicable" not in df:
        return df
    return df[df["not_applicable"].fillna(False).astype(bool) == False]  # noqa: E712


def _nfe_cell(med: pd.Series, mean: str, probe: str) -> str:
    """``mean (probe before→after training)``."""
    from odebench.report import fmt

    return (f"{fmt(med.get(mean), '.1f')} ({fmt(med.get(probe + '_start'), '.0f')}→"
            f"{fmt(med.get(probe + '_end'), '.0f')})")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1's layout: model, test error %, params (M), s/epoch, NFE-F, NFE-B, peak memory."""
    from odebench.report import fmt, groups

    df = _applicable(df)
    if df.empty:
        return pd.DataFrame()
    rows = []
    for key, g, ok, status in groups(df, ["model", "plugin", "method", "grad_mode", "rtol", "atol", "device"]):
        med = ok.median(numeric_only=True) if len(ok) else pd.Series(dtype=float)
        model = key[0]
        solver = model != "resnet"
        best = med.get("best_test_acc", np.nan)
        row = {
            "model": MODEL_NAMES.get(model, model),
            "plugin": key[1] if solver else "–",
            "method": (key[2] if model == "odenet" else f"{key[2]} (fixed)") if solver else "–",
            "grad": key[3] if solver else "–",
            "rtol": ("–" if key[4] == -1 else f"{key[4]:g}") if solver else "–",
            "device": key[6],
            "status": status,
            "test err %": (f"{fmt(med.get('test_error_pct'), '.2f')} ({fmt(100 * (1 - best), '.2f')})"
                           if len(ok) else "–"),
            "params (M)": fmt(med.get("params", np.nan) / 1e6, ".3f"),
            "s/epoch": fmt(med.get("s_per_epoch"), ".1f"),
            "ms/img": fmt(med.get("ms_per_image"), ".2f"),
            "fwd/bwd ms": (f"{fmt(med.get('fwd_s', np.nan) * 1e3, '.0f')}/"
                           f"{fmt(med.get('bwd_s', np.nan) * 1e3, '.0f')}") if len(ok) else "–",
            "NFE-F": _nfe_cell(med, "nfe_fwd", "probe_nfe_fwd") if solver and len(ok) else "–",
            "NFE-B": _nfe_cell(med, "nfe_bwd", "probe_nfe_bwd") if solver and len(ok) else "–",
            "peak RSS MB": fmt(med.get("peak_rss_bytes", np.nan) / 2**20, ".0f"),
            "saved MB": fmt(med.get("saved_bytes", np.nan) / 2**20, ".1f"),
            "seeds": f"{len(ok)}/{len(g)}",
        }
        if "peak_gpu_bytes" in med and np.isfinite(med.get("peak_gpu_bytes", np.nan)):
            row["peak GPU MB"] = fmt(med["peak_gpu_bytes"] / 2**20, ".0f")
        # The suite's [paper] values travel in each record (paper_test_error_pct, paper_params_m).
        row["paper err %"] = fmt(g["paper_test_error_pct"].median(), ".2f")
        row["paper params (M)"] = fmt(g["paper_params_m"].median(), ".2f")
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(MODEL_NAMES.values())}
    return out.sort_values("model", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def sections(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """Table 1 beside the measurements, and the run's data and training settings."""
    from odebench.report import fmt

    out: list[str] = []
    paper = config.get("paper", {}) if config else {}
    ok = [r for r in records if r["status"] == "ok" and not r.get("not_applicable")]
    if paper.get("rows"):
        out += [f"## Against the paper ({paper.get('source', '')})", "",
                "| model | paper test error % | paper params (M) | paper memory | paper time | "
                "measured test error % (best case) | measured params (M) | measured peak RSS MB (min) | "
                "measured saved MB (min) |", "|---|---|---|---|---|---|---|---|---|"]
        for row in paper["rows"]:
            mine = [r for r in ok if r.get("model") == row.get("model") and r.get("test_error_pct") is not None]
            err = min((r["test_error_pct"] for r in mine), default=np.nan)
            params = mine[0]["params"] / 1e6 if mine else np.nan
            rss = min((r.get("peak_rss_bytes") or np.nan for r in mine), default=np.nan) / 2**20
            saved = min((r.get("saved_bytes") or np.nan for r in mine), default=np.nan) / 2**20
            out.append(f"| {MODEL_NAMES.get(row.get('model'), row.get('model'))} | "
                       f"{fmt(row.get('test_error_pct'), '.2f')} | {fmt(row.get('params_m'), '.2f')} | "
                       f"{row.get('memory', '–')} | {row.get('time', '–')} | {fmt(err, '.2f')} | "
                       f"{fmt(params, '.3f')} | {fmt(rss, '.0f')} | {fmt(saved, '.1f')} |")
        out.append("")
    if ok:
        r = ok[0]
        out += [f"Data and training of this run: {r.get('train_images')} training and {r.get('test_images')} test "
                f"images, batch {r.get('batch_size')}, {r.get('batches_per_epoch')} batches per epoch, "
                f"{r.get('epochs_done')} epoch(s) done; the paper trains on all 60 000 for 160 epochs, so "
                "its error is comparable only on the full profile.", ""]
    return out


def _label(r: dict[str, Any]) -> str:
    name = MODEL_NAMES.get(r.get("model"), r.get("model"))
    if r.get("model") == "resnet":
        return name + (f" s{r['seed']}" if r.get("seed") else "")
    return f"{name} {r['plugin']} {r['method']} {r['grad_mode']}" + (f" s{r['seed']}" if r.get("seed") else "")


def figures(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Test accuracy against epoch and against timed training time; NFE-F / NFE-B against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if (r.get("history") or {}).get("test_acc")]
    if not runs:
        return []
    out.mkdir(exist_ok=True)
    paths = []
    for xkey, xlabel, name in (("epoch", "epoch", "test_acc_vs_epoch.png"),
                               ("time_s", "training time (s, timed region only)", "test_acc_vs_time.png")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, r in enumerate(runs):
            h = r["history"]
            ax.plot(h[xkey], [100 * a for a in h["test_acc"]], marker="o", ms=3, lw=1.2, label=_label(r),
                    color=f"C{i % 10}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    with_nfe = [r for r in runs if any(x is not None for x in r["history"].get("nfe_fwd", []))]
    if with_nfe:
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, r in enumerate(with_nfe):
            h = r["history"]
            ax.plot(h["epoch"], h["nfe_fwd"], marker="o", ms=3, lw=1.2, color=f"C{i % 10}",
                    label=f"{_label(r)} NFE-F")
            if any(b for b in h["nfe_bwd"] if b):
                ax.plot(h["epoch"], h["nfe_bwd"], marker="s", ms=3, lw=1.2, ls="--", color=f"C{i % 10}",
                        label=f"{_label(r)} NFE-B")
        ax.set_xlabel("epoch")
        ax.set_ylabel("function evaluations per training batch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "nfe_vs_epoch.png", dpi=110)
        plt.close(fig)
        paths.append(out / "nfe_vs_epoch.png")
    return paths
