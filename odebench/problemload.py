"""Finding, checking and gating a user's :class:`~odebench.problem.Problem`.

A problem is named by ``module:function`` (the function, or class, takes no arguments and
returns a :class:`~odebench.problem.Problem`) or by an entry point of the ``odebench.problems``
group (``[project.entry-points."odebench.problems"] myode = "mypkg.odes:make_problem"``).
The module is imported with the current folder and the suite's folder on ``sys.path`` (after
whatever ``PYTHONPATH`` holds); the folder it was found under travels with the cases, so that a
case's fresh process imports the same file.

:func:`check` runs before any case: every declared field is built with the shared weights and
evaluated once, and a mistake — an initial state that is not finite, a field whose output shape
differs from the state's, weights that do not match the model — is a :class:`ProblemError`
whose one-line message names it. It also runs the problem's fairness gate: with two or more
frameworks, their fields must agree at the same states to :data:`GATE_RTOL`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from odebench.problem import FRAMEWORKS, Problem, ProblemError
from odebench.schema import NAME_RULE

#: The entry-point group through which installed packages offer problems.
GROUP = "odebench.problems"
#: Relative agreement the gate demands of two frameworks' fields at the same state, in float64.
GATE_RTOL = 1e-10


def problem_names() -> list[str]:
    """The problems installed packages declare in the ``odebench.problems`` entry-point group."""
    return sorted(ep.name for ep in importlib.metadata.entry_points(group=GROUP))


def resolve(spec: str) -> str:
    """``module:function`` of ``spec``: itself, or the value of the entry point of that name.

    Raises:
        ProblemError: for a name that is neither.
    """
    if ":" in spec:
        return spec
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name == spec:
            return ep.value
    names = problem_names()
    raise ProblemError(f"problem {spec!r} is neither module:function nor an entry point of {GROUP}; "
                       f"installed: {', '.join(names) or 'none'}")


def load_problem(spec: str, search: list[str] | tuple[str, ...] = ()) -> tuple[Problem, str, str | None]:
    """Import and call ``spec`` (see the module docstring).

    Arguments:
        spec: ``module:function``, ``path/to/file.py:function`` or an entry point's name.
        search: folders put on ``sys.path`` (after the ones already there, and after the current
            folder, which is always searched) to find the module.

    Returns:
        ``(problem, module:function, folder)``: ``folder`` is where the module's top package lies
        (for the cases' processes), None for an installed module.

    Raises:
        ProblemError: when the module does not import, the function is missing or raises, or it
            returns something that is not a :class:`~odebench.problem.Problem`.
    """
    target = resolve(spec)
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise ProblemError(f"problem {spec!r} must be module:function, e.g. mypkg.odes:make_problem")
    search = (os.getcwd(), *search)
    if module_name.endswith(".py"):  # a file: its folder on the path, its stem the module
        file = Path(module_name)
        if not file.is_file():
            raise ProblemError(f"problem {spec!r}: no file {module_name!r}")
        search = (*search, str(file.resolve().parent))
        module_name = file.stem
        target = f"{module_name}:{attr}"
    for folder in search:
        if folder and folder not in sys.path:
            sys.path.append(folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's input
        raise ProblemError(f"problem {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    try:
        factory = module
        for part in attr.split("."):
            factory = getattr(factory, part)
    except AttributeError:
        raise ProblemError(f"problem {spec!r}: module {module_name!r} has no {attr!r}") from None
    try:
        problem = factory()
    except Exception as exc:  # noqa: BLE001
        raise ProblemError(f"problem {spec!r}: {attr}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(problem, Problem):
        raise ProblemError(f"problem {spec!r} returned {type(problem).__name__}, not an odebench.Problem")
    return problem, target, _root(module, module_name)


def _root(module: Any, module_name: str) -> str | None:
    """The folder that holds ``module_name``'s top package, when it is not an installed one."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    depth = module_name.count(".") + (2 if path.name == "__init__.py" else 1)
    root = path.parents[depth - 1]
    return None if "site-packages" in root.parts else str(root)


def _array(value: Any, what: str, name: str) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProblemError(f"problem {name!r}: {what} is not a numeric array (got {type(value).__name__})") from None
    if not np.all(np.isfinite(out)):
        raise ProblemError(f"problem {name!r}: {what} has non-finite values")
    return out


def check(problem: Problem, spec: str, folder: str | None) -> dict[str, Any]:
    """Check ``problem`` (see the module docstring) and run its fairness gate.

    Returns:
        What the cases need to load it again, JSON-able: ``spec``, ``path`` (the folder to
        import from), ``name``, ``frameworks``, ``stiff``, ``has_weights``, ``n_outputs``,
        ``uniform`` (equally spaced output times), and ``gate`` (``passed``: True, False or None
        when there is one framework; ``max_rel``; ``reference``: the framework the others are
        compared with; ``note``).

    Raises:
        ProblemError: one line naming what is wrong.
    """
    name = problem.name
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise ProblemError(f"problem {spec!r}: name {name!r} must be letters, digits, '_', '.', '-'")
    fws = tuple(problem.frameworks)
    bad = [f for f in fws if f not in FRAMEWORKS]
    if not fws or bad:
        raise ProblemError(f"problem {name!r}: frameworks {fws!r} must list some of {', '.join(FRAMEWORKS)}")
    y0 = _array(problem.initial_state(), "initial_state()", name)
    ts = _array(problem.times(), "times()", name)
    if ts.ndim != 1 or len(ts) < 2 or np.any(np.diff(ts) <= 0):
        raise ProblemError(f"problem {name!r}: times() must be increasing, at least two, got shape {ts.shape}")
    weights = problem.weights()
    if weights is not None:
        if not isinstance(weights, (list, tuple)):
            raise ProblemError(f"problem {name!r}: weights() must return a list of numpy arrays, "
                               f"got {type(weights).__name__}")
        weights = [_array(w, f"weights()[{i}]", name) for i, w in enumerate(weights)]
    for what, value, shape in (("exact(times())", problem.exact(ts), (len(ts), *y0.shape)),
                               ("reference(times())", problem.reference(ts), (len(ts), *y0.shape)),
                               ("targets()", problem.targets(), (len(ts), *y0.shape))):
        if value is not None and _array(value, what, name).shape != shape:
            raise ProblemError(f"problem {name!r}: {what} has shape {np.shape(value)}, expected {shape}")
    # Two states: the initial one and a nearby one at a later time (a field that ignores t, or
    # the state's scale, would pass a single evaluation).
    rng = np.random.default_rng(0)
    states = [(float(ts[0]), y0), (float(ts[len(ts) // 2]), y0 + 0.1 * rng.standard_normal(y0.shape))]
    values = {fw: _evaluate(problem, fw, weights, states, name) for fw in fws}
    gate = _gate(values)
    uniform = bool(np.allclose(np.diff(ts), ts[1] - ts[0], rtol=1e-12, atol=0))
    return {"spec": spec, "path": folder, "name": name, "frameworks": list(fws), "stiff": bool(problem.stiff),
            "has_weights": weights is not None, "n_outputs": len(ts), "uniform": uniform, "gate": gate}


def _gate(values: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Whether every framework's field agrees with the first's at the same states."""
    fws = list(values)
    ref = fws[0]
    if len(fws) == 1:
        return {"passed": None, "max_rel": None, "reference": ref, "note": f"one framework ({ref}): nothing to compare"}
    worst = 0.0
    for fw in fws[1:]:
        for a, b in zip(values[fw], values[ref]):
            scale = max(float(np.max(np.abs(b))), np.finfo(np.float64).tiny)
            worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    passed = worst <= GATE_RTOL
    note = (f"the fields of {', '.join(fws)} agree to {worst:.1e} (relative; at most {GATE_RTOL:g}) at the same "
            f"states" if passed else f"the fields of {', '.join(fws)} differ by {worst:.1e} (relative; at most "
            f"{GATE_RTOL:g}) at the same states: the frameworks do not compute the same problem")
    return {"passed": passed, "max_rel": worst, "reference": ref, "note": note}


def _evaluate(problem: Problem, fw: str, weights: list[np.ndarray] | None, states, name: str) -> list[np.ndarray]:
    """The field of ``fw`` built with ``weights``, its parameters checked against them, at ``states``."""
    try:
        field, params = build_field(problem, fw, weights)
    except ProblemError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code
        raise ProblemError(f"problem {name!r}: {fw}_field() raised {type(exc).__name__}: {exc}") from None
    if weights is not None and params is not None:
        shapes = [tuple(np.shape(p)) for p in params]
        want = [w.shape for w in weights]
        if shapes != want:
            raise ProblemError(f"problem {name!r}: the {fw} field's parameters have shapes {shapes}, but weights() "
                               f"has {want}")
        for i, (p, w) in enumerate(zip(params, weights)):
            if not np.array_equal(np.asarray(p, np.float64), w):
                raise ProblemError(f"problem {name!r}: the {fw} field's parameter {i} is not weights()[{i}]: "
                                   "load the shared weights into the field")
    out = []
    for t, y in states:
        try:
            value = np.asarray(call_field(field, fw, t, y), np.float64)
        except Exception as exc:  # noqa: BLE001
            raise ProblemError(f"problem {name!r}: the {fw} field raised {type(exc).__name__}: {exc}") from None
        if value.shape != y.shape:
            raise ProblemError(f"problem {name!r}: the {fw} field returns shape {value.shape}, but the state has "
                               f"shape {y.shape}")
        if not np.all(np.isfinite(value)):
            raise ProblemError(f"problem {name!r}: the {fw} field returns non-finite values at the initial state")
        out.append(value)
    return out


def build_field(problem: Problem, fw: str, weights: list[np.ndarray] | None) -> tuple[Any, list[Any] | None]:
    """``(field, parameters)`` of framework ``fw``: the torch module in float64 and its parameters;
    the JAX pytree (float64 on) and its leaves; the numpy callable and None (a closure's weights
    cannot be listed: the gate's comparison of values checks them)."""
    if fw == "torch":
        import torch

        field = problem.torch_field(weights)
        if not isinstance(field, torch.nn.Module):
            raise ProblemError(f"problem {problem.name!r}: torch_field() returned {type(field).__name__}, "
                               "not a torch.nn.Module")
        field = field.to(torch.float64)
        return field, [p.detach().numpy() for p in field.parameters()]
    if fw == "jax":
        import jax

        enable_x64()
        field = problem.jax_field(weights)
        return field, jax.tree_util.tree_leaves(field)
    return problem.numpy_field(weights), None


def call_field(field: Any, fw: str, t: float, y: np.ndarray) -> Any:
    """One evaluation of a field of framework ``fw`` at numpy ``(t, y)``, as a numpy-convertible array."""
    if fw == "torch":
        import torch

        with torch.no_grad():
            return field(torch.tensor(t, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)).numpy()
    if fw == "jax":
        import jax.numpy as jnp

        return field(jnp.asarray(t, jnp.float64), jnp.asarray(y, jnp.float64))
    return field(t, np.array(y, copy=True))


def enable_x64() -> None:
    """JAX in float64: every computation on a user's problem is."""
    import jax

    jax.config.update("jax_enable_x64", True)


__all__ = ["GATE_RTOL", "GROUP", "build_field", "call_field", "check", "load_problem", "problem_names", "resolve"]
