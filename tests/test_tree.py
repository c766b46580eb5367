"""Pytree vector helpers against dense numpy oracles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jopt.tree import tree_vdot, tree_vdots
from tests.helpers import random_tree, ravel, shape_lists


@settings(max_examples=10, deadline=None)
@given(shapes=shape_lists, seed=st.integers(0, 2**16))
def test_tree_vdots_match_dense_dot_products(shapes, seed):
    a, b, c = (random_tree(seed + k, shapes) for k in range(3))
    pairs = [(a, b), (b, b), (a, c), (c, a)]
    got = jax.jit(tree_vdots)(pairs)
    assert len(got) == len(pairs)
    for (u, v), value in zip(pairs, got, strict=True):
        dense = float(np.dot(ravel(u), ravel(v)))
        np.testing.assert_allclose(float(value), dense, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(float(value), float(tree_vdot(u, v)), rtol=1e-12,
                                   atol=1e-12)


def test_tree_vdots_keep_dtype_and_vmap():
    a = {"w": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3), "b": jnp.ones(2, jnp.float32)}
    sy, yy = tree_vdots([(a, a), (a, jax.tree.map(jnp.ones_like, a))])
    assert sy.dtype == yy.dtype == jnp.float32
    assert float(sy) == 55.0 + 2.0 and float(yy) == 15.0 + 2.0
    batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), a)
    out = jax.vmap(lambda t: tree_vdots([(t, t)])[0])(batch)
    np.testing.assert_allclose(np.asarray(out), [57.0, 228.0])
