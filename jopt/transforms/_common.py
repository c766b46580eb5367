"""Helpers shared by the transforms: per-leaf fused maps, learning rates, dtypes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any
ScalarOrSchedule = float | jax.Array | optax.Schedule

_INT32_MAX = jnp.iinfo(jnp.int32).max


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` that saturates instead of wrapping around at the int32 maximum."""
    return jnp.where(count < _INT32_MAX, count + 1, count)


def learning_rate_at(learning_rate: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    """The step size for step ``count`` (0-based): ``schedule(count)`` or the constant."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


def compute_dtype(dtype: Any) -> Any:
    """Arithmetic dtype for a storage dtype: half precisions compute in float32."""
    return jnp.promote_types(dtype, jnp.float32)


def map_leaves(fn: Callable[..., tuple], num_out: int, first: PyTree, *rest: PyTree) -> tuple:
    """Apply ``fn`` to matching leaves once and split its tuple result into trees.

    Every transform computes *all* its per-leaf outputs (update and new moments) in one
    call per leaf, so XLA sees one small elementwise expression per leaf and fuses it into
    one multi-output kernel — instead of one ``tree_map`` (and one kernel) per formula line.
    """
    leaves, treedef = jax.tree.flatten(first)
    others = [treedef.flatten_up_to(t) for t in rest]
    outs = [fn(*args) for args in zip(leaves, *others, strict=True)]
    return tuple(jax.tree.unflatten(treedef, [o[i] for o in outs]) for i in range(num_out))


def zeros_like_tree(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros shaped like ``tree``'s leaves; ``zeros_like`` keeps each leaf's sharding, so
    optimizer state is created where the (possibly sharded) parameters live."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype or jnp.result_type(x)), tree)
