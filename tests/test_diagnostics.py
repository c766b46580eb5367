"""Hessian diagnostics (jopt.diagnostics) against dense eigen-decompositions and traces.

Oracles: ``jnp.linalg.eigvalsh`` / traces of the dense Hessian (``jopt.hessian_matrix``)
of quadratics with known matrices and of a small MLP; Hutchinson and SLQ estimates are
checked against bounds built from their exact variances (computed densely), and the
bounds are shown to be tight enough to reject a wrong answer.

Compile time dominates on the CPU, so the tests share a handful of compiled functions:
quadratics pass their matrix as the (single) batch, ``loss(params, a)``, so one
compilation serves every matrix of a size.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import jopt
from jopt import diagnostics as jd

TEMPLATE = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(6)}  # n = 18, two leaves
N = 18
UNRAVEL = ravel_pytree(TEMPLATE)[1]
LEAF_IDS = np.asarray(ravel_pytree({"b": jnp.zeros(6), "w": jnp.ones((3, 4))})[0])


def quad_loss(params, a):
    x = ravel_pytree(params)[0]
    return 0.5 * x @ (a @ x)


def point(dtype=jnp.float64):
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype), TEMPLATE)


def with_spectrum(eigs, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigs),) * 2))
    return (q * np.asarray(eigs, np.float64)) @ q.T


def goe(seed: int, n: int = N) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((n, n))
    return (a + a.T) / 2


def flat_rows(tree) -> np.ndarray:
    """Stacked pytree vectors (leading axis) as rows of a matrix, in ravel order."""
    return np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(tree))


def hutchinson_sd(h: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Exact standard deviation of one Rademacher probe's ``Σ_{i∈l} z_i (Hz)_i``.

    Distinct pairs ``z_i z_j`` are uncorrelated with unit variance, so the variance is
    ``Σ_{i≠j} H_ij² (2 M_i M_j + M_i (1 − M_j))`` with ``M`` the leaf's indicator
    (``2 Σ_{i≠j} H_ij²`` for the whole trace, Hutchinson 1989).
    """
    m = np.ones(len(h)) if mask is None else mask.astype(np.float64)
    off = h * h * (1 - np.eye(len(h)))
    weight = 2 * np.outer(m, m) + np.outer(m, 1 - m)
    return float(np.sqrt(np.sum(off * weight)))


# ------------------------------------------------------------------ compiled pieces


def full_spectrum(a, dtype=jnp.float64):
    """All eigenpairs (ascending) of the quadratic ``a`` by ``which='both'``, ``k = m = n``."""
    return jd.hessian_eigs(quad_loss, point(dtype), N, which="both",
                           batches=jnp.asarray(a, dtype)[None], num_iters=N)


def trace_of(a, rtol, atol=0.0, key=0):
    return jd.hessian_trace(quad_loss, point(), batches=jnp.asarray(a)[None], rtol=rtol,
                            atol=atol, min_samples=10, max_samples=2000, block_size=4,
                            key=key)


# ------------------------------------------------------------------- eigenvalues


def test_full_spectrum_and_eigenvectors_of_a_quadratic_pytree():
    a = goe(0)
    res = full_spectrum(a)
    ref = np.linalg.eigvalsh(a)
    np.testing.assert_allclose(res.eigenvalues, ref, atol=1e-11)
    v = flat_rows(res.eigenvectors)  # (k, n), rows in ravel order
    np.testing.assert_allclose(v @ v.T, np.eye(N), atol=1e-11)
    np.testing.assert_allclose(v @ a, res.eigenvalues[:, None] * v, atol=1e-10)
    assert float(jnp.max(res.residual_norms)) < 1e-10
    assert int(res.num_hvps) == N and int(res.num_iters) == N
    assert res.eigenvectors["w"].shape == (N, 3, 4)


@settings(max_examples=12, deadline=None)
@given(eigs=st.lists(st.integers(-3, 3), min_size=N, max_size=N),
       seed=st.integers(0, 2**31 - 1))
def test_repeated_eigenvalues_are_all_found(eigs, seed):
    """Integer spectra repeat eigenvalues (a Krylov space holds one copy): restarts."""
    res = full_spectrum(with_spectrum(eigs, seed))
    np.testing.assert_allclose(res.eigenvalues, np.sort(eigs), atol=1e-9)
    assert np.all(np.isfinite(flat_rows(res.eigenvectors)))


def test_top_k_converges_before_n_steps_and_residuals_bound_the_error():
    bulk = np.linspace(0.0, 1.0, N - 3)
    a = with_spectrum(np.concatenate([bulk, [10.0, 20.0, 30.0]]), seed=1)
    res = jd.hessian_eigs(quad_loss, point(), 3, which="largest", batches=jnp.asarray(a)[None],
                          num_iters=10, key=jax.random.PRNGKey(3))
    np.testing.assert_allclose(res.eigenvalues, [30.0, 20.0, 10.0], rtol=1e-10)
    assert int(res.num_hvps) == 10
    # Parlett Thm. 4.5.1: each Ritz value lies within its residual of an eigenvalue.
    eigs = np.linalg.eigvalsh(a)
    dist = np.min(np.abs(np.asarray(res.eigenvalues)[:, None] - eigs[None]), axis=1)
    assert np.all(dist <= np.asarray(res.residual_norms) + 1e-12)
    v = flat_rows(res.eigenvectors)
    np.testing.assert_allclose(np.linalg.norm(v @ a - res.eigenvalues[:, None] * v, axis=1),
                               res.residual_norms, atol=1e-9)


def test_float32_keeps_dtype_and_precision():
    a = goe(2)
    p, b = point(jnp.float32), jnp.asarray(a, jnp.float32)[None]
    eigs = full_spectrum(a, jnp.float32)
    # Dtypes of the other results by abstract evaluation (no compilation needed).
    trace = jax.eval_shape(lambda: jd.hessian_trace(quad_loss, p, batches=b))
    density = jax.eval_shape(lambda: jd.hessian_spectral_density(quad_loss, p, batches=b))
    assert eigs.eigenvalues.dtype == jnp.float32
    assert eigs.eigenvectors["w"].dtype == jnp.float32
    np.testing.assert_allclose(eigs.eigenvalues, np.linalg.eigvalsh(a), atol=2e-5)
    assert trace.estimate.dtype == trace.per_leaf["w"].dtype == jnp.float32
    assert density.density.dtype == density.nodes.dtype == jnp.float32


# --------------------------------------------------------------------------- MLP


def mlp_params(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"w1": jnp.asarray(rng.standard_normal((3, 4))),
            "b1": jnp.asarray(0.1 * rng.standard_normal(4)),
            "w2": jnp.asarray(rng.standard_normal((4, 2))),
            "b2": jnp.asarray(0.1 * rng.standard_normal(2))}


_rng = np.random.default_rng(10)
X = jnp.asarray(_rng.standard_normal((16, 3)))
Y = jnp.asarray((X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int32))
BATCHES = {"x": X.reshape(4, 4, 3), "y": Y.reshape(4, 4)}


L2 = 0.05


def mlp_batch_loss(params, batch):
    """Cross-entropy plus ``(L2/2)‖θ‖²`` (which lifts the softmax null space to ``L2``)."""
    h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"][None])
    logits = h @ params["w2"] + params["b2"][None]
    logp = jax.nn.log_softmax(logits)
    penalty = 0.5 * L2 * jnp.sum(ravel_pytree(params)[0] ** 2)
    return penalty - jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))


def mlp_loss(params):
    return mlp_batch_loss(params, {"x": X, "y": Y})


@functools.cache
def mlp_dense():
    """Parameters, dense Hessians of the full loss and of the first batch, leaf ids."""
    params = mlp_params()
    first = jax.tree.map(lambda b: b[0], BATCHES)
    h, h_first = jax.jit(lambda p: (jopt.hessian_matrix(mlp_loss, p), jopt.hessian_matrix(
        lambda q: mlp_batch_loss(q, first), p)))(params)
    ids = np.asarray(ravel_pytree(jax.tree.map(
        lambda x, i: jnp.full(x.shape, i, jnp.float64), params,
        {"b1": 0, "b2": 1, "w1": 2, "w2": 3}))[0])
    return params, np.asarray(h), np.asarray(h_first), ids


@functools.cache
def mlp_unbatched():
    """Smallest-first full spectrum and trace of the MLP (``loss_fn(params)`` form)."""
    params, h, _, _ = mlp_dense()
    eigs = jd.hessian_eigs(mlp_loss, params, h.shape[0], which="smallest")
    trace = jd.hessian_trace(mlp_loss, params, rtol=0.02, max_samples=10_000, key=5)
    return eigs, trace


def test_mlp_spectrum_smallest_first_matches_dense():
    """Softmax invariances give eigenvalue L2 five times: restarts find every copy."""
    _, h, _, _ = mlp_dense()
    eigs, _ = mlp_unbatched()
    ref = np.linalg.eigvalsh(h)
    assert np.sum(np.abs(ref - L2) < 1e-12) >= 5
    scale = np.max(np.abs(ref))
    np.testing.assert_allclose(eigs.eigenvalues, ref, atol=1e-10 * scale)
    assert int(eigs.num_restarts) >= 1


def test_mlp_trace_and_per_leaf_traces_within_statistical_bounds():
    _, h, _, ids = mlp_dense()
    _, tr = mlp_unbatched()
    s = int(tr.num_samples)
    assert bool(tr.converged) and int(tr.num_hvps) == s
    assert float(tr.stderr) <= 0.02 * abs(float(tr.estimate))
    sd = hutchinson_sd(h) / np.sqrt(s)
    assert abs(float(tr.estimate) - np.trace(h)) <= 4.5 * sd
    assert abs(float(tr.estimate) - 1.2 * np.trace(h)) > 4.5 * sd  # rejects a 20% error
    assert 0.5 < float(tr.stderr) / sd < 2.0  # reported stderr estimates the true one
    for i, name in enumerate(["b1", "b2", "w1", "w2"]):
        mask = ids == i
        block = np.trace(h[np.ix_(mask, mask)])
        sd_l = hutchinson_sd(h, mask) / np.sqrt(s)
        assert abs(float(tr.per_leaf[name]) - block) <= 4.5 * sd_l + 1e-12, name
    np.testing.assert_allclose(sum(jax.tree.leaves(tr.per_leaf)), tr.estimate, rtol=1e-12)


def test_batched_loss_averages_to_the_full_loss_hessian_under_jit():
    params, h, h_first, _ = mlp_dense()
    n = h.shape[0]

    @jax.jit
    def run(params, batches):
        return jd.hessian_eigs(mlp_batch_loss, params, 3, batches=batches, num_iters=n)

    res = run(params, BATCHES)
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(h)[::-1][:3], rtol=1e-10)
    one_batch = np.linalg.eigvalsh(h_first)[::-1][:3]
    assert not np.allclose(res.eigenvalues, one_batch, rtol=1e-3)  # the test can fail


# ------------------------------------------------------------------------- trace


def diag_dominant(seed: int, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.diag(rng.uniform(1.0, 3.0, N)) + noise * goe(seed)


def test_trace_stops_by_standard_error_within_statistical_bound():
    a = diag_dominant(4)
    res = trace_of(a, rtol=0.01)
    s = int(res.num_samples)
    assert bool(res.converged) and s < 2000 and s % 4 == 0 and int(res.num_hvps) == s
    assert float(res.stderr) <= 0.01 * abs(float(res.estimate))
    sd = hutchinson_sd(a) / np.sqrt(s)
    assert abs(float(res.estimate) - np.trace(a)) <= 4.5 * sd
    assert abs(float(res.estimate) - 1.15 * np.trace(a)) > 4.5 * sd  # rejects a 15% error
    assert 0.5 < float(res.stderr) / sd < 2.0
    for leaf, i in (("b", 0), ("w", 1)):
        mask = LEAF_IDS == i
        block = np.trace(a[np.ix_(mask, mask)])
        assert abs(float(res.per_leaf[leaf]) - block) <= 4.5 * hutchinson_sd(a, mask) / np.sqrt(s)
        assert float(res.per_leaf_stderr[leaf]) > 0
    np.testing.assert_allclose(res.per_leaf["b"] + res.per_leaf["w"], res.estimate,
                               rtol=1e-12)


def test_trace_of_a_diagonal_hessian_is_exact_after_min_samples():
    d = np.linspace(-1.0, 4.0, N)
    res = trace_of(np.diag(d), rtol=1e-6)
    assert float(res.stderr) == 0.0 and bool(res.converged)
    np.testing.assert_allclose(res.estimate, d.sum(), rtol=1e-14)
    assert int(res.num_samples) == 12  # min_samples = 10, in blocks of 4


def test_trace_budget_and_absolute_tolerance():
    a = goe(5)
    a -= np.trace(a) / N * np.eye(N)  # traceless: the relative target is unreachable
    res = trace_of(a, rtol=1e-3)
    assert int(res.num_samples) == 2000 and not bool(res.converged)
    assert abs(float(res.estimate)) <= 4.5 * hutchinson_sd(a) / np.sqrt(2000)
    early = trace_of(a, rtol=1e-3, atol=1.0)
    assert bool(early.converged) and int(early.num_samples) < 2000
    assert float(early.stderr) <= 1.0


# -------------------------------------------------------------- spectral density


@functools.cache
def slq_case():
    a = diag_dominant(6, noise=0.15)
    res = jd.hessian_spectral_density(quad_loss, point(), batches=jnp.asarray(a)[None],
                                      num_probes=16, num_iters=6, num_points=2000, key=7)
    return a, res


def test_slq_quadrature_is_exact_for_low_degree_moments():
    a, res = slq_case()
    z = np.asarray(jax.random.rademacher(jax.random.PRNGKey(7), (16, N), jnp.float64))
    v = z / np.linalg.norm(z, axis=1, keepdims=True)
    nodes, weights = np.asarray(res.nodes), np.asarray(res.weights)
    for p in range(4):  # Gauss quadrature with m = 6 nodes is exact to degree 11
        quad = np.sum(weights * nodes**p, axis=1)
        exact = np.einsum("pi,ij,pj->p", v, np.linalg.matrix_power(a, p), v)
        np.testing.assert_allclose(quad, exact, rtol=1e-10)
    assert int(res.num_hvps) == 16 * 6


def test_slq_density_moments_match_dense_traces():
    a, res = slq_case()
    grid, phi, sigma = np.asarray(res.grid), np.asarray(res.density), float(res.sigma)
    moments = [np.trapezoid(phi * grid**p, grid) for p in range(3)]
    nodes, weights = np.asarray(res.nodes), np.asarray(res.weights)
    node_moments = [np.mean(np.sum(weights * nodes**p, axis=1)) for p in range(3)]
    np.testing.assert_allclose(moments[0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(moments[1], node_moments[1], rtol=1e-6)
    np.testing.assert_allclose(moments[2], node_moments[2] + sigma**2, rtol=1e-6)
    # Against tr(A^p)/n: the probe mean of vᵀA^p v with v = z/√n has standard deviation
    # hutchinson_sd(A^p) / (n √P).
    for p in (1, 2):
        ap = np.linalg.matrix_power(a, p)
        bound = 4.5 * hutchinson_sd(ap) / (N * np.sqrt(16))
        assert abs(node_moments[p] - np.trace(ap) / N) <= bound
        assert abs(node_moments[p] - 1.2 * np.trace(ap) / N) > bound  # rejects 20% off


def test_plot_spectral_density(monkeypatch):
    pytest.importorskip("matplotlib")
    _, res = slq_case()
    ax = jd.plot_spectral_density(res)
    assert ax.get_yscale() == "log" and len(ax.lines) == 1
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        jd.plot_spectral_density(res)


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: jd.hessian_eigs(quad_loss, point(), 0, batches=np.eye(N)[None]), "`k`"),
        (lambda: jd.hessian_eigs(quad_loss, point(), N + 1, batches=np.eye(N)[None]), "`k`"),
        (lambda: jd.hessian_eigs(quad_loss, point(), 3, batches=np.eye(N)[None],
                                 num_iters=2), "`num_iters`"),
        (lambda: jd.hessian_eigs(quad_loss, point(), 1, which="top",
                                 batches=np.eye(N)[None]), "`which`"),
        (lambda: jd.hessian_eigs(lambda p: p["b"], point()), "`loss_fn`"),
        (lambda: jd.hessian_trace(lambda p: jnp.sum(p["b"]), {"b": jnp.arange(3)}),
         "`params`"),
        (lambda: jd.hessian_trace(quad_loss, point(), batches=np.eye(N)[None], rtol=0.0),
         "`rtol`"),
        (lambda: jd.hessian_trace(quad_loss, point(), batches=np.eye(N)[None],
                                  min_samples=1), "`min_samples`"),
        (lambda: jd.hessian_trace(mlp_batch_loss, mlp_params(),
                                  batches={"x": X.reshape(4, 4, 3), "y": Y.reshape(2, 8)}),
         "`batches`"),
        (lambda: jd.hessian_trace(mlp_batch_loss, mlp_params(),
                                  batches={"x": X, "y": jnp.zeros(())}), "`batches`"),
        (lambda: jd.hessian_spectral_density(quad_loss, point(), batches=np.eye(N)[None],
                                             sigma=-1.0), "`sigma`"),
        (lambda: jd.hessian_spectral_density(quad_loss, point(), batches=np.eye(N)[None],
                                             grid=np.zeros((2, 2))), "`grid`"),
    ],
)
def test_bad_input_is_rejected_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_nan_loss_is_reported_in_finite_not_raised():
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}

    def nan_loss(p):
        return jnp.nan * (jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2))

    def good_loss(p):
        return jnp.sum(p["a"] ** 2) + 3.0 * jnp.sum(p["b"] ** 2)

    key = jax.random.PRNGKey(0)
    for loss, expected in ((nan_loss, False), (good_loss, True)):
        eig = jopt.hessian_eigs(loss, params, k=2, key=key)
        tr = jopt.hessian_trace(loss, params, key=key, max_samples=20)
        dens = jopt.hessian_spectral_density(loss, params, num_probes=2, num_iters=3,
                                             key=key)
        assert bool(eig.finite) is expected
        assert bool(tr.finite) is expected
        assert bool(dens.finite) is expected
    np.testing.assert_allclose(eig.eigenvalues, [6.0, 6.0], rtol=1e-12)
