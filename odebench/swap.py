"""The solver-swap check: a trained model evaluated again with an accurate reference solver.

Ott et al. 2021 ("ResNet After All? Neural ODEs and Their Numerical Solution") show that a
neural ODE trained with a coarse fixed-step solver can learn the solver's discretisation
rather than a flow: evaluated with an accurate adaptive solver it loses accuracy. After
training, the ``train`` and ``mnist`` workloads evaluate each model twice more, untimed and
outside the peak-memory region, with the same parameters: once with the solver it was
trained with and once with the reference solver of the suite's ``[swap]`` section, and
record the difference (``swap_mse_delta``, ``swap_acc_delta``). Both evaluations go through
the same code, so a model evaluated with the solver it was trained with gives exactly 0.

The reference is one solver for every case: the plugin ``swap.plugin`` names (default
``torch_custom``, odebench's own dopri5) whatever plugin or framework trained the model, so that
every model of a run is judged against the same yardstick (a JAX model's parameters are evaluated
as a torch field of the same spec; the fairness gate has checked that the two frameworks' fields
agree). ``swap.plugin = "own"`` asks for the case's own plugin instead (its solvers, its framework).
When the named plugin is not installed here, or lacks ``swap.method`` or the device, the case's own
plugin stands in, then the first available of :data:`FALLBACK_PLUGINS`; the record's
``swap_solver`` says which solved. The reference runs in ``swap.dtype`` (float64 by default, so
that its tolerance is not below the arithmetic's).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from odebench.protocol import ADAPTIVE_METHODS, FIXED_METHODS, SolveFailed, SolverPlugin, UnsupportedError

#: Torch plugins that evaluate a model when neither ``swap.plugin`` nor its own plugin can.
FALLBACK_PLUGINS = ("torchdiffeq", "torch_custom")

#: ``swap.plugin``'s default: odebench's own solver, the fastest of the reference candidates
#: (its eager dopri5 costs a third of torchdiffeq's on the spiral's float64 reference solve).
DEFAULT_PLUGIN = "torch_custom"

#: ``swap.plugin``'s value for "the case's own plugin".
OWN = "own"

#: The ``[swap]`` section a workload adds to its suites (see :mod:`odebench.schema` for the specs;
#: ``plugin`` is checked against the registry when a run starts).
SECTION: dict[str, dict[str, Any]] = {
    "swap": {"enabled": (bool, None), "method": (str, ADAPTIVE_METHODS), "rtol": (float, "pos"),
             "atol": (float, "pos"), "dtype": (str, ("float32", "float64")), "plugin": (str, None)},
}


def defaults(rtol: float, atol: float) -> dict[str, dict[str, Any]]:
    """The ``[swap]`` defaults with a workload's reference tolerances: dopri5 in float64 through
    :data:`DEFAULT_PLUGIN`, on."""
    return {"swap": {"enabled": True, "method": "dopri5", "rtol": rtol, "atol": atol, "dtype": "float64",
                     "plugin": DEFAULT_PLUGIN}}


@dataclass(frozen=True)
class Solver:
    """One way of solving a model's ODE: plugin, method, tolerances or step, arithmetic."""

    plugin: SolverPlugin
    method: str
    rtol: float
    atol: float
    step_size: float | None = None
    dtype: str = "float32"

    def label(self) -> str:
        """A short description for a record: ``torchdiffeq dopri5 rtol=1e-09 atol=1e-11 float64``."""
        how = (f"step={self.step_size:g}" if self.step_size is not None else "on the output grid") \
            if self.method in FIXED_METHODS else f"rtol={self.rtol:g} atol={self.atol:g}"
        return f"{self.plugin.name} {self.method} {how} {self.dtype}"


def reference_solver(plugin: SolverPlugin, settings: dict[str, Any], device: str = "cpu") -> Solver:
    """The reference solver of a case run by ``plugin`` (see the module docstring).

    Arguments:
        plugin: the case's plugin.
        settings: the suite's ``[swap]`` section (``plugin`` absent: :data:`DEFAULT_PLUGIN`).
        device: where the model lives (the reference plugin must run there).

    Raises:
        UnsupportedError: when neither the named plugin, the case's own nor a fallback declares
            ``settings["method"]`` on ``device``.
    """
    from odebench import registry

    method = settings["method"]
    named = settings.get("plugin", DEFAULT_PLUGIN)
    candidates: list[Any] = [] if named in (OWN, plugin.name) else [named]
    candidates.append(plugin)
    for name in FALLBACK_PLUGINS:
        if name not in (plugin.name, named):
            candidates.append(name)
    known = registry.plugin_names()
    candidates = [c for c in candidates if not isinstance(c, str) or c in known]
    for cand in candidates:
        if isinstance(cand, str):
            try:
                cand = registry.get_plugin(cand)
            except RuntimeError:  # registered but not installed here
                continue
        if method in cand.methods and device in cand.devices:
            return Solver(cand, method, settings["rtol"], settings["atol"], None, settings["dtype"])
    raise UnsupportedError(f"no plugin for the swap's reference {method!r} on {device}: {plugin.name} lacks it "
                           f"and none of {', '.join(n for n in dict.fromkeys([named, *FALLBACK_PLUGINS]) if n != OWN)} "
                           "is available")


def reference_modules(settings: dict[str, Any] | None) -> tuple[str, ...]:
    """Modules the named reference plugin needs (its backend, its class's module, its libraries), for a
    launcher to import ahead: a JAX case swapped to a torch reference would otherwise import torch
    in every case's process. Empty when the check is off, names ``own``, or the plugin is not installed.

    Arguments:
        settings: the suite's ``[swap]`` section (None: the workload has none).
    """
    from odebench import registry
    from odebench.backends import BACKENDS

    if not settings or not settings.get("enabled") or settings.get("plugin", DEFAULT_PLUGIN) == OWN:
        return ()
    name = settings.get("plugin", DEFAULT_PLUGIN)
    if name not in registry.plugin_names() or registry.entry(name).available() is not None:
        return ()
    cls = registry.entry(name).load()
    backend = BACKENDS.get(cls.backend_framework())
    return tuple(dict.fromkeys([m for m in (backend, cls.__module__) if m] + list(cls.requires)))


def _eval_grad_mode(plugin: SolverPlugin, preferred: str) -> str:
    """A grad mode the plugin declares (evaluation takes no gradient, but the call names one)."""
    return preferred if preferred in plugin.grad_modes else plugin.grad_modes[0]


def mlp_trajectory(spec: Any, params: list[np.ndarray], ts: np.ndarray, y0: np.ndarray, solver: Solver, *,
                   max_steps: int, grad_mode: str, device: str = "cpu") -> np.ndarray:
    """The trajectory of an MLP vector field with ``params``, solved by ``solver``, as float64 numpy.

    Arguments:
        spec: the :class:`odebench.models.MLPSpec`.
        params: the parameters in the shared layer order, ``[W1, b1, W2, b2, ...]``
            (:meth:`odebench.backends.base.Trainer.parameters_numpy`).
        ts, y0: output times and initial state.
        solver: how to solve; its plugin's backend framework builds the field.
        max_steps: the solve's step budget.
        grad_mode: the grad mode named in the call (the trained one where the plugin has it).
        device: ``cpu`` or ``cuda``.

    Returns:
        The trajectory at ``ts``, shape ``(len(ts), d)``.

    Raises:
        SolveFailed: when the solve does not end with status ok.
    """
    weights = list(zip(params[0::2], params[1::2]))
    plugin = solver.plugin
    kw = dict(method=solver.method, rtol=solver.rtol, atol=solver.atol, step_size=solver.step_size,
              grad_mode=_eval_grad_mode(plugin, grad_mode), max_steps=max(max_steps, len(ts)))
    if plugin.backend_framework() == "jax":
        return _jax_trajectory(spec, weights, ts, y0, solver, kw, device)
    import torch

    from odebench.backends.torch import DTYPES, MLPField

    dtype = DTYPES[solver.dtype]
    field = MLPField(spec, weights, dtype, device)
    # A compiled plugin's solve runs op by op here, the same code eagerly: compiling it anew for this
    # one untimed evaluation (another dtype, the whole trajectory) would take minutes.
    stance = torch.compiler.set_stance("force_eager") if plugin.compiled else contextlib.nullcontext()
    with torch.no_grad(), stance:
        sol = plugin.odeint(field, torch.as_tensor(y0, dtype=dtype, device=device),
                            torch.as_tensor(ts, dtype=dtype, device=device), **kw)
    if not sol.ok:
        raise SolveFailed(sol.status, sol.message)
    return sol.ys.detach().to("cpu", torch.float64).numpy()


def _jax_trajectory(spec, weights, ts, y0, solver: Solver, kw: dict[str, Any], device: str) -> np.ndarray:
    import jax

    from odebench.backends.jax import _device, build_mlp, trajectory

    # float64 inside a context only: a process that goes on to run float32 cases is not switched over.
    with jax.enable_x64(solver.dtype == "float64"):
        import jax.numpy as jnp

        jdtype = jnp.float64 if solver.dtype == "float64" else jnp.float32
        dev = _device(device)
        model = build_mlp(spec, weights, jdtype, dev)
        y0_j = jax.device_put(jnp.asarray(y0, dtype=jdtype), dev)
        ts_j = jax.device_put(jnp.asarray(ts, dtype=jdtype), dev)
        # One jitted program per solver, shared with the trainer's predictions: with the solver
        # the model trained with, this reuses the program its snapshots and final MSE compiled.
        return trajectory(solver.plugin, model, y0_j, ts_j, **kw)


def swapped_model(model: Any, solver: Solver) -> Any:
    """A copy of a torch classifier whose ODE block (``model.ode_block``) solves with ``solver``.

    The copy shares nothing with ``model`` but the plugin instance; it is converted to
    ``solver.dtype`` (its inputs must be too) and is in evaluation mode.

    Arguments:
        model: an :class:`odebench.backends.torch_convnets.MNISTNet` (or any module with an
            ``ode_block`` holding ``plugin``, ``method``, ``rtol``, ``atol``, ``step_size``,
            ``grad_mode``).
        solver: the solver to evaluate with.

    Raises:
        ValueError: when the model has no ODE block (nothing to swap).
        UnsupportedError: when the solver's plugin does not declare its method.
    """
    from odebench.backends.torch import DTYPES

    block = model.ode_block
    if block is None:
        raise ValueError(f"a {getattr(model, 'kind', type(model).__name__)} model has no ODE block to swap")
    # The plugin is shared, not copied: it may hold a library handle, and evaluation does not change it.
    memo = {id(block.plugin): block.plugin, id(solver.plugin): solver.plugin}
    twin = copy.deepcopy(model, memo)
    b = twin.ode_block
    grad_mode = _eval_grad_mode(solver.plugin, block.grad_mode)
    solver.plugin.check(solver.method, grad_mode)
    b.plugin, b.method, b.rtol, b.atol = solver.plugin, solver.method, solver.rtol, solver.atol
    b.step_size, b.grad_mode = solver.step_size, grad_mode
    return twin.to(dtype=DTYPES[solver.dtype]).eval()


def trained_solver(plugin: SolverPlugin, case: dict[str, Any], dtype: str, *, step_size: float | None = None,
                   rtol: float = 1e-7, atol: float = 1e-9) -> Solver:
    """The solver a case trained with.

    Arguments:
        plugin: the case's plugin.
        case: the case's fields (``method``, ``rtol``, ``atol``; fixed-step cases have no tolerances).
        dtype: the suite's ``measure.dtype``.
        step_size: the fixed step (None: on the output grid).
        rtol, atol: the tolerances the trainers pass when the case has none.

    Returns:
        A :class:`Solver`.
    """
    return Solver(plugin, case["method"], case["rtol"] if case.get("rtol") is not None else rtol,
                  case["atol"] if case.get("atol") is not None else atol, step_size, dtype)


__all__ = ["DEFAULT_PLUGIN", "FALLBACK_PLUGINS", "OWN", "SECTION", "Solver", "defaults", "mlp_trajectory",
           "reference_modules", "reference_solver",
           "swapped_model", "trained_solver"]
