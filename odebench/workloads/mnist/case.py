"""One case of the ``mnist`` workload (see :mod:`odebench.workloads.mnist` for what it measures)."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from odebench.failures import failure_fields
from odebench.measure import PeakRSS, gc_off, summarize, timed, trim_heap
from odebench.protocol import SolverPlugin, Status
from odebench.workloads.mnist.rules import _paper_rows, not_applicable
from odebench.workloads.mnist.schema import COLUMNS, LR_BATCH_DENOM


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
    """The example's piecewise-constant schedule at iteration ``itr`` (the rate scaled by the batch
    unless ``training.scale_lr`` is false)."""
    base = train["lr"] * (train["batch_size"] / LR_BATCH_DENOM if train.get("scale_lr", True) else 1.0)
    passed = sum(itr >= int(batches_per_epoch * e) for e in train["lr_decay_epochs"])
    return base * train["lr_decay"] ** passed


def make_optimizer(model, train: dict[str, Any], lr: float):
    """``training.optimizer`` over the model's parameters: SGD with ``training.momentum``
    (torchdiffeq's example), or Adam with torch's defaults but the rate (the review's).

    Raises:
        ValueError: for an optimizer the schema does not list.
    """
    import torch

    if train["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=train["momentum"])
    if train["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    raise ValueError(f"unknown value {train['optimizer']!r} for training.optimizer; valid: sgd, adam")


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
    except Exception as exc:  # noqa: BLE001 - any failure is a row, never an aborted run
        rec.update(failure_fields(exc))
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
    if out["status"] == str(Status.OK) and config["swap"]["enabled"] and model.ode_block is not None:
        out.update(solver_swap(model, data, case, config))
        print(f"{label} solver swap to {out['swap_solver']}: test acc {out.get('swap_test_acc')} "
              f"(change {out.get('swap_acc_delta')}) {out.get('swap_message', '')}", file=sys.stderr, flush=True)
    return out


def solver_swap(model, data, case: dict[str, Any], config: dict[str, Any], reference=None) -> dict[str, Any]:
    """The solver-swap check of a trained model (:mod:`odebench.swap`), untimed, after training.

    The trained model is evaluated on the test set twice, through the same code: with the solver it
    was trained with, and with the reference solver (both in their own dtype), so the difference
    is the swap's effect alone (exactly 0 when the two solvers are the same).

    Arguments:
        model: the trained model (with an ODE block).
        data: ``(x_train, y_train, x_test, y_test)``.
        case, config: the case's fields and the suite's settings.
        reference: the :class:`odebench.swap.Solver` to swap in; None: the suite's ``[swap]`` reference.

    Returns:
        ``swap_solver``, ``swap_test_acc`` (test accuracy with the reference) and ``swap_acc_delta``
        (that minus the accuracy with the trained solver, a fraction); on a failed evaluation they
        are None and ``swap_message`` says why. Never raises.
    """
    from odebench.backends.torch import DTYPES
    from odebench.swap import Solver, reference_solver, swapped_model

    block = model.ode_block
    trained = Solver(block.plugin, block.method, block.rtol, block.atol, block.step_size, config["measure"]["dtype"])
    out: dict[str, Any] = {"swap_solver": "", "swap_test_acc": None, "swap_acc_delta": None}
    x, y, batch = data[2], data[3], config["data"]["test_batch_size"]
    try:
        reference = reference or reference_solver(block.plugin, config["swap"], case["device"])
        out["swap_solver"] = reference.label()
        base, _ = evaluate(swapped_model(model, trained), x.to(DTYPES[trained.dtype]), y, batch)
        acc, _ = evaluate(swapped_model(model, reference), x.to(DTYPES[reference.dtype]), y, batch)
        out.update(swap_test_acc=acc, swap_acc_delta=acc - base)
    except Exception as exc:  # noqa: BLE001 - a failed check is a note on a case that trained fine
        failed = failure_fields(exc)
        out["swap_message"] = f"{failed['status']}: {failed['message']}"
    return out


def _sync_fn(device):
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _warm_up(model, data, config, device) -> None:
    """``measure.warmup`` untimed training steps on a throwaway copy of the model."""
    import torch.nn.functional as F

    x, y = data[0], data[1]
    b = config["training"]["batch_size"]
    opt = make_optimizer(model, config["training"], 1e-3)
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
    """One untimed forward+backward on ``(x, y)`` through the torch backend's instrumented pass:
    NFE counted by a hook on the ODE function, VJPs through ``f``, the library's own count, and
    the bytes autograd saves for backward. Neither the parameters nor the buffers change."""
    import torch.nn.functional as F

    from odebench.backends.torch import instrumented_pass

    block = model.ode_block
    # A training-mode pass moves BatchNorm's running statistics (the review's model): kept as they
    # were, so the probe does not change what the next test evaluation or the solver swap sees.
    buffers = {name: b.clone() for name, b in model.named_buffers()}

    def loss_fn():
        loss = F.cross_entropy(model(x), y)
        sol = block.last_solution if block is not None else None
        return loss, sol.stats if sol is not None else None

    try:
        inst = instrumented_pass(loss_fn, block.odefunc if block is not None else None,
                                 [p for p in model.parameters() if p.requires_grad])
    finally:
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    solved = block is not None
    return {"loss": inst.loss, "saved_bytes": inst.saved_bytes, "nfe_fwd": inst.nfe_fwd,
            "nfe_bwd": inst.nfe_bwd, "n_vjp": inst.n_vjp, "nfe_native": inst.stats.nfe if solved else None,
            "steps": inst.stats.n_steps if solved else None}


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

    from odebench.protocol import SolveFailed

    x_train, y_train, x_test, y_test = data
    train, dcfg = config["training"], config["data"]
    bs = train["batch_size"]
    block = model.ode_block
    sync = _sync_fn(device)
    cuda = device.type == "cuda"
    opt = make_optimizer(model, train, lr_at(0, train, batches_per_epoch))
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
                trim_heap()
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
                # A NaN (no honest peak counter here) must stay NaN, not lose to the 0 it starts from.
                peak_rss = mem.delta if mem.delta != mem.delta else max(peak_rss, mem.delta)
                rss_method = mem.method
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
