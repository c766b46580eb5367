"""Implicit differentiation through minimize: closed forms, finite differences, unrolled solves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt

RNG = np.random.default_rng(0)
A = jnp.asarray(RNG.standard_normal((20, 5)))
B = jnp.asarray(RNG.standard_normal(20))


def ridge(x, lam):
    return 0.5 * jnp.sum((A @ x - B) ** 2) + 0.5 * lam * x @ x


def ridge_closed_form(lam):
    return jnp.linalg.solve(A.T @ A + lam * jnp.eye(5), A.T @ B)


def smooth_robust(x, theta, c):
    """Non-quadratic: log-cosh loss around θ plus a quartic/L2 penalty scaled by c."""
    return jnp.sum(jnp.log(jnp.cosh(A @ x - theta))) + c * (jnp.sum(x**4) / 4 + x @ x / 2)


def solve(theta, c, method="lbfgs"):
    return jopt.minimize(smooth_robust, jnp.zeros(5), args=(theta, c), method=method,
                         tol=1e-12).x


def outer(x):
    return jnp.sum(jnp.sin(x)) + x @ x


@pytest.mark.parametrize("method", ["lbfgs", "newton-cg", "trust-ncg"])
def test_ridge_gradient_matches_closed_form(method):
    def via_solver(lam):
        return outer(jopt.minimize(ridge, jnp.zeros(5), args=(lam,), method=method,
                                   tol=1e-12).x)

    got = jax.grad(via_solver)(0.7)
    expected = jax.grad(lambda lam: outer(ridge_closed_form(lam)))(0.7)
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    fwd = jax.jacfwd(via_solver)(0.7)
    np.testing.assert_allclose(fwd, expected, rtol=1e-8)


def test_reverse_and_forward_jacobians_match_finite_differences():
    theta = jnp.asarray(RNG.standard_normal(20))
    rev = jax.jacrev(lambda t: solve(t, 0.3))(theta)
    fwd = jax.jacfwd(lambda t: solve(t, 0.3))(theta)
    np.testing.assert_allclose(rev, fwd, rtol=1e-9, atol=1e-12)
    eps = 1e-6
    for j in range(0, 20, 4):
        e = jnp.zeros(20).at[j].set(eps)
        fd = (solve(theta + e, 0.3) - solve(theta - e, 0.3)) / (2 * eps)
        np.testing.assert_allclose(rev[:, j], fd, rtol=1e-6, atol=1e-8)
    # and the scalar hyperparameter c
    dc = jax.jacfwd(lambda c: solve(theta, c))(0.3)
    fd = (solve(theta, 0.3 + eps) - solve(theta, 0.3 - eps)) / (2 * eps)
    np.testing.assert_allclose(dc, fd, rtol=1e-6, atol=1e-8)


def test_matches_differentiating_an_unrolled_solve():
    theta = jnp.asarray(RNG.standard_normal(20))

    def unrolled(c):  # 60 exact Newton steps, differentiated step by step by JAX
        def step(x, _):
            g = jax.grad(smooth_robust)(x, theta, c)
            h = jax.hessian(smooth_robust)(x, theta, c)
            return x - jnp.linalg.solve(h, g), None

        return jax.lax.scan(step, jnp.zeros(5), None, length=60)[0]

    np.testing.assert_allclose(unrolled(0.3), solve(theta, 0.3), atol=1e-10)
    np.testing.assert_allclose(jax.jacrev(lambda c: solve(theta, c))(0.3),
                               jax.jacrev(unrolled)(0.3), rtol=1e-7, atol=1e-10)


def test_optimal_value_derivative_is_the_envelope():
    theta = jnp.asarray(RNG.standard_normal(20))

    def f_star(c):
        return jopt.minimize(smooth_robust, jnp.zeros(5), args=(theta, c), tol=1e-12).fun

    eps = 1e-6
    fd = (f_star(0.3 + eps) - f_star(0.3 - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.grad(f_star)(0.3), fd, rtol=1e-6)


def test_grad_under_jit_and_vmap_and_external_solver():
    lams = jnp.asarray([0.1, 1.0, 3.0])
    grads = jax.jit(jax.vmap(jax.grad(
        lambda lam: outer(jopt.minimize(ridge, jnp.zeros(5), args=(lam,), tol=1e-12).x))))(lams)
    for i, lam in enumerate([0.1, 1.0, 3.0]):
        expected = jax.grad(lambda lam: outer(ridge_closed_form(lam)))(lam)
        np.testing.assert_allclose(grads[i], expected, rtol=1e-8)

    # implicit_solution attaches the derivative to any solver's output (here: closed form
    # evaluated without gradient).
    def attached(lam):
        x = jax.lax.stop_gradient(ridge_closed_form(lam))
        return outer(jopt.implicit_solution(ridge, x, (lam,)))

    np.testing.assert_allclose(jax.grad(attached)(0.7),
                               jax.grad(lambda lam: outer(ridge_closed_form(lam)))(0.7),
                               rtol=1e-9)


def test_implicit_diff_can_be_switched_off():
    g = jax.grad(lambda lam: jnp.sum(jopt.minimize(ridge, jnp.zeros(5), args=(lam,),
                                                   implicit_diff=False).x))(0.7)
    assert float(g) == 0.0


def test_pytree_solution_with_a_leaf_independent_of_args():
    # `b` does not depend on lam: its tangent is a symbolic zero (jax-ml/jax#10929).
    def f(p, lam):
        return jnp.sum((p["w"] - 1.0) ** 2) + lam * jnp.sum(p["w"] ** 2) + (p["b"] - 2.0) ** 2

    p0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}

    def total(lam):
        x = jopt.minimize(f, p0, args=(lam,), tol=1e-12).x
        return jnp.sum(x["w"]) + x["b"]

    expected = -3.0 / (1.0 + 1.0) ** 2  # w_i = 1 / (1 + lam)
    np.testing.assert_allclose(jax.grad(total)(1.0), expected, rtol=1e-9)
    np.testing.assert_allclose(jax.jvp(total, (1.0,), (1.0,))[1], expected, rtol=1e-9)
