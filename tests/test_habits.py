"""scipy's and optax's habits work in jopt: positional ``args``, scipy's method spellings,
``options=``, ``callback``, ``Status`` as an enum, ``optax.value_and_grad_from_state``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import jopt


def least_squares(w, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.05 * jnp.sum(w ** 2)


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    return jnp.asarray(X), jnp.asarray(X @ np.arange(1.0, 6.0) + 0.1 * rng.standard_normal(40))


def test_args_positionally_as_in_scipy():
    X, y = _data()
    ours = jopt.minimize(least_squares, jnp.zeros(5), (X, y), method="BFGS", tol=1e-10)
    ref = scipy.optimize.minimize(lambda w: float(least_squares(w, X, y)), np.zeros(5),
                                  jac=lambda w: np.asarray(jax.grad(least_squares)(w, X, y)),
                                  method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(ours.x, ref.x, rtol=1e-7)
    many = jopt.minimize_many(least_squares, jnp.zeros((3, 5)), (X, y), tol=1e-10)
    np.testing.assert_allclose(many.x, np.broadcast_to(ref.x, (3, 5)), rtol=1e-7)


@pytest.mark.parametrize(("scipy_name", "ours"), [("BFGS", "bfgs"), ("CG", "cg"),
                                                   ("Newton-CG", "newton-cg"),
                                                   ("trust-ncg", "trust-ncg"),
                                                   ("L-BFGS", "lbfgs")])
def test_scipy_method_spellings(scipy_name, ours):
    X, y = _data()
    a = jopt.minimize(least_squares, jnp.zeros(5), (X, y), method=scipy_name)
    b = jopt.minimize(least_squares, jnp.zeros(5), (X, y), method=ours)
    np.testing.assert_array_equal(a.x, b.x)


def test_options_configure_the_named_method():
    X, y = _data()
    short = jopt.minimize(least_squares, jnp.zeros(5), (X, y), options={"memory_size": 2})
    scipy_name = jopt.minimize(least_squares, jnp.zeros(5), (X, y), options={"maxcor": 2})
    default = jopt.minimize(least_squares, jnp.zeros(5), (X, y))
    np.testing.assert_array_equal(short.x, scipy_name.x)
    assert int(short.nit) > int(default.nit)  # less curvature memory, more iterations
    capped = jopt.minimize(least_squares, jnp.zeros(5), (X, y), method="newton-cg",
                           options={"maxiter": 1})  # inner CG: one step = steepest descent
    assert int(capped.nit) > int(jopt.minimize(least_squares, jnp.zeros(5), (X, y),
                                               method="newton-cg").nit)
    state = jopt.minimize_init(least_squares, jnp.zeros(5), (X, y), options={"maxcor": 2})
    state = jopt.minimize_run(least_squares, state, (X, y), options={"maxcor": 2})
    np.testing.assert_array_equal(jopt.minimize_result(state).x, short.x)


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"gtol": 1e-8}, ValueError, r"`options\['gtol'\]`.*`tol=`"),
    ({"memory": 3}, ValueError, r"`options` key 'memory'.*memory_size"),
    ([("memory_size", 3)], TypeError, "`options` must be a dict"),
    ({"memory_size": [3]}, TypeError, "`options` values must be hashable"),
])
def test_bad_options_are_named(options, error, match):
    X, y = _data()
    with pytest.raises(error, match=match):
        jopt.minimize(least_squares, jnp.zeros(5), (X, y), options=options)


def test_options_with_a_transform_are_refused():
    X, y = _data()
    with pytest.raises(ValueError, match="`options` configure a method given by name"):
        jopt.minimize(least_squares, jnp.zeros(5), (X, y), method=jopt.lbfgs(),
                      options={"memory_size": 3})


def _recorder():
    seen = []

    def callback(r):
        seen.append((int(r.nit), float(r.fun), int(r.status), np.array(r.x)))

    return seen, callback


def test_callback_every_k_iterations_and_at_the_end():
    X, y = _data()
    seen, callback = _recorder()
    res = jopt.minimize(least_squares, jnp.zeros(5), (X, y), callback=callback,
                        callback_every=2, tol=1e-10)
    nits = [s[0] for s in seen]
    assert nits[:-1] == list(range(2, int(res.nit) + 1, 2))[:len(nits) - 1]
    assert nits[-1] == int(res.nit) and seen[-1][2] == int(res.status) == 0
    assert all(s[2] == -1 for s in seen[:-1])
    np.testing.assert_array_equal(seen[-1][3], res.x)
    assert seen[-1][1] == float(res.fun)


def test_callback_under_jit_and_vmap():
    X, y = _data()
    seen, callback = _recorder()
    solve = jax.jit(lambda w0: jopt.minimize(least_squares, w0, (X, y), callback=callback))
    res = jax.block_until_ready(solve(jnp.zeros(5)))
    assert [s[0] for s in seen] == list(range(1, int(res.nit) + 1))
    seen.clear()
    batch = jax.vmap(lambda w0: jopt.minimize(least_squares, w0, (X, y), callback=callback))
    res = jax.block_until_ready(batch(jnp.zeros((3, 5))))
    # (called for each member: the last iteration's calls are the three final points)
    assert len(seen) >= 3 * int(np.max(res.nit)) - 2 and seen[-1][3].shape == (5,)
    finals = sorted(s[1] for s in seen if s[2] >= 0)
    np.testing.assert_allclose(finals, np.sort(np.asarray(res.fun)))


def test_callback_in_segments_and_bad_callback():
    X, y = _data()
    seen, callback = _recorder()
    state = jopt.minimize_init(least_squares, jnp.zeros(5), (X, y))
    state = jopt.minimize_run(least_squares, state, (X, y), num_steps=3, callback=callback)
    assert [s[0] for s in seen] == [1, 2, 3]
    with pytest.raises(TypeError, match="`callback` must be a function"):
        jopt.minimize(least_squares, jnp.zeros(5), (X, y), callback=3)
    with pytest.raises(ValueError, match="`callback_every` must be >= 1"):
        jopt.minimize(least_squares, jnp.zeros(5), (X, y), callback=callback,
                      callback_every=0)


def test_status_is_an_int_enum():
    assert [int(s) for s in jopt.Status] == [-1, 0, 1, 2, 3, 4, 5, 6]
    assert jopt.Status(0) is jopt.Status.CONVERGED and jopt.Status.CONVERGED == 0


def test_optax_value_and_grad_from_state_with_jopt_lbfgs():
    """optax's L-BFGS idiom: the line search's value and gradient at the accepted point
    are reused for the next step instead of being computed again."""
    X, y = _data()
    fun = lambda w: least_squares(w, X, y)  # noqa: E731
    opt = jopt.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    @jax.jit
    def step(w, state):
        value, grad = value_and_grad(w, state=state)
        updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(w, updates), state

    w, state = jnp.zeros(5), opt.init(jnp.zeros(5))
    for _ in range(30):
        w, state = step(w, state)
    ref = jopt.minimize(least_squares, jnp.zeros(5), (X, y), tol=1e-12)
    np.testing.assert_allclose(w, ref.x, rtol=1e-9)
