"""Shared test utilities: random pytrees and tree comparisons."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

SHAPES = [(3,), (2, 3), (4,), (1, 2, 2), ()]


def random_tree(seed: int, shapes=None, dtype=jnp.float64, scale: float = 1.0) -> dict:
    """A dict of differently-shaped arrays filled with N(0, scale²) values."""
    shapes = SHAPES if shapes is None else shapes
    rng = np.random.default_rng(seed)
    return {
        f"leaf{i}": jnp.asarray(scale * rng.standard_normal(s), dtype=dtype)
        for i, s in enumerate(shapes)
    }


shape_lists = st.lists(
    st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple), min_size=1, max_size=4
)


def tree_max_rel_diff(a: Any, b: Any) -> float:
    """max |a - b| / max(|b|, tiny) over all leaves (relative to the reference ``b``)."""
    diffs = [
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                     / np.maximum(np.abs(np.asarray(y, np.float64)), 1e-30)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        if np.size(x)
    ]
    return max(diffs, default=0.0)


def assert_trees_close(a: Any, b: Any, rtol: float, atol: float = 0.0) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def ravel(tree: Any) -> np.ndarray:
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0])
