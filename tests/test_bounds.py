"""Bound constraints through the public API (jopt.minimize / minimize_many /
minimize_init+run with ``bounds=``), for every bounded method, against scipy's L-BFGS-B
(solution and active set), KKT conditions checked here, and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import jopt

BOUNDED = ["l-bfgs-b", "trust-region-newton"]
# API plumbing shared by both methods is checked with L-BFGS-B alone (test_tron.py covers
# the Newton method's own vmap and pytree handling); oracles run on both.
LBFGSB = ["l-bfgs-b"]


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def quadratic(x, a, b):
    return 0.5 * x @ a @ x - b @ x


def _spd(n: int, seed: int, cond: float = 100.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(np.logspace(0, np.log10(cond), n)) @ q.T
    return jnp.asarray(a), jnp.asarray(rng.standard_normal(n) * 3.0)


def _kkt(x, g, lower, upper, tol):
    """First-order conditions of the box problem, checked without jopt: free entries have
    zero gradient, an entry on its lower (upper) bound a non-negative (non-positive) one."""
    x, g, lower, upper = (np.asarray(v, np.float64) for v in (x, g, lower, upper))
    assert np.all(x >= lower) and np.all(x <= upper)
    at_lo, at_hi = x <= lower, x >= upper
    free = ~(at_lo | at_hi)
    assert np.all(np.abs(g[free]) <= tol)
    assert np.all(g[at_lo] >= -tol) and np.all(g[at_hi] <= tol)


@pytest.mark.parametrize("method", BOUNDED)
def test_bounded_rosenbrock_matches_scipy_solution_and_active_set(method):
    n = 10
    lower = np.full(n, -2.0)
    upper = np.where(np.arange(n) % 2 == 0, 0.5, 2.0)  # cuts through x* = 1
    x0 = jnp.full(n, -1.2)
    res = jopt.minimize(rosenbrock, x0, method=method, bounds=(lower, upper), tol=1e-9)
    ref = scipy.optimize.minimize(lambda x: float(rosenbrock(jnp.asarray(x))), np.asarray(x0),
                                  jac=lambda x: np.asarray(jax.grad(rosenbrock)(jnp.asarray(x))),
                                  method="L-BFGS-B", bounds=list(zip(lower, upper, strict=True)),
                                  options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 5000})
    assert bool(res.success), res.message
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=1e-5)
    np.testing.assert_allclose(float(res.fun), ref.fun, rtol=1e-8, atol=1e-12)
    ref_active = (ref.x <= lower + 1e-8) | (ref.x >= upper - 1e-8)
    np.testing.assert_array_equal(np.asarray(res.active_mask), ref_active)
    _kkt(res.x, jax.grad(rosenbrock)(res.x), lower, upper, 1e-6)


@pytest.mark.parametrize("method", BOUNDED)
@pytest.mark.parametrize("seed", range(2))
def test_bounded_quadratic_meets_kkt_and_matches_scipy(method, seed):
    a, b = _spd(8, seed)
    lower, upper = -np.ones(8), np.ones(8) * 0.5
    res = jopt.minimize(quadratic, jnp.zeros(8), (a, b), method=method,
                        bounds=(lower, upper), tol=1e-10)
    assert bool(res.success), res.message
    _kkt(res.x, a @ res.x - b, lower, upper, 1e-8)
    ref = scipy.optimize.minimize(lambda x: float(quadratic(jnp.asarray(x), a, b)),
                                  np.zeros(8), jac=lambda x: np.asarray(a @ x - b),
                                  method="L-BFGS-B", bounds=list(zip(lower, upper, strict=True)),
                                  options={"gtol": 1e-12, "ftol": 1e-16})
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=1e-6)


def test_scipy_spellings_of_method_and_bounds():
    a, b = _spd(3, 0)
    lower, upper = np.array([0.0, -1.0, -np.inf]), np.array([np.inf, 1.0, 0.2])
    ref = jopt.minimize(quadratic, jnp.zeros(3), (a, b), method="l-bfgs-b",
                        bounds=(lower, upper))
    pairs = [(0.0, None), (-1.0, 1.0), (None, 0.2)]
    for method, bounds in [("L-BFGS-B", pairs),
                           ("L-BFGS-B", scipy.optimize.Bounds(lower, upper)),
                           ("lbfgsb", (list(lower), list(upper)))]:
        res = jopt.minimize(quadratic, jnp.zeros(3), (a, b), method=method, bounds=bounds)
        np.testing.assert_array_equal(np.asarray(res.x), np.asarray(ref.x))


@pytest.mark.parametrize("method", LBFGSB)
def test_pytree_bounds_with_infinite_and_scalar_sides(method):
    def fun(p):
        return jnp.sum((p["w"] - 2.0) ** 2) + (p["b"] + 3.0) ** 2

    x0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    res = jopt.minimize(fun, x0, method=method,
                        bounds=({"w": -jnp.inf, "b": -1.0}, {"w": jnp.array([1.0, 5.0, 1.5]),
                                                             "b": jnp.inf}))
    np.testing.assert_allclose(np.asarray(res.x["w"]), [1.0, 2.0, 1.5], atol=1e-6)
    np.testing.assert_allclose(float(res.x["b"]), -1.0)
    np.testing.assert_array_equal(np.asarray(res.active_mask["w"]), [True, False, True])
    assert bool(res.active_mask["b"])


@pytest.mark.parametrize("method", BOUNDED)
def test_x0_outside_the_box_is_projected_and_iterates_stay_inside(method):
    seen = []
    res = jopt.minimize(rosenbrock, jnp.array([5.0, -7.0, 3.0]), method=method,
                        bounds=(-1.0, 1.5), callback=lambda r: seen.append(np.asarray(r.x)))
    assert bool(res.success)
    xs = np.stack(seen)
    assert np.all(xs >= -1.0) and np.all(xs <= 1.5)


@pytest.mark.parametrize("bad", [
    ((1.0, 0.0), "lower > upper"),
    ((np.nan, 1.0), "NaN"),
    ((jnp.zeros(2), 1.0), "does not broadcast"),
    (({"a": 0.0}, 1.0), "structure"),
    ("box", "tuple"),
])
@pytest.mark.parametrize("wrap", ["eager", "jit"])
def test_bad_bounds_are_refused_naming_the_argument(bad, wrap):
    """Also under ``jit``, where ``x0`` is traced but the bounds are concrete numbers."""
    bounds, match = bad
    solve = lambda x0: jopt.minimize(rosenbrock, x0, method="l-bfgs-b",  # noqa: E731
                                     bounds=bounds).x
    with pytest.raises((ValueError, TypeError), match=f"`bounds`.*{match}|{match}.*`bounds`"):
        (jax.jit(solve) if wrap == "jit" else solve)(jnp.zeros(3))


def test_a_method_without_bounds_is_refused_by_name():
    with pytest.raises(ValueError, match="`method` 'bfgs' does not take `bounds`"):
        jopt.minimize(rosenbrock, jnp.zeros(3), method="bfgs", bounds=(0.0, 1.0))


def test_an_optax_transform_takes_projected_steps():
    a, b = _spd(4, 1, cond=4.0)
    res = jopt.minimize(quadratic, jnp.zeros(4), (a, b), method=optax.sgd(0.2),
                        bounds=(-0.3, 0.3), tol=1e-8, maxiter=20_000)
    ref = jopt.minimize(quadratic, jnp.zeros(4), (a, b), method="l-bfgs-b",
                        bounds=(-0.3, 0.3), tol=1e-10)
    assert bool(res.success)
    np.testing.assert_allclose(np.asarray(res.x), np.asarray(ref.x), atol=1e-6)


@pytest.mark.parametrize("method", LBFGSB)
def test_vmap_over_x0_and_bounds_equals_separate_solves(method):
    uppers = jnp.array([0.3, 0.8, 2.0])
    x0s = jnp.array([[-1.0, 0.0], [0.2, 0.2], [-0.5, 1.5]])

    @jax.jit
    def solve(x0, hi):
        return jopt.minimize(rosenbrock, x0, method=method, bounds=(-2.0, hi), tol=1e-8).x

    batched = jax.vmap(solve)(x0s, uppers)
    for i in range(3):
        one = jopt.minimize(rosenbrock, x0s[i], method=method, bounds=(-2.0, float(uppers[i])),
                            tol=1e-8)
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(one.x), atol=1e-6)


@pytest.mark.parametrize("method", LBFGSB)
def test_minimize_many_with_per_member_bounds_equals_separate_solves(method):
    a, b = _spd(5, 2)
    uppers = jnp.linspace(0.1, 1.0, 6)[:, None] * jnp.ones((1, 5))
    res = jopt.minimize_many(quadratic, jnp.zeros((6, 5)), (a, b), method=method,
                             bounds=(-1.0, uppers), tol=1e-9, segment=2)
    for i in (0, 5):
        one = jopt.minimize(quadratic, jnp.zeros(5), (a, b), method=method,
                            bounds=(-1.0, uppers[i]), tol=1e-9)
        np.testing.assert_allclose(np.asarray(res.x[i]), np.asarray(one.x), atol=1e-7)
    assert res.active_mask.shape == (6, 5)


@pytest.mark.parametrize("method", BOUNDED)
def test_segmented_bounded_solve_equals_one_call(method):
    lower, upper = -1.0, jnp.array([0.5, 2.0, 0.7])
    one = jopt.minimize(rosenbrock, jnp.zeros(3), method=method, bounds=(lower, upper))
    state = jopt.minimize_init(rosenbrock, jnp.zeros(3), method=method, bounds=(lower, upper))
    while int(state.status) < 0:
        state = jopt.minimize_run(rosenbrock, state, method=method, bounds=(lower, upper),
                                  num_steps=3)
    res = jopt.minimize_result(state, bounds=(lower, upper))
    np.testing.assert_array_equal(np.asarray(res.x), np.asarray(one.x))
    assert int(res.nit) == int(one.nit) and int(res.nfev) == int(one.nfev)
    np.testing.assert_array_equal(np.asarray(res.active_mask), np.asarray(one.active_mask))


@pytest.mark.parametrize("method", BOUNDED)
def test_derivative_of_a_bounded_solution_matches_finite_differences(method):
    """d x*/d b with the active set held: free entries move as the implicit function
    theorem says, active ones stay on their bounds (the set is stable for small steps)."""
    a, b = _spd(6, 3, cond=10.0)
    free = jnp.linalg.solve(a, b)  # the unconstrained solution; bound two entries below it
    lower = jnp.full(6, -jnp.inf)
    upper = jnp.full(6, jnp.inf).at[:2].set(free[:2] - 0.3)

    def solution(b):
        return jopt.minimize(quadratic, jnp.zeros(6), (a, b), method=method,
                             bounds=(lower, upper), tol=1e-12).x

    x = solution(b)
    active = np.asarray((x <= lower) | (x >= upper))
    assert active.any() and not active.all()
    direction = jnp.asarray(np.random.default_rng(0).standard_normal(6))
    _, tangent = jax.jvp(solution, (b,), (direction,))
    h = 1e-5
    fd = (solution(b + h * direction) - solution(b - h * direction)) / (2 * h)
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(fd), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(tangent)[active], 0.0)


@pytest.mark.parametrize("method", BOUNDED)
def test_float32_bounded_solve_is_verified(method):
    lower = jnp.full(6, -2.0, jnp.float32)
    upper = jnp.where(jnp.arange(6) % 2 == 0, 0.5, 2.0).astype(jnp.float32)
    res = jopt.minimize(rosenbrock, jnp.full(6, -1.2, jnp.float32), method=method,
                        bounds=(lower, upper), tol=1e-3)
    assert res.x.dtype == jnp.float32
    assert int(res.status) in (0, 4, 6)
    if bool(res.success):
        _kkt(res.x, jax.grad(rosenbrock)(res.x), lower, upper, 1e-3 * 1.01)
    assert np.all(np.isfinite(np.asarray(res.x)))


def test_repeat_bounded_calls_take_the_cached_path_and_still_check_the_bounds(monkeypatch):
    """A second eager call with the same kinds of bounds skips the checked path (one
    program, called directly) but still projects ``x0``, checks the bounds' values and
    reports the active set."""
    from jopt.solve import api

    lo, hi = jnp.full(3, -1.0), jnp.full(3, 0.5)
    first = jopt.minimize(rosenbrock, jnp.zeros(3), method="l-bfgs-b", bounds=(lo, hi))

    def checked_path(*a, **k):
        raise AssertionError("the checked path ran")

    monkeypatch.setattr(api, "_prepare", checked_path)
    again = jopt.minimize(rosenbrock, jnp.full(3, 9.0, jnp.float64), method="l-bfgs-b",
                          bounds=(lo, hi))  # (x0 outside: projected)
    np.testing.assert_allclose(np.asarray(again.x), np.asarray(first.x), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(again.active_mask),
                                  np.asarray(first.active_mask))
    assert np.asarray(again.active_mask).any()
    with pytest.raises(ValueError, match="`bounds` contain NaN"):
        jopt.minimize(rosenbrock, jnp.zeros(3), method="l-bfgs-b",
                      bounds=(lo.at[1].set(jnp.nan), hi))
    with pytest.raises(ValueError, match="lower > upper"):
        jopt.minimize(rosenbrock, jnp.zeros(3), method="l-bfgs-b", bounds=(hi, lo))
