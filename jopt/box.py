"""Box constraints ``lower <= x <= upper`` on pytrees: projection, the projected gradient,
the largest feasible step and the active set.

Bounds are pytrees shaped like ``x`` (leaves broadcast to the leaf's shape), with
``-inf``/``+inf`` for a missing bound. ``None`` for both means no bounds. The projected
gradient ``P(x − ∇f) − x`` vanishes exactly at the first-order (KKT) points of the box
problem, so its ∞-norm is the stopping measure of every bounded method (scipy's
L-BFGS-B test; Byrd, Lu, Nocedal & Zhu 1995, §2).

References:
  Byrd, R. H., Lu, P., Nocedal, J. & Zhu, C. (1995). A limited memory algorithm for
  bound constrained optimization. SIAM J. Sci. Comput. 16(5), 1190–1208.
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., §16.7.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = ["active_set", "clip", "max_step", "projected_gradient"]


def clip(x: PyTree, lower: PyTree | None, upper: PyTree | None) -> PyTree:
    """``P(x)``: ``x`` projected onto the box (the identity without bounds)."""
    if lower is None and upper is None:
        return x
    return jax.tree.map(lambda a, lo, hi: jnp.clip(a, lo, hi).astype(a.dtype), x, lower, upper)


def projected_gradient(x: PyTree, g: PyTree, lower: PyTree | None,
                       upper: PyTree | None) -> PyTree:
    """``P(x − g) − x``: zero at a KKT point of the box problem (``g`` without bounds)."""
    if lower is None and upper is None:
        return jax.tree.map(jnp.negative, g)
    return jax.tree.map(lambda a, b, lo, hi: jnp.clip(a - b, lo, hi) - a, x, g, lower, upper)


def active_set(x: PyTree, lower: PyTree | None, upper: PyTree | None) -> PyTree:
    """Booleans like ``x``: the entry sits on a bound, to rounding (within 4 units of the
    bound's last place: ``x + (ℓ − x)`` can round off a nonzero ``ℓ`` by one)."""
    if lower is None and upper is None:
        return jax.tree.map(lambda a: jnp.zeros(a.shape, bool), x)

    def leaf(a, lo, hi):
        eps = 4 * jnp.finfo(a.dtype).eps
        return (a <= lo + eps * jnp.abs(lo)) | (a >= hi - eps * jnp.abs(hi))

    return jax.tree.map(leaf, x, lower, upper)


def max_step(x: PyTree, d: PyTree, lower: PyTree | None, upper: PyTree | None) -> jax.Array:
    """The largest ``α >= 0`` with ``x + α d`` inside the box (``inf`` if unbounded along
    ``d``); ``x`` is assumed feasible."""
    if lower is None and upper is None:
        leaves = jax.tree.leaves(x)
        return jnp.full([], jnp.inf, jnp.result_type(*leaves) if leaves else jnp.float32)

    def leaf(a, di, lo, hi):
        room = jnp.where(di > 0, hi - a, jnp.where(di < 0, lo - a, jnp.inf))
        ratio = jnp.where(di != 0, room / jnp.where(di != 0, di, 1.0), jnp.inf)
        return jnp.min(jnp.maximum(ratio, 0.0), initial=jnp.inf)

    steps = jax.tree.leaves(jax.tree.map(leaf, x, d, lower, upper))
    return jnp.min(jnp.stack(steps)) if steps else jnp.asarray(jnp.inf)
