"""jopt.minimize with L-BFGS, BFGS and nonlinear CG against scipy, plus driver behaviour."""

from __future__ import annotations

import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import jopt
from jopt.linesearch import LineSearchStatus


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def extended_rosenbrock(x):
    """MGH #21: independent Rosenbrock pairs (unique minimiser, unlike the chained form)."""
    pairs = x.reshape(-1, 2)
    return jnp.sum(100.0 * (pairs[:, 1] - pairs[:, 0] ** 2) ** 2 + (1.0 - pairs[:, 0]) ** 2)


def beale(x):
    return ((1.5 - x[0] + x[0] * x[1]) ** 2 + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2
            + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2)


def make_quadratic(n, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(np.logspace(0, 2, n)) @ q.T
    b = rng.standard_normal(n)
    x_star = np.linalg.solve(a, b)
    a, b = jnp.asarray(a), jnp.asarray(b)
    return (lambda x: 0.5 * x @ (a @ x) - b @ x), x_star


def make_logistic(seed):
    rng = np.random.default_rng(seed)
    features = jnp.asarray(rng.standard_normal((200, 8)))
    labels = jnp.asarray(rng.integers(0, 2, 200) * 2.0 - 1.0)

    def f(w):
        return jnp.mean(jnp.logaddexp(0.0, -labels * (features @ w))) + 0.5e-2 * w @ w

    return f


QUAD, QUAD_STAR = make_quadratic(12, 0)
PROBLEMS = {
    "rosenbrock-2": (rosenbrock, np.array([-1.2, 1.0])),
    "rosenbrock-10": (extended_rosenbrock, np.tile([-1.2, 1.0], 5)),
    "beale": (beale, np.array([1.0, 1.0])),
    "quadratic-12": (QUAD, np.zeros(12)),
    "logistic": (make_logistic(0), np.zeros(8)),
}
SCIPY = {"lbfgs": "L-BFGS-B", "bfgs": "BFGS", "cg": "CG"}


def scipy_solve(f, x0, method):
    fg = jax.jit(jax.value_and_grad(f))
    res = scipy.optimize.minimize(
        lambda x: tuple(np.asarray(v) for v in fg(jnp.asarray(x))), x0, jac=True,
        method=method, options={"gtol": 1e-9, "maxiter": 10_000} if method != "L-BFGS-B"
        else {"gtol": 1e-9, "ftol": 1e-15, "maxiter": 10_000},
    )
    return res


@pytest.mark.parametrize("method", ["lbfgs", "bfgs", "cg"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_matches_scipy(method, name):
    f, x0 = PROBLEMS[name]
    tol = 1e-8
    res = jopt.minimize(f, jnp.asarray(x0), method=method, tol=tol)
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    assert bool(res.success)
    assert float(jnp.max(jnp.abs(res.jac))) <= tol
    ref = scipy_solve(f, x0, SCIPY[method])
    np.testing.assert_allclose(float(res.fun), ref.fun, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, rtol=1e-5, atol=1e-6)
    if name == "quadratic-12":
        np.testing.assert_allclose(np.asarray(res.x), QUAD_STAR, rtol=1e-7, atol=1e-8)
    assert int(res.nfev) == int(res.njev) >= int(res.nit)


def test_cg_converges_where_scipy_reports_precision_loss():
    f, x0 = PROBLEMS["quadratic-12"]
    res = jopt.minimize(f, jnp.asarray(x0), method="cg", tol=1e-9)
    ref = scipy_solve(f, x0, "CG")  # scipy: "Desired error not ... due to precision loss"
    assert ref.status == 2
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-9 < np.max(np.abs(ref.jac))


def test_unreachable_tolerance_ends_with_a_precision_status():
    f, x0 = PROBLEMS["quadratic-12"]
    res = jopt.minimize(f, jnp.asarray(x0), method="lbfgs", tol=1e-300)
    assert int(res.status) in (jopt.Status.PRECISION, jopt.Status.LINESEARCH_FAILED)
    assert bool(jnp.all(jnp.isfinite(res.x))) and not bool(res.success)
    np.testing.assert_allclose(res.x, QUAD_STAR, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("beta", ["hz", "pr+", "hs", "fr", "dy"])
def test_every_cg_beta_converges(beta):
    f, x0 = PROBLEMS["rosenbrock-2"]
    res = jopt.minimize(f, jnp.asarray(x0), method=jopt.nonlinear_cg(beta), tol=1e-6,
                        maxiter=5000)
    assert int(res.status) == 0, (beta, res.message)
    np.testing.assert_allclose(np.asarray(res.x), [1.0, 1.0], atol=1e-5)


@pytest.mark.parametrize("method", ["lbfgs", "bfgs", "cg"])
def test_loss_never_goes_up(method):
    f, x0 = PROBLEMS["rosenbrock-10"]
    res = jopt.minimize(f, jnp.asarray(x0), method=method, history=True, maxiter=3000)
    hist = np.asarray(res.f_history)[: int(res.nit) + 1]
    assert np.all(np.isfinite(hist))
    # No increase beyond rounding noise (approximate-Wolfe steps may tie f within ulps).
    assert np.all(np.diff(hist) <= 8 * np.finfo(np.float64).eps * np.abs(hist[:-1]))
    assert np.all(np.isnan(np.asarray(res.f_history)[int(res.nit) + 1:]))


def test_float32_rosenbrock_reaches_relative_gradient_tolerance():
    for x0 in ([-1.2, 1.0] * 5, [-1.2, 1.0], [2.0, -2.0, 0.5, 1.5]):
        x0 = jnp.asarray(x0, jnp.float32)
        res = jopt.minimize(rosenbrock, x0, method="lbfgs", tol=1e-4, maxiter=2000)
        assert res.x.dtype == jnp.float32 and res.fun.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(res.x)))
        gmax = float(jnp.max(jnp.abs(res.jac)))
        assert gmax <= 1e-4 * max(1.0, abs(float(res.fun))), (res.message, gmax)
        assert int(res.status) == 0


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("method", ["lbfgs", "bfgs", "cg", "newton-cg", "trust-ncg"])
def test_half_precision_keeps_dtype_without_warnings(method, dtype):
    # A weighted quadratic with minimiser 1: every method keeps the 16-bit dtype and
    # converts no constant out of its range (trust-ncg's max_radius = 1e10 once cast to
    # inf in float16, with numpy's "overflow encountered in cast" warning).
    f = lambda x: jnp.sum((x - 1.0) ** 2 * jnp.arange(1, 4, dtype=x.dtype))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = jopt.minimize(f, jnp.zeros(3, dtype), method=method, tol=1e-2)
    assert res.x.dtype == dtype and res.fun.dtype == dtype
    assert int(res.status) == 0, res.message
    np.testing.assert_allclose(np.asarray(res.x, np.float32), 1.0, atol=2e-2)


def test_vmap_over_x0_equals_separate_runs():
    starts = jnp.asarray([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0], [-0.5, 3.0]])
    batched = jax.vmap(lambda x0: jopt.minimize(rosenbrock, x0, tol=1e-8))(starts)
    for i in range(starts.shape[0]):
        single = jopt.minimize(rosenbrock, starts[i], tol=1e-8)
        np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-12, atol=1e-12)
        assert int(batched.nit[i]) == int(single.nit)
        assert int(batched.nfev[i]) == int(single.nfev)
    assert list(batched.message) == [jopt.Status.MESSAGES[0]] * 4


def test_vmap_over_tolerances_and_args():
    tols = jnp.asarray([1e-2, 1e-5, 1e-9])
    res = jax.vmap(lambda t: jopt.minimize(rosenbrock, jnp.asarray([-1.2, 1.0]), tol=t))(tols)
    gmax = jnp.max(jnp.abs(res.jac), axis=1)
    assert bool(jnp.all(gmax <= tols))
    assert int(res.nit[0]) < int(res.nit[1]) < int(res.nit[2])

    def shifted(x, c):
        return jnp.sum((x - c) ** 4 + (x - c) ** 2)

    centers = jnp.asarray([[1.0, 2.0], [-3.0, 0.5]])
    res = jax.vmap(lambda c: jopt.minimize(shifted, jnp.zeros(2), args=(c,), tol=1e-9))(centers)
    np.testing.assert_allclose(res.x, centers, atol=1e-8)


def test_eager_calls_reuse_the_compiled_loop():
    from jopt import _platform as platform
    from jopt.solve import api

    traces = []

    def f(x, scale):
        traces.append(1)
        return jnp.sum(scale * (x - 1.0) ** 2) + jnp.sum(x**4)

    # the options profile this problem's program is compiled with (outlined or not)
    x0 = jnp.zeros(3)
    loop = platform.compiled(api._minimize_program, 3,
                             platform.plan(f, x0, (2.0,), nested=False).profile)
    traces.clear()

    jopt.minimize(f, jnp.zeros(3), args=(2.0,))
    n_after_first, compiled = len(traces), loop._cache_size()
    assert compiled >= 1  # the program checked below is the one this call used
    for k in range(3):
        res = jopt.minimize(f, jnp.full(3, float(k)), args=(3.0 + k,), tol=10.0 ** (-6 - k))
        assert int(res.status) == 0
    assert len(traces) == n_after_first  # not re-traced ...
    assert loop._cache_size() == compiled  # ... nor recompiled


def test_eager_and_traced_results_carry_the_same_counters():
    # Eager calls on the CPU read the counters back as one vector (numpy scalars); inside
    # a caller's jit (traced inputs, or only constants) they are sliced from it in the trace.
    x0 = jnp.asarray([-1.2, 1.0])
    eager = jopt.minimize(rosenbrock, x0, method="bfgs")
    again = jopt.minimize(rosenbrock, x0, method="bfgs")  # the cached path
    traced = jax.jit(lambda x: jopt.minimize(rosenbrock, x, method="bfgs"))(x0)
    constant = jax.jit(lambda: jopt.minimize(rosenbrock, jnp.asarray([-1.2, 1.0]),
                                             method="bfgs"))()
    # Closing over the concrete x0 inside a jit, after the eager calls: the cached eager
    # path's program has compiler options, which a nested jit may not take (this raised).
    closed = jax.jit(lambda: jopt.minimize(rosenbrock, x0, method="bfgs"))()
    fields = ("nit", "nfev", "njev", "nhev", "status", "success")
    for res in (again, traced, constant, closed):
        for name in fields:
            a, b = np.asarray(getattr(eager, name)), np.asarray(getattr(res, name))
            assert a.dtype == b.dtype and a.shape == b.shape == (), name
            assert a == b, name
        # (a caller's jit compiles with XLA's default options: x may differ in a last bit)
        np.testing.assert_allclose(res.x, eager.x, rtol=1e-12)
    assert eager.nit > 0 and eager.nfev >= eager.nit and eager.success
    assert np.asarray(eager.success).dtype == bool
    assert int(eager.status) == jopt.Status.CONVERGED and "success" in eager.message


def test_inside_user_jit_and_grad_free_of_python_branching():
    @jax.jit
    def solve(x0):
        return jopt.minimize(rosenbrock, x0, method="lbfgs").x

    np.testing.assert_allclose(solve(jnp.asarray([-1.2, 1.0])), [1.0, 1.0], atol=1e-6)


def _gulf_like(x):  # exp and pow: the line search splits its backward pass off
    t = jnp.arange(1.0, 11.0) / 10.0
    return jnp.sum((jnp.exp(-x[0] * t) - jnp.exp(-x[1] * t) - x[2] * jnp.exp(-t)) ** 2) + (
        jnp.abs(x[0] - 1.0) ** 2.5)


@pytest.mark.parametrize("objective", [rosenbrock, _gulf_like], ids=["fused", "split"])
def test_counters_are_evaluations_actually_made_and_vmap_adds_none(objective):
    calls = []

    def f(x):
        jax.debug.callback(lambda: calls.append(1))
        return objective(x)

    x0 = jnp.asarray([-1.2, 1.0]) if objective is rosenbrock else jnp.asarray([0.5, 8.0, 2.0])
    from jopt import _platform as platform

    assert platform.plan(objective, x0, (), nested=False).split == (
        objective is _gulf_like and jax.default_backend() == "cpu")
    res = jopt.minimize(f, x0)
    jax.effects_barrier()
    unbatched = len(calls)
    assert unbatched == int(res.nfev)
    calls.clear()
    batched = jax.vmap(lambda x: jopt.minimize(f, x))(x0[None])
    jax.effects_barrier()
    assert len(calls) == unbatched == int(batched.nfev[0])
    assert int(res.status) == int(batched.status[0]) == 0


def test_pytree_parameters_and_optax_transforms():
    def f(p):
        return jnp.sum((p["w"] - 2.0) ** 2) + (p["b"] + 1.0) ** 2 + 0.1 * jnp.sum(p["w"] ** 4)

    x0 = {"w": jnp.zeros((2, 2)), "b": jnp.asarray(0.0)}
    ours = jopt.minimize(f, x0, method="lbfgs", tol=1e-10)
    assert int(ours.status) == 0
    theirs = jopt.minimize(f, x0, method=optax.lbfgs(), tol=1e-10)  # optax's own L-BFGS
    assert int(theirs.status) == 0
    np.testing.assert_allclose(ours.x["w"], theirs.x["w"], atol=1e-8)
    adam = jopt.minimize(f, x0, method=optax.adam(0.05), maxiter=50)
    assert int(adam.status) == jopt.Status.MAXITER and int(adam.nfev) == 51


def test_lbfgs_in_a_users_own_loop_matches_minimize():
    f, x0 = PROBLEMS["rosenbrock-2"]
    opt = jopt.lbfgs()
    x = jnp.asarray(x0)
    state = opt.init(x)
    value, grad = jax.value_and_grad(f)(x)
    step = jax.jit(lambda x, s, v, g: opt.update(g, s, x, value=v, grad=g, value_fn=f))
    for _ in range(20):
        updates, state = step(x, state, value, grad)
        x = optax.apply_updates(x, updates)
        ls = state[-1]
        value, grad = ls.value, ls.grad  # reused: no second evaluation
    np.testing.assert_allclose(value, f(x), rtol=1e-14)
    ref = jopt.minimize(f, jnp.asarray(x0), maxiter=20)
    # Two separately compiled programs may round differently (~1e-16 per step), and 20
    # steps along Rosenbrock's curved valley amplify that to ~1e-11; an algorithmic
    # difference would show at O(1e-2) or more.
    np.testing.assert_allclose(x, ref.x, rtol=1e-9)


DIRECTIONS = {"lbfgs": jopt.scale_by_lbfgs, "bfgs": jopt.scale_by_bfgs,
              "cg": jopt.scale_by_nonlinear_cg}


@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
def test_zero_step_restarts_the_direction_as_a_fresh_state(kind):
    """After a zero step (a failed search), the next two directions equal a fresh state's."""
    f = rosenbrock
    tx = DIRECTIONS[kind]()
    grad = jax.grad(f)
    xs = [jnp.asarray([-1.2, 1.0, 0.3]) + 0.05 * k for k in range(5)]
    state = tx.init(xs[0])
    for x in xs:  # build up curvature memory
        _, state = tx.update(grad(x), state, x)
    x_r, x_2 = xs[-1], xs[-1] + jnp.asarray([0.01, -0.02, 0.03])
    d1, restarted = tx.update(grad(x_r), state, x_r)  # same point again: a zero step
    d2, _ = tx.update(grad(x_2), restarted, x_2)
    fresh = tx.init(x_r)
    e1, fresh = tx.update(grad(x_r), fresh, x_r)
    e2, _ = tx.update(grad(x_2), fresh, x_2)
    np.testing.assert_array_equal(d1, e1)
    np.testing.assert_array_equal(d2, e2)
    # Without the restart the memory would shape d1: it differs from steepest descent.
    if kind != "cg":
        before, _ = tx.update(grad(xs[-1]), state, xs[-1] + 1e-3)
        assert not np.allclose(before / np.linalg.norm(before), e1 / np.linalg.norm(e1))


@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
def test_runs_with_failing_searches_restart_and_solve(kind):
    """A search that fails often: each failure restarts the direction from inside (the
    step protocol), and the run still converges with consistent counters."""
    cg = kind == "cg"
    search = jopt.scale_by_strong_wolfe(c1=0.3, c2=0.4 if cg else 0.9, max_steps=2,
                                        initial_step="adaptive" if cg else "unit")
    method = optax.chain(DIRECTIONS[kind](), search)
    x0 = jnp.asarray([-1.2, 1.0, -1.2, 1.0, 0.5])
    res = jopt.minimize(rosenbrock, x0, method=method, maxiter=3000)
    assert int(res.status) in (jopt.Status.CONVERGED, jopt.Status.LINESEARCH_FAILED,
                               jopt.Status.PRECISION), res.message
    assert float(res.fun) < float(rosenbrock(x0))
    assert int(res.nfev) == int(res.njev) >= int(res.nit)


def test_strong_wolfe_conditions_hold_at_accepted_step():
    f = beale
    x = jnp.asarray([1.0, 1.0])
    value, grad = jax.value_and_grad(f)(x)
    d = -grad
    search = jopt.scale_by_strong_wolfe(c1=1e-4, c2=0.1, initial_step="adaptive")
    updates, state = search.update(d, search.init(x), x, value=value, grad=grad, value_fn=f)
    alpha = float(state.step)
    assert int(state.status) == LineSearchStatus.WOLFE and alpha > 0
    slope0 = float(grad @ d)
    assert float(f(x + updates)) <= float(value) + 1e-4 * alpha * slope0
    assert abs(float(jax.grad(f)(x + updates) @ d)) <= 0.1 * abs(slope0)
    np.testing.assert_allclose(state.grad, jax.grad(f)(x + updates), rtol=1e-14)


@pytest.mark.parametrize("grow_from_last, expected", [(True, [1.0, 5.0, 21.0, 85.0]),
                                                     (False, [1.0, 4.0, 16.0, 64.0])])
def test_bracketing_trials_grow_as_in_more_thuente(grow_from_last, expected):
    """Along a line the cubic has no minimizer: each trial is α + 4(α − α₋) (Moré &
    Thuente 1994's upper bound; the default, used after a unit first trial), or 4α (after an
    adaptive first trial), until f turns up and the zoom begins."""
    from jopt.linesearch import strong_wolfe_search

    trials = []

    def evaluate(a):
        jax.debug.callback(lambda v: trials.append(float(v)), a)
        over = jnp.maximum(a - 50.0, 0.0)
        return -a + over**2, -1.0 + 2.0 * over, jnp.zeros(1)

    one = jnp.asarray(1.0)
    step, value, _, status, _ = strong_wolfe_search(
        evaluate, jnp.asarray(0.0), -one, jnp.zeros(1), one, c1=1e-4, c2=0.9, max_steps=30,
        approx_wolfe=True, grow_from_last=grow_from_last)
    assert trials[:4] == expected
    assert int(status) == LineSearchStatus.WOLFE
    assert abs(float(step) - 50.5) <= 0.45 and float(value) < -50.0  # |φ'| ≤ 0.9


def test_extrapolation_keeps_an_exact_cubic_step():
    """On a quadratic φ the cubic through two trials is exact; bracketing takes it (no
    forced growth past it), so the search ends on the minimizer in two evaluations."""
    from jopt.linesearch import strong_wolfe_search

    def evaluate(a):  # φ(α) = (α − 1.6)², minimizer 1.6 beyond the first trial 1
        return (a - 1.6) ** 2, 2.0 * (a - 1.6), jnp.zeros(1)

    step, _, _, status, trials = strong_wolfe_search(
        evaluate, jnp.asarray(2.56), jnp.asarray(-3.2), jnp.zeros(1), jnp.asarray(1.0),
        c1=1e-4, c2=0.1, max_steps=30, approx_wolfe=True)
    assert int(status) == LineSearchStatus.WOLFE and int(trials) == 2
    np.testing.assert_allclose(float(step), 1.6, rtol=1e-12)


def test_zoom_keeps_an_exact_cubic_step_near_the_bracket_end():
    """A unit trial that overshoots a minimizer at 0.02 by far: the cubic through the
    bracket's ends is exact on a quadratic, and the 1 % margin lets the zoom take it, so the
    search ends on the minimizer in two evaluations (a 10 % margin tried 0.1 first)."""
    from jopt.linesearch import strong_wolfe_search

    def evaluate(a):  # φ(α) = (α − 0.02)², φ(1) ≫ φ(0)
        return (a - 0.02) ** 2, 2.0 * (a - 0.02), jnp.zeros(1)

    step, _, _, status, trials = strong_wolfe_search(
        evaluate, jnp.asarray(0.02**2), jnp.asarray(-0.04), jnp.zeros(1), jnp.asarray(1.0),
        c1=1e-4, c2=0.9, max_steps=30, approx_wolfe=True)
    assert int(status) == LineSearchStatus.WOLFE and int(trials) == 2
    np.testing.assert_allclose(float(step), 0.02, rtol=1e-10)


@pytest.mark.parametrize("stiffness, budget", [(1e3, 11), (1e6, 20)])
def test_zoom_closes_in_on_a_kink_by_factors_of_ten(stiffness, budget):
    """φ(α) = −α + K·max(α − 1, 0)²: a cubic fits the kink at 1 badly, so its minimizers
    hug the bracket's lower end. After the first zoom trial the margin is 10 %, so the
    bracket shrinks by at least that per trial and the narrow strong-Wolfe window
    (c2 = 0.1: α within 0.45/K past 1) is reached within the budget (a 1 % margin on
    every trial crept up in steps of 1 %: 21 trials at K = 1e3, all 30 at K = 1e6)."""
    from jopt.linesearch import strong_wolfe_search

    def evaluate(a):
        over = jnp.maximum(a - 1.0, 0.0)
        return -a + stiffness * over**2, -1.0 + 2.0 * stiffness * over, jnp.zeros(1)

    step, _, _, status, trials = strong_wolfe_search(
        evaluate, jnp.asarray(0.0), jnp.asarray(-1.0), jnp.zeros(1), jnp.asarray(2.0),
        c1=1e-4, c2=0.1, max_steps=30, approx_wolfe=False)
    assert int(status) == LineSearchStatus.WOLFE and int(trials) <= budget
    slope = -1.0 + 2.0 * stiffness * max(float(step) - 1.0, 0.0)
    assert abs(slope) <= 0.1


def test_nonfinite_trial_values_shrink_the_step():
    # log barrier: NaN for x <= 0, where an over-long step lands.
    def f(x):
        return jnp.sum(x - jnp.log(x))

    res = jopt.minimize(f, jnp.asarray([10.0, 0.05]), tol=1e-9)
    assert int(res.status) == 0, res.message
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-8)


def test_backtracking_line_search_in_gradient_descent():
    opt = optax.chain(optax.scale(-1.0), jopt.scale_by_backtracking(initial_step="adaptive"))
    f, x0 = PROBLEMS["quadratic-12"]
    res = jopt.minimize(f, jnp.asarray(x0), method=opt, tol=1e-6, maxiter=5000)
    assert int(res.status) == 0
    np.testing.assert_allclose(res.x, QUAD_STAR, atol=1e-5)


def test_verbose_prints_progress(capsys):
    jopt.minimize(rosenbrock, jnp.asarray([-1.2, 1.0]), verbose=10)
    jax.effects_barrier()
    out = capsys.readouterr().out
    assert "iter     10" in out and "|g|inf" in out


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("method", ["lbfgs", "newton-cg"])
def test_ftol_and_xtol_stop_with_small_change_and_zero_compiles_them_out(method):
    f, x0 = PROBLEMS["rosenbrock-10"]
    x0 = jnp.asarray(x0)
    plain = jopt.minimize(f, x0, method=method, tol=1e-300, maxiter=400)
    by_f = jopt.minimize(f, x0, method=method, tol=1e-300, ftol=1e-10, maxiter=400)
    by_x = jopt.minimize(f, x0, method=method, tol=1e-300, xtol=1e-8, maxiter=400)
    for res in (by_f, by_x):
        assert int(res.status) == jopt.Status.SMALL_CHANGE and bool(res.success)
        assert int(res.nit) < int(plain.nit)
        np.testing.assert_allclose(res.x, 1.0, atol=1e-3)
    # A test that is on but never fires leaves the iterates as they are with it off.
    tiny = jopt.minimize(f, x0, method=method, tol=1e-300, ftol=1e-300, xtol=1e-300,
                         maxiter=400)
    np.testing.assert_array_equal(tiny.x, plain.x)
    assert int(tiny.nit) == int(plain.nit)
    # Traced tolerances (vmap): each member stops as its own call does.
    batch = jax.vmap(lambda ft: jopt.minimize(f, x0, method=method, tol=1e-300, ftol=ft,
                                              maxiter=400))(jnp.asarray([1e-10, 1e-300]))
    assert [int(k) for k in batch.nit] == [int(by_f.nit), int(plain.nit)]


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown `method` 'newton-raphson'.*'bfgs'"):
        jopt.minimize(rosenbrock, jnp.zeros(2), method="newton-raphson")


def test_non_scalar_or_non_float_objective():
    with pytest.raises(ValueError, match="`fun` must return a scalar"):
        jopt.minimize(lambda x: x**2, jnp.zeros(2))
    with pytest.raises(TypeError, match="`fun` must return a real floating-point scalar"):
        jopt.minimize(lambda x: jnp.sum(x).astype(jnp.int32), jnp.zeros(2))


def test_integer_x0_tolerance_and_maxiter():
    with pytest.raises(TypeError, match=r"`x0` leaf .* has dtype int"):
        jopt.minimize(rosenbrock, jnp.asarray([1, 2]))
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        jopt.minimize(rosenbrock, jnp.zeros(2), tol=0.0)
    with pytest.raises(ValueError, match="`maxiter` must be >= 1"):
        jopt.minimize(rosenbrock, jnp.zeros(2), maxiter=0)
    with pytest.raises(TypeError, match="`args` must be a tuple"):
        jopt.minimize(rosenbrock, jnp.zeros(2), args=[1.0])


def test_nan_at_x0_is_a_status_not_an_exception():
    res = jopt.minimize(lambda x: jnp.sum(jnp.log(x)), jnp.asarray([-1.0, 1.0]))
    assert int(res.status) == jopt.Status.NONFINITE
    assert "Non-finite" in res.message
    assert int(res.nit) == 0 and not bool(res.success)


@settings(max_examples=5, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_property_random_convex_quadratic_on_pytrees(sizes, seed):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = jnp.asarray(q @ np.diag(rng.uniform(0.5, 20.0, n)) @ q.T)
    b = jnp.asarray(rng.standard_normal(n))
    x0 = {f"p{i}": jnp.zeros(s) for i, s in enumerate(sizes)}

    def f(tree):
        z = jax.flatten_util.ravel_pytree(tree)[0]
        return 0.5 * z @ (a @ z) - b @ z

    res = jopt.minimize(f, x0, method="lbfgs", tol=1e-10)
    assert int(res.status) == 0, res.message
    got = jax.flatten_util.ravel_pytree(res.x)[0]
    np.testing.assert_allclose(got, np.linalg.solve(np.asarray(a), np.asarray(b)), atol=1e-8)


def test_stall_rule_leaves_plain_first_order_methods_running():
    # f changes by less than rounding per step (|f| = 1e8, tiny steps), but SGD is making
    # progress in x: no PRECISION stop, it runs to maxiter.
    def f(x):
        return 1e8 + jnp.sum((x - 1.0) ** 2)

    res = jopt.minimize(f, jnp.zeros(3), method=optax.sgd(1e-9), maxiter=300)
    assert int(res.status) == jopt.Status.MAXITER, res.message
    assert float(res.x[0]) > 0.0


def test_repeat_eager_calls_take_the_cached_path_and_still_check_inputs():
    minimize_module = sys.modules["jopt.solve.api"]
    f, x0 = PROBLEMS["rosenbrock-2"]
    x0 = jnp.asarray(x0)
    first = jopt.minimize(f, x0, method="bfgs", tol=1e-7)
    key = minimize_module._fast_key(f, x0, ("bfgs", None), (), (1e-7, 0.0, 0.0),
                                    (10_000, None, False, None, 0, None, 1, ()))
    assert key in minimize_module._FAST._items
    again = jopt.minimize(f, x0, method="bfgs", tol=1e-7)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Bad values after a cached call still raise; other tolerances give other answers.
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        jopt.minimize(f, x0, method="bfgs", tol=-1.0)
    with pytest.raises(ValueError, match="`ftol` must be >= 0"):
        jopt.minimize(f, x0, method="bfgs", tol=1e-7, ftol=float("nan"))
    with pytest.raises(TypeError, match="`tol` must be a real number or a 0-d real array"):
        jopt.minimize(f, x0, method="bfgs", tol="1e-6")
    with pytest.raises(TypeError, match=r"`xtol` must be .* got an array of shape \(2,\)"):
        jopt.minimize(f, x0, method="bfgs", xtol=jnp.full(2, 1e-6))
    with pytest.raises(TypeError, match="`ftol` must be a real number"):
        jopt.minimize(f, x0, method="bfgs", ftol=None)
    loose = jopt.minimize(f, x0, method="bfgs", tol=1e-2)
    assert int(loose.nit) < int(first.nit)
    # A weakly-typed x0 (same values) and Python-number args take the checked path.
    weak_x0 = jnp.full(2, float(x0[0])).at[1].set(float(x0[1]))
    assert weak_x0.weak_type
    weak = jopt.minimize(f, weak_x0, method="bfgs", tol=1e-7)
    np.testing.assert_array_equal(np.asarray(weak.x), np.asarray(first.x))
    assert minimize_module._fast_key(f, x0, "bfgs", (1.0,), (1e-7, 0.0, 0.0), ()) is None
    assert minimize_module._fast_key(f, jnp.full(2, 0.0), "bfgs", (), (1e-7, 0.0, 0.0),
                                     ()) is None


def test_cached_path_is_bounded():
    minimize_module = sys.modules["jopt.solve.api"]
    x0 = jnp.ones(2)
    for i in range(minimize_module._FAST._max + 5):
        minimize_module._FAST.set(("dummy", i), None)
    assert len(minimize_module._FAST._items) <= minimize_module._FAST._max
    res = jopt.minimize(lambda x: jnp.sum((x - 3.0) ** 2), x0)  # still works after eviction
    np.testing.assert_allclose(np.asarray(res.x), [3.0, 3.0], rtol=1e-8)


def test_cached_path_accepts_numpy_inputs():
    minimize_module = sys.modules["jopt.solve.api"]
    f, x0 = PROBLEMS["rosenbrock-2"]
    x0 = np.asarray(x0, np.float64)
    first = jopt.minimize(f, x0, method="lbfgs", tol=1e-8)
    assert minimize_module._fast_key(f, x0, ("lbfgs", None), (), (1e-8, 0.0, 0.0),
                                     (10_000, None, False, None, 0, None, 1, ())
                                     ) in minimize_module._FAST._items
    again = jopt.minimize(f, x0, method="lbfgs", tol=1e-8)
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(first.x))
    assert again.x.dtype == jnp.float64 and int(again.nfev) == int(first.nfev)
    # An integer x0 is still rejected (never cached: the checked path raises).
    with pytest.raises(TypeError, match="floating-point"):
        jopt.minimize(f, np.asarray([1, 2]), method="lbfgs")


@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
def test_direction_without_line_search_runs_as_a_plain_loop(kind):
    """A quasi-Newton/CG direction (already a descent direction, ``-H∇f``) chained with a
    fixed step (no line search, so nothing to restart) runs in minimize as in a
    hand-written loop of ``tx.update`` and reaches the minimizer (it once failed to trace:
    the restart logic read a line-search state that was not there)."""
    a = jnp.asarray([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
    b = jnp.asarray([1.0, -2.0, 0.5])
    fun = lambda x: 0.5 * x @ a @ x - b @ x  # noqa: E731
    step = 0.2 if kind == "cg" else 0.5  # (fixed-step CG diverges at 0.5 on this problem)
    tx = optax.chain(DIRECTIONS[kind](), optax.scale(step))
    x0 = jnp.zeros(3)
    res = jopt.minimize(fun, x0, method=tx, maxiter=40, tol=1e-30)

    @jax.jit  # (one compiled step: forty eager updates cost seconds of dispatch)
    def step(x, state):
        f, g = jax.value_and_grad(fun)(x)
        updates, state = tx.update(g, state, x, value=f, grad=g, value_fn=fun)
        return optax.apply_updates(x, updates), state

    x, state = x0, tx.init(x0)
    for _ in range(40):
        x, state = step(x, state)
    np.testing.assert_allclose(res.x, x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.x, np.linalg.solve(np.asarray(a), np.asarray(b)),
                               atol=1e-5)
    assert (int(res.nit), int(res.nfev)) == (40, 41)
    assert int(res.status) == jopt.Status.MAXITER


def test_line_search_names_a_non_scalar_value_fn():
    opt = jopt.lbfgs()
    x = jnp.ones(3)
    state = opt.init(x)
    with pytest.raises(ValueError, match="`value_fn` must return a scalar"):
        opt.update(x, state, x, value_fn=lambda y: 2.0 * y)


def test_traced_nan_tolerance_is_never_a_silent_success():
    """A NaN tolerance traced inside a caller's jit (x0 concrete): nothing converges on
    it, so the run ends at maxiter with success False at the right point; it must not
    take the one-function path, whose liveness flag is built from the tolerance."""

    def f(x):
        return jnp.sum((x - 1.0) ** 2) + 7.0

    res = jax.jit(lambda t: jopt.minimize(f, jnp.full(3, 5.0), tol=t, maxiter=50))(jnp.nan)
    assert int(res.status) == jopt.Status.MAXITER and not bool(res.success)
    np.testing.assert_allclose(res.x, np.ones(3), atol=1e-8)
    assert float(res.fun) == pytest.approx(7.0)


@pytest.mark.parametrize("name", ["maxiter", "maxfev"])
def test_counts_beyond_int32_are_rejected_by_name(name):
    f = lambda x: jnp.sum((x - 1.0) ** 2)  # noqa: E731
    for value in (2**31, 2**32 + 5):
        with pytest.raises(ValueError, match=f"`{name}` must be at most 2\\*\\*31 - 1"):
            jopt.minimize(f, jnp.zeros(2), **{name: value})
    res = jopt.minimize(f, jnp.zeros(2), **{name: 2**31 - 1})
    assert bool(res.success)
