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


def test_newton_cg_first_step_negative_curvature_is_scaled_steepest_descent():
    # f = ½xᵀAx with A indefinite and x chosen so that gᵀAg < 0 (g = Ax): CG stops at its
    # first iteration; the direction is -(gᵀg/|gᵀAg|)·g, as in scipy's Newton-CG.
    a = np.diag([1.0, -4.0, 2.0])
    x = jnp.asarray([0.1, 0.5, 0.2])
    g = a @ np.asarray(x)
    assert g @ a @ g < 0
    tx = jopt.transforms.scale_by_newton_cg()
    d, state = tx.update(jnp.asarray(g), tx.init(x), x,
                         value_fn=lambda z: 0.5 * z @ jnp.asarray(a) @ z)
    assert bool(state.negative_curvature) and int(state.cg_iters) == 1
    np.testing.assert_allclose(np.asarray(d), -(g @ g) / abs(g @ a @ g) * g, rtol=1e-12)


def test_trust_ncg_converges_where_f_differences_are_rounding_noise():
    # A large constant makes f(x) - f(x+p) pure rounding noise once ‖g‖ < ~1e-5, far above
    # the tolerance: a ρ from f differences is then random and the radius collapses.
    # ρ by the trapezoid rule (Conn, Gould & Toint §17.4.2) converges.
    rng = np.random.default_rng(0)
    q = rng.standard_normal((6, 6))
    a = jnp.asarray(q @ q.T + np.eye(6))

    def f(x):
        return 1e8 + 0.5 * x @ a @ x + 0.25 * jnp.sum(x**4)

    x0 = jnp.asarray(rng.standard_normal(6))
    res = jopt.minimize(f, x0, method="trust-ncg", tol=1e-9)
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    assert float(jnp.max(jnp.abs(jax.grad(f)(res.x)))) <= 1e-9
    np.testing.assert_allclose(np.asarray(res.x), np.zeros(6), atol=1e-8)


def test_trust_ncg_actual_decrease_by_gradients_is_exact_on_quadratics():
    from jopt.transforms.newton import actual_decrease

    a = jnp.asarray([[3.0, 1.0], [1.0, 2.0]])
    x, p = jnp.asarray([1e-9, -2e-9]), jnp.asarray([-1e-9, 1.5e-9])
    f = lambda z: 1e6 + 0.5 * z @ a @ z  # noqa: E731
    exact = 0.5 * x @ a @ x - 0.5 * (x + p) @ a @ (x + p)  # no constant: no rounding
    got = actual_decrease(f(x), f(x + p), a @ x, a @ (x + p), p, jnp.asarray(1e-20))
    np.testing.assert_allclose(float(got), float(exact), rtol=1e-12)
    # Far above the noise level the difference of values is used.
    big = actual_decrease(jnp.asarray(10.0), jnp.asarray(4.0), a @ x, a @ x, p,
                           jnp.asarray(5.0))
    assert float(big) == 6.0


def test_trust_ncg_radius_grows_past_1000_on_badly_scaled_problems():
    # MGH #4 (Brown badly scaled): x* = (1e6, 2e-6) from (1, 1). With scipy's cap of 1000
    # on the radius this takes > 2000 iterations; the default cap (1e10) does not bind.
    def f(x):
        return (x[0] - 1e6) ** 2 + (x[1] - 2e-6) ** 2 + (x[0] * x[1] - 2.0) ** 2

    res = jopt.minimize(f, jnp.asarray([1.0, 1.0]), method="trust-ncg", maxiter=200)
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    np.testing.assert_allclose(np.asarray(res.x), [1e6, 2e-6], rtol=1e-9)
    capped = jopt.minimize(f, jnp.asarray([1.0, 1.0]), method=jopt.trust_ncg(max_radius=1e3),
                           maxiter=200)
    assert int(capped.status) == jopt.Status.MAXITER
