"""AdaHessian (Yao et al. 2021) against a direct NumPy reference and closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jopt.transforms.adahessian import AdaHessianState, adahessian

RNG = np.random.default_rng(0)
M = jnp.asarray(RNG.standard_normal((5, 10)))
T = jnp.asarray(RNG.standard_normal(5))
P0 = {"a": jnp.asarray(RNG.standard_normal((2, 3))), "c": jnp.asarray(RNG.standard_normal(4))}


def loss(p):
    """Least squares plus a quartic: a Hessian that is dense and changes along the path."""
    x = ravel_pytree(p)[0]
    return jnp.sum((M @ x - T) ** 2) + 0.1 * jnp.sum(x**4)


def run(opt, params, steps: int, fun=loss):
    """``steps`` jitted updates; the iterates, updates and final state."""

    @jax.jit
    def step(params, state):
        u, state = opt.update(jax.grad(fun)(params), state, params, value_fn=fun)
        return optax.apply_updates(params, u), u, state

    state = opt.init(params)
    xs, us = [], []
    for _ in range(steps):
        xs.append(params)
        params, u, state = step(params, state)
        us.append(u)
    return xs, us, state


def block_mean(d: np.ndarray, b: int | None) -> np.ndarray:
    """Yao et al. eq. (8) written out: each block of b entries replaced by its mean."""
    flat = d.reshape(-1).copy()
    if b is not None:
        for start in range(0, flat.size, b):
            flat[start:start + b] = flat[start:start + b].mean()
    return flat.reshape(d.shape)


@jax.jit
def probe(key, x):
    """The transform's probe ``z`` for ``key``, the dense Hessian times it, the gradient."""
    unravel = ravel_pytree(x)[1]
    key, sub = jax.random.split(key)
    z = unravel(jax.random.rademacher(sub, (10,), jnp.float64))
    h = jax.hessian(lambda y: loss(unravel(y)))(ravel_pytree(x)[0])
    return key, z, unravel(h @ ravel_pytree(z)[0]), jax.grad(loss)(x)


def reference(xs, *, lr, b1, b2, eps, k, wd, sizes, seed, mask=None):
    """Algorithm 1 of Yao et al. (2021) in NumPy, with the transform's probes."""
    key = jax.random.PRNGKey(seed)
    m = {n: np.zeros(v.shape) for n, v in xs[0].items()}
    v = {n: np.zeros(v.shape) for n, v in xs[0].items()}
    out = []
    for t, x in enumerate(xs, start=1):
        key, z, hz, g = probe(key, x)
        u = {}
        for n in x:
            d = block_mean(np.asarray(z[n]) * np.asarray(hz[n]), sizes[n])
            m[n] = b1 * m[n] + (1 - b1) * np.asarray(g[n])
            v[n] = b2 * v[n] + (1 - b2) * d * d
            denom = np.sqrt(v[n] / (1 - b2**t)) ** k + eps
            decay = wd * np.asarray(x[n]) if (mask is None or mask[n]) else 0.0
            u[n] = -lr * (m[n] / (1 - b1**t) / denom + decay)
        out.append(u)
    return out


@pytest.mark.parametrize(
    "config",
    [
        dict(lr=0.05, b1=0.9, b2=0.999, eps=1e-4, k=1.0, wd=0.0, sizes=None, seed=0),
        dict(lr=0.02, b1=0.8, b2=0.99, eps=1e-3, k=0.5, wd=0.1, sizes={"a": 2, "c": 3},
             seed=3, mask={"a": True, "c": False}),
    ],
)
def test_matches_reference_with_the_same_probes(config):
    sizes = config["sizes"]
    opt = adahessian(config["lr"], b1=config["b1"], b2=config["b2"], eps=config["eps"],
                     hessian_power=config["k"], weight_decay=config["wd"],
                     mask=config.get("mask"), spatial_average_size=sizes, seed=config["seed"])
    xs, us, state = run(opt, P0, 6)
    ref = reference(xs, **{**config, "sizes": sizes or {"a": None, "c": None}})
    for u, r in zip(us, ref, strict=True):
        for n in r:
            np.testing.assert_allclose(u[n], r[n], rtol=1e-10, atol=1e-14)
    assert isinstance(state, AdaHessianState)
    assert int(state.work.nhvp) == 6 and int(state.count) == 6


def separable(a, c):
    return lambda x: 0.5 * jnp.sum(a * (x - c) ** 2)


A_DIAG = jnp.asarray([0.5, 2.0, 4.0, 10.0])
C = jnp.asarray([1.0, -1.0, 2.0, 0.5])


def test_separable_quadratic_hutchinson_is_exact_one_newton_step():
    """diag(H) = a exactly (z_i² = 1), so b1 = 0, k = 1, ε = 0, η = 1 is Newton's step."""
    f = separable(A_DIAG, C)
    xs, _, _ = run(adahessian(1.0, b1=0.0, eps=0.0), jnp.zeros(4), 2, f)
    np.testing.assert_allclose(xs[1], C, rtol=1e-14)


@pytest.mark.parametrize(("k", "size"), [(1.0, None), (0.5, 2)])
def test_separable_quadratic_closed_form(k, size):
    """v_t = (1 − β₂ᵗ)·(D^(s))² exactly, hence u_t = −η m̂_t / (|D^(s)|^k + ε)."""
    f = separable(A_DIAG, C)
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-3
    opt = adahessian(lr, b1=b1, b2=b2, eps=eps, hessian_power=k, spatial_average_size=size)
    xs, us, state = run(opt, jnp.zeros(4), 3, f)
    d = block_mean(np.asarray(A_DIAG), size)
    np.testing.assert_allclose(state.nu, (1 - b2**3) * d * d, rtol=1e-13)
    m = np.zeros(4)
    for t, (x, u) in enumerate(zip(xs, us, strict=True), start=1):
        m = b1 * m + (1 - b1) * np.asarray(jax.grad(f)(x))
        np.testing.assert_allclose(u, -lr * m / (1 - b1**t) / (d**k + eps), rtol=1e-12)


def test_float32_dtype_is_kept():
    f = separable(A_DIAG.astype(jnp.float32), C.astype(jnp.float32))
    params = {"x": jnp.zeros(4, jnp.float32)}
    g = lambda p: f(p["x"])  # noqa: E731
    _, us, state = run(adahessian(0.1, spatial_average_size=2), params, 2, g)
    assert us[-1]["x"].dtype == jnp.float32
    assert state.mu["x"].dtype == jnp.float32 and state.nu["x"].dtype == jnp.float32
    np.testing.assert_allclose(state.nu["x"], (1 - 0.999**2) * block_mean(
        np.asarray(A_DIAG), 2) ** 2, rtol=1e-5)


def test_chain_with_clipping_equals_clipping_first():
    clip = optax.clip_by_global_norm(0.5)
    chained = optax.chain(clip, adahessian(0.05))
    xs, us, state = run(chained, P0, 3)
    # Manual: clip the gradient, then adahessian with the same probes.
    opt = adahessian(0.05)

    @jax.jit
    def manual(x, s):
        g, _ = clip.update(jax.grad(loss)(x), clip.init(x))
        return opt.update(g, s, x, value_fn=loss)

    s = opt.init(P0)
    for x, u in zip(xs, us, strict=True):
        ref, s = manual(x, s)
        for n in ref:
            np.testing.assert_allclose(u[n], ref[n], rtol=1e-12)
    assert int(state[1].work.nhvp) == 3


def test_vmap_over_learning_rates():
    f = separable(A_DIAG, C)

    def train(lr):
        opt = adahessian(lr)

        def step(carry, _):
            x, s = carry
            u, s = opt.update(jax.grad(f)(x), s, x, value_fn=f)
            return (x + u, s), None

        (x, _), _ = jax.lax.scan(step, (jnp.zeros(4), opt.init(jnp.zeros(4))), None,
                                 length=5)
        return x

    lrs = jnp.asarray([0.01, 0.1, 0.5])
    batched = jax.jit(jax.vmap(train))(lrs)
    single = jax.jit(train)
    for lr, x in zip(lrs, batched, strict=True):
        np.testing.assert_allclose(x, single(lr), rtol=1e-12)
    assert not np.allclose(batched[0], batched[2])


def test_zero_curvature_gives_zero_step_not_nan():
    f = lambda x: jnp.sum(x)  # noqa: E731  (zero Hessian)
    _, us, _ = run(adahessian(0.1, eps=0.0), jnp.zeros(3), 2, f)
    np.testing.assert_array_equal(us[-1], np.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=0.1, b1=1.0), "b1"),
        (dict(learning_rate=0.1, b2=-0.1), "b2"),
        (dict(learning_rate=0.1, eps=-1.0), "eps"),
        (dict(learning_rate=0.1, hessian_power=0.0), "hessian_power"),
        (dict(learning_rate=0.1, hessian_power=1.5), "hessian_power"),
        (dict(learning_rate=0.1, weight_decay=-0.1), "weight_decay"),
        (dict(learning_rate=0.1, spatial_average_size=0), "spatial_average_size"),
        (dict(learning_rate=0.1, seed=1.5), "seed"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        adahessian(**kwargs)


def test_bad_update_arguments_are_rejected():
    opt = adahessian(0.1)
    state = opt.init(P0)
    with pytest.raises(ValueError, match="value_fn"):
        opt.update(P0, state, P0)
    with pytest.raises(ValueError, match="value_fn"):
        opt.update(P0, state, P0, value_fn=lambda p: p["c"])
    with pytest.raises(ValueError, match="spatial_average_size"):
        adahessian(0.1, spatial_average_size={"a": 2}).init(P0)
    with pytest.raises(TypeError, match="params"):
        opt.init({"a": jnp.arange(3)})
