"""Placing batches, parameters and optimizer states on a ``jax.sharding.Mesh``.

jopt needs nothing special to run on many devices: its transforms and ``jopt.minimize``
are ordinary jitted JAX, so XLA partitions them from the shardings of their inputs. Shard
the batch along a mesh axis and the loss's mean over rows becomes per-device partial sums
plus an all-reduce; gradients and Hessian-vector products (which are derivatives of that
loss) are reduced the same way. These helpers only *place* data:

* :func:`shard_batch` — split a batch's leading (row) dimension across a mesh axis, with a
  clear error when the axis size does not divide the rows; on several hosts it assembles
  the global batch from each process's local rows.
* :func:`replicate` — put a pytree on every device of a mesh (data-parallel parameters).
* :func:`shard_like_params` — place an optimizer state like the parameters it was built
  from: parameter-shaped leaves (moments, gradients, directions) on their parameter's
  sharding, stacked histories (L-BFGS's ``(m, *shape)`` buffers) sharded the same way
  along their trailing dimensions, and counters replicated. ``opt.init`` alone makes its
  zeros wherever JAX puts new arrays, which for a large model may be one device.

Example (data parallel on all local devices; a jitted step needs no change):

    >>> import jax, jax.numpy as jnp, optax, jopt
    >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
    >>> opt = jopt.adam(1e-2)
    >>> params = jopt.distributed.replicate({"w": jnp.zeros(3)}, mesh)
    >>> opt_state = jopt.distributed.shard_like_params(opt.init(params), params)
    >>> def loss(params, batch):
    ...     X, y = batch
    ...     return jnp.mean((X @ params["w"] - y) ** 2)
    >>> @jax.jit
    ... def step(params, opt_state, batch):
    ...     value, grads = jax.value_and_grad(loss)(params, batch)
    ...     updates, opt_state = opt.update(grads, opt_state, params)
    ...     return optax.apply_updates(params, updates), opt_state, value
    >>> rows = 4 * jax.device_count()  # a multiple of the number of devices
    >>> batch = jopt.distributed.shard_batch((jnp.ones((rows, 3)), jnp.ones(rows)), mesh, "data")
    >>> params, opt_state, value = step(params, opt_state, batch)
    >>> round(float(value), 3)
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any

__all__ = ["replicate", "shard_batch", "shard_like_params"]


def _check_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"`mesh` must be a `jax.sharding.Mesh`, got {type(mesh).__name__}. Build one with "
            f"e.g. `jax.make_mesh((jax.device_count(),), ('data',))`."
        )


def _axis_names(mesh: Mesh, axis: str | Sequence[str]) -> tuple[str, ...]:
    names = (axis,) if isinstance(axis, str) else tuple(axis) if isinstance(
        axis, tuple | list) else ()
    if not names or not all(isinstance(a, str) for a in names):
        raise TypeError(f"`axis` must be a mesh axis name or a tuple of names, got {axis!r}.")
    for name in names:
        if name not in mesh.axis_names:
            raise ValueError(
                f"`axis` {name!r} is not an axis of `mesh`; its axes are "
                f"{tuple(mesh.axis_names)} with sizes {tuple(mesh.devices.shape)}."
            )
    return names


def shard_batch(
    batch: PyTree,
    mesh: Mesh,
    axis: str | Sequence[str] = "data",
    *,
    process_local: bool | None = None,
) -> PyTree:
    """Split every leaf of ``batch`` along its leading (row) dimension across ``axis``.

    Args:
      batch: a pytree of arrays (NumPy or JAX) with a common leading batch dimension, e.g.
        ``(features, labels)``.
      mesh: the device mesh.
      axis: the mesh axis (or tuple of axes, sharded jointly) that splits the rows. Other
        mesh axes hold a copy of each row block.
      process_local: treat each leaf as this process's share of the rows and assemble the
        global array with ``jax.make_array_from_process_local_data`` (every process calls
        this with its own rows, the same shapes). Default: ``True`` exactly when
        ``jax.process_count() > 1``; in a single process ``jax.device_put`` is used.

    Returns:
      ``batch`` with each leaf a ``jax.Array`` sharded as ``PartitionSpec(axis)``.

    Raises:
      ValueError: a leaf is a scalar, or its number of rows is not a multiple of the
        number of devices along ``axis`` (the message names the leaf and says how to fix it).
    """
    _check_mesh(mesh)
    names = _axis_names(mesh, axis)
    size = math.prod(mesh.shape[a] for a in names)
    if process_local is None:
        process_local = jax.process_count() > 1
    spec_axis = names[0] if len(names) == 1 else names
    sharding = NamedSharding(mesh, PartitionSpec(spec_axis))
    per = max(size // jax.process_count(), 1) if process_local else size  # rows multiple
    label = "/".join(names)

    def place(path: tuple, leaf: Any) -> jax.Array:
        where = jax.tree_util.keystr(path) or "<root>"
        shape = getattr(leaf, "shape", None)
        if shape is None:
            raise TypeError(f"`batch` leaf {where} is a {type(leaf).__name__}, not an array.")
        if len(shape) == 0:
            raise ValueError(
                f"`batch` leaf {where} is a scalar; every leaf needs a leading batch "
                f"dimension to split across mesh axis {label!r}. Replicate per-batch "
                f"constants with `jopt.distributed.replicate` instead."
            )
        rows = shape[0]
        if rows % per:
            keep = rows - rows % per
            raise ValueError(
                f"`batch` leaf {where} has {rows} rows (leading dimension), which mesh axis "
                f"{label!r} of size {size} does not divide"
                + (f" ({per} devices of it per process)" if process_local else "")
                + f". Use a batch size that is a multiple of {per}: e.g. drop the last "
                f"{rows - keep} rows (`x[:{keep}]`) or pad to {keep + per} rows."
            )
        if process_local:
            return jax.make_array_from_process_local_data(sharding, leaf)
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map_with_path(place, batch)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Put a full copy of every leaf of ``tree`` on every device of ``mesh``.

    In a multi-process run every process must pass the same values.
    """
    _check_mesh(mesh)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def _leaf_sharding(leaf: Any, param: jax.Array, fallback: Any) -> Any:
    """The sharding of ``param`` for a leaf of the same shape; stacked ``(k, *shape)``
    leaves get it on their trailing dimensions; anything else gets ``fallback``."""
    shape = getattr(leaf, "shape", None)
    if shape is None:
        return fallback
    sharding = param.sharding
    if tuple(shape) == tuple(param.shape):
        return sharding
    if (isinstance(sharding, NamedSharding) and len(shape) == param.ndim + 1
            and tuple(shape[1:]) == tuple(param.shape)):
        return NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
    return fallback


def shard_like_params(tree: PyTree, params: PyTree) -> PyTree:
    """Place ``tree`` (an optimizer or solver state) like the placed ``params``.

    Every subtree of ``tree`` with the tree structure of ``params`` (Adam's moments,
    momentum traces, stored gradients, line-search gradients, L-BFGS histories, …) is
    placed leaf by leaf: a leaf with its parameter's shape gets that parameter's sharding,
    a stacked leaf of shape ``(k, *param.shape)`` gets the same sharding on its trailing
    dimensions (replicated along ``k``). All other leaves (step counters, scalars) are
    replicated on the mesh of the parameters (or put on their device when the parameters
    are not on a mesh).

    Args:
      tree: the pytree to place, e.g. ``opt.init(params)``.
      params: the parameters, already placed (``jax.Array`` leaves with shardings).

    Returns:
      ``tree`` with every leaf a ``jax.Array`` on the chosen sharding.
    """
    param_leaves, param_def = jax.tree.flatten(params)
    if not param_leaves or not all(isinstance(p, jax.Array) for p in param_leaves):
        raise TypeError(
            "`params` must be a non-empty pytree of placed `jax.Array` s (e.g. from "
            "`jax.device_put(params, shardings)` or `replicate`)."
        )
    first = param_leaves[0].sharding
    if isinstance(first, NamedSharding):
        fallback: Any = NamedSharding(first.mesh, PartitionSpec())
    else:
        fallback = next(iter(first.device_set))

    def is_param_like(node: Any) -> bool:
        return jax.tree.structure(node) == param_def

    def place(node: Any) -> Any:
        if is_param_like(node):
            leaves = jax.tree.leaves(node)
            targets = [_leaf_sharding(x, p, fallback)
                       for x, p in zip(leaves, param_leaves, strict=True)]
            return jax.tree.unflatten(param_def, [
                jax.device_put(x, t) for x, t in zip(leaves, targets, strict=True)])
        return jax.device_put(node, fallback)

    return jax.tree.map(place, tree, is_leaf=is_param_like)
