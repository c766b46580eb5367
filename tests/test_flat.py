"""FlatParams: the opt-in layout whose optimizer cost does not depend on the leaf count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.helpers import random_tree, tree_max_rel_diff


def mixed_tree():
    return {
        "dense": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3, jnp.float32)},
        "norm": jnp.full((4,), 0.5, jnp.bfloat16),
        "scalar": jnp.asarray(2.0),
    }


def test_round_trip_groups_by_dtype_and_keeps_dtypes():
    tree = mixed_tree()
    flat = jopt.FlatParams.from_tree(tree)
    assert len(jax.tree.leaves(flat)) == 3  # float64, float32, bfloat16 buffers
    back = flat.tree()
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert flat.size == 6 + 3 + 4 + 1


def loss_tree(tree):
    return sum(jnp.sum(jnp.sin(x) * (x - 0.3) ** 2) for x in jax.tree.leaves(tree))


def test_gradient_through_views_is_the_flattened_gradient():
    tree = random_tree(0)
    flat = jopt.FlatParams.from_tree(tree)
    got = jax.grad(lambda f: loss_tree(f.tree()))(flat)
    assert isinstance(got, jopt.FlatParams)
    expected = jopt.FlatParams.from_tree(jax.grad(loss_tree)(tree))
    np.testing.assert_allclose(got.buffers[0], expected.buffers[0], rtol=1e-14)


@pytest.mark.parametrize(
    "make",
    [lambda: jopt.adam(0.05), lambda: jopt.sgd(0.02, momentum=0.9),
     lambda: jopt.rmsprop(0.01, centered=True), lambda: optax.adam(0.05)],
    ids=["jopt.adam", "jopt.sgd-momentum", "jopt.rmsprop-centered", "optax.adam"],
)
def test_optimizers_on_flat_params_equal_the_pytree_run(make):
    opt = make()
    tree = random_tree(1)
    flat = jopt.FlatParams.from_tree(tree)

    def run(params, loss):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=50)[0][0]

    got = jax.jit(run, static_argnums=1)(flat, lambda f: loss_tree(f.tree()))
    ref = jax.jit(run, static_argnums=1)(tree, loss_tree)
    assert isinstance(got, jopt.FlatParams)
    assert tree_max_rel_diff(got.tree(), ref) <= 1e-12


def test_adamw_mask_laid_out_with_like():
    tree = random_tree(2)
    mask = {k: k in ("leaf0", "leaf3") for k in tree}
    flat = jopt.FlatParams.from_tree(tree)
    grads = jax.tree.map(jnp.cos, tree)
    ref, _ = jopt.adamw(0.1, weight_decay=0.5, mask=mask).update(
        grads, jopt.adamw(0.1).init(tree), tree)
    opt = jopt.adamw(0.1, weight_decay=0.5, mask=flat.like(mask))
    got, _ = opt.update(jopt.FlatParams.from_tree(grads), opt.init(flat), flat)
    assert tree_max_rel_diff(jopt.FlatParams(got.buffers, flat.spec).tree(), ref) <= 1e-14


def test_vmap_over_learning_rates_with_flat_params():
    flat = jopt.FlatParams.from_tree(random_tree(3))

    def one_step(lr):
        opt = jopt.adam(lr)
        u, _ = opt.update(jax.grad(lambda f: loss_tree(f.tree()))(flat), opt.init(flat), flat)
        return optax.apply_updates(flat, u)

    batched = jax.vmap(one_step)(jnp.asarray([0.1, 0.2]))
    np.testing.assert_allclose(batched.buffers[0][1], one_step(0.2).buffers[0], rtol=1e-14)


def test_compiled_step_size_is_independent_of_leaf_count():
    def hlo_ops(num_leaves):
        tree = [jnp.ones(8, jnp.float32) for _ in range(num_leaves)]
        flat = jopt.FlatParams.from_tree(tree)
        opt = jopt.adam(1e-3)

        def step(p, s, g):
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        text = jax.jit(step).lower(flat, opt.init(flat), flat).as_text()
        return sum(1 for line in text.splitlines() if "=" in line)

    assert hlo_ops(10) == hlo_ops(500)


def test_bad_input():
    with pytest.raises(TypeError, match="FlatParams stores float parameters"):
        jopt.FlatParams.from_tree({"w": jnp.ones(2), "step": jnp.asarray(3)})
    with pytest.raises(ValueError, match="no array leaves"):
        jopt.FlatParams.from_tree({})
