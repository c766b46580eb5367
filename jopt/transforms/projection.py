"""Keeping parameters in a box: the projection as the last link of an optax chain.

:func:`keep_params_in_box` turns any update ``u`` into the projected one,

    u  ↦  P(x + u) − x,      P(y) = min(max(y, lower), upper)  (elementwise),

so that ``optax.apply_updates(x, ·)`` lands inside ``lower <= x <= upper``. Used last in
a chain, it makes any first-order method a projected one (projected gradient descent for
``optax.sgd``; Bertsekas 1976, Nocedal & Wright 2006 §16.7), the way
``optax.keep_params_nonnegative()`` keeps parameters ``>= 0``::

    optax.chain(optax.adam(1e-3), jopt.keep_params_in_box(lower, upper))

It also takes ``lower`` / ``upper`` as extra arguments of ``update`` (as
:func:`jopt.minimize`'s loop passes them with ``bounds``); those replace the bounds given
when it was made.

The module also holds the box helpers the bounded transforms share: :func:`broadcast_box`
(bounds given as numbers, arrays or pytrees, made into full pytrees like ``x``) and
:func:`feasible_update` (an update ``u`` with ``x + u`` inside the box after floating-point
rounding, which ``target − x`` alone does not guarantee).

References:
  Bertsekas, D. P. (1976). On the Goldstein-Levitin-Polyak gradient projection method.
  IEEE Trans. Automatic Control 21(2), 174–184.
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., §16.7 (gradient
  projection).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._checks import check_float_tree

PyTree = Any

__all__ = ["broadcast_box", "feasible_update", "keep_params_in_box", "project_box"]

_ROUNDING_FIXES = 3  # nextafter corrections in feasible_update (2 always suffice, see there)


def _is_scalar(bound: Any) -> bool:
    """A number or a 0-d array: one bound for every entry of every leaf."""
    return isinstance(bound, numbers.Number | np.generic) or (
        hasattr(bound, "shape") and jnp.shape(bound) == ())


def _bound_tree(name: str, bound: Any, like: PyTree, missing: float) -> PyTree:
    """``bound`` as a pytree like ``like`` (each leaf broadcast to the leaf's shape, in its
    dtype); ``None`` gives ``missing`` (``±inf``)."""
    if bound is None:
        return jax.tree.map(lambda x: jnp.full(jnp.shape(x), missing, jnp.result_type(x)), like)
    if _is_scalar(bound):
        return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(bound, jnp.result_type(x)),
                                                       jnp.shape(x)), like)
    like_def = jax.tree.structure(like)
    if jax.tree.structure(bound) != like_def:
        raise ValueError(
            f"`{name}` must be a number, or a pytree with the structure of the parameters "
            f"(leaves broadcastable to theirs); got structure {jax.tree.structure(bound)}, "
            f"parameters have {like_def}. Pass e.g. `jax.tree.map(lambda x: 0.0 * x, params)`.")

    def leaf(b, x):
        b = jnp.asarray(b, jnp.result_type(x))
        try:
            return jnp.broadcast_to(b, jnp.shape(x))
        except ValueError:
            raise ValueError(f"`{name}` has a leaf of shape {jnp.shape(b)} that does not "
                             f"broadcast to the parameter's shape {jnp.shape(x)}.") from None

    return jax.tree.map(leaf, bound, like)


def _check_order(lower: PyTree, upper: PyTree) -> None:
    """Concrete bounds: no NaN, ``lower <= upper`` (traced bounds are not inspected)."""
    for lo, hi in zip(jax.tree.leaves(lower), jax.tree.leaves(upper), strict=True):
        if isinstance(lo, jax.core.Tracer) or isinstance(hi, jax.core.Tracer):
            continue
        lo, hi = np.asarray(lo), np.asarray(hi)
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise ValueError("`lower`/`upper` contain NaN: use -inf/inf (or None) for a "
                             "missing bound.")
        if (lo > hi).any():
            k = int(np.flatnonzero((lo > hi).ravel())[0])
            raise ValueError(f"`lower` > `upper` at flat index {k} ({lo.ravel()[k]} > "
                             f"{hi.ravel()[k]}); every lower bound must be <= its upper bound.")


def broadcast_box(like: PyTree, lower: Any, upper: Any) -> tuple[PyTree, PyTree] | tuple[
        None, None]:
    """``(lower, upper)`` as pytrees shaped and typed like ``like``, or ``(None, None)``.

    Each bound may be ``None`` (no bound: ``-inf`` / ``+inf``), a number or 0-d array (the
    same bound everywhere), or a pytree with ``like``'s structure whose leaves broadcast to
    its leaves' shapes. Both ``None`` gives ``(None, None)``: unbounded. Concrete bounds
    are checked (no NaN, ``lower <= upper``); traced ones pass unchecked.

    Example:
      >>> import jax.numpy as jnp
      >>> lo, hi = broadcast_box({"w": jnp.zeros(2)}, 0.0, None)
      >>> lo["w"].tolist(), hi["w"].tolist()
      ([0.0, 0.0], [inf, inf])
    """
    if lower is None and upper is None:
        return None, None
    lo = _bound_tree("lower", lower, like, -np.inf)
    hi = _bound_tree("upper", upper, like, np.inf)
    _check_order(lo, hi)
    return lo, hi


def feasible_update(params: PyTree, target: PyTree, lower: PyTree | None,
                    upper: PyTree | None) -> PyTree:
    """An update ``u`` with ``params + u`` (rounded as ``optax.apply_updates`` rounds it)
    equal to ``target`` where ``target − params`` or a neighbouring number gets there,
    and inside the box.

    ``target`` must lie in the box. ``u = target − params`` is exact when the two are
    within a factor 2 of each other (Sterbenz's lemma), and ``params + u`` then gives
    ``target`` back; otherwise the rounded sum may fall a unit outside a bound. Where it
    does, ``u`` is moved towards the inside one representable number at a time
    (``nextafter``; its rounding error is at most half a unit of ``u``, so two moves
    suffice and three are made). For ``params`` inside the box the result is always
    inside: the corrected sum lies between ``params`` and ``target``. For ``params``
    outside it, a box narrower than the rounding unit of ``u`` (e.g. ``lower == upper``
    far from ``params``) may hold no representable ``params + u`` at all; the sum is
    then within a unit of ``u`` of it. Bounds ``None`` (both): ``target − params``.
    """
    def leaf(x, t, lo, hi):
        u = (t - x).astype(x.dtype)
        # Land on ``target`` exactly where a neighbour of ``u`` does (a point on a bound
        # then sits on it, not one unit inside, where the stopping test would see the
        # full gradient).
        up = jnp.nextafter(u, jnp.asarray(jnp.inf, u.dtype))
        down = jnp.nextafter(u, jnp.asarray(-jnp.inf, u.dtype))
        u = jnp.where(x + u == t, u, jnp.where(x + up == t, up,
                                               jnp.where(x + down == t, down, u)))
        for _ in range(_ROUNDING_FIXES):
            y = (x + u).astype(x.dtype)
            u = jnp.where(y > hi, jnp.nextafter(u, jnp.asarray(-jnp.inf, u.dtype)),
                          jnp.where(y < lo, jnp.nextafter(u, jnp.asarray(jnp.inf, u.dtype)),
                                    u))
        return u

    if lower is None and upper is None:
        return jax.tree.map(lambda x, t: (t - x).astype(x.dtype), params, target)
    return jax.tree.map(leaf, params, target, lower, upper)


def keep_params_in_box(lower: Any = None,
                       upper: Any = None) -> optax.GradientTransformationExtraArgs:
    """Projects updates so that the parameters stay in ``lower <= params <= upper``.

    ``update(u, state, params, lower=None, upper=None)`` returns ``P(params + u) − params``
    with ``P`` the projection onto the box (a clip per entry), computed so that
    ``optax.apply_updates(params, ·)`` lands inside the box also after rounding
    (:func:`feasible_update`). Use it last in a chain; then ``x ← P(x + u)`` is the
    gradient projection method for whatever ``u`` the chain computes (for ``optax.sgd``,
    projected gradient descent; Bertsekas 1976). Parameters that start outside the box
    are projected into it by the first update (to within a rounding unit of the update
    where the box is narrower than that, as ``lower == upper`` can be; see
    :func:`feasible_update`); from inside the box, the iterates never leave it.

    Args:
      lower, upper: the bounds: ``None`` (none on that side), a number (the same for every
        entry), or a pytree like the parameters whose leaves broadcast to theirs;
        ``-inf`` / ``inf`` entries for missing bounds. Cast to each parameter's dtype.
        A ``lower`` or ``upper`` given as an extra argument of ``update`` (as
        :func:`jopt.minimize` passes its ``bounds``; it may be traced, e.g. under
        ``vmap``) replaces the one given here, side by side.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an empty state.

    Example:
      >>> import jax.numpy as jnp, optax, jopt
      >>> from jopt.transforms.projection import keep_params_in_box
      >>> opt = optax.chain(optax.sgd(0.1), keep_params_in_box(0.0, 1.0))
      >>> x = jnp.array([0.5, 0.5])
      >>> state = opt.init(x)
      >>> for _ in range(100):  # minimize (x0 - 2)² + (x1 + 1)² over [0, 1]²
      ...     g = 2 * (x - jnp.array([2.0, -1.0]))
      ...     u, state = opt.update(g, state, x)
      ...     x = optax.apply_updates(x, u)
      >>> x.tolist()
      [1.0, 0.0]
    """
    if lower is not None and upper is not None and _is_scalar(lower) and _is_scalar(upper):
        _check_order(jnp.asarray(lower), jnp.asarray(upper))

    def init(params: PyTree) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates: PyTree, state: optax.EmptyState, params: PyTree | None = None, *,
               lower: Any = None, upper: Any = None, **extra: Any
               ) -> tuple[PyTree, optax.EmptyState]:
        del extra
        if params is None:
            raise ValueError("keep_params_in_box needs the parameters: call "
                             "`update(updates, state, params)`.")
        check_float_tree("params", params)
        lo, hi = broadcast_box(params, lower_default if lower is None else lower,
                               upper_default if upper is None else upper)
        if lo is None:
            return updates, state
        target = jax.tree.map(lambda x, u, a, b: jnp.clip((x + u).astype(x.dtype), a, b),
                              params, updates, lo, hi)
        return feasible_update(params, target, lo, hi), state

    lower_default, upper_default = lower, upper
    return optax.GradientTransformationExtraArgs(init, update)


project_box = keep_params_in_box
"""The same transform by the name of the plan (``P`` as the box projection)."""
