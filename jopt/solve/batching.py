"""Batches of independent solves run in compiled segments, re-batched as members finish.

Under ``jax.vmap`` a ``lax.while_loop`` runs until its slowest member stops: every
iteration computes the whole batch and masks out the members that are done. Here a batch
runs in *segments* instead: one segment advances the members still running by at most
``segment`` iterations; between segments the host reads the members' statuses, drops the
finished ones and packs the rest into the smallest *bucket* that holds them. Buckets are a
few fixed batch sizes (the full size and the powers of two below it down to 32), so at most
one program is compiled per bucket size, and the work follows the sum of the members'
iteration counts rather than ``batch × slowest``.

Per segment (one compiled program per bucket size ``b``):

1. ``idx``: the indices of the running members, padded to ``b`` with the out-of-range
   index ``B`` (the batch size);
2. :func:`gather` the members' states (and batched arguments) at ``idx``; padding lanes
   get a copy of a real member's state, marked finished so they never iterate;
3. run at most ``segment`` iterations of the vmapped loop;
4. :func:`scatter` the states back at ``idx`` (padding lanes are dropped: their index is
   out of range), in place when the full state is donated.

:func:`run_segments` is the host loop; :mod:`jopt.solve.many` (``minimize_many``) and
:mod:`jopt.lsq.many` (``least_squares_many``) supply their own states and segments.

References:
  The bucketing follows the usual padding-to-bucket scheme for variable-size batches under
  static-shape compilation (e.g. sequence-length bucketing in XLA input pipelines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.solve import checks

PyTree = Any

__all__ = ["BatchStats", "batch_size", "buckets", "gather", "gather_args", "normalize_axes",
           "run_segments", "scatter"]

MIN_BUCKET = 32


class BatchStats(NamedTuple):
    """How a segmented batch was scheduled (for benchmarks and tests).

    Attributes:
      buckets: the bucket size of each segment, in order.
      active: the number of running members entering each segment.
      lane_iterations: Σ over segments of bucket size × iterations the segment ran (its
        slowest member's): the batched work actually done.
    """

    buckets: tuple[int, ...]
    active: tuple[int, ...]
    lane_iterations: int


def batch_size(tree: PyTree, name: str = "x0s") -> int:
    """The common leading (batch) size of ``tree``'s leaves; errors name ``name``."""
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(tree)}
    if None in sizes or not sizes:
        raise ValueError(
            f"`{name}` must hold a batch of starting points: every leaf needs a leading batch "
            f"axis (e.g. shape (n_starts, n)); for a single start use the unbatched function "
            f"or `x0[None]`."
        )
    if len(sizes) != 1:
        raise ValueError(f"every leaf of `{name}` must have the same leading (batch) size, "
                         f"got {sorted(sizes)}.")
    size = sizes.pop()
    if size < 1:
        raise ValueError(f"`{name}` has an empty batch axis (size 0).")
    return size


def normalize_axes(args_axes: Any, args: tuple, size: int) -> tuple[int | None, ...]:
    """``args_axes`` as a tuple with ``0`` or ``None`` per argument; batch sizes checked."""
    checks.check_args(args)
    if args_axes is None or args_axes == 0:
        axes = (args_axes,) * len(args)
    elif isinstance(args_axes, Sequence) and not isinstance(args_axes, str):
        axes = tuple(args_axes)
        if len(axes) != len(args):
            raise ValueError(f"`args_axes` needs one entry per argument ({len(args)}), got "
                             f"{len(axes)}.")
    else:
        raise ValueError(f"`args_axes` must be None, 0, or a tuple of 0/None per argument, "
                         f"got {args_axes!r}.")
    for i, (axis, arg) in enumerate(zip(axes, args, strict=True)):
        if axis not in (0, None) or isinstance(axis, bool):
            raise ValueError(f"`args_axes[{i}]` must be 0 (batched) or None (shared), got "
                             f"{axis!r}.")
        if axis == 0:
            for leaf in jax.tree.leaves(arg):
                if np.ndim(leaf) == 0 or np.shape(leaf)[0] != size:
                    raise ValueError(
                        f"`args[{i}]` is batched (`args_axes`) but has a leaf of shape "
                        f"{np.shape(leaf)}: its leading axis must be the batch size {size}."
                    )
    return axes


def buckets(bucket_sizes: Sequence[int] | None, size: int) -> tuple[int, ...]:
    """Ascending batch sizes, the largest being ``size``."""
    if bucket_sizes is None:
        sizes = {size}
        b = 1 << max(size - 1, 1).bit_length()  # smallest power of two >= size
        while b > MIN_BUCKET:
            b //= 2
            if b < size:
                sizes.add(b)
        return tuple(sorted(sizes))
    sizes = {size}
    for b in bucket_sizes:
        checks.check_count("bucket_sizes entry", b)
        if b < size:
            sizes.add(int(b))
    return tuple(sorted(sizes))


def gather(tree: PyTree, idx: jax.Array) -> PyTree:
    """Rows ``idx`` of every leaf (an out-of-range index repeats the last row)."""
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0, mode="clip"), tree)


def gather_args(args: tuple, axes: tuple, idx: jax.Array) -> tuple:
    """The batched arguments' rows ``idx``; shared ones as they are."""
    return tuple(gather(a, idx) if axis == 0 else a for a, axis in zip(args, axes, strict=True))


def scatter(full: PyTree, part: PyTree, idx: jax.Array) -> PyTree:
    """``full`` with rows ``idx`` replaced by ``part`` (out-of-range rows dropped)."""
    return jax.tree.map(lambda a, b: a.at[idx].set(b, mode="drop"), full, part)


def run_segments(states: Any, segment: Callable[[Any, np.ndarray], Any], size: int,
                 sizes: tuple[int, ...]) -> tuple[Any, BatchStats]:
    """Call ``segment(states, idx)`` on the running members (``states.status < 0``),
    padded to the smallest bucket in ``sizes``, until none runs."""
    status = np.asarray(states.status)
    nit = np.asarray(states.nit)
    used, active_counts, lane_iterations = [], [], 0
    while True:
        active = np.flatnonzero(status < 0)
        if active.size == 0:
            break
        bucket = next(b for b in sizes if b >= active.size)
        idx = np.full(bucket, size, np.int32)  # out of range: padding lanes
        idx[: active.size] = active
        states = segment(states, idx)
        status, new_nit = np.asarray(states.status), np.asarray(states.nit)
        used.append(bucket)
        active_counts.append(int(active.size))
        lane_iterations += bucket * int(np.max(new_nit[active] - nit[active]))
        nit = new_nit
    return states, BatchStats(tuple(used), tuple(active_counts), lane_iterations)
