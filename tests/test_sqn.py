"""Stochastic quasi-Newton (Byrd, Hansen, Nocedal & Singer 2016) against closed forms and SGD."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt

# XLA:CPU compile time dominates these tests; the options jopt.minimize uses halve it.
_CPU_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}


def jit(fn):
    return jax.jit(fn, compiler_options=_CPU_OPTIONS if jax.default_backend() == "cpu"
                   else None)


def make_quadratic(n: int = 6, seed: int = 0, cond: float = 2.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = jnp.asarray(q @ np.diag(np.logspace(0, cond, n)) @ q.T)
    b = jnp.asarray(rng.standard_normal(n))
    return a, b, (lambda x: 0.5 * x @ (a @ x) - b @ x)


A, B, QUAD = make_quadratic()


@functools.cache
def deterministic_run(tx, steps: int, hess_fn=None):
    """Full-gradient SQN on QUAD from x = 1: the iterates fed in, updates and states."""
    grad = jax.grad(QUAD)

    def step(carry, _):
        x, state = carry
        extra = {} if hess_fn is None else {"hessian_value_fn": hess_fn}
        g = grad(x)
        u, state = tx.update(g, state, x, value_fn=QUAD, **extra)
        return (x + u, state), (x, g, u, state)

    x0 = jnp.ones(A.shape[0])
    _, out = jit(lambda c: jax.lax.scan(step, c, None, length=steps))((x0, tx.init(x0)))
    return out


def pick(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def dense_lbfgs_inverse(pairs, n):
    """``H`` of N&W eq. 7.19 from ``H⁰ = (sᵀy/yᵀy)_newest I`` and BFGS updates oldest first."""
    s_new, y_new = pairs[-1]
    h = float(s_new @ y_new / (y_new @ y_new)) * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / float(s @ y)
        left = np.eye(n) - rho * np.outer(s, y)
        h = left @ h @ left.T + rho * np.outer(s, s)
    return h


# --------------------------------------------------------------------- Algorithm 1


def test_first_2L_steps_are_sgd_then_quasi_newton():
    lr, L = 0.01, 3
    _, gs, us, states = deterministic_run(jopt.sqn(lr, memory_size=4, update_every=L), 4 * L)
    np.testing.assert_allclose(us[: 2 * L], -lr * gs[: 2 * L], rtol=1e-15)
    assert not np.allclose(us[2 * L], -lr * gs[2 * L])  # first pair formed at step 2L
    assert int(states.num_pairs[2 * L - 2]) == 0 and int(states.num_pairs[2 * L - 1]) == 1


def test_curvature_pairs_are_exact_hessian_vector_products_of_averages():
    lr, L, M = 0.01, 3, 2
    xs, _, _, states = deterministic_run(jopt.sqn(lr, memory_size=M, update_every=L), 4 * L)
    xs = np.asarray(xs)
    averages = [xs[t * L:(t + 1) * L].mean(axis=0) for t in range(4)]
    # After 3L steps: pairs t = 1, 2 in slots 0, 1; after 4L: t = 3 overwrote slot 0.
    final = pick(states, 4 * L - 1)
    a = np.asarray(A)
    expected = {1: 2, 0: 3}  # slot -> pair index t
    for slot, t in expected.items():
        s = averages[t] - averages[t - 1]
        np.testing.assert_allclose(final.s_history[slot], s, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(final.y_history[slot], a @ s, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(final.rho[slot], 1.0 / (s @ a @ s), rtol=1e-12)
    s3 = averages[3] - averages[2]
    np.testing.assert_allclose(final.gamma, (s3 @ a @ s3) / (s3 @ a @ a @ s3), rtol=1e-12)
    assert int(final.num_pairs) == int(final.work.nhvp) == 3 and int(final.num_skipped) == 0
    assert int(final.head) == 1 and int(final.num_averages) == 4


def test_step_is_the_lbfgs_inverse_hessian_times_the_gradient():
    lr, L = 0.01, 3
    xs, gs, us, _ = deterministic_run(jopt.sqn(lr, memory_size=5, update_every=L), 4 * L)
    xs, a = np.asarray(xs), np.asarray(A)
    averages = [xs[t * L:(t + 1) * L].mean(axis=0) for t in range(4)]
    # Steps 3L .. 4L-1 use the pairs t = 1, 2 (t = 3 is formed at the last of them).
    pairs = [(averages[t] - averages[t - 1], a @ (averages[t] - averages[t - 1]))
             for t in (1, 2)]
    h = dense_lbfgs_inverse(pairs, a.shape[0])
    for k in range(3 * L, 4 * L):
        np.testing.assert_allclose(us[k], -lr * h @ np.asarray(gs[k]), rtol=1e-10)


def test_zero_curvature_pairs_are_skipped_without_nan():
    lr, L = 0.01, 2
    c = jnp.arange(1.0, 7.0)
    linear = lambda x: c @ x  # noqa: E731  (Hessian 0: y = 0, sᵀy = 0)
    _, gs, us, states = deterministic_run(jopt.sqn(lr, memory_size=3, update_every=L), 5 * L,
                                          linear)
    last = pick(states, 5 * L - 1)
    assert int(last.num_pairs) == 0 and int(last.num_skipped) == 4 == int(last.work.nhvp)
    assert bool(jnp.all(jnp.isfinite(us)))
    assert bool(jnp.all(last.rho == 0)) and float(last.gamma) == 0.0
    np.testing.assert_allclose(us, -lr * gs, rtol=1e-15)  # stays SGD


def test_stationary_iterates_give_a_zero_pair_that_is_skipped():
    tx = jopt.sqn(0.1, memory_size=2, update_every=2)
    x = jnp.ones(3)
    state = tx.init(x)
    update = jit(lambda g, s, p: tx.update(g, s, p, value_fn=QUAD_3))
    for _ in range(6):  # zero gradient: x never moves, so s = 0
        u, state = update(jnp.zeros(3), state, x)
    assert int(state.num_skipped) == 2 and int(state.num_pairs) == 0
    assert bool(jnp.all(u == 0))


def QUAD_3(x):
    return jnp.sum((x - 1.0) ** 2)


def test_hessian_sample_precedence():
    lr, L = 0.01, 2
    a = A

    def batch_fn(w, t):  # the t-th "Hessian sample": t·A
        return 0.5 * t.astype(w.dtype) * (w @ (a @ w))

    tx = jopt.sqn(lr, memory_size=4, update_every=L, hessian_batch_fn=batch_fn)
    _, _, _, states = deterministic_run(tx, 4 * L)
    last = pick(states, 4 * L - 1)
    for slot, t in enumerate((1, 2, 3)):
        np.testing.assert_allclose(last.y_history[slot], t * (a @ last.s_history[slot]),
                                   rtol=1e-12)
    # An explicit hessian_value_fn wins over hessian_batch_fn and value_fn.
    twice = lambda w: w @ (a @ w)  # noqa: E731  (Hessian 2A)
    _, _, _, states = deterministic_run(tx, 3 * L, twice)
    last = pick(states, 3 * L - 1)
    np.testing.assert_allclose(last.y_history[:2], 2.0 * last.s_history[:2] @ a, rtol=1e-12)


# ------------------------------------------------------------- stochastic setting


def least_squares_data(seed=0, n=2000, d=20):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = rng.standard_normal((n, d)) @ np.diag(np.logspace(0, 1, d)) @ u.T  # Hessian cond ~100
    y = x @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n)
    return jnp.asarray(x), jnp.asarray(y)


def test_beats_sgd_with_the_same_learning_rate_and_steps():
    features, targets = least_squares_data()
    n, d = features.shape
    lr, steps = 0.01, 1000  # lr·λ_max ≈ 1: SGD near its stability limit

    def batch_loss(w, idx):
        return 0.5 * jnp.mean((features[idx] @ w - targets[idx]) ** 2)

    def full_loss(w):
        return 0.5 * jnp.mean((features @ w - targets) ** 2)

    def train(tx):
        def step(carry, key):
            w, state = carry
            k_grad, k_hess = jax.random.split(key)
            idx = jax.random.randint(k_grad, (32,), 0, n)
            hess_idx = jax.random.randint(k_hess, (256,), 0, n)
            grads = jax.grad(batch_loss)(w, idx)
            updates, state = tx.update(grads, state, w, value_fn=lambda v: batch_loss(v, idx),
                                       hessian_value_fn=lambda v: batch_loss(v, hess_idx))
            return (optax.apply_updates(w, updates), state), None

        keys = jax.random.split(jax.random.key(0), steps)
        w0 = jnp.zeros(d)
        (w, state), _ = jax.lax.scan(step, (w0, tx.init(w0)), keys)
        return full_loss(w), state

    best = full_loss(jnp.asarray(np.linalg.lstsq(np.asarray(features), np.asarray(targets))[0]))
    sqn_loss, state = jit(lambda: train(jopt.sqn(lr, memory_size=10, update_every=10)))()
    sgd_loss, _ = jit(lambda: train(optax.with_extra_args_support(optax.sgd(lr))))()
    excess_sqn, excess_sgd = float(sqn_loss - best), float(sgd_loss - best)
    assert 0 < excess_sqn < 0.25 * excess_sgd, (excess_sqn, excess_sgd)
    assert int(state.work.nhvp) == steps // 10 - 1 == int(state.num_pairs)


def test_state_structure_and_dtype_are_stable():
    tx = jopt.sqn(0.1, memory_size=3, update_every=2)
    params = {"w": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros([], jnp.float32)}

    def loss(p):
        return jnp.sum(p["w"] ** 2) + p["b"] ** 2

    state = tx.init(params)
    out_updates, out_state = jax.eval_shape(
        lambda s: tx.update(params, s, params, value_fn=loss), state)
    assert jax.tree.structure(out_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(out_state), jax.tree.leaves(state), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(out_updates))


def test_learning_rate_schedule_and_vmap_over_traced_learning_rates():
    schedule = optax.linear_schedule(0.02, 0.01, 4)
    _, gs, us, _ = deterministic_run(jopt.sqn(schedule, update_every=3), 4)
    for k in range(4):  # the schedule evaluated as inside the transform (int32 count)
        lr = jnp.asarray(schedule(jnp.asarray(k, jnp.int32)), gs.dtype)
        np.testing.assert_allclose(us[k], -lr * gs[k], rtol=1e-12)

    def final_point(lr):
        tx = jopt.sqn(lr, memory_size=3, update_every=2)
        grad = jax.grad(QUAD)

        def step(carry, _):
            x, state = carry
            u, state = tx.update(grad(x), state, x, value_fn=QUAD)
            return (x + u, state), None

        x0 = jnp.ones(A.shape[0])
        return jax.lax.scan(step, (x0, tx.init(x0)), None, length=12)[0][0]

    lrs = jnp.asarray([0.005, 0.01, 0.02])
    batched = jit(jax.vmap(final_point))(lrs)
    single = jit(final_point)
    for i in range(lrs.shape[0]):
        np.testing.assert_allclose(batched[i], single(lrs[i]), rtol=1e-12, atol=1e-14)


def test_runs_under_minimize():
    x_star = np.linalg.solve(np.asarray(A), np.asarray(B))
    res = jopt.minimize(QUAD, jnp.zeros(A.shape[0]), method=jopt.sqn(0.01, update_every=5),
                        tol=1e-8, maxiter=3000)
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    np.testing.assert_allclose(res.x, x_star, atol=1e-7)
    assert int(res.nhev) == int(res.nit) // 5 - 1


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, error, match", [
    ({"learning_rate": -0.1}, ValueError, "learning_rate"),
    ({"learning_rate": 0.1, "memory_size": 0}, ValueError, "memory_size"),
    ({"learning_rate": 0.1, "memory_size": 2.5}, TypeError, "memory_size"),
    ({"learning_rate": 0.1, "update_every": 0}, ValueError, "update_every"),
    ({"learning_rate": 0.1, "hessian_batch_fn": 3}, TypeError, "hessian_batch_fn"),
])
def test_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        jopt.sqn(**kwargs)


def test_missing_objective_is_a_clear_error():
    tx = jopt.sqn(0.1)
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match="value_fn"):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match="params"):
        tx.update(x, tx.init(x), value_fn=jnp.sum)
