"""The solver plugin contract (DESIGN §3).

A plugin is one solver library in one framework. It declares what it can do as
data (class attributes) and is never probed with ``hasattr``. The harness calls
:meth:`SolverPlugin.odeint`, which returns a :class:`Solution` carrying the
trajectory, a :class:`Status` and the library's own :class:`SolveStats`: a
failed solve is a value, not an exception.
"""

from __future__ import annotations

import abc
import enum
import importlib.metadata
import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

#: Canonical method names, lowercase. Plugins map them to their native spelling. ``rk4`` is
#: Kutta's 3/8 rule (torchdiffeq's), ``rk4-classic`` the classical 1/6, 1/3, 1/3, 1/6 method.
FIXED_METHODS = ("euler", "midpoint", "heun", "rk4", "rk4-classic")
ADAPTIVE_METHODS = ("bosh3", "dopri5", "tsit5", "dopri8")
STIFF_METHODS = ("radau", "bdf", "lsoda", "kvaerno5")
METHODS = FIXED_METHODS + ADAPTIVE_METHODS + STIFF_METHODS

#: Gradient modes: discretise-then-optimise, Algorithm 1 of Chen et al. 2018,
#: the seminorm variant of Kidger et al. 2021, and recompute-per-step.
GRAD_MODES = ("backprop", "adjoint", "adjoint-seminorm", "checkpoint")

#: Where a plugin's :attr:`SolveStats.nfe` comes from (:attr:`SolverPlugin.nfe_source`):
#: ``counter`` — evaluations tallied as they are made (the library's own counter, e.g. scipy's
#: ``nfev``, or the solver's own); ``formula`` — derived from the library's step statistics
#: (stages × attempted steps, plus start-up evaluations); ``none`` — no count is reported.
NFE_SOURCES = ("counter", "formula", "none")

FRAMEWORKS = ("torch", "jax", "numpy")
DEVICES = ("cpu", "cuda")
#: How a plugin steps a batch ``y0`` of shape ``(B, ...)``: one step size for the whole batch
#: (the batch is one ODE system), a step size per sample, or one sample after another.
BATCH_STEPPING = ("joint", "per-sample", "sequential")


class Status(enum.StrEnum):
    """Outcome of one solve or one benchmark case. Stored as its string value."""

    OK = "ok"
    MAX_STEPS = "max_steps"
    DT_UNDERFLOW = "dt_underflow"
    NONFINITE = "nonfinite"
    UNSUPPORTED = "unsupported"
    UNAVAILABLE = "unavailable"  # the plugin's framework is not installed
    UNFAIR = "unfair"  # failed the cross-framework fairness gate
    TIMEOUT = "timeout"
    OOM = "oom"
    ERROR = "error"


@dataclass
class SolveStats:
    """Statistics a solver library reports about one solve (None where it keeps none).

    Arguments:
        n_steps: steps attempted (accepted + rejected for adaptive methods).
        n_accepted: accepted steps.
        n_rejected: rejected steps.
        nfe: vector-field evaluations of the forward solve, as the plugin's
            :attr:`SolverPlugin.nfe_source` says: counted, or derived by a formula from the
            library's step statistics (None where there is neither).
        extra: anything else the library reports (``njev``, ``nlu``, ...).
    """

    n_steps: int | None = None
    n_accepted: int | None = None
    n_rejected: int | None = None
    nfe: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Solution:
    """What :meth:`SolverPlugin.odeint` returns.

    Arguments:
        ys: the trajectory at ``ts``, shape ``(len(ts), *y0.shape)``, in the plugin's
            framework and differentiable by it for the declared grad modes; None
            when the solve failed before producing one.
        status: how the solve ended.
        message: a human-readable reason when ``status`` is not ok.
        stats: the library's own statistics.
    """

    ys: Any
    status: Status = Status.OK
    message: str = ""
    stats: SolveStats = field(default_factory=SolveStats)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


class UnsupportedError(ValueError):
    """A method / grad mode / device the plugin does not declare."""


class SolveFailed(RuntimeError):
    """A solve ended with a non-ok :class:`Status`; raised where a status cannot be returned.

    A plugin returns failures in :attr:`Solution.status`; code that needs the trajectory to
    go on (a trainer's loss, a backward pass through a black-box adjoint) raises this
    instead, and the harness turns it back into the record's status (see
    :func:`odebench.failures.classify`).

    Arguments:
        status: how the solve ended.
        message: one line saying why.
    """

    def __init__(self, status: Status, message: str):
        super().__init__(f"{status}: {message}")
        self.status = Status(status)
        self.message = message


class SolverPlugin(abc.ABC):
    """Base class of every solver plugin. Subclasses set the class attributes.

    Class attributes (capabilities, as data):
        name: registry name, e.g. ``"torchdiffeq"``.
        framework: one of :data:`FRAMEWORKS`.
        library: the distribution whose version is reported, e.g. ``"torchdiffeq"``.
        requires: importable modules the plugin needs; if one is missing the plugin is
            unavailable.
        extra: the pip extra that installs them (shown in the unavailable message).
        methods: canonical method name → the library's native spelling.
        grad_modes: supported entries of :data:`GRAD_MODES`.
        devices: supported entries of :data:`DEVICES`.
        fixed_step_methods: the subset of ``methods`` that take fixed steps (on the
            output grid unless ``step_size`` is given).
        nfe_source: one of :data:`NFE_SOURCES`: how :attr:`SolveStats.nfe` is obtained; the
            plugin's docstring says exactly what it counts.
        backend: the framework whose backend builds and trains models through this
            plugin; defaults to ``framework``. scipy's plugin is ``numpy`` but trains torch
            models through its black-box adjoint, so it sets ``"torch"``.
        batch_stepping: one of :data:`BATCH_STEPPING`: ``"joint"`` when the batch is solved
            as one system with shared steps (its NFE and steps are the batch's), ``"per-sample"``
            when each sample of the first axis gets its own step size.
        compiled: the plugin compiles its solve; :meth:`prepare` does it ahead of timing.
    """

    name: ClassVar[str] = ""
    framework: ClassVar[str] = ""
    library: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""
    methods: ClassVar[dict[str, str]] = {}
    grad_modes: ClassVar[tuple[str, ...]] = ()
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    fixed_step_methods: ClassVar[frozenset[str]] = frozenset(FIXED_METHODS)
    nfe_source: ClassVar[str] = ""  # undeclared: every plugin must set one of NFE_SOURCES
    backend: ClassVar[str] = ""
    batch_stepping: ClassVar[str] = "joint"
    compiled: ClassVar[bool] = False

    @classmethod
    def backend_framework(cls) -> str:
        """The framework of the backend that trains models through this plugin."""
        return cls.backend or cls.framework

    # -- discovery -------------------------------------------------------------
    @classmethod
    def available(cls) -> str | None:
        """None when the plugin can run here, else the reason it cannot (with the fix)."""
        for module in cls.requires:
            if importlib.util.find_spec(module.split(".")[0]) is None:
                hint = f" — `pip install odebench[{cls.extra}]`" if cls.extra else ""
                return f"unavailable: {module} is not installed{hint}"
        return None

    @classmethod
    def version(cls) -> str | None:
        """Version of the wrapped library, or None when it is not installed."""
        try:
            return importlib.metadata.version(cls.library or cls.name)
        except importlib.metadata.PackageNotFoundError:
            return None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The declared capabilities as a plain dict (for ``odebench list`` and records)."""
        return {
            "name": cls.name,
            "framework": cls.framework,
            "version": cls.version(),
            "methods": sorted(cls.methods),
            "grad_modes": list(cls.grad_modes),
            "devices": list(cls.devices),
            "nfe_source": cls.nfe_source,
            "batch_stepping": cls.batch_stepping,
            "compiled": cls.compiled,
            "available": cls.available(),
        }

    @classmethod
    def unsupported_reason(cls, method: str, grad_mode: str, device: str = "cpu") -> str | None:
        """None if the combination is declared, else why it is not."""
        if method not in cls.methods:
            return f"{cls.name} has no method {method!r} (has: {', '.join(sorted(cls.methods))})"
        if grad_mode not in cls.grad_modes:
            return f"{cls.name} has no grad mode {grad_mode!r} (has: {', '.join(cls.grad_modes)})"
        if device not in cls.devices:
            return f"{cls.name} does not run on {device!r} (runs on: {', '.join(cls.devices)})"
        return None

    def is_fixed_step(self, method: str) -> bool:
        return method in self.fixed_step_methods

    # -- solving ---------------------------------------------------------------
    def prepare(self, f: Any, y0: Any, ts: Any, **solve_kw: Any) -> float | None:
        """Compile the solve for these shapes and settings, outside any timer.

        Arguments:
            f, y0, ts: as for :meth:`odeint` (only their shapes, dtypes and types matter).
            solve_kw: the keyword arguments the timed :meth:`odeint` calls will get.

        Returns:
            Seconds spent compiling, or None when the plugin has nothing to compile.
        """
        return None

    @abc.abstractmethod
    def odeint(
        self,
        f: Any,
        y0: Any,
        ts: Any,
        *,
        method: str,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        step_size: float | None = None,
        grad_mode: str = "backprop",
        max_steps: int = 100_000,
    ) -> Solution:
        """Integrate ``dy/dt = f(t, y)`` from ``y0`` and return the solution at ``ts``.

        Arguments:
            f: the vector field in the plugin's framework, called ``f(t, y)``
                (a ``torch.nn.Module`` for torch plugins, so the adjoint finds its
                parameters; any callable pytree for JAX; a numpy callable for numpy).
            y0: initial state, shape ``(..., d)``.
            ts: increasing or decreasing output times, ``ts[0]`` is the initial time.
            method: canonical method name (a key of :attr:`methods`).
            rtol, atol: tolerances of adaptive methods (ignored by fixed-step ones).
            step_size: fixed step for fixed-step methods; None steps on ``ts``.
            grad_mode: one of :attr:`grad_modes`.
            max_steps: step budget; exceeding it gives status ``max_steps``.

        Returns:
            A :class:`Solution`. Solver failures are reported in its ``status``.

        Raises:
            UnsupportedError: for an undeclared method or grad mode.
        """

    def check(self, method: str, grad_mode: str, device: str = "cpu") -> None:
        """Raise :class:`UnsupportedError` unless the combination is declared."""
        reason = self.unsupported_reason(method, grad_mode, device)
        if reason:
            raise UnsupportedError(reason)


class JaxSolverPlugin(SolverPlugin):
    """A JAX plugin: besides :meth:`odeint`, a traceable core the JAX backend jits.

    The JAX backend builds one compiled training step (solve, loss, gradient, update), so
    it cannot call :meth:`odeint`, whose status is a Python value. It calls :meth:`solve`
    inside ``jax.jit`` and reads the outcome afterwards through :meth:`status`,
    :meth:`message` and :meth:`to_stats`. NFE is counted by the harness, which wraps the
    vector field (:func:`odebench.backends.jax.counted`); :meth:`counts_vjp` says whether
    that wrapper may count vector-Jacobian products for a method (it is a ``custom_vjp``,
    which forward-mode autodiff — implicit methods' Jacobians — cannot go through).

    Every method below is abstract: a subclass that misses one cannot be instantiated, and
    :func:`odebench.registry.register` refuses it with a message naming what is missing.
    """

    framework: ClassVar[str] = "jax"

    @abc.abstractmethod
    def solve(self, f: Any, y0: Any, ts: Any, *, method: str, rtol: float = 1e-7, atol: float = 1e-9,
              step_size: float | None = None, grad_mode: str = "backprop",
              max_steps: int = 100_000) -> tuple[Any, Any, Any]:
        """Integrate ``dy/dt = f(t, y)``, traceably (every keyword is static).

        Arguments: as :meth:`SolverPlugin.odeint`.

        Returns:
            ``(ys, code, stats)``: the trajectory at ``ts`` (differentiable by JAX for the
            declared grad modes), an integer array the plugin's :meth:`status` decodes, and
            a pytree of statistics its :meth:`to_stats` reads.
        """

    @abc.abstractmethod
    def status(self, code: Any) -> Status:
        """The :class:`Status` of a concrete ``code`` returned by :meth:`solve`."""

    @abc.abstractmethod
    def message(self, status: Status, max_steps: int) -> str:
        """One line explaining a non-ok ``status`` (empty for ok)."""

    @abc.abstractmethod
    def to_stats(self, stats: Any) -> SolveStats:
        """Concrete :meth:`solve` statistics as a :class:`SolveStats`."""

    @abc.abstractmethod
    def counts_vjp(self, method: str) -> bool:
        """Whether the harness's counting wrapper may count VJPs through the field for ``method``."""
