"""Butcher tableaus of the explicit Runge–Kutta methods, as plain Python floats.

No torch here: the RK core reads these numbers once per step as Python floats, so a
step does no tensor arithmetic on coefficients.

A tableau with ``s`` stages is ``c`` (nodes), ``a`` (rows ``a[i] = [a_i0, …, a_i,i-1]``),
``b`` (solution weights) and, for adaptive methods, ``e = b - b̂`` (error weights). FSAL
methods list ``f(t1, y1)`` as their last stage, with weight 0 in ``b``. ``dense``
maps ``θ ∈ [0, 1]`` to weights ``w`` with ``y(t0 + θh) = y0 + h Σ w_i k_i``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge–Kutta method.

    Arguments:
        name: canonical name.
        order: order of the solution.
        c: nodes, ``c[0] == 0``.
        a: strictly lower-triangular coefficients, ``a[i]`` has ``i`` entries.
        b: solution weights, one per stage.
        e: error weights ``b - b̂``, one per stage (None for fixed-step-only methods).
        error_order: order ``q`` of the embedded method's local error exponent: the
            controller uses ``err ∝ h^(q+1)``; None for fixed-step-only methods.
        fsal: the last stage is ``f(t1, y1)`` (``b`` equals the last row of ``a``).
        dense: ``θ -> weights`` of the method's own continuous extension over the
            ``k`` of one step (including the FSAL stage), or None (cubic Hermite).
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...] | None = None
    error_order: int | None = None
    fsal: bool = False
    dense: Callable[[float], list[float]] | None = field(default=None, compare=False)

    @property
    def stages(self) -> int:
        """Stages of one step, the FSAL stage included."""
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.e is not None


def _hermite_weights(b: tuple[float, ...], n: int) -> Callable[[float], list[float]]:
    """Cubic Hermite interpolant of a FSAL method over ``k_0 = f(t0, y0)`` and ``k_last = f(t1, y1)``."""

    def weights(theta: float) -> list[float]:
        h01 = theta * theta * (3.0 - 2.0 * theta)
        h10 = theta * (1.0 - theta) * (1.0 - theta)
        h11 = theta * theta * (theta - 1.0)
        w = [h01 * bi for bi in b] + [0.0] * (n - len(b))
        w[0] += h10
        w[-1] += h11
        return w

    return weights


# -- fixed-step methods ---------------------------------------------------------

EULER = Tableau("euler", 1, c=(0.0,), a=((),), b=(1.0,))

MIDPOINT = Tableau("midpoint", 2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))

HEUN = Tableau("heun", 2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))

# torchdiffeq's "rk4" is Kutta's 3/8 rule (its rk4_alt_step_func), so odebench's "rk4" is too:
# the canonical name must mean the same method in both plugins.
RK4 = Tableau(
    "rk4",
    4,
    c=(0.0, 1 / 3, 2 / 3, 1.0),
    a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
    b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
)

# The classical 1/6, 1/3, 1/3, 1/6 method: the canonical ``rk4-classic``.
RK4_CLASSIC = Tableau(
    "rk4_classic",
    4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)

# -- adaptive methods -----------------------------------------------------------

_BS_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
_BS_BHAT = (7 / 24, 1 / 4, 1 / 3, 1 / 8)
BOSH3 = Tableau(
    "bosh3",
    3,
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    b=_BS_B,
    e=tuple(x - y for x, y in zip(_BS_B, _BS_BHAT)),
    error_order=2,
    fsal=True,
    dense=_hermite_weights(_BS_B, 4),
)

_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_BHAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
# Continuous extension of Dormand & Prince (Hairer, Nørsett & Wanner, II.6, and dopri5.f's CONTD5).
_DP_D = (
    -12715105075 / 11282082432,
    0.0,
    87487479700 / 32700410799,
    -10690763975 / 1880347072,
    701980252875 / 199316789632,
    -1453857185 / 822651844,
    69997945 / 29380423,
)


def _dopri5_dense(theta: float) -> list[float]:
    # y(θ) = y0 + θΔ + θ(1-θ)(hk1 - Δ) + θ²(1-θ)(2Δ - hk1 - hk7) + θ²(1-θ)² h Σ d_i k_i
    u = 1.0 - theta
    p1 = theta * u
    p2 = theta * p1
    p3 = p2 * u
    w = [(theta - p1 + 2.0 * p2) * b + p3 * d for b, d in zip(_DP_B, _DP_D)]
    w[0] += p1 - p2
    w[6] -= p2
    return w


DOPRI5 = Tableau(
    "dopri5",
    5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DP_B[:6],
    ),
    b=_DP_B,
    e=tuple(x - y for x, y in zip(_DP_B, _DP_BHAT)),
    error_order=4,
    fsal=True,
    dense=_dopri5_dense,
)

# Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column
# simplifying assumption", with the coefficients in the form of OrdinaryDiffEq.jl.
_TS_C = (0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0)
_TS_A = (
    (),
    (0.161,),
    (-0.008480655492356989, 0.335480655492357),
    (2.897153057105493, -6.359448489975075, 4.3622954328695815),
    (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
    (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
    (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774),
)
_TS_B = _TS_A[6] + (0.0,)
_TS_E = (
    -0.00178001105222577714,
    -0.0008164344596567469,
    0.007880878010261995,
    -0.1447110071732629,
    0.5823571654525552,
    -0.45808210592918697,
    0.015151515151515152,
)
# Dense output b_i(θ) = Σ_p r_ip θ^p, p = 1..4.
_TS_R = (
    (1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216),
    (0.0, 0.13169999999999998, -0.2234, 0.1017),
    (0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253),
    (0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902),
    (0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928),
    (0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661),
    (0.0, 1.5, -4.0, 2.5),
)


def _tsit5_dense(theta: float) -> list[float]:
    t2 = theta * theta
    t3 = t2 * theta
    t4 = t3 * theta
    return [r1 * theta + r2 * t2 + r3 * t3 + r4 * t4 for r1, r2, r3, r4 in _TS_R]


TSIT5 = Tableau(
    "tsit5",
    5,
    c=_TS_C,
    a=_TS_A,
    b=_TS_B,
    e=_TS_E,
    error_order=4,
    fsal=True,
    dense=_tsit5_dense,
)

TABLEAUS: dict[str, Tableau] = {
    t.name: t for t in (EULER, MIDPOINT, HEUN, RK4, RK4_CLASSIC, BOSH3, DOPRI5, TSIT5)
}


def get(method: str) -> Tableau:
    """The tableau of ``method``.

    Raises:
        ValueError: for an unknown method, listing the valid ones.
    """
    try:
        return TABLEAUS[method]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}; valid: {', '.join(TABLEAUS)}"
        ) from None
