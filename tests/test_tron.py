"""trust_region_newton (TRON, Lin & Moré 1999) against oracles: scipy's L-BFGS-B on
bounded Rosenbrock, the exact solution of random box QPs (active-set enumeration), the
unconstrained minimizer without bounds, KKT conditions checked independently, honest
counters (evaluations counted by a host callback, products by a counting HVP), restarts
after a failed step, float32, and vmap over starting points and bounds.

Rosenbrock and the obstacle problem run through ``jopt.minimize(..., bounds=)``; the QPs
in a small ``lax.while_loop`` of the test's own, which follows the loop's contract
(``update(..., lower=, upper=)``, stop at ``‖P(x − g) − x‖∞ <= tol``, a second failure in
a row ends the run) and watches every iterate, also under ``vmap``.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import jopt
import jopt.transforms.tron as tron
from jopt.box import projected_gradient
from jopt.step import StepStatus, step_record
from jopt.transforms.tron import TronState, trust_region_newton
from jopt.tree import tree_inf_norm

# ------------------------------------------------------------------ problems


def rosenbrock(x, data):
    del data
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def quadratic(x, data):
    a, b = data
    return 0.5 * x @ (a @ x) - b @ x


def obstacle(u, data):
    """Elastic membrane over [0,1]² pushed up by a load, under a ceiling (the bounds):
    ½‖∇u‖² − ∫10u, finite differences on an m×m grid (after MINPACK-2's obstacle problem)."""
    del data
    m = round(u.shape[0] ** 0.5)
    h = 1.0 / (m + 1)
    p = jnp.pad(u.reshape(m, m), 1)
    gx, gy = (p[1:, 1:-1] - p[:-1, 1:-1]) / h, (p[1:-1, 1:] - p[1:-1, :-1]) / h
    return 0.5 * h * h * (jnp.sum(gx**2) + jnp.sum(gy**2)) - 10.0 * h * h * jnp.sum(u)


def _ceiling(m: int) -> np.ndarray:
    s = np.linspace(1, m, m) / (m + 1)
    xx, yy = np.meshgrid(s, s)
    return (0.2 + 0.3 * np.sin(np.pi * xx) * np.sin(2 * np.pi * yy) ** 2).ravel()


def _solve(fun, x0, lower, upper, data, *, tol, maxit=300):
    """The loop's contract in a while_loop: returns x, f, g, iterations, the record's work,
    the largest bound violation of any iterate, the number of FAILED steps and the most
    minor iterations an update made."""
    tx = trust_region_newton()
    value_fn = lambda y: fun(y, data)  # noqa: E731
    f0, g0 = jax.value_and_grad(value_fn)(x0)

    def violation(x):
        return jnp.maximum(jnp.max(lower - x, initial=0.0), jnp.max(x - upper, initial=0.0))

    def cond(c):
        x, _, g, _, it, _, _, streak, _ = c
        measure = tree_inf_norm(projected_gradient(x, g, lower, upper))
        return (measure > tol) & (it < maxit) & (streak < 2)

    def body(c):
        x, f, g, state, it, worst, fails, streak, minor = c
        u, state = tx.update(g, state, x, value=f, value_fn=value_fn, lower=lower,
                             upper=upper)
        record = step_record(state)
        x = optax.apply_updates(x, u)
        failed = record.status == StepStatus.FAILED
        return (x, record.value, record.grad, state, it + 1,
                jnp.maximum(worst, violation(x)), fails + failed,
                jnp.where(failed, streak + 1, 0), jnp.maximum(minor, state.minor_iters))

    init = (x0, f0, g0, tx.init(x0), 0, violation(x0), 0, 0, 0)
    x, f, g, state, it, worst, fails, _, minor = jax.lax.while_loop(cond, body, init)
    return x, f, g, it, step_record(state).work, worst, fails, minor


@functools.cache
def _qp_driver(tol: float, batched: bool = False):
    """The compiled test loop on ``quadratic`` (data, bounds and start traced)."""

    def run(x0, lower, upper, data):
        return _solve(quadratic, x0, lower, upper, data, tol=tol)

    return jax.jit(jax.vmap(run) if batched else run)


def _kkt_residual(x, g, lower, upper):
    """max violation of the box KKT conditions, computed componentwise from scratch:
    |g_i| at free entries, max(−g_i, 0) at a lower bound, max(g_i, 0) at an upper one.
    An entry within 4 units in the last place of a bound is on it (an interior step can
    end one unit short of a bound; the projected gradient there is that unit)."""
    x, g, lower, upper = (np.asarray(a, np.float64) for a in (x, g, lower, upper))
    with np.errstate(invalid="ignore"):
        at_lo = x <= lower + 4 * np.spacing(np.abs(lower))
        at_hi = x >= upper - 4 * np.spacing(np.abs(upper))
    r = np.where(at_lo & at_hi, 0.0,
                 np.where(at_lo, np.maximum(-g, 0.0),
                          np.where(at_hi, np.maximum(g, 0.0), np.abs(g))))
    return float(np.max(r))


def _lbfgsb(fun, x0, lower, upper, data, gtol):
    vg = jax.jit(jax.value_and_grad(lambda y: fun(jnp.asarray(y), data)))

    def f_and_g(y):
        v, g = vg(y)
        return float(v), np.asarray(g, np.float64)

    return scipy.optimize.minimize(
        f_and_g, np.asarray(x0, np.float64), jac=True, method="L-BFGS-B",
        bounds=list(zip(np.asarray(lower), np.asarray(upper), strict=True)),
        options={"ftol": 0.0, "gtol": gtol, "maxiter": 10_000, "maxfun": 20_000})


def _rosenbrock_box(n=10):
    lower, upper = np.full(n, -0.5), np.full(n, 0.8)
    lower[3], upper[3] = 0.3, 0.3  # a fixed variable (lower == upper)
    upper[6] = 2.0
    lower[9] = 0.05  # active at the solution (x₉ ≈ x₈² would be ≈ 1e-4)
    x0 = np.clip(np.random.default_rng(0).uniform(-1, 1, n), lower, upper)
    return jnp.asarray(x0), jnp.asarray(lower), jnp.asarray(upper)


# ----------------------------------------------- Rosenbrock through jopt.minimize

TRON = trust_region_newton()  # one instance: jopt.minimize reuses its compiled programs
_ITERATES: list = []


def _keep_iterate(info) -> None:
    """minimize's callback: every iterate, on the host."""
    _ITERATES.append(np.asarray(info.x))


def _rosenbrock(x):
    return rosenbrock(x, 0.0)


def _minimize(x0, bounds, tol):
    """jopt.minimize with the transform; returns the result and every iterate."""
    _ITERATES.clear()
    res = jopt.minimize(_rosenbrock, x0, method=TRON, bounds=bounds, tol=tol,
                        callback=_keep_iterate)
    return res, np.stack(_ITERATES)


def test_bounded_rosenbrock_matches_lbfgsb_active_set_and_kkt():
    x0, lower, upper = _rosenbrock_box()
    res, iterates = _minimize(x0, (lower, upper), 1e-9)
    ref = _lbfgsb(rosenbrock, x0, lower, upper, 0.0, 1e-11)
    x = np.asarray(res.x)
    lo, hi = np.asarray(lower), np.asarray(upper)
    assert bool(res.success) and int(res.status) == 0
    assert np.all((iterates >= lo) & (iterates <= hi))  # every iterate in the box, exactly
    np.testing.assert_allclose(x, ref.x, atol=1e-7)
    assert abs(float(res.fun) - ref.fun) <= 1e-10 * abs(ref.fun)
    on_bounds = lambda z: (np.isclose(z, lo, atol=1e-8), np.isclose(z, hi, atol=1e-8))  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(on_bounds(x), on_bounds(ref.x),
                                                    strict=True))
    assert np.any((x == lo) & (lo < hi)) and np.any((x == hi) & (lo < hi))
    np.testing.assert_array_equal(np.asarray(res.active_mask), (x <= lo) | (x >= hi))
    assert _kkt_residual(x, jax.grad(_rosenbrock)(res.x), lower, upper) <= 1e-9
    # the loop's counters are the transform's: one evaluation per iteration (+ the start),
    # one linearization per iteration (njev counts both), products in nhev
    assert int(res.nfev) == int(res.nit) + 1 and int(res.njev) == 2 * int(res.nit) + 1
    assert int(res.nhev) > int(res.nit)
    # Newton's pace: far fewer evaluations than the quasi-Newton oracle
    assert int(res.nfev) < ref.nfev and int(res.nit) <= 40


def test_unbounded_is_trust_region_newton_cg_and_infinite_bounds_are_no_bounds():
    n = 10
    x0 = jnp.zeros(n)
    free, free_iterates = _minimize(x0, None, 1e-9)
    inf = jnp.full(n, jnp.inf)
    boxed, boxed_iterates = _minimize(x0, (-inf, inf), 1e-9)
    value_and_grad = jax.jit(jax.value_and_grad(_rosenbrock))
    hessp = jax.jit(lambda y, p: jax.jvp(jax.grad(_rosenbrock), (y,), (p,))[1])
    oracle = scipy.optimize.minimize(
        lambda y: tuple(map(np.asarray, value_and_grad(jnp.asarray(y)))), np.zeros(n),
        method="trust-ncg", jac=True,
        hessp=lambda y, p: np.asarray(hessp(jnp.asarray(y), jnp.asarray(p))),
        options={"gtol": 1e-9})
    assert oracle.success and bool(free.success)
    np.testing.assert_allclose(np.asarray(free.x), oracle.x, atol=1e-8)
    np.testing.assert_allclose(np.asarray(free.x), np.ones(n), atol=1e-8)
    assert float(tree_inf_norm(free.jac)) <= 1e-9
    assert int(free.nfev) <= oracle.nfev  # (scipy: 68 evaluations)
    # ±inf bounds take the same steps as no bounds (to rounding: with bounds the projected
    # gradient P(x − g) − x is computed, which rounds differently from −g)
    assert int(boxed.nit) == int(free.nit) and boxed_iterates.shape == free_iterates.shape
    np.testing.assert_allclose(boxed_iterates, free_iterates, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(boxed.x), np.asarray(free.x), rtol=0, atol=1e-12)


def test_float32_keeps_its_dtype_and_finds_the_float64_solution():
    x0, lower, upper = (a.astype(jnp.float32) for a in _rosenbrock_box())
    res, iterates = _minimize(x0, (lower, upper), 1e-4)
    ref = _lbfgsb(rosenbrock, x0, lower, upper, 0.0, 1e-11)
    assert res.x.dtype == res.fun.dtype == res.jac.dtype == jnp.float32
    assert bool(res.success)
    assert np.all((iterates >= np.asarray(lower)) & (iterates <= np.asarray(upper)))
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=2e-3)
    assert _kkt_residual(res.x, res.jac, lower, upper) <= 1e-3
    state = trust_region_newton().init(x0)
    assert all(leaf.dtype in (jnp.float32, jnp.int32, jnp.bool_)
               for leaf in jax.tree.leaves(state))


# ------------------------------------------------------------- random box QPs


def exact_box_qp(a, b, lower, upper):
    """The minimizer of ½xᵀAx − bᵀx on the box (A SPD) by enumerating active sets:
    the unique point whose free part solves the reduced system and whose multipliers
    have the right signs."""
    n = len(b)
    for pattern in itertools.product((0, 1, 2), repeat=n):  # free, at lower, at upper
        kind = np.array(pattern)
        fixed = kind > 0
        if np.any((kind == 1) & ~np.isfinite(lower)) or np.any((kind == 2) & ~np.isfinite(upper)):
            continue
        x = np.where(kind == 1, lower, np.where(kind == 2, upper, 0.0))
        free = ~fixed
        if free.any():
            rhs = b[free] - a[np.ix_(free, fixed)] @ x[fixed]
            x[free] = np.linalg.solve(a[np.ix_(free, free)], rhs)
        g = a @ x - b
        slack = 1e-9 * (1 + np.abs(x))
        if (np.all(x >= lower - slack) and np.all(x <= upper + slack)
                and np.all(g[kind == 1] >= -1e-9) and np.all(g[kind == 2] <= 1e-9)):
            return x
    raise AssertionError("no KKT point found")


def _random_qp(seed: int, n: int = 5):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.geomspace(0.1, 10.0, n)) @ q.T
    a = 0.5 * (a + a.T)
    b = 3.0 * rng.standard_normal(n)
    lower = rng.uniform(-1.5, 0.5, n)
    upper = lower + rng.uniform(0.0, 2.0, n)
    pinned = rng.random(n) < 0.15
    upper[pinned] = lower[pinned]  # some variables fixed: lower == upper
    lower[rng.random(n) < 0.2] = -np.inf
    upper[rng.random(n) < 0.2] = np.inf
    x0 = np.clip(rng.uniform(-2, 2, n), lower, upper)
    return x0, lower, upper, a, b


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_box_qp_equals_its_exact_solution(seed):
    x0, lower, upper, a, b = _random_qp(seed)
    exact = exact_box_qp(a, b, lower, upper)
    x, _, _, it, _, worst, fails, _ = _qp_driver(1e-10)(
        *map(jnp.asarray, (x0, lower, upper)), (jnp.asarray(a), jnp.asarray(b)))
    assert int(fails) == 0 and float(worst) <= 0.0
    np.testing.assert_allclose(np.asarray(x), exact, atol=1e-8)
    assert _kkt_residual(x, a @ np.asarray(x) - b, lower, upper) <= 1e-9
    assert int(it) <= 25


def test_vmap_over_starting_points_and_bounds():
    problems = [_random_qp(seed) for seed in (1, 2, 3, 4)]
    x0, lower, upper, a, b = (jnp.asarray(np.stack(p)) for p in zip(*problems, strict=True))
    xs, _, _, its, work, worst, fails, minor = _qp_driver(1e-10, batched=True)(
        x0, lower, upper, (a, b))
    assert np.all(np.asarray(worst) <= 0.0) and np.all(np.asarray(fails) == 0)
    assert int(np.max(minor)) >= 2  # a CG step cut by a bound, then a search on the new face
    one = _qp_driver(1e-10)
    for k, (x0k, lok, hik, ak, bk) in enumerate(problems):
        np.testing.assert_allclose(np.asarray(xs[k]), exact_box_qp(ak, bk, lok, hik),
                                   atol=1e-8)
        single = one(*map(jnp.asarray, (x0k, lok, hik)), (jnp.asarray(ak), jnp.asarray(bk)))
        assert int(its[k]) == int(single[3]) and int(work.nfev[k]) == int(single[4].nfev)
        np.testing.assert_allclose(np.asarray(xs[k]), np.asarray(single[0]), atol=1e-12)


# ------------------------------------------------------------------- counters


def test_counters_are_honest_and_nfev_beats_lbfgsb_on_an_obstacle_problem(monkeypatch):
    """Every evaluation of f is seen by a host callback (each value-and-gradient and each
    linearization runs f once), every Hessian-vector product by a counting product."""
    seen = {"f": 0, "hvp": 0}

    def count(key):
        return lambda: seen.__setitem__(key, seen[key] + 1)

    real = tron.grad_and_hvp_fn

    def counting_grad_and_hvp_fn(f, x):
        grad, hvp = real(f, x)

        def counted(v):
            jax.debug.callback(count("hvp"))
            return hvp(v)

        return grad, counted

    monkeypatch.setattr(tron, "grad_and_hvp_fn", counting_grad_and_hvp_fn)

    def counted_obstacle(u):
        jax.debug.callback(count("f"))
        return obstacle(u, None)

    m = 20
    ceiling = jnp.asarray(_ceiling(m))
    floor = jnp.full(m * m, -jnp.inf)
    x0 = jnp.zeros(m * m)
    res = jopt.minimize(counted_obstacle, x0, method=trust_region_newton(),
                        bounds=(floor, ceiling), tol=1e-8)
    assert bool(res.success)
    assert np.all(np.asarray(res.x) <= np.asarray(ceiling))
    # minimize's counters: f at the start, then one f (with ∇f) and one linearization of
    # ∇f (which runs f once more) per iteration; njev = nfev + the linearizations
    assert seen["f"] == int(res.njev) == 2 * int(res.nit) + 1
    assert int(res.nfev) == int(res.nit) + 1
    assert seen["hvp"] == int(res.nhev) > 0

    ref = _lbfgsb(obstacle, x0, floor, ceiling, None, 1e-8)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=1e-5)
    assert float(res.fun) <= ref.fun + 1e-10 * abs(ref.fun)
    touching = np.asarray(res.x) >= np.asarray(ceiling)
    assert touching.sum() > 20  # the membrane lies on the ceiling over a region
    print(f"\nobstacle n={m * m}: TRON nfev={int(res.nfev)} (+{int(res.nhev)} Hessian-vector "
          f"products), scipy L-BFGS-B nfev={ref.nfev}")
    assert 3 * int(res.nfev) <= ref.nfev


# ------------------------------------------------------- rejections and restarts


def test_rejected_steps_shrink_the_radius_and_a_failure_restarts_the_method():
    """f is finite only at the start: every trial is rejected (step 0, ACCEPTED, zero
    update, the start's value and gradient kept) until the radius collapses (FAILED);
    the next update starts again from the initial radius. Pytree params, scalar bounds."""
    x0 = {"a": jnp.array([0.5, -0.25]), "b": jnp.array(0.75, jnp.float64)}

    def fun(p):
        value = jnp.sum(p["a"] ** 2) + p["b"] ** 2
        at_start = jnp.all(p["a"] == x0["a"]) & (p["b"] == x0["b"])
        return jnp.where(at_start, value, jnp.nan)

    tx = trust_region_newton(initial_radius=1.0)
    f0, g0 = jax.value_and_grad(fun)(x0)

    @jax.jit
    def step(state):
        updates, state = tx.update(g0, state, x0, value=f0, value_fn=fun, lower=-1.0,
                                   upper=1.0)
        record = state.record
        moved = tree_inf_norm(updates)
        return state, (moved, record.step, record.value, state.radius, record.status)

    state = tx.init(x0)
    radii = []
    for _ in range(60):
        state, out = step(state)
        moved, taken, value, radius, status = map(float, out)
        assert moved == 0.0 and taken == 0.0 and value == float(f0)
        radii.append(radius)
        if status == StepStatus.FAILED:
            break
    else:
        pytest.fail("the radius never collapsed")
    assert len(radii) > 3 and all(b < a for a, b in itertools.pairwise(radii))
    state, out = step(state)  # restarted: radius from the initial 1.0, then shrunk once
    assert float(out[4]) == StepStatus.ACCEPTED
    assert 0.2 <= float(out[3]) <= 0.5
    assert isinstance(state, TronState)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="eta"):
        trust_region_newton(eta=0.3)
    with pytest.raises(ValueError, match="initial_radius"):
        trust_region_newton(initial_radius=-1.0)
    with pytest.raises(ValueError, match="max_minor"):
        trust_region_newton(max_minor=0)
    tx = trust_region_newton()
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match="value_fn"):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match="lower"):
        tx.update(x, tx.init(x), x, value_fn=jnp.sum, lower=1.0, upper=0.0)
