"""``FlatParams``: parameters stored in one contiguous buffer per dtype, read as views.

Optimizers over pytrees pay per leaf: every leaf is a separate kernel (run time) and a
separate piece of the compiled program (compile time). A model with thousands of leaves
(every bias and norm scale is one) then costs far more than its parameter count says.
Concatenating the leaves before every step and splitting after (``optax.flatten``) moves
the cost to two extra copies instead of removing it.

``FlatParams`` removes it at the source: the parameters *live* in one 1-D buffer per dtype,
and the model reads them as views (static slices + reshapes) through :meth:`FlatParams.tree`.
``FlatParams`` is a pytree whose leaves are those buffers, so

* ``jax.grad(loss)(flat_params)`` returns the gradient as a ``FlatParams`` (XLA writes each
  leaf's gradient straight into its slice of the buffer),
* any optax or jopt transform sees one leaf per dtype and updates all parameters in one
  fused elementwise pass, with compile time independent of the number of leaves,
* ``optax.apply_updates``, checkpointing, ``vmap`` and sharding work unchanged.

Example:

    >>> import jax, jax.numpy as jnp, optax, jopt
    >>> params = {"w": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
    >>> flat = jopt.FlatParams.from_tree(params)        # once
    >>> flat
    FlatParams(2 leaves in float32[9])
    >>> opt = jopt.adam(1e-3)
    >>> state = opt.init(flat)
    >>> def loss(flat, x):
    ...     p = flat.tree()                              # the model sees the usual pytree
    ...     return jnp.sum((x @ p["w"] + p["b"]) ** 2)
    >>> grads = jax.grad(loss)(flat, jnp.ones((4, 2), jnp.float32))  # a FlatParams
    >>> updates, state = opt.update(grads, state, flat)
    >>> flat = optax.apply_updates(flat, updates)
    >>> flat.tree()["w"].shape
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

__all__ = ["FlatParams"]


@dataclasses.dataclass(frozen=True)
class _LeafSlot:
    group: int  # index of the buffer (one per dtype)
    offset: int
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class FlatSpec:
    """Static layout of a :class:`FlatParams`: tree structure, dtypes and leaf slots.

    It is the pytree aux data, so ``jit`` hashes and compares it on every call: the hash is
    computed once and equality tries identity first, keeping dispatch cost independent of
    the number of leaves.
    """

    treedef: Any
    dtypes: tuple[str, ...]  # dtype name of each buffer
    sizes: tuple[int, ...]  # length of each buffer
    slots: tuple[_LeafSlot, ...]  # one per leaf, in tree order

    def _key(self) -> tuple:
        return (self.treedef, self.dtypes, self.sizes, self.slots)

    def __hash__(self) -> int:
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(self._key())
            object.__setattr__(self, "_hash", cached)
        return cached

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, FlatSpec) or hash(self) != hash(other):
            return False
        return self._key() == other._key()


def _layout(tree: PyTree) -> FlatSpec:
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        raise ValueError("`tree` has no array leaves; FlatParams needs at least one array.")
    dtypes: list[str] = []
    sizes: list[int] = []
    slots = []
    for leaf in leaves:
        dt = jnp.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(
                f"FlatParams stores float parameters; got a leaf of dtype {dt}. Keep integer "
                f"state outside the parameters (or cast it to a float dtype)."
            )
        name = np.dtype(dt).name
        if name not in dtypes:
            dtypes.append(name)
            sizes.append(0)
        g = dtypes.index(name)
        shape = tuple(int(d) for d in jnp.shape(leaf))
        slots.append(_LeafSlot(g, sizes[g], shape))
        sizes[g] += math.prod(shape)
    spec = FlatSpec(treedef, tuple(dtypes), tuple(sizes), tuple(slots))
    # Intern: equal layouts share one object, so jit's per-call aux-data comparison is an
    # identity check instead of a walk over every leaf slot.
    return _SPECS.setdefault(spec, spec)


_SPECS: dict[FlatSpec, FlatSpec] = {}


@jax.tree_util.register_pytree_node_class
class FlatParams:
    """Parameters held in one 1-D buffer per dtype; :meth:`tree` gives the pytree view.

    Build with :meth:`from_tree`. The pytree leaves of a ``FlatParams`` are its buffers, so
    every JAX transformation and every optax transform treats it as a few big arrays.
    """

    __slots__ = ("buffers", "spec")

    def __init__(self, buffers: tuple[Any, ...], spec: FlatSpec):
        self.buffers = tuple(buffers)
        self.spec = spec

    # -- pytree protocol (no validation: leaves may be tracers, None, or sentinels)
    def tree_flatten(self) -> tuple[tuple[Any, ...], FlatSpec]:
        return self.buffers, self.spec

    @classmethod
    def tree_unflatten(cls, spec: FlatSpec, buffers: Any) -> FlatParams:
        return cls(tuple(buffers), spec)

    # -- construction and views
    @classmethod
    def from_tree(cls, tree: PyTree) -> FlatParams:
        """Copy the leaves of ``tree`` into one buffer per dtype (done once, not per step)."""
        spec = _layout(tree)
        return cls(_pack(spec, jax.tree.leaves(tree)), spec)

    def tree(self) -> PyTree:
        """The parameters as the original pytree; each leaf is a static slice of a buffer.

        One ``lax.split`` per buffer: its transpose is a single ``concatenate``, so the
        gradient flowing back into the buffers costs one pass over the parameters (per-leaf
        slices would transpose to one full-size pad per leaf — quadratic in the leaves).
        """
        pieces: list[Any] = [None] * len(self.spec.slots)
        for g, buffer in enumerate(self.buffers):
            members = [i for i, s in enumerate(self.spec.slots) if s.group == g]
            sizes = [math.prod(self.spec.slots[i].shape) for i in members]
            parts = jax.lax.split(buffer, sizes) if len(sizes) > 1 else [buffer]
            for i, part in zip(members, parts, strict=True):
                pieces[i] = part.reshape(self.spec.slots[i].shape)
        return jax.tree.unflatten(self.spec.treedef, pieces)

    def like(self, tree: PyTree) -> FlatParams:
        """Lay out another tree (e.g. a weight-decay mask of bools) in this layout.

        Each leaf of ``tree`` (same structure as the parameters) is broadcast to its
        parameter's shape; buffers take the leaves' common dtype per group.
        """
        leaves = self.spec.treedef.flatten_up_to(tree)
        full = [
            jnp.broadcast_to(jnp.asarray(v), s.shape)
            for v, s in zip(leaves, self.spec.slots, strict=True)
        ]
        return FlatParams(_pack(self.spec, full, keep_dtype=True), self.spec)

    @property
    def size(self) -> int:
        return sum(self.spec.sizes)

    def __repr__(self) -> str:
        groups = ", ".join(f"{d}[{n}]" for d, n in zip(self.spec.dtypes, self.spec.sizes,
                                                       strict=True))
        return f"FlatParams({len(self.spec.slots)} leaves in {groups})"


def _pack(spec: FlatSpec, leaves: list[Any], keep_dtype: bool = False) -> tuple[jax.Array, ...]:
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        # Concrete leaves: pack on the host in one pass (thousands of eager device ops, or a
        # program with thousands of concatenated operands, cost seconds to minutes).
        return _pack_host(spec, leaves, keep_dtype)
    groups: list[list[jax.Array]] = [[] for _ in spec.dtypes]
    for leaf, slot in zip(leaves, spec.slots, strict=True):
        arr = jnp.ravel(jnp.asarray(leaf))
        if not keep_dtype:
            arr = arr.astype(spec.dtypes[slot.group])
        groups[slot.group].append(arr)
    return tuple(jnp.concatenate(g) if len(g) > 1 else g[0] for g in groups)


def _pack_host(spec: FlatSpec, leaves: list[Any], keep_dtype: bool) -> tuple[jax.Array, ...]:
    groups: list[list[np.ndarray]] = [[] for _ in spec.dtypes]
    for leaf, slot in zip(leaves, spec.slots, strict=True):
        arr = np.ravel(np.asarray(leaf))
        if not keep_dtype:
            arr = arr.astype(jnp.dtype(spec.dtypes[slot.group]))
        groups[slot.group].append(arr)
    return tuple(jnp.asarray(np.concatenate(g)) for g in groups)
