"""The reference gradient of the gradient task, computed once per problem and seed and cached.

The loss is ``L = Σ_i ‖y(t_i) - target_i‖²`` over the output times; the gradient is taken with
respect to the MLP's parameters (each layer's ``W`` then ``b``) and ``y0``, in that order. The
reference is backprop through the first two available of ``gradient.reference``
(``plugin:method``, e.g. torch_custom's and torchdiffeq's dopri5) in float64 at
``gradient.rtol``; the first is the reference, its relative L2 distance to the second is
``xcheck``. A third, framework-free check: central differences of ``L`` computed with scipy's
DOP853 at ``reference.rtol`` on the numpy MLP, along ``gradient.fd_directions`` random unit
directions (Richardson-extrapolated over steps ``h`` and ``h/2``, so the step's truncation
error is of order ``h⁴``), compared with the gradient's directional derivative; ``fd`` is the
worst relative difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from odebench import registry
from odebench.problems.reference import cache_dir, cache_key, solve_reference, write_npz_atomic
from odebench.workloads.workprecision.analysis import relative_l2
from odebench.workloads.workprecision.drivers import make_driver
from odebench.workloads.workprecision.problems import Problem, pick_plugins

#: Bumped when the way the reference gradient is computed changes (it is part of the cache key).
FORMAT = 1
#: The reference gradients of users' problems computed in this process, by (name, cache key).
_MEMO: dict[tuple[str, str], GradReference] = {}


@dataclass
class GradReference:
    """The reference gradient and how far the independent checks are from it.

    Attributes:
        grad: the gradient, float64, parameters then ``y0``.
        loss: the loss at the reference.
        n_params: how many of ``grad``'s entries are parameters (the rest are ``y0``).
        kind: what computed it, for the report.
        xcheck: relative L2 distance of the second computation's gradient.
        fd: worst relative difference of a central-difference directional derivative.
    """

    grad: np.ndarray
    loss: float
    n_params: int
    kind: str
    xcheck: float
    fd: float


def flatten(leaves: list[np.ndarray], y0: np.ndarray) -> np.ndarray:
    """The parameters (each of ``leaves`` in turn: an MLP's ``W`` then ``b``, layer by layer) and
    ``y0`` as one float64 vector."""
    return np.concatenate([*(np.asarray(x, np.float64).ravel() for x in leaves), np.asarray(y0, np.float64).ravel()])


def unflatten(x: np.ndarray, leaves: list[np.ndarray], y0: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The inverse of :func:`flatten`, shaped like ``leaves`` and ``y0``."""
    out, k = [], 0
    for leaf in leaves:
        n = np.size(leaf)
        out.append(x[k:k + n].reshape(np.shape(leaf)))
        k += n
    return out, x[k:].reshape(np.shape(y0))


def numpy_loss(problem: Problem, targets: np.ndarray, x: np.ndarray, rtol: float, atol: float) -> float:
    """``L`` at the parameters and ``y0`` packed in ``x``, solved by scipy's DOP853 (uncached).

    Raises:
        ValueError: for a problem without parameters or without a numpy field.
    """
    leaves = problem.leaves()
    if leaves is None or problem.numpy_field(leaves) is None:
        raise ValueError(f"problem {problem.name!r} has no numpy vector field with parameters to differentiate")
    w, y0 = unflatten(x, leaves, problem.y0)
    field = problem.numpy_field(w)

    def flat(t, y):
        return np.asarray(field(t, y.reshape(y0.shape)), np.float64).reshape(-1)

    ys = solve_reference(flat, y0.reshape(-1), problem.ts, stiff=False, rtol=rtol, atol=atol)
    return float(np.sum((ys.reshape(targets.shape) - targets) ** 2))


def fd_check(problem: Problem, targets: np.ndarray, grad: np.ndarray, *, directions: int, step: float,
             rtol: float, atol: float, seed: int) -> float:
    """The worst relative difference between ``grad · v`` and a central difference of ``L`` along ``v``.

    Arguments:
        problem, targets: the loss.
        grad: the gradient to check (as :func:`flatten` lays it out).
        directions: how many random unit directions ``v``.
        step: the difference step relative to ``‖x‖`` (``h = step · ‖x‖``).
        rtol, atol: the tolerances of the scipy solves.
        seed: the directions' seed.

    Returns:
        ``max_v |D_v - grad · v| / |grad · v|``, with ``D_v = (4 D(h/2) - D(h)) / 3`` and
        ``D(h) = (L(x + h v) - L(x - h v)) / 2h``.
    """
    x = flatten(problem.leaves(), problem.y0)
    h = step * float(np.linalg.norm(x))
    rng = np.random.default_rng([seed, 29])
    worst = 0.0

    def central(v: np.ndarray, d: float) -> float:
        up = numpy_loss(problem, targets, x + d * v, rtol, atol)
        down = numpy_loss(problem, targets, x - d * v, rtol, atol)
        return (up - down) / (2.0 * d)

    for _ in range(directions):
        v = rng.standard_normal(x.size)
        v /= np.linalg.norm(v)
        fd = (4.0 * central(v, h / 2) - central(v, h)) / 3.0
        exact = float(grad @ v)
        worst = max(worst, abs(fd - exact) / abs(exact) if exact else abs(fd))
    return worst


def reference_gradient(problem: Problem, targets: np.ndarray, config: dict[str, Any], seed: int) -> GradReference:
    """The reference gradient of ``problem``'s loss, from the cache or computed (see the module docstring).

    Raises:
        ValueError: when fewer than two reference plugins can backprop here.
        odebench.SolveFailed: when a reference solve fails.
    """
    g, ref = config["gradient"], config["reference"]
    pair = pick_plugins(g["reference"], problem.frameworks)
    if len(pair) < 2 and not problem.user:
        raise ValueError(f"the reference gradient needs two independent backprop computations; available of "
                         f"{', '.join(g['reference'])}: {', '.join(f'{p}:{m}' for p, m in pair)}")
    leaves = problem.leaves()
    what = {"format": FORMAT, "problem": problem.cache_params, "pair": pair, "rtol": g["rtol"], "atol": g["atol"],
            "fd": [g["fd_directions"], g["fd_step"], ref["rtol"], ref["atol"]], "seed": seed}
    key = cache_key(what, problem.ts, np.concatenate([problem.y0.ravel(), targets.ravel()]))
    # A user's problem is cached in this process only (the cases of an inline run share it), never on
    # disk: its field is the user's code, which may change under one name between runs.
    path = None if problem.cache_params is None else cache_dir() / f"wp-gradient-{problem.name}-{key[:24]}.npz"
    cached = _MEMO.get((problem.name, key)) if path is None else _read(path)
    if cached is not None:
        return cached
    grads, losses = [], []
    for name, method in pair:
        kw = dict(method=method, grad_mode="backprop", rtol=g["rtol"], atol=g["atol"], max_steps=10**6)
        driver = make_driver(registry.get_plugin(name), problem, kw, task="gradient", targets=targets,
                             threads=config["measure"]["threads"])
        loss, grad, _ = driver.flat_gradient(driver.gradient())
        grads.append(grad)
        losses.append(loss)
    checked = f" (checked against {pair[1][0]} {pair[1][1]})" if len(pair) > 1 else " (no second plugin computes here)"
    kind = f"backprop through {pair[0][0]} {pair[0][1]}{checked} at rtol {g['rtol']:g}"
    if problem.numpy_field(leaves) is not None:
        fd = fd_check(problem, targets, grads[0], directions=g["fd_directions"], step=g["fd_step"],
                      rtol=ref["rtol"], atol=ref["atol"], seed=seed)
        kind += f"; central differences along {g['fd_directions']} directions with scipy DOP853"
    else:
        fd = float("nan")
        kind += "; no numpy field: no finite-difference check"
    n_params = sum(int(np.size(x)) for x in leaves)
    xcheck = relative_l2(grads[1], grads[0]) if len(grads) > 1 else float("nan")
    out = GradReference(grads[0], losses[0], n_params, kind, xcheck, fd)
    if path is None:
        _MEMO[(problem.name, key)] = out
    else:
        _write(path, out)
    return out


def _read(path) -> GradReference | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return GradReference(np.array(data["grad"], np.float64), **meta)
    except (OSError, KeyError, ValueError, TypeError, EOFError):
        return None


def _write(path, ref: GradReference) -> None:
    """Cache ``ref`` at ``path`` (atomically: :func:`odebench.problems.reference.write_npz_atomic`)."""
    meta = json.dumps({"loss": ref.loss, "n_params": ref.n_params, "kind": ref.kind, "xcheck": ref.xcheck,
                       "fd": ref.fd})
    write_npz_atomic(path, grad=ref.grad, meta=np.array(meta))
