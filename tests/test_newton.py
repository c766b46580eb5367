"""Newton-CG, trust-region Newton-CG and modified Newton against scipy and closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jopt
from tests.test_minimize import PROBLEMS, make_quadratic

SCIPY = {"newton-cg": "Newton-CG", "trust-ncg": "trust-ncg"}
METHODS = ["newton-cg", "trust-ncg", "newton"]


def scipy_newton(f, x0, method):
    fg = jax.jit(jax.value_and_grad(f))
    hessp = jax.jit(lambda x, v: jopt.hvp(f, x, v))
    return scipy.optimize.minimize(
        lambda x: tuple(np.asarray(v) for v in fg(jnp.asarray(x))), x0, jac=True,
        hessp=lambda x, v: np.asarray(hessp(jnp.asarray(x), jnp.asarray(v))),
        method=method, options={"gtol": 1e-9} if method == "trust-ncg" else {"xtol": 1e-12},
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_matches_scipy_and_closed_forms(method, name):
    f, x0 = PROBLEMS[name]
    res = jopt.minimize(f, jnp.asarray(x0), method=method, tol=1e-8)
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-8
    ref = scipy_newton(f, x0, SCIPY.get(method, "trust-ncg"))
    np.testing.assert_allclose(float(res.fun), ref.fun, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, rtol=1e-5, atol=1e-6)
    assert int(res.nhev) >= int(res.nit) > 0
    # One gradient linearization per iteration (the dense Newton forms Hessians instead).
    linearizations = 0 if method == "newton" else int(res.nit)
    assert int(res.njev) == int(res.nfev) + linearizations


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", METHODS)
def test_random_convex_quadratics_reach_the_exact_minimiser(method, seed):
    f, x_star = make_quadratic(8 + seed, 10 + seed)
    res = jopt.minimize(f, jnp.zeros(x_star.size), method=method, tol=1e-10)
    assert int(res.status) == 0, res.message
    np.testing.assert_allclose(res.x, x_star, rtol=1e-8, atol=1e-9)
    if method == "newton":
        assert int(res.nit) == 1  # one exact Newton step solves a quadratic


@pytest.mark.parametrize("method", METHODS)
def test_indefinite_start_still_descends(method):
    def f(x):  # saddle at the start's neighbourhood: curvature -2 in x[1]
        return x[0] ** 2 - x[1] ** 2 + x[1] ** 4

    res = jopt.minimize(f, jnp.asarray([1.0, 0.01]), method=method, tol=1e-9)
    assert int(res.status) == 0, res.message
    np.testing.assert_allclose(jnp.abs(res.x), [0.0, np.sqrt(0.5)], atol=1e-7)
    assert float(res.fun) < f(jnp.asarray([1.0, 0.01]))


@pytest.mark.parametrize("method", METHODS)
def test_zero_gradient_at_start_stops_immediately(method):
    res = jopt.minimize(lambda x: jnp.sum((x - 2.0) ** 2), jnp.full(3, 2.0), method=method)
    assert int(res.status) == 0 and int(res.nit) == 0 and int(res.nhev) == 0


@pytest.mark.parametrize("method", METHODS)
def test_vmap_over_x0_equals_separate_runs(method):
    f, _ = PROBLEMS["rosenbrock-2"]
    starts = jnp.asarray([[-1.2, 1.0], [2.0, 2.0], [0.5, -0.5]])
    batched = jax.jit(jax.vmap(lambda x: jopt.minimize(f, x, method=method, tol=1e-9)))(starts)
    for i in range(starts.shape[0]):
        single = jopt.minimize(f, starts[i], method=method, tol=1e-9)
        np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-10, atol=1e-12)
        assert int(batched.nhev[i]) == int(single.nhev)


def test_trust_radius_collapse_is_a_status_not_a_nan():
    x0 = jnp.asarray([1.0, -1.0])

    def f(x):  # finite only at x0: every trial step is NaN
        return jnp.sum(x**2) + jnp.where(jnp.all(x == x0), 0.0, jnp.nan)

    res = jopt.minimize(f, x0, method="trust-ncg")
    assert int(res.status) in (jopt.Status.LINESEARCH_FAILED, jopt.Status.PRECISION)
    np.testing.assert_array_equal(res.x, x0)
    assert bool(jnp.isfinite(res.fun))


def test_newton_cg_nan_in_hvp_ends_with_status():
    def f(x):  # gradient finite at x0 but the curvature is NaN there
        return jnp.sum(x**2) + jnp.sum(jnp.sqrt(jnp.abs(x - 3.0)) ** 3)

    res = jopt.minimize(f, jnp.asarray([3.0, 1.0]), method="newton-cg", maxiter=200)
    assert bool(jnp.all(jnp.isfinite(res.x))) and bool(jnp.isfinite(res.fun))
    assert int(res.status) in (0, jopt.Status.LINESEARCH_FAILED, jopt.Status.PRECISION,
                               jopt.Status.NONFINITE)


def test_bad_trust_region_parameters():
    with pytest.raises(ValueError, match="`eta` must lie in"):
        jopt.trust_ncg(eta=0.5)
    with pytest.raises(ValueError, match="`initial_radius`"):
        jopt.trust_ncg(initial_radius=-1.0)


def test_transforms_need_the_objective():
    opt = jopt.newton_cg()
    x = jnp.ones(2)
    with pytest.raises(ValueError, match="needs the objective"):
        opt.update(x, opt.init(x), x)
