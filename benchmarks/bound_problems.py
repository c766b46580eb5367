"""Bound-constrained test problems ``min f(x)`` s.t. ``lower <= x <= upper`` in JAX (float64).

Three families, each problem a :class:`BoundProblem` (name, n, fun, x0, lower, upper, f*):

* :func:`minpack_problems` — the bound-constrained problems of the MINPACK-2 collection on an
  ``nx × ny`` grid of interior nodes, discretised with piecewise-linear finite elements on
  the triangulation of the report (each grid square cut by its anti-diagonal into a "lower"
  triangle with vertices (i, j), (i+1, j), (i, j+1) and an "upper" one with vertices
  (i, j), (i-1, j), (i, j-1)), written after the collection's Fortran (``deptfg``,
  ``dpjbfg``, ``dmsafg``/``dmsabc``):

  - ``EPT``: elastic-plastic torsion, c = 5: ``½∫‖∇v‖² − c∫v`` with
    ``|v| <= dist(·, ∂D)`` on the unit square; x0 = the upper bound (the report's ``XS``).
  - ``PJB``: pressure in a journal bearing, ε = 0.1, b = 10: ``½∫w_q‖∇v‖² − ∫w_l v``,
    ``w_q = (1 + ε cos ξ₁)³``, ``w_l = ε sin ξ₁`` on (0, 2π) × (0, 2b), ``v >= 0``;
    x0 = ``max(sin ξ₁, 0)`` (``XS``).
  - ``OBS``: the obstacle problem (MINPACK-2 has no obstacle routine): problem B of
    Dembo & Tulowitzki (1983), as in CUTEst's OBSTCLBM (Moré 1989; Moré & Toraldo 1991):
    ``½∫‖∇v‖² − ∫v`` (force 1) on the unit square with the two-sided obstacle
    ``s³ <= v <= s² + 0.02``, ``s = sin(9.2 ξ₁) sin(9.3 ξ₂)``, x0 = the obstacles' midpoint;
    discretised with EPT's finite elements on the interior nodes (CUTEst keeps the boundary
    nodes as fixed variables and weights the edges to them by ¼, not ½, so this is not the
    held-out sif2jax OBSTCLBM, only its relative).
  - ``MSA``: minimal surface with Enneper's boundary data (``dmsabc``) over an enclosed
    obstacle. The report's minimal-surface problem has no bounds; the bounded variant here
    is the plate of TAO's ``plate2`` example (PETSc/TAO, whose TRON follows Lin & Moré 1999,
    built on ``dmsafg``): ``v >= 0.1`` on the central ``⌊nx/2⌋ × ⌊ny/2⌋`` block of nodes
    (TAO's index rule), no other bound. x0 = the report's ``XS`` (mean of the two linear
    interpolants of the boundary data) projected onto the box.

  Sizes 50 × 50 (n = 2,500) and 100 × 100 (n = 10,000).

* :func:`suite_problems` — bounded versions of problems of the unconstrained suite
  (:mod:`tests.problems`) whose minimiser x* is known in closed form. The box cuts through
  x*: with ``d = ½|x* − x0| + 0.1`` (the 0.1 keeps a bound off x* where x0 = x*), even
  (0-based) coordinates get the upper bound ``x* − d`` (active near the solution) and odd
  ones the lower bound ``x* − d`` (which x* satisfies; x0 below x* starts on it, so it must
  be released). x0 is projected onto the box.

* :func:`real_problems` — problems on scikit-learn's bundled data sets (no downloads):
  non-negative least squares (diabetes; diabetes with degree-2 features; digits unmixed
  into non-negative mixtures of the ten class-mean images), with ``scipy.optimize.nnls``
  as the oracle; and L2-regularised logistic regression with box-constrained coefficients
  (breast cancer with ``w ∈ [−1, 1]``, breast cancer with ``w >= 0``, ten-class softmax on
  digits with ``W ∈ [−1, 1]``), the intercepts free.

``f_star`` and ``f_star_source`` say where each optimal value comes from: the NNLS oracle, or
"computed": scipy L-BFGS-B run once at a tight tolerance (``gtol = 1e-11``, ``ftol = 0``,
``maxcor = 30``; :func:`reference_solve`) and stored in :data:`F_STAR` — for the MINPACK-2
quadratics then refined by one exact Newton step on the free variables (a KKT point to
‖pg‖∞ < 4e-16). All problems are convex except the nonconvex suite ones, where f* is the
local minimum L-BFGS-B reaches from x0. ``python -m benchmarks.bound_problems`` recomputes
them (without the refinement). ``tests/test_bound_problems.py`` checks the objectives
against plain-loop ports of the Fortran, and small grids against the optimal values in
TAO's test outputs (``jbearing2``: −0.183437 on 8 × 12; ``plate2``: 1.50566 on 8 × 6 with a
3 × 3 plate of height 0.2, 1.49406 on 8 × 12 with 4 × 10 and 0.1).

References:
  Averick, B. M., Carter, R. G., Moré, J. J. & Xue, G.-L. (1992). The MINPACK-2 test
  problem collection. Preprint MCS-P153-0692, Argonne National Laboratory.
  Moré, J. J. & Toraldo, G. (1991). On the solution of large quadratic programming
  problems with bound constraints. SIAM J. Optim. 1(1), 93–113.
  Lin, C.-J. & Moré, J. J. (1999). Newton's method for large bound-constrained
  optimization problems. SIAM J. Optim. 9(4), 1100–1127.
  Dembo, R. S. & Tulowitzki, U. (1983). On the minimization of quadratic functions subject
  to box constraints. Working paper 71, Yale University.
  Moré, J. J. (1989). Numerical solution of bound constrained problems. In Computational
  Techniques and Applications: CTAC-89, 29–37.
  Balay, S. et al. PETSc/TAO users manual; examples ``src/tao/bound/tutorials/plate2.c``
  and ``jbearing2.c``.
  Lawson, C. L. & Hanson, R. J. (1974). Solving Least Squares Problems (NNLS).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "BoundProblem",
    "all_problems",
    "minpack_problems",
    "projected_gradient_norm",
    "real_problems",
    "reference_solve",
    "suite_problems",
]


@dataclasses.dataclass(frozen=True)
class BoundProblem:
    """One problem: minimize ``fun`` over ``lower <= x <= upper`` from ``x0`` (feasible)."""

    name: str  # e.g. "EPT-50x50"
    fun: Callable  # x (1-D float64 jnp array) -> scalar; jit-able
    x0: np.ndarray
    lower: np.ndarray  # -inf where unbounded
    upper: np.ndarray  # +inf where unbounded
    f_star: float | None
    source: str  # where the problem comes from
    f_star_source: str  # where f_star comes from
    family: str  # "minpack", "suite", "real"

    @property
    def n(self) -> int:
        """Number of variables."""
        return int(self.x0.size)


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64).reshape(-1)
    a.setflags(write=False)
    return a


def _box(x0, lower, upper) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P(x0), lower, upper)`` as frozen 1-D float64 arrays (bounds broadcast to x0)."""
    x0 = np.asarray(x0, np.float64).reshape(-1)
    lower = np.broadcast_to(np.asarray(lower, np.float64).reshape(-1), x0.shape)
    upper = np.broadcast_to(np.asarray(upper, np.float64).reshape(-1), x0.shape)
    if np.any(lower > upper):
        raise ValueError("lower > upper")
    return _frozen(np.clip(x0, lower, upper)), _frozen(lower), _frozen(upper)


def projected_gradient_norm(x, g, lower, upper) -> float:
    """``‖P(x − g) − x‖∞``: zero exactly at a first-order point of the box problem."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    return float(np.max(np.abs(np.clip(x - g, lower, upper) - x), initial=0.0))


# ---------------------------------------------------------------------------------------------
# Stored optimal values ("computed" ones: scipy L-BFGS-B, gtol 1e-11, ftol 0, maxcor 30; see
# reference_solve; the NNLS ones: scipy.optimize.nnls). Recompute: python -m
# benchmarks.bound_problems
# ---------------------------------------------------------------------------------------------

F_STAR: dict[str, float] = {
    # MINPACK-2 quadratics (convex): L-BFGS-B, then one exact Newton-CG solve on its free set
    # with the active bounds fixed; the result is a KKT point with ‖pg‖∞ < 4e-16.
    "EPT-50x50": -0.4180876320204317,
    "PJB-50x50": -0.18048799500843138,
    "OBS-50x50": 7.289123997268645,
    "EPT-100x100": -0.41839102666426475,
    "PJB-100x100": -0.18057436966285545,
    "OBS-100x100": 7.361387082495075,
    # Minimal surface (convex): L-BFGS-B to ‖pg‖∞ 3.2e-9 / 1.2e-9.
    "MSA-50x50": 1.4565613444580634,
    "MSA-100x100": 1.4559608284903578,
    # Boxed suite (nonconvex ones: the local minimum L-BFGS-B reaches from x0); ‖pg‖∞ at
    # most 5.2e-7 (GENROSE), 3.1e-7 (WOOD), else below 1e-7.
    "ROSENBROCK-2-B": 3.786787200166921,
    "BEALE-2-B": 0.7024418076562502,
    "HELICAL_VALLEY-3-B": 750.1070645683857,
    "BOX3D-3-B": 303.1170635029891,
    "WOOD-4-B": 10.276515243065093,
    "EXT_ROSENBROCK-10-B": 18.933936000834603,
    "EXT_POWELL-12-B": 32.32194718555993,
    "ARWHEAD-1000-B": 28.04999999999859,
    "DQDRTIC-1000-B": 256765.43999999997,
    "FLETCHCR-1000-B": 6034.58706932587,
    "GENROSE-1000-B": 4574.754226194205,
    "LIARWHD-1000-B": 4258.6310378896715,
    "NONDIA-1000-B": 1105.210000000001,
    "SROSENBR-1000-B": 1893.3936000834622,
    "LIARWHD-10000-B": 42586.31037889671,
    "SROSENBR-10000-B": 18933.9360008346,
    # Logistic regressions (strictly convex): ‖pg‖∞ below 3e-10.
    "LOGREG-BC-BOX": 0.060960691952700714,
    "LOGREG-BC-NONNEG": 0.6579969484532205,
    "LOGREG-DIGITS-SOFTMAX": 0.28936513186017115,
}

_COMPUTED = "computed: scipy L-BFGS-B (gtol 1e-11, ftol 0, maxcor 30), stored"
_COMPUTED_KKT = "computed: scipy L-BFGS-B + exact active-set Newton step (KKT to 4e-16), stored"


# ---------------------------------------------------------------------------------------------
# MINPACK-2: finite elements on the nx × ny interior grid
# ---------------------------------------------------------------------------------------------


def _grid(x, nx: int, ny: int) -> jnp.ndarray:
    """x (node k = nx·(j−1) + i, as in the Fortran) as a (ny, nx) array [j−1, i−1]."""
    return x.reshape(ny, nx)


def _triangle_slopes(v, hx: float, hy: float):
    """The gradients (∂x, ∂y) of the linear interpolant on every lower and upper triangle.

    ``v`` is the (ny+2, nx+2) array of node values, boundary included. The lower triangle
    at (i, j), 0 <= i <= nx, 0 <= j <= ny, has vertices (i, j), (i+1, j), (i, j+1); the
    upper one at (i, j), 1 <= i <= nx+1, 1 <= j <= ny+1, has (i, j), (i−1, j), (i, j−1).
    """
    lower = ((v[:-1, 1:] - v[:-1, :-1]) / hx, (v[1:, :-1] - v[:-1, :-1]) / hy)
    upper = ((v[1:, 1:] - v[1:, :-1]) / hx, (v[1:, 1:] - v[:-1, 1:]) / hy)
    return lower, upper


def _make_dirichlet_energy(nx: int, ny: int, force: float) -> Callable:
    """``½∫‖∇v‖² − force·∫v`` on the unit square, v = 0 on the boundary (``deptfg``).

    Each triangle has area ``hx·hy/2`` and the linear term's one-point-per-vertex rule
    ``force/3·(v₁+v₂+v₃)``; summed over the six triangles around an interior node that is
    ``force·hx·hy·v``.
    """
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    area = 0.5 * hx * hy

    def energy(x):
        v = jnp.pad(_grid(x, nx, ny), 1)
        (lx, ly), (ux, uy) = _triangle_slopes(v, hx, hy)
        quad = jnp.sum(lx**2 + ly**2) + jnp.sum(ux**2 + uy**2)
        return area * 0.5 * quad - force * hx * hy * jnp.sum(x)

    return energy


def _ept(nx: int, ny: int, c: float = 5.0) -> BoundProblem:
    """Elastic-plastic torsion: |v| <= distance to the boundary; x0 = the upper bound."""
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    i, j = np.arange(1, nx + 1), np.arange(1, ny + 1)
    dist_x = np.minimum(i, nx - i + 1) * hx
    dist_y = np.minimum(j, ny - j + 1) * hy
    dist = np.minimum(dist_x[None, :], dist_y[:, None]).reshape(-1)  # node k = nx(j-1) + i
    x0, lo, hi = _box(dist, -dist, dist)
    name = f"EPT-{nx}x{ny}"
    return BoundProblem(name, _make_dirichlet_energy(nx, ny, c), x0, lo, hi,
                        F_STAR.get(name), "MINPACK-2 EPT (deptfg), c = 5", _COMPUTED_KKT,
                        "minpack")


def _make_pjb(nx: int, ny: int, ecc: float, b: float) -> Callable:
    """Journal bearing (``dpjbfg``): per-triangle trapezoid weights of (1 + ε cos ξ)³."""
    hx, hy = 2.0 * math.pi / (nx + 1), 2.0 * b / (ny + 1)
    hxhy = hx * hy

    def p(xi):
        return (1.0 + ecc * np.cos(xi)) ** 3

    xi_low = np.arange(0, nx + 1) * hx  # lower triangles: columns i = 0..nx
    xi_up = np.arange(1, nx + 2) * hx  # upper triangles: columns i = 1..nx+1
    w_low = hxhy * (2.0 * p(xi_low) + p(xi_low + hx)) / 6.0
    w_up = hxhy * (2.0 * p(xi_up) + p(xi_up - hx)) / 6.0
    lin = np.tile(ecc * hxhy * np.sin(np.arange(1, nx + 1) * hx), ny)  # node k

    def pjb(x):
        v = jnp.pad(_grid(x, nx, ny), 1)
        (lx, ly), (ux, uy) = _triangle_slopes(v, hx, hy)
        quad = jnp.sum(w_low[None, :] * (lx**2 + ly**2)) + jnp.sum(w_up[None, :] * (ux**2 + uy**2))
        return 0.5 * quad - jnp.dot(lin, x)

    return pjb


def _pjb(nx: int, ny: int, ecc: float = 0.1, b: float = 10.0) -> BoundProblem:
    """Pressure distribution in a journal bearing: v >= 0; x0 = max(sin ξ₁, 0)."""
    hx = 2.0 * math.pi / (nx + 1)
    x0 = np.tile(np.maximum(np.sin(np.arange(1, nx + 1) * hx), 0.0), ny)
    x0, lo, hi = _box(x0, 0.0, np.inf)
    name = f"PJB-{nx}x{ny}" + ("" if (ecc, b) == (0.1, 10.0) else f"-e{ecc:g}-b{b:g}")
    return BoundProblem(name, _make_pjb(nx, ny, ecc, b), x0, lo, hi, F_STAR.get(name),
                        f"MINPACK-2 PJB (dpjbfg), ε = {ecc:g}, b = {b:g}", _COMPUTED_KKT,
                        "minpack")


def _obstacle_b(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """Obstacle B (Dembo & Tulowitzki) at the interior nodes: (s³, s² + 0.02), ξ₁ along i."""
    xi1 = np.arange(1, nx + 1) / (nx + 1)
    xi2 = np.arange(1, ny + 1) / (ny + 1)
    s = (np.sin(9.2 * xi1)[None, :] * np.sin(9.3 * xi2)[:, None]).reshape(-1)
    return s**3, s**2 + 0.02


def _obs(nx: int, ny: int) -> BoundProblem:
    """The two-sided obstacle problem (force 1); x0 = the obstacles' midpoint."""
    lo, hi = _obstacle_b(nx, ny)
    x0, lo, hi = _box(0.5 * (lo + hi), lo, hi)
    name = f"OBS-{nx}x{ny}"
    return BoundProblem(name, _make_dirichlet_energy(nx, ny, 1.0), x0, lo, hi,
                        F_STAR.get(name),
                        "obstacle B (Dembo & Tulowitzki; CUTEst OBSTCLBM), EPT's FE, force 1",
                        _COMPUTED_KKT, "minpack")


def _enneper_boundary(nx: int, ny: int) -> tuple[np.ndarray, ...]:
    """``dmsabc``: Enneper's surface on the edges of [−½, ½]²: (bottom, top, left, right).

    bv(x, y) = u² − v² where (u, v) solves x = u + uv² − u³/3, y = −v − u²v + v³/3
    (Newton from (x, −y), run to convergence; the Fortran stops at 5 steps or 1e-10).
    """
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    xs = -0.5 + hx * np.arange(nx + 2)
    ys = -0.5 + hy * np.arange(ny + 2)
    edges = [(xs, np.full_like(xs, -0.5)), (xs, np.full_like(xs, 0.5)),
             (np.full_like(ys, -0.5), ys), (np.full_like(ys, 0.5), ys)]
    out = []
    for xt, yt in edges:
        u, v = xt.copy(), -yt.copy()
        for _ in range(50):
            f1 = u + u * v**2 - u**3 / 3.0 - xt
            f2 = -v - u**2 * v + v**3 / 3.0 - yt
            if np.max(np.hypot(f1, f2)) <= 1e-15:
                break
            j11, j12 = 1.0 + v**2 - u**2, 2.0 * u * v
            j21, j22 = -2.0 * u * v, -1.0 - u**2 + v**2
            det = j11 * j22 - j12 * j21
            u, v = u - (j22 * f1 - j12 * f2) / det, v - (j11 * f2 - j21 * f1) / det
        out.append(u**2 - v**2)
    return tuple(out)


def _make_msa(nx: int, ny: int, frame: np.ndarray) -> Callable:
    """Minimal surface area (``dmsafg``): Σ over triangles of area·√(1 + ‖∇v‖²)."""
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    area = 0.5 * hx * hy

    def msa(x):
        v = jnp.pad(_grid(x, nx, ny), 1) + frame
        (lx, ly), (ux, uy) = _triangle_slopes(v, hx, hy)
        return area * (jnp.sum(jnp.sqrt(1.0 + lx**2 + ly**2))
                       + jnp.sum(jnp.sqrt(1.0 + ux**2 + uy**2)))

    return msa


def _plate(nx: int, ny: int, bmx: int, bmy: int, height: float) -> np.ndarray:
    """TAO plate2's lower bound: ``height`` on nodes (0-based) i in [(nx−bmx)//2,
    nx − (nx−bmx)//2), likewise j; −inf elsewhere."""
    i, j = np.arange(nx), np.arange(ny)
    in_i = (i >= (nx - bmx) // 2) & (i < nx - (nx - bmx) // 2)
    in_j = (j >= (ny - bmy) // 2) & (j < ny - (ny - bmy) // 2)
    return np.where(in_j[:, None] & in_i[None, :], height, -np.inf).reshape(-1)


def _msa(nx: int, ny: int, bmx: int | None = None, bmy: int | None = None,
         height: float = 0.1) -> BoundProblem:
    """Minimal surface over TAO's plate (default: the central ⌊nx/2⌋ × ⌊ny/2⌋ block)."""
    bmx = nx // 2 if bmx is None else bmx
    bmy = ny // 2 if bmy is None else bmy
    bottom, top, left, right = _enneper_boundary(nx, ny)
    frame = np.zeros((ny + 2, nx + 2))
    frame[0, :], frame[-1, :] = bottom, top
    frame[:, 0], frame[:, -1] = left, right
    alpha = (np.arange(1, ny + 1) / (ny + 1))[:, None]  # j·hy
    beta = (np.arange(1, nx + 1) / (nx + 1))[None, :]  # i·hx
    yline = alpha * top[None, 1:-1] + (1.0 - alpha) * bottom[None, 1:-1]
    xline = beta * right[1:-1, None] + (1.0 - beta) * left[1:-1, None]
    x0, lo, hi = _box(0.5 * (yline + xline), _plate(nx, ny, bmx, bmy, height), np.inf)
    default = (bmx, bmy, height) == (nx // 2, ny // 2, 0.1)
    name = f"MSA-{nx}x{ny}" + ("" if default else f"-plate{bmx}x{bmy}-h{height:g}")
    return BoundProblem(name, _make_msa(nx, ny, jnp.asarray(frame)), x0, lo, hi,
                        F_STAR.get(name),
                        "MINPACK-2 MSA (dmsafg, Enneper data) over TAO plate2's plate",
                        _COMPUTED, "minpack")


def minpack_problems(sizes: Sequence[int] = (50, 100)) -> list[BoundProblem]:
    """EPT, PJB, OBS and MSA on ``s × s`` grids for each ``s`` in ``sizes``."""
    out = []
    for s in sizes:
        out += [_ept(s, s), _pjb(s, s), _obs(s, s), _msa(s, s)]
    return out


# ---------------------------------------------------------------------------------------------
# The unconstrained suite, boxed
# ---------------------------------------------------------------------------------------------


def _cut_box(x_star: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper bound x* − d on even coordinates, lower bound x* − d on odd ones, d = ½|x*−x0|+0.1."""
    d = 0.5 * np.abs(x_star - x0) + 0.1
    even = (np.arange(x0.size) % 2) == 0
    lower = np.where(even, -np.inf, x_star - d)
    upper = np.where(even, x_star - d, np.inf)
    return lower, upper


def _known_minimisers(n: int) -> dict[str, np.ndarray]:
    """Closed-form unconstrained minimisers of suite problems (by base name)."""
    arwhead = np.ones(n)
    arwhead[-1] = 0.0
    return {"ARWHEAD": arwhead, "DQDRTIC": np.zeros(n), "FLETCHCR": np.ones(n),
            "GENROSE": np.ones(n), "LIARWHD": np.ones(n), "NONDIA": np.ones(n),
            "SROSENBR": np.ones(n)}


_MGH_MINIMISERS = {
    "ROSENBROCK-2": [1.0, 1.0], "BEALE-2": [3.0, 0.5], "HELICAL_VALLEY-3": [1.0, 0.0, 0.0],
    "BOX3D-3": [1.0, 10.0, 1.0], "WOOD-4": [1.0, 1.0, 1.0, 1.0],
    "EXT_ROSENBROCK-10": np.ones(10), "EXT_POWELL-12": np.zeros(12),
}


def _boxed(p, x_star) -> BoundProblem:
    lower, upper = _cut_box(np.asarray(x_star, np.float64), p.x0)
    x0, lo, hi = _box(p.x0, lower, upper)
    name = f"{p.name}-B"
    return BoundProblem(name, p.fun, x0, lo, hi, F_STAR.get(name),
                        f"{p.source} {p.name} (tests/problems.py), box through x*",
                        _COMPUTED, "suite")


def suite_problems(sizes: Sequence[int] = (1000,), large: Sequence[str] = ("LIARWHD", "SROSENBR"),
                   large_n: int = 10000) -> list[BoundProblem]:
    """7 MGH problems, the 7 CUTEst-style problems with a closed-form x* at each of
    ``sizes``, and those named in ``large`` at ``large_n`` (16 problems by default).

    Left out although x* is known: QUARTC, TRIDIA and VARDIM, whose boxed optima have
    f* ≈ 6e12, 2e5 and 2e2 with curvatures up to ~1e4 and more: no line search on f can
    resolve ‖projected gradient‖∞ <= 1e-6 there in float64 (scipy L-BFGS-B stops at
    1e-4, 1e-4 and 0.4), so nobody could solve them.
    """
    from tests.problems import large_problems, mgh_problems

    out = [_boxed(p, _MGH_MINIMISERS[p.name]) for p in mgh_problems()
           if p.name in _MGH_MINIMISERS]
    for n, names in [(n, None) for n in sizes] + [(large_n, set(large))]:
        known = _known_minimisers(n)
        for p in large_problems(n):
            base = p.name.rsplit("-", 1)[0]
            if base in known and (names is None or base in names):
                out.append(_boxed(p, known[base]))
    return out


# ---------------------------------------------------------------------------------------------
# Real data (scikit-learn's bundled sets only)
# ---------------------------------------------------------------------------------------------


def _standardize(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(axis=0)) / a.std(axis=0)


def _make_least_squares(a: np.ndarray, b: np.ndarray, scale: float) -> Callable:
    a_j, b_j = jnp.asarray(a), jnp.asarray(b)

    def least_squares(x):
        return 0.5 * scale * jnp.sum(jnp.square(a_j @ x - b_j))

    return least_squares


def _nnls_problem(name: str, a: np.ndarray, b: np.ndarray, scale: float,
                  source: str) -> BoundProblem:
    """``scale/2·‖Ax − b‖²`` over x >= 0 from x0 = 0; f* from ``scipy.optimize.nnls``."""
    from scipy.optimize import nnls

    _, rnorm = nnls(a, b, maxiter=50 * a.shape[1])
    x0, lo, hi = _box(np.zeros(a.shape[1]), 0.0, np.inf)
    return BoundProblem(name, _make_least_squares(a, b, scale), x0, lo, hi,
                        0.5 * scale * rnorm**2, source, "scipy.optimize.nnls", "real")


def _diabetes_design(poly: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    if poly:
        k = x.shape[1]
        iu, ju = np.triu_indices(k)
        x = np.concatenate([x, x[:, iu] * x[:, ju]], axis=1)  # 10 + 55 features
    a = np.concatenate([_standardize(x), np.ones((x.shape[0], 1))], axis=1)
    return a, y


def _digits_unmixing(n_images: int) -> BoundProblem:
    """Each image a non-negative mix of the 10 class means: ½‖E X − Y‖²_F, X >= 0 (10 × N).

    f* is the sum of the per-image NNLS residuals (the problem separates by image).
    """
    from scipy.optimize import nnls
    from sklearn.datasets import load_digits

    imgs, labels = load_digits(return_X_y=True)
    imgs = imgs / 16.0
    e = np.stack([imgs[labels == c].mean(axis=0) for c in range(10)], axis=1)  # (64, 10)
    y = imgs[:n_images].T  # (64, N)
    f_star = sum(0.5 * nnls(e, y[:, k])[1] ** 2 for k in range(n_images))
    e_j, y_j = jnp.asarray(e), jnp.asarray(y)

    def unmix(x):
        return 0.5 * jnp.sum(jnp.square(e_j @ x.reshape(10, n_images) - y_j))

    x0, lo, hi = _box(np.zeros(10 * n_images), 0.0, np.inf)
    return BoundProblem(f"NNLS-DIGITS-UNMIX-{n_images}", unmix, x0, lo, hi, float(f_star),
                        "sklearn digits / 16, class-mean endmembers", "scipy.optimize.nnls",
                        "real")


def _make_logistic(a: np.ndarray, y: np.ndarray, lam: float) -> Callable:
    """mean log(1 + exp(−y aᵀw)) + λ/2‖w[:-1]‖² (the last coefficient, the intercept, free)."""
    a_j, y_j = jnp.asarray(a), jnp.asarray(y)

    def logistic(w):
        return jnp.mean(jnp.logaddexp(0.0, -y_j * (a_j @ w))) + 0.5 * lam * jnp.sum(w[:-1] ** 2)

    return logistic


def _breast_cancer(kind: str, lam: float = 1e-3) -> BoundProblem:
    from sklearn.datasets import load_breast_cancer

    x, t = load_breast_cancer(return_X_y=True)
    a = np.concatenate([_standardize(x), np.ones((x.shape[0], 1))], axis=1)
    y = np.where(t == 1, 1.0, -1.0)
    d = a.shape[1]
    lower, upper = np.full(d, -np.inf), np.full(d, np.inf)  # the intercept (last) free
    lower[:-1] = -1.0 if kind == "BOX" else 0.0
    if kind == "BOX":
        upper[:-1] = 1.0
    x0, lo, hi = _box(np.zeros(d), lower, upper)
    name = f"LOGREG-BC-{kind}"
    what = "w in [-1, 1]" if kind == "BOX" else "w >= 0"
    return BoundProblem(name, _make_logistic(a, y, lam), x0, lo, hi, F_STAR.get(name),
                        f"sklearn breast_cancer standardized, {what}, λ = {lam:g}",
                        _COMPUTED, "real")


def _digits_softmax(lam: float = 1e-3, bound: float = 1.0) -> BoundProblem:
    """Ten-class softmax regression on digits / 16: W (65 × 10) in [−1, 1], bias row free."""
    from sklearn.datasets import load_digits

    imgs, labels = load_digits(return_X_y=True)
    a = jnp.asarray(np.concatenate([imgs / 16.0, np.ones((imgs.shape[0], 1))], axis=1))
    onehot = jnp.asarray(np.eye(10)[labels])
    d = a.shape[1]

    def softmax_loss(w):
        z = a @ w.reshape(d, 10)
        nll = jax.nn.logsumexp(z, axis=1) - jnp.sum(onehot * z, axis=1)
        return jnp.mean(nll) + 0.5 * lam * jnp.sum(w.reshape(d, 10)[:-1] ** 2)

    lower = np.full((d, 10), -bound)
    lower[-1] = -np.inf
    x0, lo, hi = _box(np.zeros(d * 10), lower, -lower)
    return BoundProblem("LOGREG-DIGITS-SOFTMAX", softmax_loss, x0, lo, hi,
                        F_STAR.get("LOGREG-DIGITS-SOFTMAX"),
                        f"sklearn digits / 16, 10 classes, W in [-{bound:g}, {bound:g}], "
                        f"λ = {lam:g}", _COMPUTED, "real")


def real_problems(n_images: int = 1000) -> list[BoundProblem]:
    """NNLS and box-constrained logistic regression on scikit-learn's bundled data."""
    a, y = _diabetes_design(poly=False)
    a2, y2 = _diabetes_design(poly=True)
    m = a.shape[0]
    return [
        _nnls_problem("NNLS-DIABETES", a, y, 1.0 / m,
                      "sklearn diabetes standardized + intercept, mean squared error / 2"),
        _nnls_problem("NNLS-DIABETES-POLY2", a2, y2, 1.0 / m,
                      "sklearn diabetes, degree-2 products, standardized + intercept"),
        _digits_unmixing(n_images),
        _breast_cancer("BOX"),
        _breast_cancer("NONNEG"),
        _digits_softmax(),
    ]


def all_problems() -> list[BoundProblem]:
    """Every family at its default sizes."""
    return minpack_problems() + suite_problems() + real_problems()


# ---------------------------------------------------------------------------------------------
# Reference solutions
# ---------------------------------------------------------------------------------------------


def reference_solve(problem: BoundProblem, gtol: float = 1e-11, maxiter: int = 200_000,
                    maxcor: int = 30) -> tuple[float, float, np.ndarray]:
    """scipy L-BFGS-B at a tight tolerance: ``(f, ‖projected gradient‖∞, x)``."""
    from scipy.optimize import minimize

    vg = jax.jit(jax.value_and_grad(problem.fun))

    def fg(x):
        v, g = vg(jnp.asarray(x))
        return float(v), np.asarray(g, np.float64)

    res = minimize(fg, np.array(problem.x0), jac=True, method="L-BFGS-B",
                   bounds=list(zip(problem.lower, problem.upper, strict=True)),
                   options=dict(gtol=gtol, ftol=0.0, maxiter=maxiter, maxfun=2 * maxiter,
                                maxcor=maxcor))
    _, g = fg(res.x)
    return float(res.fun), projected_gradient_norm(res.x, g, problem.lower, problem.upper), res.x


def _main() -> None:
    """Print ``F_STAR`` entries recomputed with :func:`reference_solve`."""
    import time

    for p in all_problems():
        if p.f_star_source not in (_COMPUTED, _COMPUTED_KKT):
            print(f"# {p.name}: f* = {p.f_star!r} ({p.f_star_source})")
            continue
        t0 = time.perf_counter()
        f, pg, _ = reference_solve(p)
        print(f'    "{p.name}": {f!r},  # pg {pg:.1e}, {time.perf_counter() - t0:.1f} s',
              flush=True)


if __name__ == "__main__":
    _main()
