"""jopt.least_squares and jopt.curve_fit against scipy.optimize (the oracle), closed forms
and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import jopt
from jopt.lsq.losses import robust_cost

METHODS = ["lm", "dogleg", "gauss-newton"]
LOSSES = ["linear", "soft_l1", "huber", "cauchy", "arctan"]


def decay(b, t, y):
    return b[0] * jnp.exp(-b[1] * t) - y


def _decay_data(outliers: bool = False):
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 3.0, 40)
    y = 2.5 * np.exp(-1.3 * t) + 0.02 * rng.standard_normal(40)
    if outliers:
        y[::7] += 1.5
    return jnp.asarray(t), jnp.asarray(y)


def rosenbrock_residuals(x):
    return jnp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("loss", LOSSES)
def test_matches_scipy_least_squares(method, loss):
    t, y = _decay_data(outliers=loss != "linear")
    ours = jopt.least_squares(decay, jnp.ones(2), (t, y), method=method, loss=loss,
                              f_scale=0.1, ftol=1e-12, xtol=1e-12, gtol=1e-12)
    ref = scipy.optimize.least_squares(lambda b: np.asarray(decay(b, t, y)), np.ones(2),
                                       jac=lambda b: np.asarray(jax.jacfwd(decay)(b, t, y)),
                                       method="trf", loss=loss, f_scale=0.1, ftol=1e-14,
                                       xtol=1e-14, gtol=1e-14)
    assert bool(ours.success), ours.message
    np.testing.assert_allclose(ours.x, ref.x, rtol=1e-7)
    np.testing.assert_allclose(float(ours.cost), ref.cost, rtol=1e-10)
    np.testing.assert_allclose(ours.grad, ref.grad, atol=1e-7)
    np.testing.assert_allclose(ours.fun, ref.fun, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_rosenbrock_from_the_classic_start(method):
    res = jopt.least_squares(lambda x: rosenbrock_residuals(x), jnp.array([-1.2, 1.0]),
                             method=method)
    assert bool(res.success) and res.message
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-7)
    assert int(res.njev) <= int(res.nfev) <= 100 * 2


def test_pytree_parameters_and_residuals_keep_structure_and_dtype():
    t, y = _decay_data()
    t32, y32 = t.astype(jnp.float32), y.astype(jnp.float32)

    def residuals(p, t, y):
        r = p["a"] * jnp.exp(-p["k"] * t) - y
        return {"first": r[:10], "rest": r[10:]}

    x0 = {"a": jnp.float32(1.0), "k": jnp.float32(1.0)}
    res = jopt.least_squares(residuals, x0, (t32, y32), return_jac=True)
    assert bool(res.success)
    assert res.x["a"].dtype == jnp.float32 and set(res.fun) == {"first", "rest"}
    assert res.jac.shape == (40, 2)
    ref = jopt.least_squares(decay, jnp.ones(2), (t, y))
    np.testing.assert_allclose([res.x["a"], res.x["k"]], ref.x, rtol=1e-4)


def test_jit_and_vmap_over_data_and_starts_equal_separate_fits():
    t, y = _decay_data()
    ys = jnp.stack([y, 1.5 * y, y + 0.1])
    starts = jnp.stack([jnp.ones(2), jnp.array([3.0, 0.5]), jnp.array([1.0, 2.0])])
    batched = jax.jit(jax.vmap(lambda x0, y: jopt.least_squares(decay, x0, (t, y))))(
        starts, ys)
    for i in range(3):
        one = jopt.least_squares(decay, starts[i], (t, ys[i]))
        np.testing.assert_allclose(batched.x[i], one.x, rtol=1e-9)
        assert int(batched.status[i]) == int(one.status)


def test_solution_is_differentiable_with_respect_to_the_data():
    t, y = _decay_data()

    def fitted_rate(y):
        return jopt.least_squares(decay, jnp.ones(2), (t, y), ftol=0.0, xtol=0.0,
                                  gtol=1e-13).x[1]

    direction = jnp.sin(jnp.arange(40.0))
    eps = 1e-4  # (central differences: truncation ~eps², the solves' error ~1e-13/eps)
    fd = (fitted_rate(y + eps * direction) - fitted_rate(y - eps * direction)) / (2 * eps)
    ad = jax.jvp(jax.jit(fitted_rate), (y,), (direction,))[1]
    np.testing.assert_allclose(ad, fd, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(fitted_rate)(y) @ direction, fd, rtol=1e-5)


def test_nan_residuals_are_a_status_and_a_nan_region_is_stepped_around():
    t, y = _decay_data()
    res = jopt.least_squares(decay, jnp.array([jnp.nan, 1.0]), (t, y))
    assert int(res.status) == jopt.LeastSquaresStatus.NONFINITE and not bool(res.success)

    def guarded(b, t, y):  # NaN where the rate is negative; the fit lies inside
        return jnp.where(b[1] > 0, decay(b, t, y), jnp.nan)

    res = jopt.least_squares(guarded, jnp.array([1.0, 0.05]), (t, y))
    assert bool(res.success)
    np.testing.assert_allclose(res.x, jopt.least_squares(decay, jnp.ones(2), (t, y)).x,
                               rtol=1e-6)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(method="trf"), ValueError, "`method`"),
    (dict(loss="l1"), ValueError, "`loss`"),
    (dict(f_scale=0.0), ValueError, "`f_scale` must be > 0"),
    (dict(x_scale="auto"), ValueError, "`x_scale`"),
    (dict(x_scale=-1.0), ValueError, "`x_scale` must be > 0"),
    (dict(ftol=-1.0), ValueError, "`ftol`"),
    (dict(max_nfev=0), ValueError, "`max_nfev`"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    t, y = _decay_data()
    with pytest.raises(error, match=match):
        jopt.least_squares(decay, jnp.ones(2), (t, y), **kwargs)


def test_bad_residual_functions_are_named():
    with pytest.raises(TypeError, match="`residuals` must return floating-point"):
        jopt.least_squares(lambda x: jnp.arange(3), jnp.ones(2))
    with pytest.raises(TypeError, match="`residuals` must be a function"):
        jopt.least_squares(3, jnp.ones(2))
    t, y = _decay_data()
    with pytest.raises(TypeError, match=r"`x0` and `args`"):
        jopt.least_squares(decay, jnp.ones(2), (t, y[:5]))


# ------------------------------------------------------------------------ curve_fit


def _exp_model(x, a, k):
    return a * jnp.exp(-k * x)


@pytest.mark.parametrize(("sigma_kind", "absolute"), [(None, False), ("1d", False),
                                                      ("1d", True), ("2d", False)])
def test_curve_fit_matches_scipy_parameters_and_covariance(sigma_kind, absolute):
    rng = np.random.default_rng(1)
    x = np.linspace(0.0, 4.0, 30)
    y = 3.0 * np.exp(-0.7 * x) + 0.05 * rng.standard_normal(30)
    sigma = {None: None, "1d": 0.03 + 0.02 * rng.random(30),
             "2d": np.diag(0.001 + 0.002 * rng.random(30)) + 1e-4}[sigma_kind]
    popt, pcov = jopt.curve_fit(_exp_model, jnp.asarray(x), jnp.asarray(y),
                                jnp.array([1.0, 1.0]), sigma=sigma, absolute_sigma=absolute,
                                ftol=1e-14, xtol=1e-14, gtol=1e-14)
    ref_p, ref_c = scipy.optimize.curve_fit(lambda x, a, k: a * np.exp(-k * x), x, y,
                                            p0=[1.0, 1.0], sigma=sigma,
                                            absolute_sigma=absolute, ftol=1e-14,
                                            xtol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(popt, ref_p, rtol=1e-8)
    np.testing.assert_allclose(pcov, ref_c, rtol=1e-6)


def test_curve_fit_batched_over_datasets_and_bad_sigma():
    x = jnp.linspace(0.0, 4.0, 30)
    noise = 0.02 * jax.random.normal(jax.random.key(0), (64, 30))
    ys = (3.0 * jnp.exp(-0.7 * x))[None, :] + noise
    popt, pcov = jax.vmap(lambda y: jopt.curve_fit(_exp_model, x, y,
                                                   jnp.array([1.0, 1.0])))(ys)
    assert popt.shape == (64, 2) and pcov.shape == (64, 2, 2)
    one, one_cov = jopt.curve_fit(_exp_model, x, ys[5], jnp.array([1.0, 1.0]))
    np.testing.assert_allclose(popt[5], one, rtol=1e-9)
    np.testing.assert_allclose(pcov[5], one_cov, rtol=1e-6)
    with pytest.raises(ValueError, match=r"`sigma` must have shape \(30,\)"):
        jopt.curve_fit(_exp_model, x, ys[0], jnp.array([1.0, 1.0]), sigma=jnp.ones(29))
    with pytest.raises(ValueError, match="`p0` must be a 1-D float array"):
        jopt.curve_fit(_exp_model, x, ys[0], jnp.array([[1.0, 1.0]]))


# ------------------------------------------------------------- success means verified


@settings(max_examples=6, deadline=None, derandomize=True)
@given(method=st.sampled_from(METHODS), loss=st.sampled_from(LOSSES),
       dtype=st.sampled_from([jnp.float32, jnp.float64]),
       start=st.sampled_from([(1.0, 1.0), (0.0, 0.0), (1e3, -5.0), (jnp.nan, 1.0)]),
       gtol=st.sampled_from([1e-8, 1e-3, 0.0]), max_nfev=st.sampled_from([1, 5, None]))
def test_success_means_verified(method, loss, dtype, start, gtol, max_nfev):
    t, y = _decay_data(outliers=True)
    t, y = t.astype(dtype), y.astype(dtype)
    res = jopt.least_squares(decay, jnp.asarray(start, dtype), (t, y), method=method,
                             loss=loss, gtol=gtol, max_nfev=max_nfev)
    status = int(res.status)
    assert status in {int(s) for s in jopt.LeastSquaresStatus if s >= 0}
    assert bool(res.success) == (1 <= status <= 4)
    if max_nfev is not None:
        assert int(res.nfev) <= max_nfev + 1
    if not bool(res.success):
        return
    x = np.asarray(res.x)
    assert np.all(np.isfinite(x)) and np.isfinite(float(res.cost))
    eps = float(jnp.finfo(dtype).eps)
    cost = float(robust_cost(loss, decay(res.x, t, y), jnp.asarray(1.0, dtype)))
    assert abs(float(res.cost) - cost) <= 16 * eps * max(cost, 1e-30) + 1e-30
    if status == jopt.LeastSquaresStatus.GTOL:
        grad = jax.grad(lambda b: robust_cost(loss, decay(b, t, y), jnp.asarray(1.0, dtype)))(
            res.x)
        assert float(jnp.max(jnp.abs(grad))) <= gtol + 64 * eps * 100


# ------------------------------------------------------------------ matrix-free path


@pytest.mark.parametrize("loss", ["linear", "cauchy"])
def test_matrix_free_agrees_with_the_dense_solver(loss):
    t, y = _decay_data(outliers=loss != "linear")
    free = jopt.least_squares(decay, jnp.ones(2), (t, y), loss=loss, f_scale=0.1,
                              tr_solver="cg", ftol=1e-12, xtol=1e-12, gtol=1e-12)
    dense = jopt.least_squares(decay, jnp.ones(2), (t, y), loss=loss, f_scale=0.1,
                               ftol=1e-12, xtol=1e-12, gtol=1e-12)
    assert bool(free.success) and free.jac is None
    np.testing.assert_allclose(free.x, dense.x, rtol=1e-7)
    np.testing.assert_allclose(free.grad, dense.grad, atol=1e-8)


def _cubic_regression(x, a, y):
    z = a @ x
    return z + 0.1 * z ** 3 - y


def test_a_large_problem_is_solved_without_forming_its_jacobian():
    """3,000 residuals × 1,500 parameters: 4.5 million Jacobian entries, above the
    threshold, so the matrix-free solver is chosen; noise-free data are fitted exactly."""
    m, n = 3000, 1500
    key_a, key_x = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (m, n)) / jnp.sqrt(n)
    x_true = jax.random.normal(key_x, (n,))
    z = a @ x_true
    y = z + 0.1 * z ** 3
    res = jopt.least_squares(_cubic_regression, jnp.zeros(n), (a, y), gtol=1e-10)
    assert bool(res.success), res.message
    assert res.jac is None
    np.testing.assert_allclose(res.x, x_true, atol=1e-6)
    assert int(res.njev) < 30


def test_matrix_free_options_are_checked():
    t, y = _decay_data()
    with pytest.raises(ValueError, match=r"`tr_solver='cg'`.*'lm' only"):
        jopt.least_squares(decay, jnp.ones(2), (t, y), method="dogleg", tr_solver="cg")
    with pytest.raises(ValueError, match="`return_jac=True`"):
        jopt.least_squares(decay, jnp.ones(2), (t, y), tr_solver="cg", return_jac=True)
    with pytest.raises(ValueError, match="`tr_solver` must be"):
        jopt.least_squares(decay, jnp.ones(2), (t, y), tr_solver="lsmr")
