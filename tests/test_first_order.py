"""First-order family against optax, plus the optax-protocol battery every transform passes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
import pytest

import jopt
from tests.helpers import random_tree, tree_max_rel_diff

NUM_STEPS = 200

# (name, jopt factory, optax factory) — same hyperparameters on both sides.
PAIRS = [
    ("sgd", lambda lr: jopt.sgd(lr), lambda lr: optax.sgd(lr)),
    ("momentum", lambda lr: jopt.sgd(lr, momentum=0.9), lambda lr: optax.sgd(lr, momentum=0.9)),
    (
        "nesterov",
        lambda lr: jopt.sgd(lr, momentum=0.8, nesterov=True),
        lambda lr: optax.sgd(lr, momentum=0.8, nesterov=True),
    ),
    ("adagrad", lambda lr: jopt.adagrad(lr), lambda lr: optax.adagrad(lr)),
    ("rmsprop", lambda lr: jopt.rmsprop(lr), lambda lr: optax.rmsprop(lr)),
    (
        "rmsprop-centered-momentum",
        lambda lr: jopt.rmsprop(lr, decay=0.95, eps=1e-6, centered=True, momentum=0.5),
        lambda lr: optax.rmsprop(lr, decay=0.95, eps=1e-6, centered=True, momentum=0.5),
    ),
    ("adam", lambda lr: jopt.adam(lr), lambda lr: optax.adam(lr)),
    (
        "adam-eps-root",
        lambda lr: jopt.adam(lr, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
        lambda lr: optax.adam(lr, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
    ),
    (
        "adamw",
        lambda lr: jopt.adamw(lr, weight_decay=0.1),
        lambda lr: optax.adamw(lr, weight_decay=0.1),
    ),
    (
        "adamw-masked",
        lambda lr: jopt.adamw(lr, weight_decay=0.1, mask=lambda p: {k: k != "leaf1" for k in p}),
        lambda lr: optax.adamw(lr, weight_decay=0.1, mask=lambda p: {k: k != "leaf1" for k in p}),
    ),
]
IDS = [p[0] for p in PAIRS]


def loss(params):
    """A non-quadratic pytree loss with different curvature per leaf."""
    return sum(
        jnp.sum((i + 1.0) * (x - 0.5) ** 2 + 0.1 * jnp.cos(3 * x))
        for i, x in enumerate(jax.tree.leaves(params))
    )


def run(opt, params, num_steps=NUM_STEPS):
    """``num_steps`` optimizer steps in one compiled scan; returns final params and state."""

    def step(carry, _):
        p, s = carry
        updates, s = opt.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, state), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=num_steps)
    return params, state


@pytest.mark.parametrize(("dtype", "rtol"), [(jnp.float64, 1e-6), (jnp.float32, 1e-6)])
@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_matches_optax_over_200_steps(name, ours, theirs, dtype, rtol):
    params = random_tree(0, dtype=dtype)
    lr = 0.01 if name.startswith(("sgd", "momentum", "nesterov")) else 0.05
    got, _ = jax.jit(functools.partial(run, ours(lr)))(params)
    ref, _ = jax.jit(functools.partial(run, theirs(lr)))(params)
    assert tree_max_rel_diff(got, ref) <= rtol
    # The problem actually moved the parameters (the comparison is not vacuous).
    assert tree_max_rel_diff(ref, params) > 1e-2


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_schedule_learning_rate_matches_optax(name, ours, theirs):
    schedule = optax.exponential_decay(0.05, transition_steps=10, decay_rate=0.7)
    params = random_tree(1)
    got, _ = run(ours(schedule), params, 30)
    ref, _ = run(theirs(schedule), params, 30)
    assert tree_max_rel_diff(got, ref) <= 1e-10


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_inside_optax_chain(name, ours, theirs):
    params = random_tree(2)
    got, _ = run(optax.chain(optax.clip_by_global_norm(0.5), ours(0.05)), params, 20)
    ref, _ = run(optax.chain(optax.clip_by_global_norm(0.5), theirs(0.05)), params, 20)
    assert tree_max_rel_diff(got, ref) <= 1e-10


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_under_inject_hyperparams(name, ours, theirs):
    factory = {
        "sgd": jopt.sgd, "momentum": jopt.sgd, "nesterov": jopt.sgd, "adagrad": jopt.adagrad,
        "rmsprop": jopt.rmsprop, "rmsprop-centered-momentum": jopt.rmsprop, "adam": jopt.adam,
        "adam-eps-root": jopt.adam, "adamw": jopt.adamw, "adamw-masked": jopt.adamw,
    }[name]
    opt = optax.inject_hyperparams(factory)(learning_rate=0.05)
    params = random_tree(3)
    state = opt.init(params)
    updates, state = opt.update(jax.grad(loss)(params), state, params)
    plain_updates, _ = factory(0.05).update(jax.grad(loss)(params), factory(0.05).init(params),
                                            params)
    assert tree_max_rel_diff(updates, plain_updates) <= 1e-12
    # The injected learning rate is live state: halving it halves the next step.
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    zero, _ = jax.jit(opt.update)(jax.grad(loss)(params), state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(zero))


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_under_multisteps(name, ours, theirs):
    params = random_tree(4)
    got, _ = run(optax.MultiSteps(ours(0.05), every_k_schedule=3), params, 12)
    ref, _ = run(optax.MultiSteps(theirs(0.05), every_k_schedule=3), params, 12)
    assert tree_max_rel_diff(got, ref) <= 1e-10
    assert tree_max_rel_diff(got, params) > 1e-3


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_dtype_and_state_structure_stable(name, ours, theirs, dtype):
    opt = ours(0.01)
    params = random_tree(5, dtype=dtype)
    state0 = opt.init(params)
    updates, state1 = jax.jit(opt.update)(jax.tree.map(jnp.ones_like, params), state0, params)
    assert jax.tree.structure(state1) == jax.tree.structure(state0)
    for a, b in zip(jax.tree.leaves(state0), jax.tree.leaves(state1), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
    new_params = optax.apply_updates(params, updates)
    assert all(p.dtype == dtype for p in jax.tree.leaves(new_params))
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(new_params))
    # scan needs an identical carry type at every step: this is the strong form of the check.
    final, _ = run(opt, params, 5)
    assert all(p.dtype == dtype for p in jax.tree.leaves(final))


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_vmap_over_learning_rates_equals_separate_runs(name, ours, theirs):
    params = random_tree(6)
    lrs = jnp.asarray([0.001, 0.01, 0.03, 0.1])

    def train(lr):
        return run(ours(lr), params, 40)[0]

    batched = jax.jit(jax.vmap(train))(lrs)
    for i, lr in enumerate([0.001, 0.01, 0.03, 0.1]):
        single = train(lr)  # a Python float learning rate
        member = jax.tree.map(lambda a, i=i: a[i], batched)
        assert tree_max_rel_diff(member, single) <= 1e-12


def test_mu_dtype_is_respected():
    opt = jopt.adam(0.1, mu_dtype=jnp.bfloat16)
    params = random_tree(7, dtype=jnp.float32)
    state = opt.init(params)
    _, state = opt.update(params, state, params)
    assert all(m.dtype == jnp.bfloat16 for m in jax.tree.leaves(state.mu))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state.nu))


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "factory", [jopt.sgd, jopt.adagrad, jopt.rmsprop, jopt.adam, jopt.adamw],
    ids=lambda f: f.__name__,
)
def test_negative_learning_rate_is_rejected(factory):
    with pytest.raises(ValueError, match="`learning_rate` must be a non-negative"):
        factory(-0.1)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: jopt.adam(0.1, b1=1.0), "`b1` must lie in"),
        (lambda: jopt.adam(0.1, b2=-0.5), "`b2` must lie in"),
        (lambda: jopt.adam(0.1, eps=-1e-8), "`eps` must be a non-negative"),
        (lambda: jopt.adamw(0.1, weight_decay=-1.0), "`weight_decay` must be a non-negative"),
        (lambda: jopt.sgd(0.1, momentum=1.5), "`momentum` must lie in"),
        (lambda: jopt.sgd(0.1, nesterov=True), "`nesterov=True` needs a `momentum`"),
        (lambda: jopt.rmsprop(0.1, decay=1.0), "`decay` must lie in"),
        (lambda: jopt.adam(jnp.ones(3)), "`learning_rate` must be a scalar"),
        (lambda: jopt.adam(float("nan")), "`learning_rate` must be a non-negative"),
    ],
)
def test_bad_hyperparameters_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_integer_and_complex_params_are_rejected():
    with pytest.raises(TypeError, match=r"`params` leaf .*'w'.* has dtype int"):
        jopt.adam(0.1).init({"w": jnp.arange(3)})
    with pytest.raises(TypeError, match="complex"):
        jopt.sgd(0.1).init({"w": jnp.ones(2, jnp.complex64)})


def test_adamw_mask_structure_mismatch_and_missing_params():
    params = random_tree(8)
    opt = jopt.adamw(0.1, mask={"leaf0": True})
    with pytest.raises(ValueError, match="`mask` must have the same pytree structure"):
        opt.update(params, opt.init(params), params)
    opt = jopt.adamw(0.1)
    with pytest.raises(ValueError, match="needs `params`"):
        opt.update(params, opt.init(params))


def test_traced_hyperparameters_are_not_checked_in_python():
    # Validation never branches on traced values: building under jit/vmap works.
    out = jax.jit(lambda lr, b1: jopt.adam(lr, b1=b1).init(jnp.ones(2)).count)(0.1, 0.9)
    assert int(out) == 0
