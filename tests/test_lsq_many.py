"""Many fits at once (jopt.least_squares_many, jopt.curve_fit_many) against separate
fits, and the small-problem kernels they rest on (one-sided Jacobi SVD, Moré's LM step)
against dense oracles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import jopt
from jopt.lsq.subproblem import decompose, jacobi_svd, levenberg_marquardt_step
from jopt.solve import batching


def decay(b, t, y):
    return b[0] * jnp.exp(-b[1] * t) - y


def _datasets(num: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 3.0, 25)
    amp = rng.uniform(0.5, 3.0, num)
    rate = rng.uniform(0.2, 2.0, num)
    y = amp[:, None] * np.exp(-rate[:, None] * t) + 0.01 * rng.standard_normal((num, t.size))
    return jnp.asarray(t), jnp.asarray(y)


@pytest.mark.parametrize("shape", [(14, 2), (30, 3), (168, 9), (5, 5), (7, 1)])
def test_jacobi_svd_matches_lapack(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal(shape) * np.logspace(0, 6, shape[1])
    u, s, vt = jax.jit(jacobi_svd)(jnp.asarray(a))
    s_ref = np.linalg.svd(a, compute_uv=False)
    np.testing.assert_allclose(np.sort(np.asarray(s))[::-1], s_ref, rtol=1e-11)
    np.testing.assert_allclose(np.asarray(u) * np.asarray(s)[None, :] @ np.asarray(vt), a,
                               atol=1e-12 * np.abs(a).max())
    np.testing.assert_allclose(np.asarray(vt @ vt.T), np.eye(shape[1]), atol=1e-13)
    np.testing.assert_allclose(np.asarray(u.T @ u), np.eye(shape[1]), atol=1e-12)


def test_jacobi_svd_of_a_rank_deficient_matrix_keeps_the_rank():
    a = jnp.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    _, s, _ = jacobi_svd(a)
    s = np.sort(np.asarray(s))
    assert s[0] <= 1e-14 * s[1]
    np.testing.assert_allclose(s[1], np.sqrt(70.0), rtol=1e-14)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 1e3))
def test_lm_step_solves_the_trust_region_subproblem(seed, radius):
    """Against the exact multiplier by bisection on ‖p(α)‖ = Δ (Moré 1978): the step is
    on the boundary within 10 % (Moré's tolerance) with α >= 0, or the Gauss–Newton step
    inside it; and its model decrease is within 1 % of the exact step's."""
    rng = np.random.default_rng(seed)
    j = rng.standard_normal((12, 3)) * np.array([1.0, 1e-3, 1e3])
    r = rng.standard_normal(12)
    model = decompose(jnp.asarray(j), jnp.asarray(r))
    p, alpha = levenberg_marquardt_step(model, jnp.asarray(radius), jnp.asarray(0.0))
    p = np.asarray(p)
    gn = np.linalg.lstsq(j, -r, rcond=None)[0]
    if np.linalg.norm(gn) <= radius:
        np.testing.assert_allclose(p, gn, rtol=1e-8, atol=1e-12)
        return
    assert float(alpha) > 0
    assert np.linalg.norm(p) <= radius * (1 + 1e-12)
    assert np.linalg.norm(p) >= 0.9 * radius

    def step(a):
        return np.linalg.solve(j.T @ j + a * np.eye(3), -j.T @ r)

    lo, hi = 0.0, 1e20
    for _ in range(400):
        mid = np.sqrt(max(lo, 1e-300) * hi)
        lo, hi = (mid, hi) if np.linalg.norm(step(mid)) > radius else (lo, mid)
    exact = step(hi)

    def decrease(q):
        return 0.5 * r @ r - 0.5 * np.sum((j @ q + r) ** 2)

    assert decrease(p) >= 0.99 * decrease(exact)


def test_lm_reaches_scipy_minpack_lm_in_a_comparable_number_of_evaluations():
    """The trust radius follows MINPACK's rules: on Misra1a from NIST's first start
    (a curved valley) jopt needs at most 1.5× the evaluations of MINPACK's lmder."""
    from tests.nist import PROBLEMS
    problem = PROBLEMS["Misra1a"]
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)

    def residuals(b, x, y):
        return problem.model(b, x) - y

    b0 = jnp.asarray(problem.starts[0])
    res = jopt.least_squares(residuals, b0, (x, y), ftol=1e-12, xtol=1e-12, gtol=1e-15)
    ref = scipy.optimize.least_squares(
        lambda b: np.asarray(residuals(jnp.asarray(b), x, y)), np.asarray(b0),
        jac=lambda b: np.asarray(jax.jacfwd(residuals)(jnp.asarray(b), x, y)), method="lm",
        x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-15)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, rtol=1e-9)
    assert int(res.nfev) <= 1.5 * ref.nfev


@pytest.mark.parametrize("method", ["lm", "gauss-newton"])
def test_least_squares_many_equals_separate_fits(method):
    t, ys = _datasets(40)
    x0s = jnp.tile(jnp.array([1.0, 1.0]), (40, 1))
    res = jopt.least_squares_many(decay, x0s, (t, ys), args_axes=(None, 0), method=method,
                                  segment=3, bucket_sizes=(8, 16))
    for i in (0, 17, 39):
        one = jopt.least_squares(decay, x0s[i], (t, ys[i]), method=method)
        np.testing.assert_allclose(np.asarray(res.x[i]), np.asarray(one.x), rtol=1e-9)
        assert int(res.nfev[i]) == int(one.nfev) and int(res.status[i]) == int(one.status)
        np.testing.assert_allclose(float(res.cost[i]), float(one.cost), rtol=1e-9)
    assert res.x.shape == (40, 2) and res.fun.shape == (40, 25) and bool(np.all(res.success))


def test_least_squares_many_drops_finished_fits_between_segments():
    """A batch where a few fits need many more iterations: later segments run on a
    smaller bucket, and the work done is far below batch × slowest."""
    t, ys = _datasets(64)
    x0s = jnp.tile(jnp.array([1.0, 1.0]), (64, 1)).at[:3].set(jnp.array([1e-3, 10.0]))
    calls = []
    original = batching.run_segments

    def spy(states, segment, size, sizes):
        out = original(states, segment, size, sizes)
        calls.append(out[1])
        return out

    batching.run_segments, saved = spy, batching.run_segments
    try:
        res = jopt.least_squares_many(decay, x0s, (t, ys), args_axes=(None, 0), segment=2)
    finally:
        batching.run_segments = saved
    stats = calls[0]
    nit = np.asarray(res.nit)
    assert nit[:3].min() > 2 * np.median(nit[3:])  # the slow ones are slow
    assert min(stats.buckets) == 32 and stats.buckets[0] == 64
    assert stats.lane_iterations < 0.8 * 64 * nit.max()


def test_least_squares_many_isolates_a_member_with_nan_data():
    t, ys = _datasets(8)
    ys = ys.at[3, 5].set(jnp.nan)
    res = jopt.least_squares_many(decay, jnp.ones((8, 2)), (t, ys), args_axes=(None, 0))
    status = np.asarray(res.status)
    assert status[3] == jopt.LeastSquaresStatus.NONFINITE and not bool(res.success[3])
    assert bool(np.all(np.asarray(res.success)[np.arange(8) != 3]))


def test_curve_fit_many_matches_scipy_curve_fit_with_covariances():
    t, ys = _datasets(12, seed=3)
    sigma = 0.01 + 0.005 * np.random.default_rng(1).random((12, t.size))

    def model(t, a, k):
        return a * jnp.exp(-k * t)

    popt, pcov = jopt.curve_fit_many(model, t, ys, jnp.array([1.0, 1.0]), sigma=sigma)
    for i in (0, 5, 11):
        ref_p, ref_c = scipy.optimize.curve_fit(
            lambda t, a, k: a * np.exp(-k * t), np.asarray(t), np.asarray(ys[i]),
            p0=[1.0, 1.0], sigma=sigma[i])
        np.testing.assert_allclose(np.asarray(popt[i]), ref_p, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(pcov[i]), ref_c, rtol=1e-4)


def test_many_fits_refuse_bad_input_by_name():
    t, ys = _datasets(4)
    with pytest.raises(ValueError, match="`args\\[1\\]`"):
        jopt.least_squares_many(decay, jnp.ones((4, 2)), (t, ys[:3]), args_axes=(None, 0))
    with pytest.raises(ValueError, match="`x0s`"):
        jopt.least_squares_many(decay, jnp.ones(()), (t, ys[0]))
    with pytest.raises(ValueError, match="`ydatas`"):
        jopt.curve_fit_many(lambda t, a, k: a * jnp.exp(-k * t), t, ys[0], jnp.ones(2))
    with pytest.raises(TypeError, match="vmap"):
        jax.jit(lambda y: jopt.least_squares_many(decay, jnp.ones((4, 2)), (t, y),
                                                  args_axes=(None, 0)).x)(ys)
