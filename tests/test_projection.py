"""keep_params_in_box (alias project_box): optax's keep_params_nonnegative as an oracle,
first-order training loops that never leave the box and reach the projected solution
(closed form for a separable quadratic, scipy's L-BFGS-B for a coupled one), bounds
given when made or at update time (traced, vmapped), and feasibility after rounding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from jopt.transforms.projection import (
    broadcast_box,
    feasible_update,
    keep_params_in_box,
    project_box,
)


def _violation(params, lower, upper):
    """Largest amount by which a leaf of ``params`` leaves its bounds (0 inside)."""
    parts = [jnp.maximum(jnp.max(lo - x, initial=0.0), jnp.max(x - hi, initial=0.0))
             for x, lo, hi in zip(*(jax.tree.leaves(t) for t in (params, lower, upper)),
                                  strict=True)]
    return jnp.max(jnp.stack(parts))


def _train(opt, loss, params, steps, lower, upper):
    """A plain training loop (lax.scan): returns the final params and the worst bound
    violation of any iterate."""
    grad = jax.grad(loss)

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(grad(params), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), _violation(params, lower, upper)

    (params, _), worst = jax.lax.scan(step, (params, opt.init(params)), length=steps)
    return params, jnp.max(worst)


def test_agrees_with_optax_keep_params_nonnegative():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.uniform(0, 1, (3, 4))), "b": jnp.asarray(rng.uniform(0, 1, 4))}
    updates = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 1, p.shape)), params)
    ours, _ = keep_params_in_box(0.0, None).update(updates, optax.EmptyState(), params)
    theirs, _ = optax.keep_params_nonnegative().update(updates, optax.EmptyState(), params)
    for a, b in zip(jax.tree.leaves(optax.apply_updates(params, ours)),
                    jax.tree.leaves(optax.apply_updates(params, theirs)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert project_box is keep_params_in_box


def test_adam_and_sgd_stay_feasible_and_reach_the_projected_minimizer_of_a_separable_quadratic():
    """f = Σ a_i (x_i − c_i)² over a box: the minimizer is clip(c, lower, upper)."""
    rng = np.random.default_rng(1)
    shapes = {"w": (4, 3), "b": (5,)}
    c = {k: jnp.asarray(rng.normal(0, 2, s)) for k, s in shapes.items()}
    a = {k: jnp.asarray(rng.uniform(0.5, 2.0, s)) for k, s in shapes.items()}
    lower = {"w": jnp.asarray(rng.uniform(-1.5, 0.0, shapes["w"])), "b": -1.0}
    upper = {"w": jnp.asarray(rng.uniform(0.0, 1.5, shapes["w"])), "b": jnp.inf}
    lo, hi = broadcast_box(c, lower, upper)
    expected = jax.tree.map(jnp.clip, c, lo, hi)

    def loss(x):
        return sum(jnp.sum(a[k] * (x[k] - c[k]) ** 2) for k in x)

    x0 = jax.tree.map(jnp.zeros_like, c)
    schedule = optax.exponential_decay(0.1, transition_steps=200, decay_rate=0.5)
    for opt in (optax.chain(optax.adam(schedule), keep_params_in_box(lower, upper)),
                optax.chain(optax.sgd(0.2), keep_params_in_box(lower, upper))):
        final, worst = jax.jit(lambda x, opt=opt: _train(opt, loss, x, 2000, lo, hi))(x0)
        assert float(worst) <= 0.0  # exactly feasible at every iterate
        for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_projected_gradient_descent_solves_a_coupled_box_qp():
    """sgd(1/L) + projection is projected gradient descent: it converges to the box QP's
    solution (oracle: scipy L-BFGS-B), in float32 as well."""
    rng = np.random.default_rng(2)
    n = 8
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.geomspace(0.5, 4.0, n)) @ q.T
    a = 0.5 * (a + a.T)
    b = 4.0 * rng.standard_normal(n)
    lower, upper = rng.uniform(-1.0, 0.0, n), rng.uniform(0.0, 1.0, n)
    ref = scipy.optimize.minimize(lambda x: (0.5 * x @ a @ x - b @ x, a @ x - b),
                                  np.zeros(n), jac=True, method="L-BFGS-B",
                                  bounds=list(zip(lower, upper, strict=True)),
                                  options={"ftol": 0.0, "gtol": 1e-12})
    assert ref.success and np.any(np.isclose(ref.x, lower) | np.isclose(ref.x, upper))
    for dtype, atol in ((jnp.float64, 1e-9), (jnp.float32, 1e-5)):
        aj, bj = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
        lo, hi = jnp.asarray(lower, dtype), jnp.asarray(upper, dtype)
        opt = optax.chain(optax.sgd(1.0 / 4.0), keep_params_in_box(lo, hi))
        final, worst = jax.jit(lambda x, aj=aj, bj=bj, lo=lo, hi=hi, opt=opt: _train(
            opt, lambda y: 0.5 * y @ (aj @ y) - bj @ y, x, 600, lo, hi))(jnp.zeros(n, dtype))
        assert final.dtype == dtype and float(worst) <= 0.0
        np.testing.assert_allclose(np.asarray(final), ref.x, atol=atol)


def test_update_time_bounds_replace_the_made_ones_and_may_be_traced_and_vmapped():
    params = jnp.array([0.0, 0.5, 1.0])
    updates = jnp.array([-2.0, 0.25, 2.0])
    opt = keep_params_in_box(-1.0, 1.0)
    state = opt.init(params)
    made, _ = opt.update(updates, state, params)
    np.testing.assert_array_equal(np.asarray(params + made), [-1.0, 0.75, 1.0])
    given_, _ = opt.update(updates, state, params, lower=jnp.zeros(3), upper=jnp.full(3, 0.6))
    np.testing.assert_array_equal(np.asarray(params + given_), [0.0, 0.6, 0.6])
    one_side, _ = opt.update(updates, state, params, upper=2.5)  # lower stays -1
    np.testing.assert_array_equal(np.asarray(params + one_side), [-1.0, 0.75, 2.5])
    # no bounds at all: the identity
    free, _ = keep_params_in_box().update(updates, state, params)
    assert free is updates

    @jax.jit
    @jax.vmap
    def batched(lo, hi):
        return keep_params_in_box().update(updates, state, params, lower=lo, upper=hi)[0]

    lows = jnp.array([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]])
    highs = jnp.array([[1.0, 1.0, 1.0], [0.5, 0.5, jnp.inf]])
    out = params[None, :] + batched(lows, highs)
    np.testing.assert_array_equal(np.asarray(out), [[-1.0, 0.75, 1.0], [0.0, 0.5, 3.0]])


def _floats(dtype):
    width = 32 if dtype == np.float32 else 64
    finite = st.floats(-1e6, 1e6, width=width, allow_subnormal=False)
    return st.one_of(finite, st.sampled_from([0.0, 1e-30, -1e-30, 0.1, 1.0, -3.0]))


_feasible_update = jax.jit(feasible_update)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       inside=st.booleans())
def test_rounding_never_leaves_the_box(data, dtype, inside):
    """x + (P(x + u) − x), rounded as optax.apply_updates rounds it, equals the target to
    a unit in the last place and lies in the box: always from inside the box; from
    outside (another sign or scale), where the box is wider than the rounding unit."""
    values = st.lists(_floats(dtype), min_size=4, max_size=4)
    x, u, a, b = (np.asarray(data.draw(values), dtype) for _ in range(4))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if inside:
        x = np.clip(x, lo, hi)
    target = np.clip(x + u, lo, hi).astype(dtype)
    step = _feasible_update(*map(jnp.asarray, (x, target, lo, hi)))
    got = np.asarray(optax.apply_updates(jnp.asarray(x), step))
    unit = np.spacing(np.maximum(np.abs(target), np.abs(x)).astype(dtype))
    assert np.all(np.abs(got - target) <= 2 * unit)
    wide = inside | (hi - lo >= 2 * unit)
    assert np.all(((got >= lo) & (got <= hi)) | ~wide)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="lower"):
        keep_params_in_box(1.0, 0.0)
    opt = keep_params_in_box(0.0, 1.0)
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.zeros(2), opt.init(jnp.zeros(2)))
    with pytest.raises(ValueError, match="structure"):
        opt.update({"a": jnp.zeros(2)}, optax.EmptyState(), {"a": jnp.zeros(2)},
                   lower={"b": jnp.zeros(2)})
    with pytest.raises(ValueError, match="broadcast"):
        opt.update(jnp.zeros(2), optax.EmptyState(), jnp.zeros(2), lower=jnp.zeros(3))
    with pytest.raises(ValueError, match="lower"):
        opt.update(jnp.zeros(2), optax.EmptyState(), jnp.zeros(2), lower=jnp.ones(2),
                   upper=jnp.zeros(2))
