"""Hessian-free optimization (Martens 2010) against dense Gauss-Newton solves and L-BFGS."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import jopt
from jopt.transforms.hessian_free import (
    MartensCGResult,
    diagonal_preconditioner,
    levenberg_marquardt,
    martens_cg,
    save_iterations,
    select_step,
)

# ------------------------------------------------------------------------ problems


def logistic_problem(seed: int = 0, l2: float = 1e-2, dtype=jnp.float64):
    """L2-regularised logistic regression with the L2 term inside the loss.

    The model returns ``(logits, w)`` so the Gauss-Newton matrix of the split equals the
    Hessian (a linear model and a convex loss of its outputs).
    """
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((200, 8)), dtype)
    y = jnp.asarray(rng.integers(0, 2, 200) * 2.0 - 1.0, dtype)

    def model_fn(w):
        return x @ w, w

    def loss_fn(z):
        logits, w = z
        return jnp.mean(jnp.logaddexp(0.0, -y * logits)) + 0.5 * l2 * (w @ w)

    return model_fn, loss_fn, lambda w: loss_fn(model_fn(w))


def mlp_problem(seed: int = 0, hidden: int = 8, n: int = 64):
    """A one-hidden-layer tanh regression MLP with squared loss; params as a dict."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, 2)))
    y = jnp.sin(2.0 * x[:, 0]) * jnp.cos(x[:, 1])
    params = {
        "w1": jnp.asarray(rng.standard_normal((2, hidden)) / np.sqrt(2.0)),
        "b1": jnp.zeros(hidden),
        "w2": jnp.asarray(rng.standard_normal(hidden) / np.sqrt(hidden)),
        "b2": jnp.zeros([]),
    }

    def model_fn(p):
        return jnp.tanh(x @ p["w1"] + p["b1"][None, :]) @ p["w2"] + p["b2"]

    def loss_fn(z):
        return 0.5 * jnp.mean((z - y) ** 2)

    return model_fn, loss_fn, (lambda p: loss_fn(model_fn(p))), params


def least_squares_problem(seed: int = 0, m: int = 30, n: int = 6):
    rng = np.random.default_rng(seed)
    a = jnp.asarray(rng.standard_normal((m, n)))
    b = jnp.asarray(rng.standard_normal(m))

    def model_fn(w):
        return a @ w

    def loss_fn(z):
        return 0.5 * jnp.sum((z - b) ** 2)

    x_star = jnp.asarray(np.linalg.lstsq(np.asarray(a), np.asarray(b))[0])
    return model_fn, loss_fn, (lambda w: loss_fn(model_fn(w))), x_star


# XLA:CPU compile time dominates these tests; the options jopt.minimize uses halve it.
_CPU_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}


def jit(fn):
    return jax.jit(fn, compiler_options=_CPU_OPTIONS if jax.default_backend() == "cpu"
                   else None)


@functools.cache
def step_fn(tx, fun):
    """Jitted ``(params, state, **extra) -> (updates, state)`` (value and gradient inside)."""
    def step(params, state, extra):
        value, grads = jax.value_and_grad(fun)(params)
        return tx.update(grads, state, params, value=value, **extra)

    compiled = jit(step)
    return lambda params, state, **extra: compiled(params, state, extra)


def one_step(tx, fun, params, damping=None, **extra):
    state = tx.init(params)
    if damping is not None:  # the damping is state: one compilation serves every value
        state = state._replace(damping=jnp.asarray(damping, state.damping.dtype))
    return step_fn(tx, fun)(params, state, **extra)


LOGISTIC = logistic_problem()
HF_LOGISTIC = jopt.hessian_free(*LOGISTIC[:2])


@functools.cache
def logistic_reference():
    return jopt.minimize(LOGISTIC[2], jnp.zeros(8), method="lbfgs", tol=1e-10)


# --------------------------------------------------------------- end-to-end solves


def test_logistic_regression_reaches_the_lbfgs_minimum():
    fun = LOGISTIC[2]
    res = jopt.minimize(fun, jnp.zeros(8), method=HF_LOGISTIC, tol=1e-9)
    ref = logistic_reference()
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(float(res.fun), float(ref.fun), rtol=1e-12)
    assert int(res.nhev) > int(res.nit) > 0
    # Gauss-Newton products need no gradient linearization: every gradient is an evaluation.
    assert int(res.njev) == int(res.nfev)


def test_preconditioned_hessian_fallback_reaches_the_same_minimum():
    fun = LOGISTIC[2]
    ref = logistic_reference()
    res = jopt.minimize(fun, jnp.zeros(8), tol=1e-9, method=jopt.hessian_free(precondition=True))
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    # One gradient linearization per iteration on the Hessian path.
    assert int(res.njev) == int(res.nfev) + int(res.nit)


def test_mlp_loss_decreases_monotonically():
    model_fn, loss_fn, fun, params = mlp_problem()
    res = jopt.minimize(fun, params, method=jopt.hessian_free(model_fn, loss_fn), maxiter=25,
                        history=True)
    hist = np.asarray(res.f_history)
    hist = hist[~np.isnan(hist)]
    assert hist.size == int(res.nit) + 1 > 10
    assert np.all(np.diff(hist) <= 0.0)
    assert hist[-1] < 0.2 * hist[0]
    assert int(res.nhev) > 0


def test_indefinite_hessian_fallback_escapes_the_saddle():
    def f(x):  # curvature -2 in x[1] near the start
        return x[0] ** 2 - x[1] ** 2 + x[1] ** 4

    res = jopt.minimize(f, jnp.asarray([1.0, 0.01]), method=jopt.hessian_free(), tol=1e-9)
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    np.testing.assert_allclose(jnp.abs(res.x), [0.0, np.sqrt(0.5)], atol=1e-7)


def test_vmap_over_x0_equals_separate_runs():
    fun = LOGISTIC[2]
    starts = jnp.asarray(np.random.default_rng(3).standard_normal((3, 8)))
    batched = jax.jit(jax.vmap(lambda x: jopt.minimize(fun, x, method=HF_LOGISTIC,
                                                       tol=1e-9)))(starts)
    for i in range(starts.shape[0]):
        single = jopt.minimize(fun, starts[i], method=HF_LOGISTIC, tol=1e-9)
        assert int(batched.status[i]) == int(single.status) == jopt.Status.CONVERGED
        # Near the minimiser the CG-iterate backtracking compares values equal up to
        # rounding, so evaluation counts may differ between batched and single runs.
        np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(batched.x[i], logistic_reference().x, atol=1e-6)


def test_minibatch_training_with_extra_args_in_a_chain():
    """model_fn/loss_fn close over the batch and come with every update (lax.scan loop)."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((8, 32, 5)))
    w_true = jnp.asarray(rng.standard_normal(5))
    y = x @ w_true
    tx = optax.chain(jopt.hessian_free(damping=0.1, max_cg_iters=20), optax.scale(1.0))

    def loss_on(batch_x, batch_y):
        return (lambda w: batch_x @ w), (lambda z: 0.5 * jnp.mean((z - batch_y) ** 2))

    def step(carry, batch):
        w, state = carry
        model_fn, loss_fn = loss_on(*batch)
        value, grads = jax.value_and_grad(lambda v: loss_fn(model_fn(v)))(w)
        updates, state = tx.update(grads, state, w, value=value, model_fn=model_fn,
                                   loss_fn=loss_fn)
        return (optax.apply_updates(w, updates), state), value

    w0 = jnp.zeros(5)
    (w, state), values = jit(lambda c: jax.lax.scan(step, c, (x, y)))((w0, tx.init(w0)))
    # Noise-free linear targets: the batch minimiser is w_true for every batch.
    assert float(values[-1]) < 1e-6 * float(values[0])
    np.testing.assert_allclose(w, w_true, atol=1e-4)
    hf_state = state[0]
    assert int(hf_state.record.work.nhvp) > 0 and int(hf_state.record.work.njev) == 0


# ---------------------------------------------------------------- oracles per step


MLP_SMALL = mlp_problem(5, hidden=3, n=10)
HF_EXACT_CG = jopt.hessian_free(*MLP_SMALL[:2], max_cg_iters=100, cg_tol=1e-14,
                                backtrack_cg=False)


@functools.partial(jax.jit, static_argnums=(0, 1))
def dense_gauss_newton(model_fn, loss_fn, params):
    flat, unravel = ravel_pytree(params)
    jac = jax.jacobian(lambda v: model_fn(unravel(v)))(flat)  # (m, n)
    return jac.T @ jax.hessian(loss_fn)(model_fn(params)) @ jac


def test_gauss_newton_step_equals_the_dense_damped_solve():
    model_fn, loss_fn, fun, params = MLP_SMALL
    lam = 0.5
    updates, state = one_step(HF_EXACT_CG, fun, params, damping=lam)
    gn = dense_gauss_newton(model_fn, loss_fn, params)
    grad = jax.jit(jax.grad(fun))
    g = ravel_pytree(grad(params))[0]
    p = -np.linalg.solve(np.asarray(gn) + lam * np.eye(g.size), np.asarray(g))
    alpha = float(state.record.step)
    assert alpha > 0 and bool(state.accepted)
    np.testing.assert_allclose(ravel_pytree(updates)[0], alpha * p, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ravel_pytree(state.prev_solution)[0], p, rtol=1e-8, atol=1e-12)
    # The record holds f and ∇f at the new point for the driver.
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(state.record.value, jax.jit(fun)(new), rtol=1e-14)
    np.testing.assert_allclose(ravel_pytree(state.record.grad)[0],
                               ravel_pytree(grad(new))[0], rtol=1e-12, atol=1e-15)


def test_huge_damping_gives_the_scaled_gradient_step():
    _, _, fun, params = MLP_SMALL
    lam = 1e8
    updates, state = one_step(HF_EXACT_CG, fun, params, damping=lam)
    g = ravel_pytree(jax.jit(jax.grad(fun))(params))[0]
    assert float(state.record.step) == 1.0
    np.testing.assert_allclose(ravel_pytree(updates)[0], -g / lam, rtol=1e-6)


LSQ = least_squares_problem()
HF_LSQ = jopt.hessian_free(*LSQ[:2], cg_tol=1e-14)


def test_undamped_step_on_linear_least_squares_is_exact():
    _, _, fun, x_star = LSQ
    x0 = jnp.ones(6)
    updates, state = one_step(HF_LSQ, fun, x0, damping=0.0)
    np.testing.assert_allclose(x0 + updates, x_star, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(float(state.ratio), 1.0, rtol=1e-9)  # the model is exact


def test_damping_goes_down_on_a_quadratic():
    _, _, fun, _ = LSQ
    x = jnp.full(6, 3.0)
    state = HF_LSQ.init(x)
    step = step_fn(HF_LSQ, fun)
    dampings = [float(state.damping)]
    for _ in range(3):
        u, state = step(x, state)
        x = x + u
        np.testing.assert_allclose(float(state.ratio), 1.0, rtol=1e-8)
        dampings.append(float(state.damping))
    np.testing.assert_allclose(dampings, [(2.0 / 3.0) ** k for k in range(4)], rtol=1e-12)


def test_levenberg_marquardt_rule():
    lam = jnp.asarray(2.0)
    rhos = jnp.asarray([-jnp.inf, 0.1, 0.25, 0.5, 0.75, 0.9])
    got = jax.vmap(lambda r: levenberg_marquardt(lam, r))(rhos)
    np.testing.assert_allclose(got, [3.0, 3.0, 2.0, 2.0, 2.0, 4.0 / 3.0])
    assert float(levenberg_marquardt(lam, jnp.asarray(0.9), min_damping=1.5)) == 1.5


def test_float32_is_kept():
    model_fn, loss_fn, fun = logistic_problem(7, dtype=jnp.float32)
    params = jnp.full(8, 0.5, jnp.float32)
    updates, state = one_step(jopt.hessian_free(model_fn, loss_fn), fun, params)
    for leaf in jax.tree.leaves((updates, state.prev_solution, state.record.grad)):
        assert leaf.dtype == jnp.float32
    assert state.damping.dtype == jnp.float32 and state.record.value.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(updates))) and bool(state.accepted)
    assert float(state.record.value) < float(jax.jit(fun)(params))


# ------------------------------------------------------------------ building blocks


def test_save_iterations_are_the_ceiled_powers():
    expected = sorted({math.ceil(1.3**j) for j in range(40) if math.ceil(1.3**j) <= 250})
    np.testing.assert_array_equal(save_iterations(250), expected)
    assert save_iterations(250)[:8].tolist() == [1, 2, 3, 4, 5, 7, 9, 11]


def _numpy_cg(a, g, iters):
    """Plain CG on min gᵀx + ½xᵀAx from 0: the iterates and model values."""
    x = np.zeros_like(g)
    r = g.copy()
    d = -r
    xs, qs = [x.copy()], [0.0]
    for _ in range(iters):
        ad = a @ d
        alpha = (r @ r) / (d @ ad)
        x = x + alpha * d
        r_new = r + alpha * ad
        d = -r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
        xs.append(x.copy())
        qs.append(g @ x + 0.5 * x @ a @ x)
    return xs, qs


def test_martens_cg_stopping_rule_and_kept_iterates():
    rng = np.random.default_rng(8)
    n = 200
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(np.logspace(0, 2, n)) @ q.T
    g = rng.standard_normal(n)
    eps = 5e-4
    res = jit(lambda g: martens_cg(lambda v: jnp.asarray(a) @ v, g, None, max_iters=300,
                                       eps=eps))(jnp.asarray(g))
    xs, qs = _numpy_cg(a, g, 300)

    def rule(i):
        k = max(10, i // 10)
        return i > k and qs[i] < 0 and (qs[i] - qs[i - k]) / qs[i] < k * eps

    first = next(i for i in range(1, 301) if rule(i))  # 24, not near a tie
    assert int(res.num_iters) == first
    np.testing.assert_allclose(float(res.q), qs[first], rtol=1e-10)
    np.testing.assert_allclose(res.x, xs[first], rtol=1e-9, atol=1e-12)
    saves = save_iterations(300)
    assert int(res.num_saved) == int(np.sum(saves < first))
    for slot in range(int(res.num_saved)):
        np.testing.assert_allclose(res.saved[slot], xs[saves[slot]], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(res.saved_q[slot], qs[saves[slot]], rtol=1e-10)


def test_martens_cg_warm_start_is_dropped_when_worse_than_zero():
    a = jnp.diag(jnp.asarray([1.0, 2.0, 3.0]))
    g = jnp.asarray([1.0, -1.0, 0.5])
    solve = jit(lambda x0: martens_cg(lambda v: a @ v, g, x0, max_iters=20, eps=5e-4))
    exact = jnp.asarray(-np.linalg.solve(np.asarray(a), np.asarray(g)))
    # q(t p*) = (t²/2 - t)·p*ᵀAp*: positive for t = 10 (dropped), negative for t = 0.9.
    for start in (10.0 * exact, 0.9 * exact, exact):
        res = solve(start)
        np.testing.assert_allclose(res.x, exact, rtol=1e-12)
        assert int(res.num_matvecs) == int(res.num_iters) + 1  # the warm-start residual
        assert not bool(res.negative_curvature)
    assert int(solve(10.0 * exact).num_iters) == 3  # from 0: one step per eigenvalue
    assert int(solve(exact).num_iters) == 0  # kept: nothing left to do


def _cg_result(final, q, saved, saved_q, num_saved):
    n = len(saved)
    return MartensCGResult(
        x=jnp.asarray(final), q=jnp.asarray(q), saved=jnp.asarray(saved).reshape(n),
        saved_q=jnp.asarray(saved_q).reshape(n), num_saved=jnp.asarray(num_saved, jnp.int32),
        num_iters=jnp.asarray(7, jnp.int32), num_matvecs=jnp.asarray(7, jnp.int32),
        negative_curvature=jnp.asarray(False), negative_at_start=jnp.asarray(False))


def _scalar_problem(f):
    """``evaluate(p) = (f(x0 + p), f'(x0 + p))`` at ``x0 = 0`` with a call counter."""
    calls = []

    def evaluate(p):
        calls.append(None)
        return jax.value_and_grad(f)(p)

    return evaluate, calls


def test_backtracking_walks_back_while_the_objective_decreases():
    # Kept iterates 0.2, 0.5, 0.9 (a fourth slot is later than the final and unused).
    result = _cg_result(1.3, -1.0, [0.2, 0.5, 0.9, 1.4], [-0.1, -0.2, -0.3, -0.4], 3)
    f = lambda t: (t - 0.6) ** 2 - 0.36  # noqa: E731
    evaluate, _ = _scalar_problem(f)
    f0, g0 = jax.value_and_grad(f)(0.0)
    choice = jit(lambda r: select_step(evaluate, r, f0, g0, c1=1e-2, shrink=0.8,
                                       max_steps=60))(result)
    # f + 0.36: final 0.49 -> 0.9: 0.09 -> 0.5: 0.01 -> 0.2: 0.16 (stop): best is 0.5,
    # and it passes Armijo at α = 1 (f = -0.35 <= 0 + 0.01·(-1.2)·0.5).
    assert float(choice.step) == 0.5 and float(choice.q) == -0.2
    assert bool(choice.found) and float(choice.alpha) == 1.0
    np.testing.assert_allclose(float(choice.value), -0.35, rtol=1e-12)
    np.testing.assert_allclose(float(choice.value_at_one), -0.35, rtol=1e-12)
    np.testing.assert_allclose(float(choice.grad), -0.2, rtol=1e-12)
    assert int(choice.num_evals) == 4


def test_armijo_backtracking_finds_the_first_acceptable_power():
    f = lambda t: (1.0 + t) ** 2  # noqa: E731
    evaluate, _ = _scalar_problem(f)
    f0, g0 = jax.value_and_grad(f)(0.0)
    select = jit(lambda r: select_step(evaluate, r, f0, g0, c1=1e-2, shrink=0.8,
                                       max_steps=60))
    choice = select(_cg_result(-10.0, -1.0, [], [], 0))  # no kept iterates: only the final

    # Closed form: first k with (1 - 10a)² <= 1 - 0.2a, a = 0.8^k, i.e. a <= 0.198.
    k = next(k for k in range(60) if 0.8**k <= (20 - 0.2) / 100)
    np.testing.assert_allclose(float(choice.alpha), 0.8**k, rtol=1e-12)
    assert bool(choice.found) and int(choice.num_evals) == k + 1
    np.testing.assert_allclose(float(choice.value), (1 - 10 * 0.8**k) ** 2, rtol=1e-12)
    np.testing.assert_allclose(float(choice.value_at_one), 81.0)
    # An ascent direction is never accepted, and costs one evaluation.
    up = select(_cg_result(1.0, -1.0, [], [], 0))
    assert not bool(up.found) and float(up.alpha) == 0.0 and int(up.num_evals) == 1


def test_diagonal_preconditioner_formula():
    sq = {"a": jnp.asarray([0.0, 1.0, 4.0]), "b": jnp.asarray(9.0)}
    r = {"a": jnp.asarray([1.0, 2.0, 3.0]), "b": jnp.asarray(1.0)}
    out = diagonal_preconditioner(sq, 0.5, 0.75)(r)
    np.testing.assert_allclose(out["a"], r["a"] / (sq["a"] + 0.5) ** 0.75, rtol=1e-14)
    np.testing.assert_allclose(out["b"], 1.0 / 9.5**0.75, rtol=1e-14)


def test_grad_sq_extra_argument_is_used():
    """With ``M = diag(grad_sq)`` equal to a diagonal Gauss-Newton matrix, CG needs 1 step."""
    a = jnp.asarray([1.0, 3.0, 10.0, 30.0])
    b = jnp.asarray([1.0, -2.0, 0.5, 4.0])
    model_fn = lambda w: a * w  # noqa: E731
    loss_fn = lambda z: 0.5 * jnp.sum((z - b) ** 2)  # noqa: E731
    tx = jopt.hessian_free(model_fn, loss_fn, precondition=True, precondition_exponent=1.0,
                           warm_start_decay=0.0)
    x0 = jnp.zeros(4)
    step = step_fn(tx, lambda w: loss_fn(model_fn(w)))
    state = tx.init(x0)._replace(damping=jnp.asarray(0.0))
    updates, state = step(x0, state, grad_sq=a**2)
    np.testing.assert_allclose(x0 + updates, b / a, rtol=1e-12)
    assert int(state.cg_iters) == 1
    _, state = step(x0, tx.init(x0)._replace(damping=jnp.asarray(0.0)), grad_sq=jnp.ones(4))
    assert int(state.cg_iters) >= 4  # identity preconditioner: one step per eigenvalue


# --------------------------------------------------------------------- bad input


def test_missing_objective_is_a_clear_error():
    tx = jopt.hessian_free()
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match="needs the objective"):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match="no `loss_fn`"):
        jopt.hessian_free(lambda w: w).update(x, tx.init(x), x, value_fn=jnp.sum)
    with pytest.raises(ValueError, match="needs `params`"):
        tx.update(x, tx.init(x), value_fn=jnp.sum)


@pytest.mark.parametrize("kwargs, match", [
    ({"damping": -1.0}, "damping"),
    ({"max_cg_iters": 0}, "max_cg_iters"),
    ({"warm_start_decay": 1.5}, "warm_start_decay"),
    ({"armijo_shrink": 0.0}, "armijo"),
    ({"min_damping": 2.0, "max_damping": 1.0}, "min_damping"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jopt.hessian_free(**kwargs)
