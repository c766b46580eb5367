"""Krylov solvers (jopt.linalg) against dense oracles on pytree vectors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jopt.linalg import cg, lanczos, steihaug_cg, tridiagonal_eigh
from tests.helpers import ravel

SHAPES = {"w": (3, 4), "b": (5,)}  # n = 17
N = 17


def tree_from(flat: np.ndarray, dtype=jnp.float64) -> dict:
    """The dict pytree of SHAPES holding the entries of ``flat`` (ravel_pytree order)."""
    template = {k: jnp.zeros(s, dtype) for k, s in SHAPES.items()}
    _, unravel = ravel_pytree(template)
    return unravel(jnp.asarray(flat, dtype))


def dense_matvec(a, like: dict):
    """``v -> A v`` on pytrees like ``like``, from a dense matrix (in ``like``'s dtype)."""
    _, unravel = ravel_pytree(like)
    dtype = jax.tree.leaves(like)[0].dtype
    a = jnp.asarray(a).astype(dtype)

    def matvec(v):
        return unravel(a @ ravel_pytree(v)[0])

    return matvec


def jacobi(diag):
    return None if diag is None else (lambda r: jax.tree.map(jnp.divide, r, diag))


# Compiled once per configuration: the matrix is an argument, not a closed-over constant.
@functools.partial(jax.jit, static_argnames="maxiter")
def jit_cg(a, b, rtol, x0=None, diag=None, maxiter=5 * N):
    return cg(dense_matvec(a, b), b, x0=x0, rtol=rtol, maxiter=maxiter, precond=jacobi(diag))


@functools.partial(jax.jit, static_argnames="maxiter")
def jit_steihaug(a, g, radius, rtol, diag=None, maxiter=5 * N):
    return steihaug_cg(dense_matvec(a, g), g, radius, rtol=rtol, maxiter=maxiter,
                       precond=jacobi(diag))


@functools.partial(jax.jit, static_argnames=("num_iters", "reorthogonalize"))
def jit_lanczos(a, v0, num_iters, reorthogonalize=True):
    return lanczos(dense_matvec(a, v0), v0, num_iters, reorthogonalize=reorthogonalize)


def random_spd(seed: int, n: int = N, cond: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(1.0, cond, n)
    return (q * lam) @ q.T


def random_indefinite(seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.linspace(-3.0, 5.0, n)
    return (q * lam) @ q.T


def random_vec(seed: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def counting(matvec, counter: list):
    """``matvec`` that records every *run-time* call (one host callback per product)."""

    def counted(v):
        jax.debug.callback(lambda: counter.append(1))
        return matvec(v)

    return counted


# ---------------------------------------------------------------------------- CG


@pytest.mark.parametrize(("dtype", "rtol", "tol"),
                         [(jnp.float64, 1e-12, 1e-9), (jnp.float32, 1e-6, 2e-3)])
def test_cg_matches_dense_solve_on_pytrees(dtype, rtol, tol):
    a = random_spd(0)
    b = tree_from(random_vec(1), dtype)
    res = jit_cg(a, b, rtol)
    assert jax.tree.structure(res.x) == jax.tree.structure(b)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(res.x))
    assert res.residual_norm.dtype == dtype
    assert bool(res.converged) and not bool(res.negative_curvature)
    expected = np.linalg.solve(a, random_vec(1))
    np.testing.assert_allclose(ravel(res.x), expected, rtol=tol, atol=tol)
    true_residual = np.linalg.norm(random_vec(1) - a @ ravel(res.x).astype(np.float64))
    assert true_residual <= 10 * rtol * np.linalg.norm(random_vec(1)) + 10 * tol


def test_cg_exact_in_n_steps_and_counts_matvecs():
    a = random_spd(2, cond=10.0)
    b = tree_from(random_vec(3))
    calls: list = []
    mv = counting(dense_matvec(a, b), calls)
    res = jax.jit(lambda b: cg(mv, b, rtol=1e-12))(b)
    jax.block_until_ready(res)
    assert bool(res.converged)
    assert 1 <= int(res.num_iters) <= N + 2
    assert len(calls) == int(res.num_iters)  # one matvec per iteration, none else


def test_cg_x0_costs_one_matvec_and_is_used():
    a = random_spd(4)
    b = tree_from(random_vec(5))
    x_star = tree_from(np.linalg.solve(a, random_vec(5)))
    calls: list = []
    mv = counting(dense_matvec(a, b), calls)
    res = jax.jit(lambda b, x0: cg(mv, b, x0=x0, rtol=1e-8))(b, x_star)
    jax.block_until_ready(res)
    assert int(res.num_iters) == 0 and bool(res.converged)
    assert len(calls) == 1  # the initial residual
    near = jax.tree.map(lambda x: x + 1e-3, x_star)
    res2 = jit_cg(a, b, 1e-12, x0=near)
    np.testing.assert_allclose(ravel(res2.x), ravel(x_star), rtol=1e-9, atol=1e-10)


def test_cg_zero_rhs_and_budget():
    a = random_spd(6)
    zero = tree_from(np.zeros(N))
    res = jit_cg(a, zero, 1e-5)
    assert int(res.num_iters) == 0 and bool(res.converged)
    assert not np.any(ravel(res.x))
    b = tree_from(random_vec(7))
    res = jit_cg(a, b, 1e-14, maxiter=3)
    assert int(res.num_iters) == 3 and not bool(res.converged)
    assert np.all(np.isfinite(ravel(res.x)))


def test_preconditioned_cg_needs_fewer_iterations():
    rng = np.random.default_rng(8)
    scale = np.geomspace(1e-3, 1e3, N)
    core = np.eye(N) + 0.05 * rng.standard_normal((N, N))
    core = 0.5 * (core + core.T) + 0.5 * np.eye(N)  # diagonally dominant, SPD
    a = np.sqrt(scale)[:, None] * core * np.sqrt(scale)[None, :]
    assert np.all(np.linalg.eigvalsh(a) > 0)
    b = tree_from(random_vec(9))
    diag = tree_from(np.diag(a))

    plain = jit_cg(a, b, 1e-10, maxiter=10 * N)
    precond = jit_cg(a, b, 1e-10, diag=diag, maxiter=10 * N)
    assert bool(precond.converged)
    assert int(precond.num_iters) < int(plain.num_iters) // 2
    expected = np.linalg.solve(a, random_vec(9))
    np.testing.assert_allclose(ravel(precond.x), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_cg_reports_negative_curvature(dtype):
    a = random_indefinite(10)
    b = tree_from(random_vec(11), dtype)
    res = jit_cg(a, b, 1e-12)
    assert bool(res.negative_curvature) and not bool(res.converged)
    x, d = ravel(res.x), ravel(res.curvature_direction)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(d))
    assert np.linalg.norm(d) > 0
    assert d.astype(np.float64) @ a @ d.astype(np.float64) <= 1e-6 * np.linalg.norm(d) ** 2
    assert res.curvature_direction["w"].dtype == dtype
    # The reported curvature is that direction's dᵀAd (dense oracle).
    np.testing.assert_allclose(float(res.curvature), d.astype(np.float64) @ a
                               @ d.astype(np.float64), rtol=1e-3 if dtype == jnp.float32
                               else 1e-10, atol=1e-4 if dtype == jnp.float32 else 1e-10)
    assert res.curvature.dtype == dtype


def test_cg_curvature_is_zero_without_negative_curvature():
    a = np.diag(np.arange(1.0, N + 1))
    res = jit_cg(a, tree_from(random_vec(3)), 1e-12)
    assert not bool(res.negative_curvature) and float(res.curvature) == 0.0


def test_cg_negative_curvature_after_progress_keeps_previous_iterate():
    # Mostly positive spectrum, one negative eigenvalue: CG makes progress first.
    lam = np.concatenate([np.linspace(1.0, 2.0, N - 1), [-1.0]])
    q, _ = np.linalg.qr(np.random.default_rng(12).standard_normal((N, N)))
    a = (q * lam) @ q.T
    b_flat = q @ np.concatenate([np.ones(N - 1), [0.05]])
    b = tree_from(b_flat)
    res = jit_cg(a, b, 1e-12)
    assert bool(res.negative_curvature) and int(res.num_iters) >= 2
    # Returned x is a CG iterate before the bad step: it decreased the quadratic model.
    x = ravel(res.x)
    assert -b_flat @ x + 0.5 * x @ a @ x < 0
    np.testing.assert_allclose(np.linalg.norm(b_flat - a @ x), float(res.residual_norm),
                               rtol=1e-8)
    d = ravel(res.curvature_direction)
    assert d @ a @ d <= 0


def test_cg_vmap_over_rhs_equals_separate_runs():
    a = random_spd(13, cond=1e3)
    bs = [tree_from(random_vec(20 + i)) for i in range(3)]
    bs[1] = tree_from(np.zeros(N))  # finishes at once while the others iterate
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *bs)
    batched = jax.jit(jax.vmap(jit_cg, in_axes=(None, 0, None)))(a, stacked, 1e-10)
    for i, b in enumerate(bs):
        single = jit_cg(a, b, 1e-10)
        # A vmapped reduction may round its last bit differently from the unbatched one
        # (it does with XLA:CPU's older code generator, which the tests use), and at
        # cond = 1e3 that can move the rtol test by one iteration: allow it, nothing more.
        # The member with b = 0 must stop at once whatever the others do.
        assert abs(int(batched.num_iters[i]) - int(single.num_iters)) <= (0 if i == 1 else 1)
        x = ravel(jax.tree.map(lambda x, i=i: x[i], batched.x))
        np.testing.assert_allclose(x, ravel(single.x), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(a @ x, ravel(b), rtol=1e-8, atol=1e-12)
    assert int(batched.num_iters[1]) == 0 and int(batched.num_iters[0]) > 10


# ----------------------------------------------------------------------- Steihaug


def model(g: np.ndarray, b: np.ndarray, p: np.ndarray) -> float:
    return float(g @ p + 0.5 * p @ b @ p)


def cauchy_decrease(g: np.ndarray, b: np.ndarray, radius: float) -> float:
    """-m(p_C) for the Cauchy point (N&W eq. 4.11-4.12)."""
    gn = np.linalg.norm(g)
    gbg = g @ b @ g
    tau = 1.0 if gbg <= 0 else min(1.0, gn**3 / (radius * gbg))
    return -model(g, b, -tau * radius / gn * g)


def run_steihaug(b_mat, g_flat, radius, dtype=jnp.float64, rtol=1e-12, diag=None):
    return jit_steihaug(b_mat, tree_from(g_flat, dtype), radius, rtol, diag=diag)


def test_steihaug_interior_is_newton_step():
    b_mat, g = random_spd(30), random_vec(31)
    res = run_steihaug(b_mat, g, 1e6)
    assert bool(res.converged) and not bool(res.hits_boundary)
    assert not bool(res.negative_curvature)
    newton = -np.linalg.solve(b_mat, g)
    np.testing.assert_allclose(ravel(res.step), newton, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(float(res.model_decrease), -model(g, b_mat, newton), rtol=1e-10)


@pytest.mark.parametrize("radius", [1e-3, 0.1, 0.5])
def test_steihaug_boundary_step(radius):
    b_mat, g = random_spd(32), random_vec(33)
    assert np.linalg.norm(np.linalg.solve(b_mat, g)) > radius
    res = run_steihaug(b_mat, g, radius)
    p = ravel(res.step)
    assert bool(res.hits_boundary) and not bool(res.negative_curvature)
    assert not bool(res.converged)
    np.testing.assert_allclose(np.linalg.norm(p), radius, rtol=1e-10)
    np.testing.assert_allclose(float(res.model_decrease), -model(g, b_mat, p), rtol=1e-10)
    assert float(res.model_decrease) >= cauchy_decrease(g, b_mat, radius) * (1 - 1e-12)


def test_steihaug_negative_curvature_goes_to_boundary():
    b_mat, g = random_indefinite(34), random_vec(35)
    radius = 10.0
    res = run_steihaug(b_mat, g, radius)
    p = ravel(res.step)
    assert bool(res.negative_curvature) and bool(res.hits_boundary)
    np.testing.assert_allclose(np.linalg.norm(p), radius, rtol=1e-10)
    np.testing.assert_allclose(float(res.model_decrease), -model(g, b_mat, p), rtol=1e-10)
    assert float(res.model_decrease) >= cauchy_decrease(g, b_mat, radius) * (1 - 1e-12) > 0


def test_steihaug_model_decrease_beats_cauchy_under_vmap_over_radius():
    radii = jnp.geomspace(1e-2, 1e2, 9)
    for b_mat, g in [(random_spd(36, cond=1e4), random_vec(37)),
                     (random_indefinite(38), random_vec(39))]:
        solve = jax.jit(jax.vmap(jit_steihaug, in_axes=(None, None, 0, None)))
        out = solve(b_mat, tree_from(g), radii, 1e-10)
        for i, r in enumerate(np.asarray(radii)):
            p = ravel(jax.tree.map(lambda x, i=i: x[i], out.step))
            assert np.linalg.norm(p) <= r * (1 + 1e-10)
            dec = float(out.model_decrease[i])
            np.testing.assert_allclose(dec, -model(g, b_mat, p), rtol=1e-9)
            assert dec >= cauchy_decrease(g, b_mat, r) * (1 - 1e-10)


def test_steihaug_counts_matvecs_and_zero_gradient():
    b_mat, g = random_indefinite(40), random_vec(41)
    calls: list = []
    gt = tree_from(g)
    mv = counting(dense_matvec(b_mat, gt), calls)
    res = jax.jit(lambda g: steihaug_cg(mv, g, 1.0, rtol=1e-10))(gt)
    jax.block_until_ready(res)
    assert len(calls) == int(res.num_iters) >= 1  # model_decrease needs no extra product
    zero = run_steihaug(b_mat, np.zeros(N), 1.0)
    assert int(zero.num_iters) == 0 and bool(zero.converged)
    assert float(zero.model_decrease) == 0.0 and not np.any(ravel(zero.step))


def test_steihaug_float32_keeps_dtype():
    b_mat, g = random_spd(42), random_vec(43)
    res = run_steihaug(b_mat, g, 0.3, dtype=jnp.float32)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(res.step))
    assert res.model_decrease.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(ravel(res.step)), 0.3, rtol=1e-5)


def test_steihaug_preconditioned_ellipsoidal_region():
    b_mat, g = random_spd(44, cond=1e3), random_vec(45)
    m_diag = np.geomspace(0.1, 10.0, N)
    diag = tree_from(m_diag)

    big = run_steihaug(b_mat, g, 1e6, diag=diag)
    assert bool(big.converged) and not bool(big.hits_boundary)
    np.testing.assert_allclose(ravel(big.step), -np.linalg.solve(b_mat, g), rtol=1e-7,
                               atol=1e-9)
    small = run_steihaug(b_mat, g, 0.2, diag=diag)
    p = ravel(small.step)
    assert bool(small.hits_boundary)
    np.testing.assert_allclose(np.sqrt(p @ (m_diag * p)), 0.2, rtol=1e-8)
    np.testing.assert_allclose(float(small.model_decrease), -model(g, b_mat, p), rtol=1e-10)


# ------------------------------------------------------------------------ Lanczos


def test_lanczos_extreme_ritz_values_and_orthonormal_basis():
    n, m = 50, 30
    rng = np.random.default_rng(50)
    s = rng.standard_normal((n, n))
    a = s + s.T
    v0 = {"u": jnp.asarray(rng.standard_normal(20)), "v": jnp.asarray(rng.standard_normal(30))}
    res = jit_lanczos(a, v0, m)
    assert res.alphas.shape == (m,) and res.betas.shape == (m - 1,)
    assert res.basis["u"].shape == (m, 20) and res.basis["v"].shape == (m, 30)
    assert int(res.num_steps) == m and not bool(res.breakdown)
    theta, _ = tridiagonal_eigh(res.alphas, res.betas)
    exact = np.linalg.eigvalsh(a)
    np.testing.assert_allclose(float(theta[0]), exact[0], atol=1e-8)
    np.testing.assert_allclose(float(theta[-1]), exact[-1], atol=1e-8)
    q = np.concatenate([np.asarray(res.basis["u"]), np.asarray(res.basis["v"])], axis=1)
    np.testing.assert_allclose(q @ q.T, np.eye(m), atol=1e-10)
    t = np.diag(res.alphas) + np.diag(res.betas, 1) + np.diag(res.betas, -1)
    np.testing.assert_allclose(q @ a @ q.T, t, atol=1e-10)
    # A q_m - α_m q_m - β_{m-1} q_{m-1} has norm β_m (the reported residual norm).
    w = a @ q[-1] - res.alphas[-1] * q[-1] - res.betas[-1] * q[-2]
    np.testing.assert_allclose(np.linalg.norm(w), float(res.residual_norm), rtol=1e-8)


def test_lanczos_without_reorthogonalisation_is_finite():
    n = 40
    a = random_spd(51, n=n, cond=1e4)
    v0 = jnp.asarray(random_vec(52, n))
    res = jit_lanczos(a, v0, 35, reorthogonalize=False)
    assert np.all(np.isfinite(res.alphas)) and np.all(np.isfinite(res.betas))
    theta, _ = tridiagonal_eigh(res.alphas, res.betas, res.num_steps)
    np.testing.assert_allclose(float(theta[-1]), 1e4, rtol=1e-8)


@pytest.mark.parametrize("reorthogonalize", [True, False])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_lanczos_breakdown_three_eigenvalues(reorthogonalize, dtype):
    lam = {"p": jnp.asarray(np.tile([1.0, 2.0, 5.0], 4), dtype),
           "q": jnp.asarray(np.tile([[5.0], [1.0]], (1, 3)), dtype)}

    def matvec(v):
        return jax.tree.map(jnp.multiply, lam, v)

    v0 = jax.tree.map(lambda x: jnp.ones_like(x) + 0.1 * x, lam)
    m = 8
    res = jax.jit(lambda v: lanczos(matvec, v, m, reorthogonalize=reorthogonalize))(v0)
    assert bool(res.breakdown) and int(res.num_steps) == 3
    for leaf in [res.alphas, res.betas, res.residual_norm, *jax.tree.leaves(res.basis)]:
        assert np.all(np.isfinite(np.asarray(leaf)))
        assert leaf.dtype == dtype
    assert not np.any(np.asarray(res.alphas[3:])) and not np.any(np.asarray(res.betas[2:]))
    assert all(not np.any(np.asarray(x[3:])) for x in jax.tree.leaves(res.basis))
    theta, s = tridiagonal_eigh(res.alphas, res.betas, res.num_steps)
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(theta[:3]), [1.0, 2.0, 5.0], rtol=tol)
    np.testing.assert_allclose(np.asarray(theta[3:]), 5.0, rtol=tol)  # padding repeats max
    np.testing.assert_allclose(np.asarray(s[0, 3:]), 0.0, atol=tol)  # and has no weight
    np.testing.assert_allclose(np.sum(np.asarray(s[0, :3]) ** 2), 1.0, rtol=tol)


def test_lanczos_zero_start_and_vmap():
    a = random_spd(53, n=12)
    zero = jit_lanczos(a, jnp.zeros(12), 6)
    assert int(zero.num_steps) == 0 and bool(zero.breakdown)
    assert np.all(np.isfinite(zero.alphas)) and not np.any(np.asarray(zero.basis))
    vs = jnp.asarray(np.random.default_rng(54).standard_normal((3, 12)))
    batched = jax.jit(jax.vmap(jit_lanczos, in_axes=(None, 0, None)), static_argnums=2)(
        a, vs, 6)
    for i in range(3):
        single = jit_lanczos(a, vs[i], 6)
        np.testing.assert_allclose(batched.alphas[i], single.alphas, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(batched.basis[i], single.basis, rtol=1e-9, atol=1e-12)


def test_tridiagonal_eigh_matches_dense():
    rng = np.random.default_rng(55)
    alphas, betas = rng.standard_normal(7), rng.standard_normal(6)
    t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    theta, s = tridiagonal_eigh(jnp.asarray(alphas), jnp.asarray(betas))
    np.testing.assert_allclose(theta, np.linalg.eigvalsh(t), atol=1e-12)
    np.testing.assert_allclose(t @ s, s * theta[None, :], atol=1e-12)
    theta4, _ = tridiagonal_eigh(jnp.asarray(alphas), jnp.asarray(betas), 4)
    np.testing.assert_allclose(theta4[:4], np.linalg.eigvalsh(t[:4, :4]), atol=1e-12)
    with pytest.raises(ValueError, match="betas"):
        tridiagonal_eigh(jnp.asarray(alphas), jnp.asarray(betas[:3]))


# --------------------------------------------------------------------- bad input


def test_bad_inputs_raise_at_trace_time():
    a = random_spd(60)
    b = tree_from(random_vec(61))
    mv = dense_matvec(a, b)
    with pytest.raises(TypeError, match="`b`"):
        cg(lambda v: v, {"i": jnp.arange(3)})
    with pytest.raises(ValueError, match="`x0`"):
        cg(mv, b, x0={"w": jnp.zeros((3, 4))})
    with pytest.raises(ValueError, match="`x0`"):
        cg(mv, b, x0={"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)})
    with pytest.raises(ValueError, match="`maxiter`"):
        cg(mv, b, maxiter=0)
    with pytest.raises(TypeError, match="`maxiter`"):
        cg(mv, b, maxiter=2.5)
    with pytest.raises(ValueError, match="`rtol`"):
        cg(mv, b, rtol=-1.0)
    with pytest.raises(TypeError, match="`matvec`"):
        cg(a, b)
    with pytest.raises(ValueError, match=r"`matvec\(b\)`"):
        cg(lambda v: v["w"], b)
    with pytest.raises(ValueError, match=r"`precond\(b\)`"):
        cg(mv, b, precond=lambda r: {"w": r["w"]})
    for radius in [0.0, -1.0, float("nan")]:
        with pytest.raises(ValueError, match="`radius`"):
            steihaug_cg(mv, b, radius)
    with pytest.raises(TypeError, match="`g`"):
        steihaug_cg(lambda v: v, jnp.arange(3), 1.0)
    with pytest.raises(ValueError, match="`maxiter`"):
        steihaug_cg(mv, b, 1.0, maxiter=-2)
    with pytest.raises(ValueError, match="`num_iters`"):
        lanczos(mv, b, 0)
    with pytest.raises(TypeError, match="`num_iters`"):
        lanczos(mv, b, 3.0)
    with pytest.raises(TypeError, match="`v0`"):
        lanczos(lambda v: v, jnp.arange(3), 2)


def test_traced_radius_and_tolerances_are_accepted():
    b_mat, g = random_spd(62), random_vec(63)
    gt = tree_from(g)
    res = jit_steihaug(b_mat, gt, jnp.asarray(0.1), jnp.asarray(1e-8))
    np.testing.assert_allclose(np.linalg.norm(ravel(res.step)), 0.1, rtol=1e-10)
    out = jax.jit(lambda t: cg(dense_matvec(b_mat, gt), gt, rtol=t, atol=t, maxiter=5 * N))(
        jnp.asarray(1e-10))
    assert bool(out.converged)
