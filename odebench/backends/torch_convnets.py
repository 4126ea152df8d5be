"""The three MNIST models of Chen et al. 2018, Table 1, in torch (DESIGN §6, mnist).

Laid out as torchdiffeq's ``examples/odenet_mnist.py``:

- downsampling: conv 1→64 3×3, GroupNorm, ReLU, conv 64→64 4×4 stride 2, GroupNorm, ReLU,
  conv 64→64 4×4 stride 2: 28×28 → 26 → 13 → 6, so 64×6×6 features (132,096 parameters);
- features: an :class:`ODEBlock` (ODE-Net, RK-Net; 75,392 parameters) or six
  :class:`ResBlock` (ResNet; 6 × 73,984);
- head: GroupNorm, ReLU, global average pool, flatten, Linear(64, 10) (778 parameters).

ODE-Net: 208,266 parameters. RK-Net: the same module with fixed-step rk4 and backprop.
ResNet: 576,778 parameters: its 3×3 convs carry no bias (a GroupNorm follows each), as in
torchdiffeq's ``ResBlock``; Chen et al. round it to 0.60 M.

The review's model (``review``, Capell et al. 2023's MNIST experiment): the same stem with
batch normalisation (:func:`review_downsampling`), a :class:`ReviewODEFunc` block (two
time-channel 3×3 convolutions, ReLU, batch normalisation) solved by fixed Euler steps of
0.05 on t ∈ [0, 1], and a pooled linear head (:func:`review_head`).

Every ODE solve goes through an odebench solver plugin (:class:`odebench.protocol.SolverPlugin`);
the block keeps the plugin's last :class:`~odebench.protocol.Solution` (status and the library's
statistics) as ``last_solution`` and counts vector-field evaluations itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from odebench.protocol import Solution, SolveFailed, SolverPlugin

MODEL_KINDS = ("odenet", "rknet", "resnet", "review")
#: Defaults per kind: ODE-Net is dopri5 at tol 1e-3 with the adjoint (Chen et al.), RK-Net
#: fixed-step rk4 with backprop through the steps, the review's model (Capell et al. 2023)
#: Euler steps of 0.05 with the adjoint.
DEFAULTS: dict[str, dict[str, Any]] = {
    "odenet": {"method": "dopri5", "grad_mode": "adjoint", "step_size": None},
    "rknet": {"method": "rk4", "grad_mode": "backprop", "step_size": 0.1},
    "review": {"method": "euler", "grad_mode": "adjoint", "step_size": 0.05},
}
DEFAULT_TOL = 1e-3
WIDTH = 64
N_RES_BLOCKS = 6


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(32, channels)`` groups, as in torchdiffeq's example."""
    return nn.GroupNorm(min(32, channels), channels)


class ConcatConv2d(nn.Module):
    """A conv whose input gets the time ``t`` as one extra constant channel (in front)."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 1, dim_out, kernel_size, stride=stride, padding=padding)

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([tt, x], dim=1))


class ODEFunc(nn.Module):
    """The vector field ``f(t, h)``: GroupNorm, ReLU, ConcatConv2d, GroupNorm, ReLU, ConcatConv2d, GroupNorm.

    ``nfe`` counts calls (forward and, for adjoint/checkpoint modes, backward-pass recomputation).
    """

    def __init__(self, dim: int = WIDTH):
        super().__init__()
        self.norm1 = norm(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = ConcatConv2d(dim, dim)
        self.norm2 = norm(dim)
        self.conv2 = ConcatConv2d(dim, dim)
        self.norm3 = norm(dim)
        self.nfe = 0

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.relu(self.norm1(x))
        out = self.conv1(t, out)
        out = self.relu(self.norm2(out))
        out = self.conv2(t, out)
        return self.norm3(out)


class ReviewODEFunc(nn.Module):
    """The review's vector field: ConcatConv2d, BatchNorm, ReLU, ConcatConv2d, BatchNorm (Capell et al. 2023).

    Two 3×3 convolutions that each see ``t`` as an extra channel, with batch normalisation
    instead of Chen et al.'s GroupNorm. In training mode every evaluation normalises by its
    own batch statistics and updates the running ones, as a module called inside a
    hand-written solver does; evaluation uses the running statistics. ``nfe`` counts calls.
    """

    def __init__(self, dim: int = WIDTH):
        super().__init__()
        self.conv1 = ConcatConv2d(dim, dim)
        self.bn1 = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = ConcatConv2d(dim, dim)
        self.bn2 = nn.BatchNorm2d(dim)
        self.nfe = 0

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.relu(self.bn1(self.conv1(t, x)))
        return self.bn2(self.conv2(t, out))


class ODEBlock(nn.Module):
    """``h(1)`` of ``dh/dt = f(t, h)``, ``h(0) = x``, solved by a solver plugin on t ∈ [0, 1].

    Arguments:
        odefunc: the vector field (a module, so adjoint methods find its parameters).
        plugin: a torch :class:`SolverPlugin` instance.
        method, rtol, atol, step_size, grad_mode, max_steps: passed to ``plugin.odeint``.

    Attributes:
        last_solution: the plugin's :class:`Solution` of the latest forward (``ys`` detached).
        last_nfe_fwd: vector-field evaluations counted during the latest forward solve.

    Raises (from forward):
        SolveFailed: when the plugin reports a status other than ok.
    """

    def __init__(
        self,
        odefunc: ODEFunc,
        plugin: SolverPlugin,
        *,
        method: str,
        rtol: float = DEFAULT_TOL,
        atol: float = DEFAULT_TOL,
        step_size: float | None = None,
        grad_mode: str = "backprop",
        max_steps: int = 100_000,
    ):
        super().__init__()
        plugin.check(method, grad_mode)
        self.odefunc = odefunc
        self.plugin = plugin
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.step_size = step_size
        self.grad_mode = grad_mode
        self.max_steps = max_steps
        self.register_buffer("integration_time", torch.tensor([0.0, 1.0]), persistent=False)
        self.last_solution: Solution | None = None
        self.last_nfe_fwd = 0

    @property
    def nfe(self) -> int:
        """Vector-field evaluations since the last :meth:`reset_nfe` (forward and backward)."""
        return self.odefunc.nfe

    def reset_nfe(self) -> None:
        self.odefunc.nfe = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ts = self.integration_time.to(dtype=x.dtype)
        start = self.odefunc.nfe
        solution = self.plugin.odeint(
            self.odefunc,
            x,
            ts,
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            step_size=self.step_size,
            grad_mode=self.grad_mode,
            max_steps=self.max_steps,
        )
        self.last_nfe_fwd = self.odefunc.nfe - start
        ys = solution.ys
        self.last_solution = dataclasses.replace(
            solution, ys=ys.detach() if isinstance(ys, torch.Tensor) else ys
        )
        if not solution.ok:
            raise SolveFailed(solution.status, solution.message)
        return ys[-1]

    def extra_repr(self) -> str:
        step = f", step_size={self.step_size}" if self.step_size is not None else ""
        return (
            f"plugin={self.plugin.name or type(self.plugin).__name__}, method={self.method}, "
            f"rtol={self.rtol}, atol={self.atol}{step}, grad_mode={self.grad_mode}"
        )


class ResBlock(nn.Module):
    """``x + conv(relu(norm(conv(relu(norm(x))))))`` with bias-free 3×3 convs."""

    def __init__(self, dim: int = WIDTH):
        super().__init__()
        self.norm1 = norm(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.norm2 = norm(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(x))
        out = self.conv1(out)
        out = self.relu(self.norm2(out))
        out = self.conv2(out)
        return x + out


def downsampling(dim: int = WIDTH) -> nn.Sequential:
    """``(B, 1, 28, 28)`` → ``(B, dim, 6, 6)``."""
    return nn.Sequential(
        nn.Conv2d(1, dim, 3, 1),
        norm(dim),
        nn.ReLU(inplace=True),
        nn.Conv2d(dim, dim, 4, 2, 1),
        norm(dim),
        nn.ReLU(inplace=True),
        nn.Conv2d(dim, dim, 4, 2, 1),
    )


def review_downsampling(dim: int = WIDTH) -> nn.Sequential:
    """The review's stem, ``(B, 1, 28, 28)`` → ``(B, dim, 6, 6)``: :func:`downsampling`'s convolutions
    with batch normalisation."""
    return nn.Sequential(
        nn.Conv2d(1, dim, 3, 1),
        nn.BatchNorm2d(dim),
        nn.ReLU(inplace=True),
        nn.Conv2d(dim, dim, 4, 2, 1),
        nn.BatchNorm2d(dim),
        nn.ReLU(inplace=True),
        nn.Conv2d(dim, dim, 4, 2, 1),
    )


def review_head(dim: int = WIDTH, n_classes: int = 10) -> nn.Sequential:
    """The review's pooled linear head: ReLU, global average pool, flatten, Linear(dim, n_classes)."""
    return nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(dim, n_classes))


def head(dim: int = WIDTH, n_classes: int = 10) -> nn.Sequential:
    """``(B, dim, H, W)`` → logits ``(B, n_classes)``."""
    return nn.Sequential(
        norm(dim),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, n_classes),
    )


class MNISTNet(nn.Module):
    """downsampling → features → head. ``ode_block`` is the :class:`ODEBlock`, None for ResNet."""

    def __init__(self, kind: str, downsampling: nn.Module, features: nn.Module, head: nn.Module):
        super().__init__()
        self.kind = kind
        self.downsampling = downsampling
        self.features = features
        self.head = head

    @property
    def ode_block(self) -> ODEBlock | None:
        return self.features if isinstance(self.features, ODEBlock) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.downsampling(x)))

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _default_plugin() -> SolverPlugin:
    """torchdiffeq's plugin, found through the registry like any other (never imported by name)."""
    from odebench import registry

    try:
        return registry.get_plugin("torchdiffeq")
    except (registry.UnknownPluginError, RuntimeError) as err:
        raise ValueError(f"build_mnist_model needs a solver plugin: pass plugin=<a torch SolverPlugin "
                         f"instance> (the default, torchdiffeq, cannot be used: {err})") from None


def build_mnist_model(
    kind: str,
    plugin: SolverPlugin | None = None,
    *,
    method: str | None = None,
    rtol: float = DEFAULT_TOL,
    atol: float = DEFAULT_TOL,
    step_size: float | None = None,
    grad_mode: str | None = None,
    max_steps: int = 100_000,
    seed: int | None = None,
) -> MNISTNet:
    """Build ODE-Net, RK-Net or ResNet for MNIST (Chen et al. 2018, Table 1), or the review's model.

    Arguments:
        kind: one of :data:`MODEL_KINDS`.
        plugin: a torch solver plugin instance; None uses torchdiffeq's. Ignored for ResNet,
            as are the solver arguments below.
        method: canonical method; default dopri5 (ODE-Net), rk4 (RK-Net) or euler (review).
        rtol, atol: tolerances of adaptive methods (default 1e-3, as Chen et al.).
        step_size: fixed step; default None for ODE-Net, 0.1 (10 rk4 steps) for RK-Net, 0.05 for review.
        grad_mode: default ``adjoint`` (ODE-Net, review) or ``backprop`` (RK-Net).
        max_steps: step budget of the solve.
        seed: when given, the initial weights are drawn under ``torch.manual_seed(seed)``
            without disturbing the global generator; None uses the global generator.

    Raises:
        ValueError: unknown kind, or no plugin available.
        UnsupportedError: the plugin does not declare ``method`` / ``grad_mode``.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown MNIST model {kind!r}; valid: {', '.join(MODEL_KINDS)}")
    if kind != "resnet" and plugin is None:
        plugin = _default_plugin()
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        # Built in the same order for every kind, so the stem draws identical weights.
        stem = review_downsampling(WIDTH) if kind == "review" else downsampling(WIDTH)
        if kind == "resnet":
            features: nn.Module = nn.Sequential(*[ResBlock(WIDTH) for _ in range(N_RES_BLOCKS)])
        else:
            defaults = DEFAULTS[kind]
            features = ODEBlock(
                ReviewODEFunc(WIDTH) if kind == "review" else ODEFunc(WIDTH),
                plugin,
                method=method or defaults["method"],
                rtol=rtol,
                atol=atol,
                step_size=step_size if step_size is not None else defaults["step_size"],
                grad_mode=grad_mode or defaults["grad_mode"],
                max_steps=max_steps,
            )
        return MNISTNet(kind, stem, features, review_head(WIDTH) if kind == "review" else head(WIDTH))


def odefunc_from_weights(channels: int, seed: int, dtype, device):
    """The ODE-Net's :class:`~odebench.backends.torch_convnets.ODEFunc` with the shared numpy weights."""
    from odebench.models import convnet_weights

    f = ODEFunc(channels)
    w = convnet_weights(channels, seed)
    convs = [f.conv1.conv.weight, f.conv1.conv.bias, f.conv2.conv.weight, f.conv2.conv.bias]
    norms = [f.norm1.weight, f.norm1.bias, f.norm2.weight, f.norm2.bias, f.norm3.weight, f.norm3.bias]
    with torch.no_grad():
        for p, a in zip(convs + norms, w["convs"] + w["norms"]):
            p.copy_(torch.as_tensor(a))
    return f.to(dtype=dtype, device=device)
