"""Standard unconstrained minimization test problems in pure ``jax.numpy`` (float64).

Three families, each problem with its standard starting point:

* :func:`mgh_problems` — the 35 problems of Moré, Garbow & Hillstrom, "Testing unconstrained
  optimization software", ACM TOMS 7(1), 17-41, 1981, each written as f(x) = Σ f_i(x)²;
* :func:`large_problems` — 16 scalable CUTEst problems (as defined by their SIF files) at any
  dimension n (even n for BROYDN7D and SROSENBR);
* :func:`logistic_problems` — two L2-regularised logistic regressions on synthetic data.

:func:`suite` returns all of them (69 problems for the default ``sizes=(1000, 10000)``).

Every ``fun`` maps a 1-D float64 array to a scalar, is vectorised (no Python loop over the
dimension), jit-able, differentiable with ``jax.grad`` and free of implicit rank promotion.
Importing this module turns on ``jax_enable_x64``: the problems are float64 problems, and
several (Brown badly scaled, Meyer, VARDIM) are meaningless in float32.

``f_star`` is the optimal value as published — MGH's table (6 significant digits, so compare
with a relative tolerance of about 5e-6), CUTEst's SIF files, or an exact value such as 0
where the minimiser is known in closed form — and ``None`` where none is published.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

__all__ = [
    "Problem",
    "large_problems",
    "logistic_problems",
    "mgh_problems",
    "suite",
]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One test problem: minimize ``fun`` starting from ``x0``."""

    name: str  # e.g. "ROSENBROCK-2", "TRIDIA-1000"
    fun: Callable  # x (1-D float64 jnp array) -> scalar
    x0: np.ndarray  # standard starting point (float64)
    f_star: float | None  # known optimal value where published (else None)
    source: str  # "MGH #1", "CUTEst", "logreg"

    @property
    def n(self) -> int:
        """Number of variables."""
        return int(self.x0.size)


def _x0(values) -> np.ndarray:
    x0 = np.array(values, dtype=np.float64).reshape(-1)
    x0.setflags(write=False)
    return x0


def _sumsq(*parts) -> jnp.ndarray:
    """Σ r² over every residual in ``parts`` (scalars or 1-D arrays)."""
    return sum(jnp.sum(jnp.square(p)) for p in parts)


# ---------------------------------------------------------------------------------------------
# Moré, Garbow & Hillstrom (1981)
# ---------------------------------------------------------------------------------------------


def _mgh(number: int, name: str, fun: Callable, x0, f_star: float | None) -> Problem:
    x0 = _x0(x0)
    return Problem(f"{name}-{x0.size}", fun, x0, f_star, f"MGH #{number}")


def _rosenbrock(x):  # MGH 1, n = 2, m = 2
    return _sumsq(10.0 * (x[1] - x[0] ** 2), 1.0 - x[0])


def _freudenstein_roth(x):  # MGH 2, n = 2, m = 2
    f1 = -13.0 + x[0] + ((5.0 - x[1]) * x[1] - 2.0) * x[1]
    f2 = -29.0 + x[0] + ((x[1] + 1.0) * x[1] - 14.0) * x[1]
    return _sumsq(f1, f2)


def _powell_badly_scaled(x):  # MGH 3, n = 2, m = 2
    f1 = 1e4 * x[0] * x[1] - 1.0
    f2 = jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001
    return _sumsq(f1, f2)


def _brown_badly_scaled(x):  # MGH 4, n = 2, m = 3
    return _sumsq(x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0)


_BEALE_Y = np.array([1.5, 2.25, 2.625])
_BEALE_I = np.arange(1.0, 4.0)


def _beale(x):  # MGH 5, n = 2, m = 3
    return _sumsq(_BEALE_Y - x[0] * (1.0 - x[1] ** _BEALE_I))


_JS_I = np.arange(1.0, 11.0)  # m = 10


def _jennrich_sampson(x):  # MGH 6, n = 2, m = 10
    return _sumsq(2.0 + 2.0 * _JS_I - (jnp.exp(_JS_I * x[0]) + jnp.exp(_JS_I * x[1])))


def _helical_valley(x):  # MGH 7, n = 3, m = 3
    # θ = arctan(x2/x1)/(2π), plus 1/2 when x1 < 0 (the paper's branch, not atan2's).
    theta = jnp.arctan(x[1] / x[0]) / (2.0 * jnp.pi) + jnp.where(x[0] < 0.0, 0.5, 0.0)
    f1 = 10.0 * (x[2] - 10.0 * theta)
    f2 = 10.0 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1.0)
    return _sumsq(f1, f2, x[2])


_BARD_Y = np.array(
    [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]
)
_BARD_U = np.arange(1.0, 16.0)
_BARD_V = 16.0 - _BARD_U
_BARD_W = np.minimum(_BARD_U, _BARD_V)


def _bard(x):  # MGH 8, n = 3, m = 15
    return _sumsq(_BARD_Y - (x[0] + _BARD_U / (_BARD_V * x[1] + _BARD_W * x[2])))


_GAUSS_Y = np.array(
    [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989,
     0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009]
)  # fmt: skip
_GAUSS_T = (8.0 - np.arange(1.0, 16.0)) / 2.0


def _gaussian(x):  # MGH 9, n = 3, m = 15
    return _sumsq(x[0] * jnp.exp(-x[1] * (_GAUSS_T - x[2]) ** 2 / 2.0) - _GAUSS_Y)


_MEYER_Y = np.array(
    [34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0,
     8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0]
)  # fmt: skip
_MEYER_T = 45.0 + 5.0 * np.arange(1.0, 17.0)


def _meyer(x):  # MGH 10, n = 3, m = 16
    return _sumsq(x[0] * jnp.exp(x[1] / (_MEYER_T + x[2])) - _MEYER_Y)


_GULF_M = 99
_GULF_T = np.arange(1.0, _GULF_M + 1.0) / 100.0
_GULF_Y = 25.0 + (-50.0 * np.log(_GULF_T)) ** (2.0 / 3.0)


def _gulf(x):  # MGH 11, n = 3, m = 99
    # The paper's "y_i m i x_2" is a typesetting slip for "y_i - x_2".
    return _sumsq(jnp.exp(-(jnp.abs(_GULF_Y - x[1]) ** x[2]) / x[0]) - _GULF_T)


_BOX_T = 0.1 * np.arange(1.0, 11.0)  # m = 10
_BOX_C = np.exp(-_BOX_T) - np.exp(-10.0 * _BOX_T)


def _box3d(x):  # MGH 12, n = 3, m = 10
    return _sumsq(jnp.exp(-_BOX_T * x[0]) - jnp.exp(-_BOX_T * x[1]) - x[2] * _BOX_C)


def _powell_singular(x):  # MGH 13, n = 4, m = 4
    return _sumsq(
        x[0] + 10.0 * x[1],
        math.sqrt(5.0) * (x[2] - x[3]),
        (x[1] - 2.0 * x[2]) ** 2,
        math.sqrt(10.0) * (x[0] - x[3]) ** 2,
    )


def _wood(x):  # MGH 14, n = 4, m = 6
    return _sumsq(
        10.0 * (x[1] - x[0] ** 2),
        1.0 - x[0],
        math.sqrt(90.0) * (x[3] - x[2] ** 2),
        1.0 - x[2],
        math.sqrt(10.0) * (x[1] + x[3] - 2.0),
        (x[1] - x[3]) / math.sqrt(10.0),
    )


_KO_Y = np.array(
    [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246]
)
_KO_U = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])


def _kowalik_osborne(x):  # MGH 15, n = 4, m = 11
    u = _KO_U
    return _sumsq(_KO_Y - x[0] * (u**2 + u * x[1]) / (u**2 + u * x[2] + x[3]))


_BD_T = np.arange(1.0, 21.0) / 5.0  # m = 20


def _brown_dennis(x):  # MGH 16, n = 4, m = 20
    t = _BD_T
    fi = (x[0] + t * x[1] - np.exp(t)) ** 2 + (x[2] + x[3] * np.sin(t) - np.cos(t)) ** 2
    return _sumsq(fi)


_OS1_Y = np.array(
    [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751,
     0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490,
     0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]
)  # fmt: skip
_OS1_T = 10.0 * np.arange(33.0)


def _osborne1(x):  # MGH 17, n = 5, m = 33
    t = _OS1_T
    return _sumsq(_OS1_Y - (x[0] + x[1] * jnp.exp(-t * x[3]) + x[2] * jnp.exp(-t * x[4])))


_BIGGS_T = 0.1 * np.arange(1.0, 14.0)  # m = 13
_BIGGS_Y = np.exp(-_BIGGS_T) - 5.0 * np.exp(-10.0 * _BIGGS_T) + 3.0 * np.exp(-4.0 * _BIGGS_T)


def _biggs_exp6(x):  # MGH 18, n = 6, m = 13
    t = _BIGGS_T
    fi = (
        x[2] * jnp.exp(-t * x[0]) - x[3] * jnp.exp(-t * x[1]) + x[5] * jnp.exp(-t * x[4]) - _BIGGS_Y
    )
    return _sumsq(fi)


_OS2_Y = np.array(
    [1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746,
     0.679, 0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649,
     0.694, 0.644, 0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395,
     0.375, 0.372, 0.391, 0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653,
     0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559, 0.597, 0.625, 0.739,
     0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054]
)  # fmt: skip
_OS2_T = np.arange(65.0) / 10.0


def _osborne2(x):  # MGH 19, n = 11, m = 65
    t = _OS2_T
    model = (
        x[0] * jnp.exp(-t * x[4])
        + x[1] * jnp.exp(-((t - x[8]) ** 2) * x[5])
        + x[2] * jnp.exp(-((t - x[9]) ** 2) * x[6])
        + x[3] * jnp.exp(-((t - x[10]) ** 2) * x[7])
    )
    return _sumsq(_OS2_Y - model)


def _make_watson(n: int) -> Callable:  # MGH 20, 2 <= n <= 31, m = 31
    t = np.arange(1.0, 30.0) / 29.0
    powers = t[:, None] ** np.arange(n)[None, :]  # (29, n): t_i^(j-1), j = 1..n
    jm1 = np.arange(1.0, n)  # (j - 1) for j = 2..n

    def watson(x):
        s1 = powers[:, : n - 1] @ (jm1 * x[1:])  # Σ_{j≥2} (j-1) x_j t^(j-2)
        s2 = powers @ x  # Σ_j x_j t^(j-1)
        return _sumsq(s1 - s2**2 - 1.0, x[0], x[1] - x[0] ** 2 - 1.0)

    return watson


def _ext_rosenbrock(x):  # MGH 21, n even, m = n
    odd, even = x[0::2], x[1::2]
    return _sumsq(10.0 * (even - odd**2), 1.0 - odd)


def _ext_powell(x):  # MGH 22, n multiple of 4, m = n
    x1, x2, x3, x4 = x[0::4], x[1::4], x[2::4], x[3::4]
    return _sumsq(
        x1 + 10.0 * x2,
        math.sqrt(5.0) * (x3 - x4),
        (x2 - 2.0 * x3) ** 2,
        math.sqrt(10.0) * (x1 - x4) ** 2,
    )


def _penalty1(x):  # MGH 23, m = n + 1
    return _sumsq(math.sqrt(1e-5) * (x - 1.0), jnp.sum(x**2) - 0.25)


def _make_penalty2(n: int) -> Callable:  # MGH 24, m = 2n
    i = np.arange(2.0, n + 1.0)
    y = np.exp(i / 10.0) + np.exp((i - 1.0) / 10.0)
    weights = np.arange(n, 0.0, -1.0)  # n - j + 1
    sa = math.sqrt(1e-5)

    def penalty2(x):
        e = jnp.exp(x / 10.0)
        return _sumsq(
            x[0] - 0.2,
            sa * (e[1:] + e[:-1] - y),
            sa * (e[1:] - math.exp(-0.1)),
            jnp.sum(weights * x**2) - 1.0,
        )

    return penalty2


def _variably_dimensioned(x):  # MGH 25, m = n + 2
    s = jnp.sum(jnp.arange(1.0, x.shape[0] + 1.0) * (x - 1.0))
    return _sumsq(x - 1.0, s, s**2)


def _trigonometric(x):  # MGH 26, m = n
    n = x.shape[0]
    i = jnp.arange(1.0, n + 1.0)
    return _sumsq(n - jnp.sum(jnp.cos(x)) + i * (1.0 - jnp.cos(x)) - jnp.sin(x))


def _brown_almost_linear(x):  # MGH 27, m = n
    n = x.shape[0]
    return _sumsq(x[:-1] + jnp.sum(x) - (n + 1.0), jnp.prod(x) - 1.0)


def _grid(n: int) -> tuple[float, np.ndarray]:
    h = 1.0 / (n + 1.0)
    return h, h * np.arange(1.0, n + 1.0)


def _discrete_boundary(x):  # MGH 28, m = n
    h, t = _grid(x.shape[0])
    xp = jnp.pad(x, 1)  # x_0 = x_{n+1} = 0
    return _sumsq(2.0 * x - xp[:-2] - xp[2:] + h**2 * (x + t + 1.0) ** 3 / 2.0)


def _discrete_integral(x):  # MGH 29, m = n
    h, t = _grid(x.shape[0])
    u = (x + t + 1.0) ** 3
    lower = jnp.cumsum(t * u)  # Σ_{j ≤ i} t_j u_j
    w = (1.0 - t) * u
    upper = jnp.sum(w) - jnp.cumsum(w)  # Σ_{j > i} (1 - t_j) u_j
    return _sumsq(x + h * ((1.0 - t) * lower + t * upper) / 2.0)


def _broyden_tridiagonal(x):  # MGH 30, m = n
    xp = jnp.pad(x, 1)
    return _sumsq((3.0 - 2.0 * x) * x - xp[:-2] - 2.0 * xp[2:] + 1.0)


def _make_broyden_banded(n: int, ml: int = 5, mu: int = 1) -> Callable:  # MGH 31, m = n
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    band = ((j != i) & (j >= i - ml) & (j <= i + mu)).astype(np.float64)

    def broyden_banded(x):
        return _sumsq(x * (2.0 + 5.0 * x**2) + 1.0 - band @ (x * (1.0 + x)))

    return broyden_banded


def _make_linear_full_rank(m: int) -> Callable:  # MGH 32, m >= n
    def linear_full_rank(x):
        n = x.shape[0]
        s = 2.0 / m * jnp.sum(x)
        return _sumsq(x - s - 1.0) + (m - n) * (s + 1.0) ** 2

    return linear_full_rank


def _make_linear_rank1(m: int) -> Callable:  # MGH 33, m >= n
    i = np.arange(1.0, m + 1.0)

    def linear_rank1(x):
        s = jnp.sum(jnp.arange(1.0, x.shape[0] + 1.0) * x)
        return _sumsq(i * s - 1.0)

    return linear_rank1


def _make_linear_rank1_zero(m: int) -> Callable:  # MGH 34, m >= n
    i = np.arange(2.0, m)  # i = 2..m-1

    def linear_rank1_zero(x):
        n = x.shape[0]
        s = jnp.sum(jnp.arange(2.0, n) * x[1 : n - 1])  # Σ_{j=2}^{n-1} j x_j
        return _sumsq((i - 1.0) * s - 1.0) + 2.0  # f_1 = f_m = -1

    return linear_rank1_zero


def _make_chebyquad(m: int) -> Callable:  # MGH 35, m >= n
    # ∫_0^1 T_i(2x - 1) dx = -1/(i² - 1) for even i, 0 for odd i.
    integrals = [(-1.0 / (i * i - 1.0) if i % 2 == 0 else 0.0) for i in range(1, m + 1)]

    def chebyquad(x):
        y = 2.0 * x - 1.0
        t_prev, t_cur = jnp.ones_like(y), y
        residuals = []
        for i in range(1, m + 1):
            residuals.append(jnp.mean(t_cur) - integrals[i - 1])
            t_prev, t_cur = t_cur, 2.0 * y * t_cur - t_prev
        return _sumsq(jnp.stack(residuals))

    return chebyquad


def mgh_problems() -> list[Problem]:
    """The 35 Moré–Garbow–Hillstrom problems at the paper's standard x0 and common sizes.

    Sizes: Jennrich-Sampson m = 10, Gulf m = 99, Box 3D m = 10, Brown-Dennis m = 20,
    Biggs EXP6 m = 13, Watson n = 9, extended Rosenbrock n = 10, extended Powell n = 12,
    Penalty I/II n = 10, problems 25-31 n = 10, linear functions n = 10 / m = 20,
    Chebyquad n = m = 8.

    ``f_star`` is the global value. From x0, descent methods usually stop at a local minimum
    the paper also lists on Freudenstein-Roth (48.9842) and Biggs EXP6 (5.65565e-3), and at
    the known local minimum 2.79506e-5 on Trigonometric-10.
    """
    n = 10

    def ramp(k):  # t_j (t_j - 1), t_j = j/(k+1): x0 of the discretised problems
        _, t = _grid(k)
        return t * (t - 1.0)

    m_lin = 20
    return [
        _mgh(1, "ROSENBROCK", _rosenbrock, [-1.2, 1.0], 0.0),
        _mgh(2, "FREUDENSTEIN_ROTH", _freudenstein_roth, [0.5, -2.0], 0.0),
        _mgh(3, "POWELL_BADLY_SCALED", _powell_badly_scaled, [0.0, 1.0], 0.0),
        _mgh(4, "BROWN_BADLY_SCALED", _brown_badly_scaled, [1.0, 1.0], 0.0),
        _mgh(5, "BEALE", _beale, [1.0, 1.0], 0.0),
        _mgh(6, "JENNRICH_SAMPSON", _jennrich_sampson, [0.3, 0.4], 124.362),
        _mgh(7, "HELICAL_VALLEY", _helical_valley, [-1.0, 0.0, 0.0], 0.0),
        _mgh(8, "BARD", _bard, [1.0, 1.0, 1.0], 8.21487e-3),
        _mgh(9, "GAUSSIAN", _gaussian, [0.4, 1.0, 0.0], 1.12793e-8),
        _mgh(10, "MEYER", _meyer, [0.02, 4000.0, 250.0], 87.9458),
        _mgh(11, "GULF", _gulf, [5.0, 2.5, 0.15], 0.0),
        _mgh(12, "BOX3D", _box3d, [0.0, 10.0, 20.0], 0.0),
        _mgh(13, "POWELL_SINGULAR", _powell_singular, [3.0, -1.0, 0.0, 1.0], 0.0),
        _mgh(14, "WOOD", _wood, [-3.0, -1.0, -3.0, -1.0], 0.0),
        _mgh(15, "KOWALIK_OSBORNE", _kowalik_osborne, [0.25, 0.39, 0.415, 0.39], 3.07505e-4),
        _mgh(16, "BROWN_DENNIS", _brown_dennis, [25.0, 5.0, -5.0, -1.0], 85822.2),
        _mgh(17, "OSBORNE1", _osborne1, [0.5, 1.5, -1.0, 0.01, 0.02], 5.46489e-5),
        # f = 0 at (1, 10, 1, 5, 4, 3); the paper also lists the local value 5.65565e-3.
        _mgh(18, "BIGGS_EXP6", _biggs_exp6, [1.0, 2.0, 1.0, 1.0, 1.0, 1.0], 0.0),
        _mgh(
            19,
            "OSBORNE2",
            _osborne2,
            [1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5],
            4.01377e-2,
        ),
        _mgh(20, "WATSON", _make_watson(9), np.zeros(9), 1.39976e-6),
        _mgh(21, "EXT_ROSENBROCK", _ext_rosenbrock, np.tile([-1.2, 1.0], n // 2), 0.0),
        _mgh(22, "EXT_POWELL", _ext_powell, np.tile([3.0, -1.0, 0.0, 1.0], 3), 0.0),
        _mgh(23, "PENALTY1", _penalty1, np.arange(1.0, n + 1.0), 7.08765e-5),
        _mgh(24, "PENALTY2", _make_penalty2(n), np.full(n, 0.5), 2.93660e-4),
        _mgh(25, "VARIABLY_DIMENSIONED", _variably_dimensioned, 1.0 - np.arange(1, n + 1) / n, 0.0),
        _mgh(26, "TRIGONOMETRIC", _trigonometric, np.full(n, 1.0 / n), 0.0),
        _mgh(27, "BROWN_ALMOST_LINEAR", _brown_almost_linear, np.full(n, 0.5), 0.0),
        _mgh(28, "DISCRETE_BOUNDARY", _discrete_boundary, ramp(n), 0.0),
        _mgh(29, "DISCRETE_INTEGRAL", _discrete_integral, ramp(n), 0.0),
        _mgh(30, "BROYDEN_TRIDIAGONAL", _broyden_tridiagonal, np.full(n, -1.0), 0.0),
        _mgh(31, "BROYDEN_BANDED", _make_broyden_banded(n), np.full(n, -1.0), 0.0),
        _mgh(32, "LINEAR_FULL_RANK", _make_linear_full_rank(m_lin), np.ones(n), float(m_lin - n)),
        _mgh(
            33,
            "LINEAR_RANK1",
            _make_linear_rank1(m_lin),
            np.ones(n),
            m_lin * (m_lin - 1) / (2.0 * (2 * m_lin + 1)),
        ),
        _mgh(
            34,
            "LINEAR_RANK1_ZERO",
            _make_linear_rank1_zero(m_lin),
            np.ones(n),
            (m_lin**2 + 3 * m_lin - 6) / (2.0 * (2 * m_lin - 3)),
        ),
        _mgh(35, "CHEBYQUAD", _make_chebyquad(8), np.arange(1.0, 9.0) / 9.0, 3.51687e-3),
    ]


# ---------------------------------------------------------------------------------------------
# CUTEst-style scalable problems (definitions and starting points from the SIF files)
# ---------------------------------------------------------------------------------------------


def _arwhead(x):
    return jnp.sum(-4.0 * x[:-1] + 3.0) + jnp.sum((x[:-1] ** 2 + x[-1] ** 2) ** 2)


def _bdqrtic(x):
    q = x**2
    g = q[:-4] + 2.0 * q[1:-3] + 3.0 * q[2:-2] + 4.0 * q[3:-1] + 5.0 * q[-1]
    return jnp.sum((3.0 - 4.0 * x[:-4]) ** 2) + jnp.sum(g**2)


def _broydn7d(x):
    n = x.shape[0]
    xp = jnp.pad(x, 1)
    g = 1.0 - xp[:-2] - 2.0 * xp[2:] + (3.0 - 2.0 * x) * x
    s = x[: n // 2] + x[n // 2 :]
    p = 7.0 / 3.0
    return jnp.sum(jnp.abs(g) ** p) + jnp.sum(jnp.abs(s) ** p)


def _cosine(x):
    return jnp.sum(jnp.cos(x[:-1] ** 2 - 0.5 * x[1:]))


def _dqdrtic(x):
    q = x**2
    return jnp.sum(q[:-2] + 100.0 * q[1:-1] + 100.0 * q[2:])


def _edensch(x):
    a, b = x[:-1], x[1:]
    return 16.0 + jnp.sum((a - 2.0) ** 4 + (a * b - 2.0 * b) ** 2 + (b + 1.0) ** 2)


def _engval1(x):
    return jnp.sum((x[:-1] ** 2 + x[1:] ** 2) ** 2) + jnp.sum(3.0 - 4.0 * x[:-1])


def _fletchcr(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _freuroth(x):
    a, b = x[:-1], x[1:]
    r = a - 2.0 * b + (5.0 - b) * b**2 - 13.0
    s = a - 14.0 * b + (1.0 + b) * b**2 - 29.0
    return jnp.sum(r**2) + jnp.sum(s**2)


def _genrose(x):
    return 1.0 + jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (x[1:] - 1.0) ** 2)


def _liarwhd(x):
    return jnp.sum(4.0 * (x**2 - x[0]) ** 2 + (x - 1.0) ** 2)


def _nondia(x):
    return (x[0] - 1.0) ** 2 + jnp.sum(100.0 * (x[0] - x[:-1] ** 2) ** 2)


def _quartc(x):
    return jnp.sum((x - jnp.arange(1.0, x.shape[0] + 1.0)) ** 4)


def _srosenbr(x):
    odd, even = x[0::2], x[1::2]
    return jnp.sum(100.0 * (even - odd**2) ** 2 + (odd - 1.0) ** 2)


def _tridia(x):
    i = jnp.arange(2.0, x.shape[0] + 1.0)
    return (x[0] - 1.0) ** 2 + jnp.sum(i * (2.0 * x[1:] - x[:-1]) ** 2)


def _vardim(x):
    s = jnp.sum(jnp.arange(1.0, x.shape[0] + 1.0) * (x - 1.0))
    return jnp.sum((x - 1.0) ** 2) + s**2 + s**4


# Published local/global optimal values from the SIF files, by n, where there is no closed form.
_BDQRTIC_FSTAR = {100: 3.78769e2, 500: 1.98101e3, 1000: 3.98382e3}


def large_problems(n: int) -> list[Problem]:
    """16 scalable CUTEst problems at dimension ``n`` (n ≥ 5, even) with SIF starting points.

    ``f_star`` is exact where the minimiser is known (0, GENROSE's 1, COSINE's -(n-1)),
    BDQRTIC's SIF value for n in {100, 500, 1000}, and ``None`` otherwise (BROYDN7D,
    EDENSCH, ENGVAL1 and FREUROTH have only n-specific values, where published at all).
    """
    if n < 5 or n % 2:
        raise ValueError(f"large_problems needs an even n >= 5, got {n}")
    i = np.arange(1.0, n + 1.0)
    x0_freuroth = np.zeros(n)
    x0_freuroth[:2] = [0.5, -2.0]
    specs = [
        ("ARWHEAD", _arwhead, np.ones(n), 0.0),
        ("BDQRTIC", _bdqrtic, np.ones(n), _BDQRTIC_FSTAR.get(n)),
        ("BROYDN7D", _broydn7d, np.ones(n), None),
        ("COSINE", _cosine, np.ones(n), -(n - 1.0)),
        ("DQDRTIC", _dqdrtic, np.full(n, 3.0), 0.0),
        ("EDENSCH", _edensch, np.full(n, 8.0), None),
        ("ENGVAL1", _engval1, np.full(n, 2.0), None),
        ("FLETCHCR", _fletchcr, np.zeros(n), 0.0),
        ("FREUROTH", _freuroth, x0_freuroth, None),
        ("GENROSE", _genrose, i / (n + 1.0), 1.0),
        ("LIARWHD", _liarwhd, np.full(n, 4.0), 0.0),
        ("NONDIA", _nondia, np.full(n, -1.0), 0.0),
        ("QUARTC", _quartc, np.full(n, 2.0), 0.0),
        ("SROSENBR", _srosenbr, np.tile([-1.2, 1.0], n // 2), 0.0),
        ("TRIDIA", _tridia, np.ones(n), 0.0),
        ("VARDIM", _vardim, 1.0 - i / n, 0.0),
    ]
    return [Problem(f"{name}-{n}", fun, _x0(x0), fs, "CUTEst") for name, fun, x0, fs in specs]


# ---------------------------------------------------------------------------------------------
# L2-regularised logistic regression on synthetic data
# ---------------------------------------------------------------------------------------------


def _logreg_data(m: int, d: int, rho: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Features with AR(1) correlation ``rho`` between neighbours and spread scales; ±1 labels.

    Generated with ``np.random.default_rng(0)``. Column j is ρ·(column j-1) + √(1-ρ²)·noise,
    scaled by 10^u with u uniform in [-1, 1], plus a bias column of ones; labels are drawn
    from the logistic model with a random true weight vector (so the classes overlap).
    """
    rng = np.random.default_rng(0)
    z = rng.standard_normal((m, d - 1))
    # AR(1) across features, vectorised: x_j = Σ_{k≤j} ρ^(j-k) c_k z_k with c_0 = 1.
    c = np.full(d - 1, math.sqrt(1.0 - rho**2))
    c[0] = 1.0
    lag = np.arange(d - 1)[:, None] - np.arange(d - 1)[None, :]
    mix = np.where(lag >= 0, rho ** np.maximum(lag, 0), 0.0) * c[None, :]  # (d-1, d-1)
    feats = z @ mix.T
    feats *= 10.0 ** rng.uniform(-1.0, 1.0, size=d - 1)[None, :]
    a = np.concatenate([feats, np.ones((m, 1))], axis=1)
    w_true = rng.standard_normal(d) / np.sqrt(d)
    w_true /= np.std(a @ w_true) / 2.0  # margins of spread ~2: noisy but informative labels
    p = 1.0 / (1.0 + np.exp(-(a @ w_true)))
    y = np.where(rng.uniform(size=m) < p, 1.0, -1.0)
    return a, y


def _make_logreg(a: np.ndarray, y: np.ndarray, lam: float) -> Callable:
    a_j, y_j = jnp.asarray(a), jnp.asarray(y)

    def logreg(w):
        margins = y_j * (a_j @ w)
        return jnp.mean(jnp.logaddexp(0.0, -margins)) + 0.5 * lam * jnp.sum(w**2)

    return logreg


def logistic_problems() -> list[Problem]:
    """mean log(1 + exp(-y aᵀw)) + λ/2 ‖w‖²: 2000×100 with λ = 1e-3, 5000×500 with λ = 1e-4."""
    out = []
    for m, d, lam in ((2000, 100, 1e-3), (5000, 500, 1e-4)):
        a, y = _logreg_data(m, d)
        fun = _make_logreg(a, y, lam)
        out.append(Problem(f"LOGREG-{m}x{d}", fun, _x0(np.zeros(d)), None, "logreg"))
    return out


def suite(sizes: Sequence[int] = (1000, 10000)) -> list[Problem]:
    """MGH + CUTEst problems at each size + logistic regression (69 problems by default)."""
    problems = mgh_problems()
    for n in sizes:
        problems += large_problems(n)
    return problems + logistic_problems()
