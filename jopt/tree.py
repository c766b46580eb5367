"""Small pytree vector-space helpers used by the solvers (all jit/vmap friendly)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = ["set_row", "tree_add_scaled", "tree_inf_norm", "tree_l2_norm", "tree_scale",
           "tree_select", "tree_vdot", "tree_vdots"]


def set_row(array: jax.Array, index: Any, value: Any) -> jax.Array:
    """``array`` with ``array[index] = value`` along the first axis, for an in-range traced
    ``index``: ``array.at[index].set(value)`` as a dynamic-update-slice.

    (``.at[].set`` is a scatter in the jaxpr, which XLA turns into the same update later;
    the slice update is the plain operation every compiler path takes. Under a mesh with
    explicit axes ``.at[].set`` is kept: its sharding rule reconciles operand and update,
    the slice update's does not.)
    """
    value = jnp.asarray(value, array.dtype)
    if _on_mesh(array) or _on_mesh(value):
        return array.at[index].set(value)
    return jax.lax.dynamic_update_index_in_dim(array, value, index, 0)


def _on_mesh(x: Any) -> bool:
    """Whether ``x``'s type carries a sharding over a mesh with named axes."""
    try:
        return bool(jax.typeof(x).sharding.mesh.axis_names)
    except Exception:  # a type without a sharding: nothing to reconcile
        return False


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """``Σ_leaves <a, b>`` accumulated in the leaves' (promoted) dtype."""
    parts = [jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    return sum(parts[1:], parts[0]) if parts else jnp.zeros([])


def tree_vdots(pairs: list[tuple[PyTree, PyTree]]) -> list[jax.Array]:
    """``[tree_vdot(a, b) for a, b in pairs]`` as one row reduction per leaf.

    XLA:CPU compiles each vector dot product as its own reduction (two kernels: a window
    reduction, then a scalar one); stacking the products of several pairs into the rows
    of one ``(k, n)`` array makes them a single reduction.
    """
    leaves = [(jax.tree.leaves(a), jax.tree.leaves(b)) for a, b in pairs]
    if not leaves or not leaves[0][0]:
        return [jnp.zeros([]) for _ in pairs]
    sums = None
    for i in range(len(leaves[0][0])):
        rows = jnp.stack([jnp.ravel(jnp.conj(a[i]) * b[i]) for a, b in leaves])
        part = jnp.sum(rows, axis=1)
        sums = part if sums is None else sums + part
    return [sums[k] for k in range(len(pairs))]


def tree_l2_norm(a: PyTree) -> jax.Array:
    return jnp.sqrt(tree_vdot(a, a))


def tree_inf_norm(a: PyTree) -> jax.Array:
    parts = [jnp.max(jnp.abs(x), initial=0.0) for x in jax.tree.leaves(a)]
    return jnp.max(jnp.stack(parts)) if parts else jnp.zeros([])


def tree_scale(alpha: Any, a: PyTree) -> PyTree:
    """``alpha · a`` with ``alpha`` cast to each leaf's dtype (no dtype promotion)."""
    return jax.tree.map(lambda x: jnp.asarray(alpha, x.dtype) * x, a)


def tree_add_scaled(a: PyTree, alpha: Any, b: PyTree) -> PyTree:
    """``a + alpha · b`` leafwise, in the leaves' dtypes."""
    return jax.tree.map(lambda x, y: x + jnp.asarray(alpha, y.dtype) * y, a, b)


def tree_select(pred: jax.Array, a: PyTree, b: PyTree) -> PyTree:
    """``a`` where the scalar ``pred`` holds, else ``b`` (arithmetic select, no ``cond``)."""
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)
