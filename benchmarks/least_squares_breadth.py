"""Least squares breadth: the MGH problems, sif2jax's CUTEst residual problems, one large fit.

``--mgh``: the 35 problems of Moré, Garbow & Hillstrom (1981) in their residual form
``r(x)`` (``f = ‖r‖²`` in the paper; jopt's and scipy's cost is ``C = ½‖r‖²``), at the
paper's standard starting points and the sizes of :func:`tests.problems.mgh_problems`
(whose scalar forms ``f`` are checked against ``‖r‖²`` before the run). Solved by jopt
(``lm``, ``dogleg``, ``gauss-newton``), ``scipy.optimize.least_squares`` (``lm`` =
MINPACK, ``trf``) and optimistix (``LevenbergMarquardt``, ``Dogleg``, ``GaussNewton``),
every one with the exact Jacobian (JAX's), tolerances 1e-12 and 5,000 evaluations.
*Solved*: ``C ≤ C*·(1 + 1e-5) + 1e-12``, ``C* = ½f*`` the paper's global value (six
significant digits, hence the 1e-5); a second count also accepts the local minima the
paper lists (and Trigonometric-10's well-known 2.79506e-5).

``--sif``: held-out breadth on ``sif2jax.nonlinear_equations_problems`` (CUTEst's
nonlinear equations and NIST-type least-squares problems as residual vectors
``constraint(y)[0]``, 185 in sif2jax 0.0.8), each from its ``y0``: jopt ``lm``, scipy
``trf`` and ``lm`` (MINPACK needs ``m ≥ n``), optimistix ``LevenbergMarquardt``; tolerances
1e-10, ``100·(n+1)`` evaluations (within [1000, 20000]). Fixed variables (lower = upper
bound) are held at their value; other bounds are ignored (every contender solves the same
unconstrained problem). Problems whose Jacobian has more than 4e6 entries
(``--dense-max-entries``) run matrix-free:
jopt with ``tr_solver="cg"``, scipy ``trf`` with ``tr_solver="lsmr"`` on a
``LinearOperator`` of JAX's JVP/VJP; MINPACK and optimistix (dense QR) are not run there.
Each (problem, contender) runs in a worker process killed after ``--timeout`` s
(``--timeout-large`` for the matrix-free ones), and a fresh worker takes the next.
*Solved*: ``C ≤ C_best·(1 + 1e-6) + 1e-12·max(1, C(x0))`` with ``C_best`` the lowest cost
any contender reached; *stationary*: ``‖∇C‖∞ ≤ 1e-6·max(1, C)``. Both are computed here
from the returned ``x`` (``C`` and ``∇C = Jᵀr`` by JAX), whatever the solver reported.

``--large``: a 10,000-parameter, 20,000-residual sparse fit: Broyden's banded residuals
(MGH #31, lower bandwidth 5, upper 1) stacked with a periodic first-difference
regularisation ``0.1·(x_i − x_{i+1})``, from MGH's ``x0 = −1``. jopt matrix-free
(``tr_solver="cg"``) against ``scipy.optimize.least_squares(method="trf",
tr_solver="lsmr")`` with ``jac_sparsity`` (finite differences, columns grouped), and with
the exact sparse Jacobian (8 coloured JVPs by JAX). jopt with the dense Jacobian is not run
(2e8 entries, 1.6 GB, and an SVD of it per step). Each contender runs in its own fresh
process, twice (the second call is steady state: compiled); peak memory = that process's
``ru_maxrss`` minus that of a process that imports the same libraries and does nothing.

Run (from the repository root; ``results/`` is ``benchmarks/results/``)::

    python -m benchmarks.least_squares_breadth --mgh --md results/least_squares_mgh.md
    python -m benchmarks.least_squares_breadth --sif --md results/least_squares_sif.md
    python -m benchmarks.least_squares_breadth --large --md results/least_squares_large.md
    python -m benchmarks.least_squares_breadth --sif --only MGH09,ARTIF --timeout 30

References:
  Moré, J. J., Garbow, B. S. & Hillstrom, K. E. (1981). Testing unconstrained optimization
  software. ACM Trans. Math. Softw. 7(1), 17–41.
  Gould, N. I. M., Orban, D. & Toint, Ph. L. (2015). CUTEst: a constrained and
  unconstrained testing environment with safe threads. Comput. Optim. Appl. 60, 545–557.
  Broyden, C. G. (1971). The convergence of an algorithm for solving sparse nonlinear
  systems. Math. Comp. 25, 285–294 (the banded function).
  Curtis, A. R., Powell, M. J. D. & Reid, J. K. (1974). On the estimation of sparse
  Jacobian matrices. IMA J. Appl. Math. 13, 117–119 (grouped columns).
"""

from __future__ import annotations

import os

# OpenBLAS on one thread, before numpy / scipy load it (as benchmarks/breadth.py does): its
# threads spin against XLA's on a shared machine (np.linalg.norm of a 20,000-vector took
# 21 ms instead of 3 µs here). It serves scipy and jaxlib's LAPACK kernels alike.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
import scipy.sparse  # noqa: E402
import scipy.sparse.linalg  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import jopt  # noqa: E402
from benchmarks._timing import machine_line  # noqa: E402
from tests import problems as scalar_mgh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- MGH residuals
# Data and sizes are those of tests/problems.py (scalar forms f = Σ rᵢ²); the residual
# vectors below are checked against them (``check_mgh``).

D = scalar_mgh  # the data arrays (_BARD_Y, ...)


def _vec(*parts: Any) -> jax.Array:
    """One residual vector from scalars and 1-D arrays."""
    return jnp.concatenate([jnp.atleast_1d(p) for p in parts])


def r_rosenbrock(x):  # 1
    return _vec(10.0 * (x[1] - x[0] ** 2), 1.0 - x[0])


def r_freudenstein_roth(x):  # 2
    return _vec(-13.0 + x[0] + ((5.0 - x[1]) * x[1] - 2.0) * x[1],
                -29.0 + x[0] + ((x[1] + 1.0) * x[1] - 14.0) * x[1])


def r_powell_badly_scaled(x):  # 3
    return _vec(1e4 * x[0] * x[1] - 1.0, jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001)


def r_brown_badly_scaled(x):  # 4
    return _vec(x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0)


def r_beale(x):  # 5
    return D._BEALE_Y - x[0] * (1.0 - x[1] ** D._BEALE_I)


def r_jennrich_sampson(x):  # 6, m = 10
    i = D._JS_I
    return 2.0 + 2.0 * i - (jnp.exp(i * x[0]) + jnp.exp(i * x[1]))


def r_helical_valley(x):  # 7
    theta = jnp.arctan(x[1] / x[0]) / (2.0 * jnp.pi) + jnp.where(x[0] < 0.0, 0.5, 0.0)
    return _vec(10.0 * (x[2] - 10.0 * theta), 10.0 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1.0),
                x[2])


def r_bard(x):  # 8
    return D._BARD_Y - (x[0] + D._BARD_U / (D._BARD_V * x[1] + D._BARD_W * x[2]))


def r_gaussian(x):  # 9
    return x[0] * jnp.exp(-x[1] * (D._GAUSS_T - x[2]) ** 2 / 2.0) - D._GAUSS_Y


def r_meyer(x):  # 10
    return x[0] * jnp.exp(x[1] / (D._MEYER_T + x[2])) - D._MEYER_Y


def r_gulf(x):  # 11, m = 99
    return jnp.exp(-(jnp.abs(D._GULF_Y - x[1]) ** x[2]) / x[0]) - D._GULF_T


def r_box3d(x):  # 12, m = 10
    t = D._BOX_T
    return jnp.exp(-t * x[0]) - jnp.exp(-t * x[1]) - x[2] * D._BOX_C


def r_powell_singular(x):  # 13
    return _vec(x[0] + 10.0 * x[1], math.sqrt(5.0) * (x[2] - x[3]), (x[1] - 2.0 * x[2]) ** 2,
                math.sqrt(10.0) * (x[0] - x[3]) ** 2)


def r_wood(x):  # 14
    return _vec(10.0 * (x[1] - x[0] ** 2), 1.0 - x[0], math.sqrt(90.0) * (x[3] - x[2] ** 2),
                1.0 - x[2], math.sqrt(10.0) * (x[1] + x[3] - 2.0),
                (x[1] - x[3]) / math.sqrt(10.0))


def r_kowalik_osborne(x):  # 15
    u = D._KO_U
    return D._KO_Y - x[0] * (u ** 2 + u * x[1]) / (u ** 2 + u * x[2] + x[3])


def r_brown_dennis(x):  # 16, m = 20
    t = D._BD_T
    return (x[0] + t * x[1] - np.exp(t)) ** 2 + (x[2] + x[3] * np.sin(t) - np.cos(t)) ** 2


def r_osborne1(x):  # 17
    t = D._OS1_T
    return D._OS1_Y - (x[0] + x[1] * jnp.exp(-t * x[3]) + x[2] * jnp.exp(-t * x[4]))


def r_biggs_exp6(x):  # 18, m = 13
    t = D._BIGGS_T
    return (x[2] * jnp.exp(-t * x[0]) - x[3] * jnp.exp(-t * x[1])
            + x[5] * jnp.exp(-t * x[4]) - D._BIGGS_Y)


def r_osborne2(x):  # 19
    t = D._OS2_T
    model = (x[0] * jnp.exp(-t * x[4]) + x[1] * jnp.exp(-((t - x[8]) ** 2) * x[5])
             + x[2] * jnp.exp(-((t - x[9]) ** 2) * x[6])
             + x[3] * jnp.exp(-((t - x[10]) ** 2) * x[7]))
    return D._OS2_Y - model


def make_watson(n: int) -> Callable:  # 20, m = 31
    t = np.arange(1.0, 30.0) / 29.0
    powers = t[:, None] ** np.arange(n)[None, :]
    jm1 = np.arange(1.0, n)

    def r_watson(x):
        s1 = powers[:, : n - 1] @ (jm1 * x[1:])
        s2 = powers @ x
        return _vec(s1 - s2 ** 2 - 1.0, x[0], x[1] - x[0] ** 2 - 1.0)

    return r_watson


def r_ext_rosenbrock(x):  # 21
    odd, even = x[0::2], x[1::2]
    return _vec(10.0 * (even - odd ** 2), 1.0 - odd)


def r_ext_powell(x):  # 22
    x1, x2, x3, x4 = x[0::4], x[1::4], x[2::4], x[3::4]
    return _vec(x1 + 10.0 * x2, math.sqrt(5.0) * (x3 - x4), (x2 - 2.0 * x3) ** 2,
                math.sqrt(10.0) * (x1 - x4) ** 2)


def r_penalty1(x):  # 23, m = n + 1
    return _vec(math.sqrt(1e-5) * (x - 1.0), jnp.sum(x ** 2) - 0.25)


def make_penalty2(n: int) -> Callable:  # 24, m = 2n
    i = np.arange(2.0, n + 1.0)
    y = np.exp(i / 10.0) + np.exp((i - 1.0) / 10.0)
    weights = np.arange(n, 0.0, -1.0)
    sa = math.sqrt(1e-5)

    def r_penalty2(x):
        e = jnp.exp(x / 10.0)
        return _vec(x[0] - 0.2, sa * (e[1:] + e[:-1] - y), sa * (e[1:] - math.exp(-0.1)),
                    jnp.sum(weights * x ** 2) - 1.0)

    return r_penalty2


def r_variably_dimensioned(x):  # 25, m = n + 2
    s = jnp.sum(jnp.arange(1.0, x.shape[0] + 1.0) * (x - 1.0))
    return _vec(x - 1.0, s, s ** 2)


def r_trigonometric(x):  # 26
    i = jnp.arange(1.0, x.shape[0] + 1.0)
    return x.shape[0] - jnp.sum(jnp.cos(x)) + i * (1.0 - jnp.cos(x)) - jnp.sin(x)


def r_brown_almost_linear(x):  # 27
    return _vec(x[:-1] + jnp.sum(x) - (x.shape[0] + 1.0), jnp.prod(x) - 1.0)


def r_discrete_boundary(x):  # 28
    h, t = D._grid(x.shape[0])
    xp = jnp.pad(x, 1)
    return 2.0 * x - xp[:-2] - xp[2:] + h ** 2 * (x + t + 1.0) ** 3 / 2.0


def r_discrete_integral(x):  # 29
    h, t = D._grid(x.shape[0])
    u = (x + t + 1.0) ** 3
    lower = jnp.cumsum(t * u)
    w = (1.0 - t) * u
    upper = jnp.sum(w) - jnp.cumsum(w)
    return x + h * ((1.0 - t) * lower + t * upper) / 2.0


def r_broyden_tridiagonal(x):  # 30
    xp = jnp.pad(x, 1)
    return (3.0 - 2.0 * x) * x - xp[:-2] - 2.0 * xp[2:] + 1.0


def r_broyden_banded(x, lower: int = 5, upper: int = 1):  # 31 (any n, shifted slices)
    s = x * (1.0 + x)
    padded = jnp.pad(s, (lower, upper))
    n = x.shape[0]
    band = sum(padded[lower + k: lower + k + n] for k in range(-lower, upper + 1) if k != 0)
    return x * (2.0 + 5.0 * x ** 2) + 1.0 - band


def make_linear_full_rank(m: int) -> Callable:  # 32
    def r_linear_full_rank(x):
        s = 2.0 / m * jnp.sum(x)
        return _vec(x - s - 1.0, jnp.full(m - x.shape[0], -s - 1.0))

    return r_linear_full_rank


def make_linear_rank1(m: int) -> Callable:  # 33
    i = np.arange(1.0, m + 1.0)

    def r_linear_rank1(x):
        return i * jnp.sum(jnp.arange(1.0, x.shape[0] + 1.0) * x) - 1.0

    return r_linear_rank1


def make_linear_rank1_zero(m: int) -> Callable:  # 34
    i = np.arange(2.0, m)

    def r_linear_rank1_zero(x):
        n = x.shape[0]
        s = jnp.sum(jnp.arange(2.0, n) * x[1: n - 1])
        return _vec(-1.0, (i - 1.0) * s - 1.0, -1.0)

    return r_linear_rank1_zero


def make_chebyquad(m: int) -> Callable:  # 35
    integrals = np.array([(-1.0 / (i * i - 1.0) if i % 2 == 0 else 0.0)
                          for i in range(1, m + 1)])

    def r_chebyquad(x):
        y = 2.0 * x - 1.0
        t_prev, t_cur, means = jnp.ones_like(y), y, []
        for _ in range(m):
            means.append(jnp.mean(t_cur))
            t_prev, t_cur = t_cur, 2.0 * y * t_cur - t_prev
        return jnp.stack(means) - integrals

    return r_chebyquad


# Local minima the paper lists (f values), and Trigonometric-10's usual one.
MGH_LOCAL_F = {2: (48.9842,), 8: (17.4286,), 15: (1.02734e-3,), 18: (5.65565e-3,),
               26: (2.79506e-5,), 27: (1.0,)}


def mgh_residuals() -> dict[int, Callable]:
    """Problem number -> residual function, at the sizes of ``tests.problems``."""
    m_lin = 20
    return {
        1: r_rosenbrock, 2: r_freudenstein_roth, 3: r_powell_badly_scaled,
        4: r_brown_badly_scaled, 5: r_beale, 6: r_jennrich_sampson, 7: r_helical_valley,
        8: r_bard, 9: r_gaussian, 10: r_meyer, 11: r_gulf, 12: r_box3d,
        13: r_powell_singular, 14: r_wood, 15: r_kowalik_osborne, 16: r_brown_dennis,
        17: r_osborne1, 18: r_biggs_exp6, 19: r_osborne2, 20: make_watson(9),
        21: r_ext_rosenbrock, 22: r_ext_powell, 23: r_penalty1, 24: make_penalty2(10),
        25: r_variably_dimensioned, 26: r_trigonometric, 27: r_brown_almost_linear,
        28: r_discrete_boundary, 29: r_discrete_integral, 30: r_broyden_tridiagonal,
        31: r_broyden_banded, 32: make_linear_full_rank(m_lin), 33: make_linear_rank1(m_lin),
        34: make_linear_rank1_zero(m_lin), 35: make_chebyquad(8),
    }


@dataclass(frozen=True)
class LsqProblem:
    """A residual problem: minimize ``½‖residuals(x)‖²`` from ``x0``."""

    name: str
    residuals: Callable[[jax.Array], jax.Array]
    x0: np.ndarray
    m: int
    cost_star: float | None = None  # ½ f* (MGH: the global value as published)
    cost_local: tuple[float, ...] = ()  # ½ f at local minima listed in the literature
    flags: str = ""  # sif: "f" fixed variables eliminated, "b" bounds ignored, "L" large

    @property
    def n(self) -> int:
        return int(self.x0.size)


def mgh_problems() -> list[LsqProblem]:
    """The 35 MGH problems in residual form (name, x0, f* from ``tests.problems``)."""
    residuals = mgh_residuals()
    out = []
    for p in scalar_mgh.mgh_problems():
        number = int(p.source.split("#")[1])
        r = residuals[number]
        m = int(jax.eval_shape(r, jnp.asarray(p.x0)).shape[0])
        out.append(LsqProblem(f"{number}. {p.name}", r, np.asarray(p.x0), m,
                              0.5 * p.f_star, tuple(0.5 * f for f in MGH_LOCAL_F.get(number, ()))))
    return out


def check_mgh(problems: list[LsqProblem], seed: int = 0) -> None:
    """``‖r(x)‖² == f(x)`` (the scalar forms of ``tests.problems``) at x0 and two nearby
    points, to 1e-10 relative; raises on a mismatch."""
    rng = np.random.default_rng(seed)
    for p, scalar in zip(problems, scalar_mgh.mgh_problems(), strict=True):
        fun, residuals = jax.jit(scalar.fun), jax.jit(p.residuals)
        for k in range(3):
            x = p.x0 + (0.0 if k == 0 else 0.1 * rng.standard_normal(p.n) * (1 + abs(p.x0)))
            f, r = float(fun(jnp.asarray(x))), np.asarray(residuals(jnp.asarray(x)))
            if not math.isclose(float(r @ r), f, rel_tol=1e-10, abs_tol=1e-300):
                raise AssertionError(f"{p.name}: ‖r‖² = {r @ r!r} but f = {f!r} at {x}")


# --------------------------------------------------------------------------- contenders


@dataclass
class Outcome:
    """What a contender returned (``x`` as float64 numpy)."""

    x: np.ndarray
    nfev: int
    status: str  # the contender's own code
    message: str = ""


def _jacobian_fn(fn: Callable, n: int, m: int) -> Callable:
    return jax.jit(jax.jacfwd(fn) if n <= m else jax.jacrev(fn))


def run_jopt(method: str, fn: Callable, x0: np.ndarray, tol: float, budget: int,
             tr_solver: str | None = None) -> Outcome:
    res = jopt.least_squares(fn, jnp.asarray(x0), method=method, ftol=tol, xtol=tol, gtol=tol,
                             max_nfev=budget, tr_solver=tr_solver)
    return Outcome(np.asarray(res.x), int(res.nfev), str(int(res.status)), str(res.message))


def run_scipy(method: str, fn: Callable, x0: np.ndarray, tol: float, budget: int,
              m: int) -> Outcome:
    fun = jax.jit(fn)
    jac = _jacobian_fn(fn, x0.size, m)
    res = scipy.optimize.least_squares(
        lambda x: np.asarray(fun(x)), x0, jac=lambda x: np.asarray(jac(x)), method=method,
        ftol=tol, xtol=tol, gtol=tol, max_nfev=budget)
    return Outcome(np.asarray(res.x), int(res.nfev), str(res.status), res.message)


def jax_linear_operator(fn: Callable, m: int, n: int) -> Callable:
    """``x -> LinearOperator`` of the Jacobian at ``x`` (JVP / VJP, never formed)."""
    jvp = jax.jit(lambda x, v: jax.jvp(fn, (x,), (v,))[1])
    vjp = jax.jit(lambda x, u: jax.vjp(fn, x)[1](u)[0])

    def jac(x: np.ndarray, *_: Any) -> scipy.sparse.linalg.LinearOperator:
        xj = jnp.asarray(x)
        return scipy.sparse.linalg.LinearOperator(
            (m, n), matvec=lambda v: np.asarray(jvp(xj, jnp.asarray(v.ravel()))),
            rmatvec=lambda u: np.asarray(vjp(xj, jnp.asarray(u.ravel()))), dtype=np.float64)

    return jac


def run_scipy_lsmr(fn: Callable, x0: np.ndarray, tol: float, budget: int, m: int) -> Outcome:
    """scipy ``trf`` with ``tr_solver="lsmr"`` on a matrix-free Jacobian (x_scale 1)."""
    fun = jax.jit(fn)
    res = scipy.optimize.least_squares(
        lambda x: np.asarray(fun(x)), x0, jac=jax_linear_operator(fn, m, x0.size),
        method="trf", tr_solver="lsmr", ftol=tol, xtol=tol, gtol=tol, max_nfev=budget)
    return Outcome(np.asarray(res.x), int(res.nfev), str(res.status), res.message)


def run_optx(kind: str, fn: Callable, x0: np.ndarray, tol: float, budget: int) -> Outcome:
    import optimistix as optx

    solver = {"lm": optx.LevenbergMarquardt, "dogleg": optx.Dogleg,
              "gn": optx.GaussNewton}[kind](rtol=tol, atol=tol)

    @jax.jit
    def solve(y0):
        sol = optx.least_squares(lambda y, _: fn(y), solver, y0, max_steps=budget,
                                 throw=False)
        return sol.value, sol.stats["num_steps"], sol.result

    value, steps, result = solve(jnp.asarray(x0))
    ok = bool(result == optx.RESULTS.successful)
    message = "" if ok else str(optx.RESULTS[result]).split(".")[0]
    return Outcome(np.asarray(value), int(steps), "ok" if ok else "fail", message)


MGH_CONTENDERS = ("jopt lm", "jopt dogleg", "jopt gauss-newton", "scipy lm", "scipy trf",
                  "optx LM", "optx dogleg", "optx GN")
SIF_CONTENDERS = ("jopt lm", "scipy trf", "scipy lm", "optx LM")
JOPT_METHODS = {"jopt lm": "lm", "jopt dogleg": "dogleg", "jopt gauss-newton": "gauss-newton"}
OPTX_KINDS = {"optx LM": "lm", "optx dogleg": "dogleg", "optx GN": "gn"}


def run_contender(name: str, p: LsqProblem, tol: float, budget: int,
                  matrix_free: bool = False) -> Outcome:
    """Solve ``p`` with contender ``name`` (matrix-free variants when asked)."""
    if name in JOPT_METHODS:
        return run_jopt(JOPT_METHODS[name], p.residuals, p.x0, tol, budget,
                        "cg" if matrix_free else None)
    if name == "scipy trf" and matrix_free:
        return run_scipy_lsmr(p.residuals, p.x0, tol, budget, p.m)
    if name.startswith("scipy "):
        return run_scipy(name.split()[1], p.residuals, p.x0, tol, budget, p.m)
    return run_optx(OPTX_KINDS[name], p.residuals, p.x0, tol, budget)


def not_run_reason(name: str, p: LsqProblem, matrix_free: bool) -> str | None:
    """Why contender ``name`` is not run on ``p`` (None: it is)."""
    if name == "scipy lm" and p.m < p.n:
        return "m < n"
    if matrix_free and name in ("scipy lm", "optx LM", "optx dogleg", "optx GN"):
        return "dense only"
    return None


def evaluator(fn: Callable) -> Callable[[np.ndarray], tuple[float, float]]:
    """``x -> (C, ‖∇C‖∞)``: ``C = ½‖r‖²``, ``∇C = Jᵀr`` (JAX, float64, compiled once)."""

    @jax.jit
    def both(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        r, vjp = jax.vjp(fn, x)
        return 0.5 * (r @ r), jnp.max(jnp.abs(vjp(r)[0]), initial=0.0)

    def run(x: np.ndarray) -> tuple[float, float]:
        cost, grad = both(jnp.asarray(x, jnp.float64))
        return float(cost), float(grad)

    return run


# --------------------------------------------------------------------------- formatting


def fmt(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "nan" if v is not None else "-"
    return "0" if v == 0 else f"{v:.3g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.2e}"


def median_or_dash(xs: list[float]) -> str:
    return f"{np.median(xs):.0f}" if xs else "-"


def jopt_commit() -> str:
    """The checkout's commit, ``+dirty`` when ``jopt/`` has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True, timeout=30).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + (
            "+dirty" if git("status", "--porcelain", "--", "jopt") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


JOPT_COMMIT = jopt_commit()  # at import: the code this process runs


def header(args_text: str) -> list[str]:
    """The command that reproduces a table, and the machine."""
    import optimistix

    return [f"Reproduce (from the repository root): `{args_text}`", "",
            f"Machine: CPU only, {os.cpu_count()} cores shared with other jobs; "
            f"{machine_line()}; OpenBLAS on {os.environ.get('OPENBLAS_NUM_THREADS')} thread(s); "
            f"jopt at commit {JOPT_COMMIT}, scipy {scipy.__version__}, "
            f"optimistix {optimistix.__version__}, sif2jax 0.0.8; float64.", ""]


# --------------------------------------------------------------------------- MGH table

MGH_TOL = 1e-12
MGH_BUDGET = 5000


def mgh_solved(cost: float, p: LsqProblem, local: bool) -> bool:
    """``C ≤ C*·(1 + 1e-5) + 1e-12`` for the global value (or a listed local one)."""
    targets = (p.cost_star, *p.cost_local) if local else (p.cost_star,)
    return any(np.isfinite(cost) and cost <= t * (1 + 1e-5) + 1e-12 for t in targets)


def mgh_run(names: tuple[str, ...], only: set[str] | None) -> list[dict]:
    records = []
    problems = mgh_problems()
    check_mgh(problems)
    for p in problems:
        if only and p.name.split(". ")[1].rsplit("-", 1)[0] not in only:
            continue
        evaluate = evaluator(p.residuals)
        for name in names:
            start = time.perf_counter()
            try:
                out = run_contender(name, p, MGH_TOL, MGH_BUDGET)
                cost, gnorm = evaluate(out.x)
                rec = dict(cost=cost, grad=gnorm, nfev=out.nfev, status=out.status,
                           message=out.message)
            except Exception as e:  # a contender that raises is unsolved
                reason = "m < n" if name == "scipy lm" and p.m < p.n else repr(e)[:120]
                rec = dict(cost=math.nan, grad=math.nan, nfev=None, status="error",
                           message=reason)
            rec.update(problem=p.name, contender=name, n=p.n, m=p.m, cost_star=p.cost_star,
                       wall=time.perf_counter() - start,
                       solved=mgh_solved(rec["cost"], p, False),
                       solved_local=mgh_solved(rec["cost"], p, True))
            records.append(rec)
            print(f"{p.name:28s} {name:18s} C={fmt(rec['cost']):>9s} nfev={rec['nfev']} "
                  f"{'✓' if rec['solved'] else 'L' if rec['solved_local'] else '✗'} "
                  f"{rec['status']} {rec['message'][:50]}", flush=True)
    return records


def _mark(rec: dict) -> str:
    return "✓" if rec["solved"] else "L" if rec["solved_local"] else "✗"


def mgh_table(records: list[dict], names: tuple[str, ...]) -> list[str]:
    problems = list(dict.fromkeys(r["problem"] for r in records))
    by = {(r["problem"], r["contender"]): r for r in records}
    every = [p for p in problems if all(by[p, c]["solved_local"] for c in names
                                        if by[p, c]["status"] != "error")]
    lines = ["| contender | solved (global) | solved (global or listed local) | median nfev "
             "| median nfev, problems all solve | errors |", "|---|--:|--:|--:|--:|--:|"]
    for c in names:
        rs = [by[p, c] for p in problems]
        nfev = [r["nfev"] for r in rs if r["nfev"] is not None]
        common = [by[p, c]["nfev"] for p in every if by[p, c]["nfev"] is not None]
        lines.append(f"| {c} | {sum(r['solved'] for r in rs)} | "
                     f"{sum(r['solved_local'] for r in rs)} | {median_or_dash(nfev)} | "
                     f"{median_or_dash(common)} | {sum(r['status'] == 'error' for r in rs)} |")
    lines += ["", f"Of {len(problems)} problems; {len(every)} are solved (global or listed "
              "local) by every contender that runs on them (the last nfev column).", "",
              "Per problem: final cost C = ½‖r‖² (✓ global value, L a listed local minimum, "
              "✗ neither) and residual evaluations (optimistix: steps).", "",
              "| problem | n | m | C* = ½f* | " + " | ".join(names) + " |",
              "|---|--:|--:|--:|" + "--:|" * len(names)]
    for p in problems:
        r0 = by[p, names[0]]
        cells = [("n/a (m<n)" if by[p, c]["message"] == "m < n" else
                  f"{fmt(by[p, c]['cost'])} {_mark(by[p, c])} ({by[p, c]['nfev']})")
                 for c in names]
        lines.append(f"| {p} | {r0['n']} | {r0['m']} | {fmt(r0['cost_star'])} | "
                     + " | ".join(cells) + " |")
    return lines


def failures(records: list[dict], names: tuple[str, ...], key: str) -> list[str]:
    """Where a jopt contender is unsolved (by ``key``) and a peer solved it."""
    by = {(r["problem"], r["contender"]): r for r in records}
    out = []
    for p in dict.fromkeys(r["problem"] for r in records):
        peers = [c for c in names if not c.startswith("jopt") and (p, c) in by
                 and by[p, c].get(key)]
        for c in names:
            rec = by.get((p, c))
            if c.startswith("jopt") and rec is not None and rec.get("run", True) \
                    and not rec.get(key) and peers:
                best = min(peers, key=lambda q: by[p, q]["cost"])
                out.append(f"- **{p}**, {c}: C = {fmt(rec['cost'])}, ‖∇C‖∞ = "
                           f"{fmt(rec['grad'])}, nfev {rec['nfev']}, status {rec['status']} "
                           f"({rec['message'][:90]}); {best}: C = {fmt(by[p, best]['cost'])}, "
                           f"nfev {by[p, best]['nfev']} (solved by {', '.join(peers)}).")
    return out or ["- none"]


def mgh_report(only: set[str] | None, command: str) -> str:
    records = mgh_run(MGH_CONTENDERS, only)
    lines = ["## Least squares: the Moré–Garbow–Hillstrom problems (residual form)", "",
             *header(command),
             f"35 problems (MGH 1981) at the paper's x0; sizes as in `tests/problems.py`. "
             f"Exact Jacobians (JAX), ftol = xtol = gtol = {MGH_TOL:g} (optimistix rtol = "
             f"atol = {MGH_TOL:g}), at most {MGH_BUDGET} evaluations (optimistix: steps), "
             "default scaling (jopt and MINPACK: Jacobian column norms; trf: 1). Solved: "
             "C ≤ C*·(1 + 1e-5) + 1e-12 with C = ½‖r‖² recomputed at the returned x and C* "
             "= ½f*, f* the paper's global value (6 significant digits); *listed local* also "
             "accepts a local minimum the paper lists (Freudenstein–Roth 48.9842, Bard "
             "17.4286, Kowalik–Osborne 1.02734e-3, Biggs EXP6 5.65565e-3, Brown almost-linear "
             "1) or Trigonometric-10's usual 2.79506e-5 (f values).", "",
             *mgh_table(records, MGH_CONTENDERS), "",
             "### jopt unsolved where a peer solved (global or listed local)", "",
             *failures(records, MGH_CONTENDERS, "solved_local")]
    return "\n".join(lines)


# --------------------------------------------------------------------------- sif2jax

SIF_TOL = 1e-10
MAX_DENSE_ENTRIES = 4_000_000


def sif_budget(n: int) -> int:
    return int(min(max(100 * (n + 1), 1000), 20000))


def sif_problem(problem: Any, dense_limit: float = MAX_DENSE_ENTRIES) -> LsqProblem:
    """A sif2jax nonlinear-equations problem as a residual problem: ``constraint(y)[0]``
    flattened, fixed variables (lower = upper) held at their value."""
    full0, unravel = ravel_pytree(jnp.asarray(problem.y0, jnp.float64))
    flags, free = "", np.arange(full0.size)
    base = np.asarray(full0, np.float64).copy()
    if problem.bounds is not None:
        lo, hi = (np.asarray(ravel_pytree(b)[0], np.float64) for b in problem.bounds)
        fixed = lo == hi
        if fixed.any():
            flags += "f"
            base[fixed] = lo[fixed]
            free = np.flatnonzero(~fixed)
        if np.any((np.isfinite(lo) | np.isfinite(hi)) & ~fixed):
            flags += "b"
    constraint, base_j, free_j = problem.constraint, jnp.asarray(base), jnp.asarray(free)

    def residuals(z: jax.Array) -> jax.Array:
        y = unravel(base_j.at[free_j].set(z))
        return ravel_pytree(constraint(y)[0])[0].astype(jnp.float64)

    x0 = base[free]
    m = int(jax.eval_shape(residuals, jnp.asarray(x0)).shape[0])
    if m * x0.size > dense_limit:
        flags += "L"
    return LsqProblem(type(problem).__name__, residuals, x0, m, flags=flags)


def sif_catalogue(only: set[str] | None = None) -> dict[str, Any]:
    """``{name: problem}`` of ``sif2jax.nonlinear_equations_problems`` (``only`` those).

    sif2jax is ~850 modules: their bytecode is cached under the temporary directory even
    where ``PYTHONDONTWRITEBYTECODE`` is set (otherwise every worker compiles them again).
    """
    if "sif2jax" not in sys.modules:
        sys.dont_write_bytecode = False
        sys.pycache_prefix = sys.pycache_prefix or os.path.join(
            tempfile.gettempdir(), "jopt_bench_pycache")
    import sif2jax

    return {type(p).__name__: p for p in sif2jax.nonlinear_equations_problems
            if not only or type(p).__name__ in only}


def _sif_worker(conn: Any, only: set[str] | None, dense_limit: float) -> None:
    """Child process: says ``"ready"``, then solves the ``(problem, contender)`` pairs it is
    sent (``None`` ends it); each answer carries ``C(x0)`` too."""
    catalogue, cache = sif_catalogue(only), {}
    conn.send("ready")
    while (task := conn.recv()) is not None:
        name, contender = task
        try:
            if name not in cache:  # (not timed: the problem and its evaluator compiled)
                p = sif_problem(catalogue[name], dense_limit)
                cache[name] = (p, evaluator(p.residuals))
                cache[name] += (cache[name][1](p.x0)[0],)
        except Exception as e:
            conn.send(_failed("error", f"preparing: {e!r}"[:160], 0.0))
            continue
        conn.send("prepared")
        start = time.perf_counter()
        try:
            p, evaluate, cost0 = cache[name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = run_contender(contender, p, SIF_TOL, sif_budget(p.n), "L" in p.flags)
            cost, gnorm = evaluate(out.x)
            rec = dict(cost=cost, grad=gnorm, nfev=out.nfev, status=out.status,
                       message=out.message, cost0=cost0)
        except Exception as e:
            rec = dict(cost=math.nan, grad=math.nan, nfev=None, status="error",
                       message=repr(e)[:160])
        rec["wall"] = time.perf_counter() - start
        conn.send(rec)


def _failed(status: str, message: str, wall: float) -> dict:
    return dict(cost=math.nan, grad=math.nan, nfev=None, status=status, message=message,
                wall=wall)


START_S = 900.0  # a worker's start (imports included) on a loaded machine


class Worker:
    """A child process running :func:`_sif_worker`, replaced after a timeout."""

    def __init__(self, only: set[str] | None, dense_limit: float) -> None:
        self.ctx = mp.get_context("spawn")
        self.only, self.dense_limit = only, dense_limit
        self.proc = None

    def _start(self) -> bool:
        """A fresh worker; False when it did not come up within START_S."""
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_sif_worker,
                                     args=(child, self.only, self.dense_limit), daemon=True)
        self.proc.start()
        child.close()  # (the parent's copy: a dead worker then reads as EOF, not a hang)
        try:  # (it imports sif2jax: not part of any time cap)
            ready = self.conn.poll(START_S) and self.conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close()
        return ready

    def solve(self, name: str, contender: str, timeout: float) -> dict:
        if (self.proc is None or not self.proc.is_alive()) and not (
                self._start() or self._start()):
            return _failed("error", "the worker did not start (twice)", 0.0)
        self.conn.send((name, contender))
        try:
            if not self.conn.poll(START_S):
                self.close()
                return _failed("error", "preparing the problem took too long", 0.0)
            prepared = self.conn.recv()
            if prepared != "prepared":
                return prepared  # (an error while preparing)
            if self.conn.poll(timeout):
                return self.conn.recv()
        except (EOFError, OSError):  # the worker died (out of memory, killed)
            self.close()
            return _failed("error", "worker died", timeout)
        self.close()
        return _failed("timeout", f"killed after {timeout:.0f} s", timeout)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None


def sif_sizes(only: set[str] | None, dense_limit: float) -> list[LsqProblem]:
    """The problems (as residual problems), smallest Jacobian first."""
    problems = [sif_problem(p, dense_limit) for p in sif_catalogue(only).values()]
    return sorted(problems, key=lambda p: (p.n * p.m, p.name))


def _load_records(path: Path | None) -> dict[tuple[str, str], dict]:
    done = {}
    if path and path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            done[rec["problem"], rec["contender"]] = rec
    return done


def sif_run(only: set[str] | None, timeout: float, timeout_large: float,
            records_path: Path | None, max_entries: float, dense_limit: float) -> list[dict]:
    """Every (problem, contender) record, from ``records_path`` where already there."""
    problems = sif_sizes(only, dense_limit)
    done = _load_records(records_path)
    worker, records = Worker(only, dense_limit), []
    try:
        for p in problems:
            large = "L" in p.flags
            for c in SIF_CONTENDERS:
                if (p.name, c) in done:
                    records.append(done[p.name, c])
                    continue
                reason = ("skipped: n·m > --max-entries" if p.n * p.m > max_entries
                          else not_run_reason(c, p, large))
                if reason:
                    rec = _failed("not run", reason, 0.0)
                    rec["run"] = False
                else:
                    rec = worker.solve(p.name, c, timeout_large if large else timeout)
                    rec["run"] = True
                rec.update(problem=p.name, contender=c, n=p.n, m=p.m, flags=p.flags)
                records.append(rec)
                if records_path:
                    with records_path.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                print(f"{p.name:12s} n={p.n:6d} m={p.m:6d} {c:10s} C={fmt(rec['cost']):>9s} "
                      f"|g|={fmt(rec['grad']):>9s} nfev={rec['nfev']} {rec['wall']:.1f}s "
                      f"{rec['status']} {rec['message'][:40]}", flush=True)
    finally:
        worker.close()
    return records


def sif_score(records: list[dict]) -> None:
    """Adds ``solved`` (cost near the best any contender reached) and ``stationary``."""
    best: dict[str, float] = {}
    for r in records:
        if np.isfinite(r["cost"]):
            best[r["problem"]] = min(best.get(r["problem"], math.inf), r["cost"])
    cost0 = {r["problem"]: r["cost0"] for r in records if "cost0" in r}
    for r in records:
        b, c = best.get(r["problem"], math.nan), r["cost"]
        r["best"], r["cost0"] = b, cost0.get(r["problem"], math.nan)
        r["solved"] = bool(np.isfinite(c) and c <= b * (1 + 1e-6)
                           + 1e-12 * max(1.0, np.nan_to_num(r["cost0"], nan=1.0)))
        r["stationary"] = bool(np.isfinite(r["grad"]) and r["grad"] <= 1e-6 * max(1.0, c))


def sif_summary(records: list[dict], names: tuple[str, ...]) -> list[str]:
    lines = ["| contender | solved | stationary | run | timeouts | errors | solved (large, "
             "matrix-free) | median nfev (solved) |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for c in names:
        rs = [r for r in records if r["contender"] == c]
        run = [r for r in rs if r.get("run", True)]
        lines.append(
            f"| {c} | {sum(r['solved'] for r in rs)} | {sum(r['stationary'] for r in rs)} | "
            f"{len(run)} | {sum(r['status'] == 'timeout' for r in rs)} | "
            f"{sum(r['status'] == 'error' for r in rs)} | "
            f"{sum(r['solved'] for r in rs if 'L' in r['flags'])} / "
            f"{sum(1 for r in run if 'L' in r['flags'])} | "
            f"{median_or_dash([r['nfev'] for r in rs if r['solved'] and r['nfev']])} |")
    return lines


def head_to_head(records: list[dict], a: str, b: str) -> str:
    """``a`` against ``b`` on the problems both ran: only-a / only-b / both solved."""
    by = {(r["problem"], r["contender"]): r for r in records}
    both = [p for p in dict.fromkeys(r["problem"] for r in records)
            if by[p, a].get("run", True) and by[p, b].get("run", True)]
    only_a = sum(by[p, a]["solved"] and not by[p, b]["solved"] for p in both)
    only_b = sum(by[p, b]["solved"] and not by[p, a]["solved"] for p in both)
    common = sum(by[p, a]["solved"] and by[p, b]["solved"] for p in both)
    return (f"- {a} vs {b} on the {len(both)} problems both run: both solve {common}, "
            f"only {a} {only_a}, only {b} {only_b}.")


def _sif_cell(r: dict) -> str:
    if not r.get("run", True):
        return f"n/a ({r['message']})"
    if r["status"] in ("timeout", "error"):
        return r["status"]
    mark = "✓" if r["solved"] else ("s" if r["stationary"] else "✗")
    return f"{fmt(r['cost'])} {mark} ({r['nfev']})"


def sif_table(records: list[dict], names: tuple[str, ...]) -> list[str]:
    by = {(r["problem"], r["contender"]): r for r in records}
    lines = ["| problem | n | m | flags | C(x0) | best C | " + " | ".join(names) + " |",
             "|---|--:|--:|---|--:|--:|" + "--:|" * len(names)]
    for p in dict.fromkeys(r["problem"] for r in records):
        r0 = by[p, names[0]]
        lines.append(f"| {p} | {r0['n']} | {r0['m']} | {r0['flags']} | {fmt(r0['cost0'])} | "
                     f"{fmt(r0['best'])} | " + " | ".join(_sif_cell(by[p, c]) for c in names)
                     + " |")
    return lines


def sif_report(only: set[str] | None, timeout: float, timeout_large: float,
               records_path: Path | None, max_entries: float, dense_limit: float,
               command: str) -> str:
    start = time.perf_counter()
    records = sif_run(only, timeout, timeout_large, records_path, max_entries, dense_limit)
    sif_score(records)
    sizes = {r["problem"]: (r["n"], r["m"], r["flags"]) for r in records}
    n_large = sum("L" in f and n * m <= max_entries for n, m, f in sizes.values())
    skipped = sorted(k for k, (n, m, _) in sizes.items() if n * m > max_entries)
    skip_text = (f"Not run, to bound the run's time: the {len(skipped)} problems with n·m "
                 f"above {max_entries:.0e} ({', '.join(skipped)}). " if skipped else "")
    lines = ["## Least squares: sif2jax nonlinear-equation / least-squares problems (held out)",
             "", *header(command),
             f"{len(sizes)} problems of `sif2jax.nonlinear_equations_problems`, residuals "
             "`constraint(y)[0]` from each `y0`; fixed variables held at their value (flag "
             "f), other bounds ignored (flag b: every contender solves the unconstrained "
             f"problem). Tolerances {SIF_TOL:g} (ftol, xtol, gtol; optimistix rtol = atol), "
             "at most 100·(n+1) evaluations within [1000, 20000], default scaling. "
             f"The {n_large} problems with more than {dense_limit:.0e} Jacobian entries "
             "(flag L) run matrix-free: jopt `tr_solver=\"cg\"`, scipy trf `tr_solver=\"lsmr\"` "
             "on JAX JVP/VJP products; MINPACK and optimistix (dense QR) are not run there. "
             f"Each run is killed after {timeout:g} s ({timeout_large:g} s matrix-free), "
             "compilation of the contender's own functions included (the problem's evaluator "
             "is compiled before the clock starts). Solved (✓): "
             "C ≤ C_best·(1 + 1e-6) + 1e-12·max(1, C(x0)), "
             "C = ½‖r‖² at the returned x, C_best the lowest any contender reached; "
             "stationary: ‖∇C‖∞ ≤ 1e-6·max(1, C) (s: stationary but above the best cost). "
             f"{skip_text}This run: {(time.perf_counter() - start) / 60:.1f} min (records "
             "read back from `--records` not counted).", "",
             *sif_summary(records, SIF_CONTENDERS), "",
             head_to_head(records, "jopt lm", "scipy trf"),
             head_to_head(records, "jopt lm", "scipy lm"),
             head_to_head(records, "jopt lm", "optx LM"), "",
             "### jopt unsolved where a peer solved", "",
             *failures(records, SIF_CONTENDERS, "solved"), "",
             "### Per problem", "",
             "Cells: C (✓ solved, s stationary, ✗ neither) (nfev; optimistix: steps).", "",
             *sif_table(records, SIF_CONTENDERS)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- large fit

LARGE_N = 10_000
LARGE_LAMBDA = 0.1
LARGE_CONTENDERS = ("baseline", "jopt lm cg", "scipy trf lsmr (jac_sparsity)",
                    "scipy trf lsmr (exact sparse J)")


def large_residuals(x: jax.Array) -> jax.Array:
    """Broyden banded (n residuals) stacked with ``λ·(x_i − x_{i+1})`` (periodic, n)."""
    return jnp.concatenate([r_broyden_banded(x), LARGE_LAMBDA * (x - jnp.roll(x, -1))])


def large_sparsity(n: int) -> scipy.sparse.csr_matrix:
    """The Jacobian's pattern: rows i ≤ n: columns i−5..i+1; rows n+i: i and i+1 (mod n)."""
    rows, cols = [], []
    for k in range(-5, 2):
        i = np.arange(max(0, -k), min(n, n - k))
        rows.append(i)
        cols.append(i + k)
    i = np.arange(n)
    rows += [n + i, n + i]
    cols += [i, (i + 1) % n]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(2 * n, n))


@functools.cache
def coloured_jacobian(n: int, colours: int = 8) -> Callable:
    """Exact sparse Jacobian of :func:`large_residuals` from ``colours`` JVPs: columns
    j ≡ c (mod colours) share no row (the widest row spans 7 adjacent columns; n divisible
    by ``colours``). Built once per process (a new jitted function would compile again)."""
    pattern = large_sparsity(n).tocoo()
    seeds = jnp.asarray((np.arange(n)[None, :] % colours == np.arange(colours)[:, None])
                        .astype(np.float64))
    compressed = jax.jit(lambda x, seeds: jax.vmap(
        lambda s: jax.jvp(large_residuals, (x,), (s,))[1])(seeds))
    colour = pattern.col % colours

    def jac(x: np.ndarray) -> scipy.sparse.csr_matrix:
        c = np.asarray(compressed(jnp.asarray(x), seeds))
        return scipy.sparse.csr_matrix((c[colour, pattern.row], (pattern.row, pattern.col)),
                                       shape=pattern.shape)

    return jac


def _large_call(name: str, x0: np.ndarray) -> dict:
    fn = large_residuals
    if name == "jopt lm cg":
        res = jopt.least_squares(fn, jnp.asarray(x0), tr_solver="cg")
        jax.block_until_ready(res.x)
        return dict(x=np.asarray(res.x), nfev=int(res.nfev), njev=int(res.njev),
                    status=int(res.status), message=str(res.message))
    fun = jax.jit(fn)  # (jax caches it: compiled on the first call only)
    kwargs: dict[str, Any] = dict(method="trf", tr_solver="lsmr")
    if name.endswith("(jac_sparsity)"):
        kwargs["jac_sparsity"] = large_sparsity(x0.size)
    else:
        kwargs["jac"] = coloured_jacobian(x0.size)
    res = scipy.optimize.least_squares(lambda x: np.asarray(fun(jnp.asarray(x))), x0,
                                       **kwargs)
    return dict(x=res.x, nfev=int(res.nfev), njev=int(res.njev or 0), status=int(res.status),
                message=res.message)


LARGE_REPEATS = 5  # steady calls after the first


def large_one(name: str) -> dict:
    """Runs in a fresh process: contender ``name`` called 1 + LARGE_REPEATS times
    (``baseline``: not at all); steady time = the median after the first call."""
    x0 = -np.ones(LARGE_N)
    jax.block_until_ready(jnp.asarray(x0) + 1.0)  # the backend, as for every contender
    out: dict[str, Any] = dict(contender=name)
    if name != "baseline":
        times = []
        for _ in range(1 + LARGE_REPEATS):
            start = time.perf_counter()
            call = _large_call(name, x0)
            times.append(time.perf_counter() - start)
        cost, gnorm = evaluator(large_residuals)(call.pop("x"))
        out.update(call, first_s=times[0], steady_s=float(np.median(times[1:])),
                   steady_min_s=min(times[1:]), cost=cost, grad=gnorm)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


LARGE_ROUNDS = 3  # fresh processes per contender, interleaved


def _large_process(name: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.least_squares_breadth",
                           "--large-one", name], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _large_merge(runs: list[dict]) -> dict:
    """One contender's rounds: medians of the times and memory, the last run's result."""
    out = dict(runs[-1])
    for key in ("first_s", "steady_s", "maxrss_mb"):
        if key in out:
            out[key] = float(np.median([r[key] for r in runs]))
    return out


def large_report(command: str) -> str:
    rounds: dict[str, list[dict]] = {name: [] for name in LARGE_CONTENDERS}
    for _ in range(LARGE_ROUNDS):
        for name in LARGE_CONTENDERS:
            rounds[name].append(_large_process(name))
            print(rounds[name][-1], flush=True)
    results = {name: _large_merge(runs) for name, runs in rounds.items()}
    base = results.pop("baseline")["maxrss_mb"]
    lines = ["## Least squares: one large sparse fit (10,000 parameters, 20,000 residuals)",
             "", *header(command),
             "r(x) = [Broyden banded (MGH #31: lower bandwidth 5, upper 1, n = 10,000); "
             f"{LARGE_LAMBDA:g}·(x_i − x_(i+1 mod n))], from x0 = −1 (MGH's start); the "
             "Jacobian has 89,984 nonzeros of 2e8 entries. scipy and jopt with their default "
             "tolerances (ftol = xtol = gtol = 1e-8) and budgets; both unscaled (x_scale = 1: "
             "jopt's matrix-free solver takes no 'jac' scaling, and 1 is trf's default). Each "
             f"contender in its own fresh process, called {1 + LARGE_REPEATS} times; *steady* = "
             f"median of the {LARGE_REPEATS} calls after the first (jopt: compiled; scipy: "
             f"the jitted residual function already compiled); {LARGE_ROUNDS} rounds of "
             "fresh processes, the contenders interleaved, and the medians over the rounds "
             "reported (times and memory). Peak "
             "memory: the process's ru_maxrss minus that of a process that imports the same "
             f"libraries, starts the backend and builds x0 ({base:.0f} MB); jopt's includes "
             "compiling its solver (XLA), scipy's the compiled residual function. scipy's nfev "
             "leaves out the evaluations of its finite differences (njev Jacobians × 12 "
             "column groups, scipy's greedy grouping of this pattern; the exact sparse "
             "Jacobian takes 8 JVPs, one per colour j mod 8). jopt with the dense Jacobian "
             "is not run (2e8 entries = 1.6 GB and an SVD of it per step).", "",
             "| contender | first call (s) | steady (s) | C = ½‖r‖² | ‖∇C‖∞ | nfev | njev | "
             "status | peak memory over baseline (MB) |", "|---|--:|--:|--:|--:|--:|--:|---|--:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['first_s']:.2f} | {r['steady_s']:.3f} | {r['cost']:.10g} "
                     f"| {r['grad']:.1e} | {r['nfev']} | {r['njev']} | {r['status']}: "
                     f"{r['message']} | {r['maxrss_mb'] - base:.0f} |")
    jopt_t = results["jopt lm cg"]["steady_s"]
    lines += ["", "Steady time relative to jopt: " + ", ".join(
        f"{k} {v['steady_s'] / jopt_t:.1f}×" for k, v in results.items()) + "."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def command_line() -> str:
    return ".venv/bin/python -m benchmarks.least_squares_breadth " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mgh", action="store_true", help="the 35 MGH problems")
    parser.add_argument("--sif", action="store_true", help="sif2jax's residual problems")
    parser.add_argument("--large", action="store_true", help="the 10,000-parameter fit")
    parser.add_argument("--md", type=Path, default=None, help="write the markdown here")
    parser.add_argument("--only", default=None, help="comma-separated problem names")
    parser.add_argument("--timeout", type=float, default=60.0, help="s per sif run")
    parser.add_argument("--timeout-large", type=float, default=180.0,
                        help="s per matrix-free sif run")
    parser.add_argument("--dense-max-entries", type=float, default=MAX_DENSE_ENTRIES,
                        help="sif: problems with more Jacobian entries run matrix-free")
    parser.add_argument("--max-entries", type=float, default=math.inf,
                        help="sif: skip problems whose Jacobian has more entries (n·m)")
    parser.add_argument("--records", type=Path, default=None,
                        help="sif: JSON lines of finished runs (resumes from them)")
    parser.add_argument("--large-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # SIGTERM as an exception: the ``finally`` blocks then end the worker processes too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.large_one:
        print(json.dumps(large_one(args.large_one)))
        return
    only = set(args.only.split(",")) if args.only else None
    parts, command = [], command_line()
    if args.mgh:
        parts.append(mgh_report(only, command))
    if args.sif:
        parts.append(sif_report(only, args.timeout, args.timeout_large, args.records,
                                args.max_entries, args.dense_max_entries, command))
    if args.large:
        parts.append(large_report(command))
    text = "\n\n".join(parts)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")


if __name__ == "__main__":
    main()
