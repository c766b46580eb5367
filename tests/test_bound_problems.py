"""Checks of the bound-constrained benchmark problems (:mod:`benchmarks.bound_problems`).

* the JAX objectives equal plain-loop ports of the MINPACK-2 Fortran (``deptfg``,
  ``dpjbfg``, ``dmsafg``) on small non-square grids;
* ``jax.grad`` agrees with central differences at random feasible points;
* small instances solved by scipy L-BFGS-B reach published optimal values (TAO's test
  outputs for the journal bearing and the plate problems, scipy's NNLS) and the stored f*
  of the small suite and real-data problems.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bound_problems as bp

# ------------------------------------------------------------------ plain-loop Fortran ports


def _node(x, nx, i, j):
    """x(k), k = nx·(j−1) + i (1-based i, j), as the Fortran indexes it."""
    return x[nx * (j - 1) + i - 1]


def _loop_energy(x, nx, ny, c):
    """``deptfg``'s function value, loop by loop."""
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    fquad = flin = 0.0
    for j in range(ny + 1):
        for i in range(nx + 1):
            v = _node(x, nx, i, j) if i >= 1 and j >= 1 else 0.0
            vr = _node(x, nx, i + 1, j) if i < nx and j > 0 else 0.0
            vt = _node(x, nx, i, j + 1) if i > 0 and j < ny else 0.0
            fquad += ((vr - v) / hx) ** 2 + ((vt - v) / hy) ** 2
            flin -= c / 3.0 * (v + vr + vt)
    for j in range(1, ny + 2):
        for i in range(1, nx + 2):
            vb = _node(x, nx, i, j - 1) if i <= nx and j > 1 else 0.0
            vl = _node(x, nx, i - 1, j) if i > 1 and j <= ny else 0.0
            v = _node(x, nx, i, j) if i <= nx and j <= ny else 0.0
            fquad += ((v - vl) / hx) ** 2 + ((v - vb) / hy) ** 2
            flin -= c / 3.0 * (vb + vl + v)
    return 0.5 * hx * hy * (0.5 * fquad + flin)


def _loop_pjb(x, nx, ny, ecc, b):
    """``dpjbfg``'s function value, loop by loop."""
    hx, hy = 2.0 * math.pi / (nx + 1), 2.0 * b / (ny + 1)

    def p(xi):
        return (1.0 + ecc * math.cos(xi)) ** 3

    fquad = flin = 0.0
    for i in range(nx + 1):
        xi = i * hx
        trule = hx * hy * (p(xi) + p(xi + hx) + p(xi)) / 6.0
        for j in range(ny + 1):
            v = _node(x, nx, i, j) if i != 0 and j != 0 else 0.0
            vr = _node(x, nx, i + 1, j) if i != nx and j != 0 else 0.0
            vt = _node(x, nx, i, j + 1) if i != 0 and j != ny else 0.0
            fquad += trule * (((vr - v) / hx) ** 2 + ((vt - v) / hy) ** 2)
    for i in range(1, nx + 2):
        xi = i * hx
        trule = hx * hy * (p(xi) + p(xi - hx) + p(xi)) / 6.0
        for j in range(1, ny + 2):
            vb = _node(x, nx, i, j - 1) if i != nx + 1 and j != 1 else 0.0
            vl = _node(x, nx, i - 1, j) if i != 1 and j != ny + 1 else 0.0
            v = _node(x, nx, i, j) if i != nx + 1 and j != ny + 1 else 0.0
            fquad += trule * (((v - vl) / hx) ** 2 + ((v - vb) / hy) ** 2)
    for i in range(1, nx + 1):
        for j in range(1, ny + 1):
            flin += math.sin(i * hx) * _node(x, nx, i, j)
    return 0.5 * fquad - ecc * hx * hy * flin


def _loop_msa(x, nx, ny, bottom, top, left, right):
    """``dmsafg``'s function value, loop by loop (boundary arrays 0-based here)."""
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    f = 0.0
    for j in range(ny + 1):
        for i in range(nx + 1):
            if i >= 1 and j >= 1:
                v = _node(x, nx, i, j)
            else:
                v = left[j] if i == 0 else bottom[i]
            if i < nx and j > 0:
                vr = _node(x, nx, i + 1, j)
            else:
                vr = right[j] if i == nx else bottom[i + 1]
            if i > 0 and j < ny:
                vt = _node(x, nx, i, j + 1)
            else:
                vt = left[j + 1] if i == 0 else top[i]
            f += math.sqrt(1.0 + ((vr - v) / hx) ** 2 + ((vt - v) / hy) ** 2)
    for j in range(1, ny + 2):
        for i in range(1, nx + 2):
            if i <= nx and j > 1:
                vb = _node(x, nx, i, j - 1)
            else:
                vb = bottom[i] if j == 1 else right[j - 1]
            if i > 1 and j <= ny:
                vl = _node(x, nx, i - 1, j)
            else:
                vl = left[j] if i == 1 else top[i - 1]
            if i <= nx and j <= ny:
                v = _node(x, nx, i, j)
            else:
                v = right[j] if i == nx + 1 else top[i]
            f += math.sqrt(1.0 + ((v - vl) / hx) ** 2 + ((v - vb) / hy) ** 2)
    return 0.5 * hx * hy * f


NX, NY = 5, 3  # non-square, so a transposed grid would show


def test_minpack_objectives_match_the_fortran_loops():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 1.0, NX * NY)
    xj = jnp.asarray(x)
    ept = bp._ept(NX, NY)
    assert float(ept.fun(xj)) == pytest.approx(_loop_energy(x, NX, NY, 5.0), rel=1e-13)
    obs = bp._obs(NX, NY)
    assert float(obs.fun(xj)) == pytest.approx(_loop_energy(x, NX, NY, 1.0), rel=1e-13)
    pjb = bp._pjb(NX, NY)
    assert float(pjb.fun(xj)) == pytest.approx(_loop_pjb(x, NX, NY, 0.1, 10.0), rel=1e-13)
    msa = bp._msa(NX, NY)
    edges = bp._enneper_boundary(NX, NY)
    assert float(msa.fun(xj)) == pytest.approx(_loop_msa(x, NX, NY, *edges), rel=1e-13)


def test_minpack_starting_points_and_bounds():
    ept = bp._ept(NX, NY)
    hx, hy = 1.0 / (NX + 1), 1.0 / (NY + 1)
    # Node (i, j) = (1, 2): distance min(1·hx, 2·hy) to the boundary; x0 = the upper bound.
    k = NX * (2 - 1) + 1 - 1
    assert ept.upper[k] == pytest.approx(min(hx, 2 * hy))
    np.testing.assert_array_equal(ept.x0, ept.upper)
    np.testing.assert_array_equal(ept.lower, -ept.upper)
    pjb = bp._pjb(NX, NY)
    assert np.all(pjb.lower == 0.0) and np.all(np.isinf(pjb.upper))
    np.testing.assert_allclose(pjb.x0[:NX], np.maximum(np.sin(np.arange(1, NX + 1)
                                                             * 2 * np.pi / (NX + 1)), 0))
    # Enneper's surface: bv = u² − v² is 0 at the corners' diagonals' symmetric points and
    # the boundary data are symmetric: bottom(x) = −left(x), top = bottom, right = left.
    bottom, top, left, right = bp._enneper_boundary(6, 6)
    np.testing.assert_allclose(bottom, top, atol=1e-14)
    np.testing.assert_allclose(left, right, atol=1e-14)
    np.testing.assert_allclose(bottom, -left, atol=1e-14)
    # TAO's plate: nodes i in [(8-3)//2, 8 - (8-3)//2) = [2, 6), j in [1, 5) on 8 × 6.
    plate = bp._plate(8, 6, 3, 3, 0.2).reshape(6, 8)
    assert np.count_nonzero(plate == 0.2) == 16 and plate[1, 2] == 0.2 and plate[0, 2] < 0


# ----------------------------------------------------------------------- gradients by FD


@functools.cache
def _small_problems() -> tuple:
    minpack = [bp._ept(NX, NY), bp._pjb(NX, NY), bp._obs(NX, NY), bp._msa(NX, NY)]
    suite = bp.suite_problems(sizes=(10,), large=())
    real = [p for p in bp.real_problems(n_images=20) if p.n <= 1000]
    return tuple(minpack + suite + real)


def _random_feasible(p, rng) -> np.ndarray:
    lo, hi = p.lower, p.upper
    z = np.abs(rng.standard_normal(p.n))
    u = rng.uniform(size=p.n)
    x = np.where(np.isfinite(lo), lo + z, np.where(np.isfinite(hi), hi - z, z - 0.5))
    both = np.isfinite(lo) & np.isfinite(hi)
    x[both] = lo[both] + u[both] * (hi[both] - lo[both])
    return x


@pytest.mark.parametrize("idx", range(len(_small_problems())),
                         ids=[p.name for p in _small_problems()])
def test_gradient_matches_central_differences(idx):
    p = _small_problems()[idx]
    rng = np.random.default_rng(idx)
    value_and_grad = jax.jit(jax.value_and_grad(p.fun))

    def fun(x):
        return float(value_and_grad(jnp.asarray(x))[0])

    assert np.isfinite(fun(p.x0))
    for _ in range(2):
        x = _random_feasible(p, rng)
        assert np.all(x >= p.lower) and np.all(x <= p.upper)
        d = rng.standard_normal(p.n)
        eps = 1e-6 * max(1.0, float(np.max(np.abs(x))))
        fd = (fun(x + eps * d) - fun(x - eps * d)) / (2 * eps)
        v, g = value_and_grad(jnp.asarray(x))
        exact = float(np.asarray(g) @ d)
        scale = max(1.0, abs(float(v)), float(np.abs(np.asarray(g)).sum()))
        assert abs(fd - exact) <= 1e-6 * scale, (p.name, fd, exact)


def test_problem_shapes_and_feasible_starts():
    for p in _small_problems():
        assert p.x0.shape == p.lower.shape == p.upper.shape == (p.n,)
        assert np.all(p.lower <= p.x0) and np.all(p.x0 <= p.upper), p.name
        assert np.all(p.lower < p.upper), p.name
        v = jax.eval_shape(p.fun, jnp.asarray(p.x0))
        assert v.shape == () and v.dtype == jnp.float64, p.name
    names = [p.name for p in _small_problems()]
    assert len(names) == len(set(names))


# ---------------------------------------------------------------- optimal values, small n


@pytest.mark.parametrize(("problem", "f_ref"), [
    # TAO's test outputs (6 significant digits): jbearing2 -mx 8 -my 12 (ecc 0.1, b 10),
    # plate2 -mx 8 -my 6 -bmx 3 -bmy 3 -bheight 0.2 and -mx 8 -my 12 -bmx 4 -bmy 10.
    (lambda: bp._pjb(8, 12), -0.183437),
    (lambda: bp._msa(8, 6, 3, 3, 0.2), 1.50566),
    (lambda: bp._msa(8, 12, 4, 10, 0.1), 1.49406),
], ids=["PJB-8x12 (TAO)", "MSA-8x6 plate (TAO)", "MSA-8x12 plate (TAO)"])
def test_published_small_grid_optima(problem, f_ref):
    p = problem()
    f, pg, _ = bp.reference_solve(p, gtol=1e-9)
    assert pg <= 1e-7
    assert abs(f - f_ref) <= 0.5e-5 * abs(f_ref) + 1e-12


def test_stored_optima_of_small_problems():
    """scipy L-BFGS-B reproduces the stored f* of the small suite problems and the NNLS
    oracle (diabetes)."""
    checked = 0
    for p in bp.suite_problems(sizes=()) + bp.real_problems(n_images=20):
        if p.n > 100:
            continue
        f, pg, x = bp.reference_solve(p)
        assert np.all(x >= p.lower) and np.all(x <= p.upper)
        assert pg <= 1e-6, (p.name, pg)
        assert abs(f - p.f_star) <= 1e-8 * max(1.0, abs(p.f_star)), (p.name, f, p.f_star)
        checked += 1
    assert checked >= 10


def test_every_computed_problem_has_a_stored_value():
    for p in bp.minpack_problems((50, 100)) + bp.suite_problems():
        assert p.f_star is not None and p.f_star == bp.F_STAR[p.name], p.name
    active = [p for p in bp.suite_problems(sizes=(10,), large=()) if p.n >= 10]
    for p in active:  # the box cuts x*: the upper bounds on even coordinates exclude it
        assert np.all(np.isfinite(p.upper[0::2])) and np.all(np.isfinite(p.lower[1::2]))


def test_projected_gradient_norm():
    lo, hi = np.array([0.0, 0.0, -np.inf]), np.array([1.0, np.inf, np.inf])
    x = np.array([0.0, 0.5, 3.0])
    # at a lower bound with g > 0: zero; free: |g|; capped by the box.
    assert bp.projected_gradient_norm(x, np.array([2.0, 0.0, 0.0]), lo, hi) == 0.0
    assert bp.projected_gradient_norm(x, np.array([-3.0, 0.0, 0.0]), lo, hi) == 1.0
    assert bp.projected_gradient_norm(x, np.array([0.0, 0.7, 0.0]), lo, hi) == 0.5
    assert bp.projected_gradient_norm(x, np.array([0.0, 0.0, -0.25]), lo, hi) == 0.25
