"""torchdiffeq (Chen et al.'s reference library) as an odebench plugin."""

from __future__ import annotations

from typing import ClassVar

from odebench.protocol import Solution, SolverPlugin, SolveStats, Status

# Stages a step costs in vector-field evaluations, with FSAL counted once: what the
# library's step callbacks times this must equal what the harness counts.
_FIXED_STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
_ADAPTIVE_STAGES = {"bosh3": 3, "dopri5": 6, "tsit5": 6, "dopri8": 13}
# Extra evaluations of an adaptive solve: f(t0, y0) plus one in the first-step heuristic.
_ADAPTIVE_START = 2


def _status_of(exc: BaseException) -> Status:
    text = str(exc)
    if "max_num_steps" in text:
        return Status.MAX_STEPS
    if "underflow in dt" in text:
        return Status.DT_UNDERFLOW
    if "nan" in text.lower() or "inf" in text.lower() or "finite" in text:
        return Status.NONFINITE
    return Status.ERROR


class TorchdiffeqPlugin(SolverPlugin):
    """torchdiffeq's ``odeint`` / ``odeint_adjoint``.

    Grad modes: ``backprop`` (``odeint``), ``adjoint`` (``odeint_adjoint``) and
    ``adjoint-seminorm`` (``odeint_adjoint`` with ``adjoint_options=dict(norm="seminorm")``).
    Statistics come from torchdiffeq's step callbacks (``callback_step``,
    ``callback_accept_step``, ``callback_reject_step``) on the vector field.

    torchdiffeq counts no evaluations, so ``SolveStats.nfe`` is a formula
    (``nfe_source = "formula"``) over those callbacks: fixed-step methods ``stages × steps``
    (euler 1, midpoint 2, rk4 4); adaptive ones ``2 + stages × (accepted + rejected)`` with
    FSAL counted once (bosh3 3, dopri5 6, dopri8 13), the 2 being ``f(t0, y0)`` and the
    first-step heuristic's evaluation; None when no step was attempted.
    """

    name: ClassVar[str] = "torchdiffeq"
    framework: ClassVar[str] = "torch"
    library: ClassVar[str] = "torchdiffeq"
    requires: ClassVar[tuple[str, ...]] = ("torch", "torchdiffeq")
    extra: ClassVar[str] = "torch"
    # torchdiffeq has no tsit5, and its "heun3" is a 3-stage method, not Heun's 2-stage one.
    methods: ClassVar[dict[str, str]] = {
        "euler": "euler",
        "midpoint": "midpoint",
        "rk4": "rk4",
        "bosh3": "bosh3",
        "dopri5": "dopri5",
        "dopri8": "dopri8",
    }
    grad_modes: ClassVar[tuple[str, ...]] = ("backprop", "adjoint", "adjoint-seminorm")
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    nfe_source: ClassVar[str] = "formula"
    batch_stepping: ClassVar[str] = "joint"  # one error norm over the whole batch

    def odeint(self, f, y0, ts, *, method, rtol=1e-7, atol=1e-9, step_size=None,
               grad_mode="backprop", max_steps=100_000) -> Solution:
        self.check(method, grad_mode)
        import torchdiffeq

        native = self.methods[method]
        options = {}
        if method in _FIXED_STAGES:
            if step_size is not None:
                options["step_size"] = step_size
        else:
            options["max_num_steps"] = max_steps
        counts = _StepCounter(f, adaptive=method not in _FIXED_STAGES)
        try:
            if grad_mode == "backprop":
                ys = torchdiffeq.odeint(f, y0, ts, rtol=rtol, atol=atol, method=native, options=options)
            else:
                # adjoint_options replace options for the reverse solve: keep step_size and
                # the budget, or a fixed-step reverse solve takes one step per interval.
                adjoint_options = dict(options, norm="seminorm") if grad_mode == "adjoint-seminorm" else None
                ys = torchdiffeq.odeint_adjoint(
                    f, y0, ts, rtol=rtol, atol=atol, method=native, options=options,
                    adjoint_options=adjoint_options,
                )
        except (AssertionError, RuntimeError) as exc:  # torchdiffeq signals failure by assert
            return Solution(None, _status_of(exc), str(exc).splitlines()[0], counts.stats(method))
        finally:
            counts.detach()
        return Solution(ys, Status.OK, "", counts.stats(method))


class _StepCounter:
    """Attaches torchdiffeq step callbacks to ``f`` for one forward solve and removes them.

    torchdiffeq looks the callbacks up on the function object itself; we set instance
    attributes and delete them afterwards so the user's module is left unchanged. The
    adjoint's reverse solve uses the ``*_adjoint`` names, which we leave alone: the
    harness counts backward evaluations itself.
    """

    _NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")

    def __init__(self, f, adaptive: bool):
        self.f = f
        self.steps = self.accepted = self.rejected = 0
        # Fixed-grid solvers only know callback_step and warn about the others.
        hooks = {"callback_step": self._on_step}
        if adaptive:
            hooks.update(callback_accept_step=self._on_accept, callback_reject_step=self._on_reject)
        self._had = {name: vars(f)[name] for name in self._NAMES if name in vars(f)}
        for name, hook in hooks.items():
            object.__setattr__(f, name, hook)

    def _on_step(self, t0, y0, dt):
        self.steps += 1

    def _on_accept(self, t0, y0, dt):
        self.accepted += 1

    def _on_reject(self, t0, y0, dt):
        self.rejected += 1

    def detach(self) -> None:
        for name in self._NAMES:
            try:
                object.__delattr__(self.f, name)
            except AttributeError:
                pass
            if name in self._had:
                object.__setattr__(self.f, name, self._had[name])

    def stats(self, method: str) -> SolveStats:
        if method in _FIXED_STAGES:
            return SolveStats(n_steps=self.steps, n_accepted=self.steps, n_rejected=0,
                              nfe=self.steps * _FIXED_STAGES[method])
        attempted = self.accepted + self.rejected
        nfe = _ADAPTIVE_START + _ADAPTIVE_STAGES[method] * attempted if attempted else None
        return SolveStats(n_steps=attempted, n_accepted=self.accepted, n_rejected=self.rejected, nfe=nfe)
