"""Unstructured pruning: saliency scores, exact-sparsity masks, masked fine-tuning.

A *mask* is a pytree of boolean arrays with the structure and shapes of the parameters;
``True`` keeps a weight, ``False`` prunes it (sets it to zero). The pipeline is

    scores = magnitude_scores(params)            # or taylor_scores / obd_scores
    mask = compute_mask(scores, 0.9, prunable=weight_matrices)
    params = apply_mask(params, mask)
    opt = optax.chain(jopt.adam(1e-3), keep_pruned(mask))   # fine-tune, zeros stay zero

Saliency scores (larger = more important):

* magnitude ``|w|`` — the classical baseline (Han et al. 2015);
* first-order Taylor ``|g ⊙ w|`` — the first-order estimate of the loss change when ``w``
  is set to zero (Molchanov et al. 2017), optionally averaged over minibatch gradients;
* Optimal Brain Damage ``½ h_ii w²`` — the second-order (diagonal) estimate of the loss
  change at a minimum (LeCun, Denker & Solla 1990), with ``h_ii`` the Hessian diagonal
  (:func:`hessian_diag`: exact, or Hutchinson's estimator) or the Gauss-Newton diagonal
  (:func:`gauss_newton_diag`: exact, or Hutchinson on Gauss-Newton products).

Masks hit the target exactly: ``round(s · N)`` of the ``N`` prunable weights are pruned
(Python/NumPy round-half-to-even), the lowest scores first; ties are broken by position
(leaf order of ``jax.tree.leaves``, then row-major), the earlier weight being pruned first,
so the result is deterministic. NaN scores rank as most important (never pruned).

For gradual pruning, :func:`polynomial_sparsity_schedule` is Zhu & Gupta's cubic schedule and
:func:`gradual_pruning` a transform that raises the sparsity along it during training.

References
----------
* LeCun, Y., Denker, J. S. & Solla, S. A. (1990). Optimal Brain Damage. NIPS 2, §2-3
  (saliency ``s_k = h_kk u_k² / 2`` from the diagonal, Gauss-Newton-type second derivatives).
* Han, S., Pool, J., Tran, J. & Dally, W. J. (2015). Learning both weights and connections
  for efficient neural networks. NIPS (magnitude pruning, retraining with the mask).
* Molchanov, P., Tyree, S., Karras, T., Aila, T. & Kautz, J. (2017). Pruning convolutional
  neural networks for resource efficient inference. ICLR, §2.2 (first-order Taylor criterion).
* Zhu, M. & Gupta, S. (2017). To prune, or not to prune: exploring the efficacy of pruning for
  model compression. arXiv:1710.01878, eq. (1) (gradual polynomial sparsity schedule).
* Bekas, C., Kokiopoulou, E. & Saad, Y. (2007). An estimator for the diagonal of a matrix.
  Appl. Numer. Math. 57 (stochastic diagonal estimator).
* Schraudolph, N. N. (2002). Fast curvature matrix-vector products for second-order gradient
  descent. Neural Computation 14(7) (Gauss-Newton products).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jopt._checks import (
    check_float_tree,
    check_in_range,
    check_positive_int,
    check_same_structure,
    check_scalar_output,
    is_concrete_number,
)
from jopt.calculus import gnvp_fn, hutchinson_diag, hvp_fn, rademacher_like

PyTree = Any
LeafSelector = PyTree | Callable[[PyTree], PyTree] | None
Scope = Literal["global", "per_leaf"]

__all__ = [
    "GradualPruningState",
    "apply_mask",
    "compute_mask",
    "gauss_newton_diag",
    "gradual_pruning",
    "hessian_diag",
    "keep_pruned",
    "magnitude_scores",
    "mask_sparsity",
    "obd_scores",
    "polynomial_sparsity_schedule",
    "prune",
    "taylor_scores",
    "weight_matrices",
]


# ------------------------------------------------------------------------ leaf selection


def weight_matrices(params: PyTree) -> PyTree:
    """Leaf selector: ``True`` for leaves with ``ndim >= 2`` (weight matrices, kernels).

    Pass it as ``prunable=weight_matrices`` to leave biases and other vectors untouched.
    """
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def resolve_leaf_selector(name: str, selector: LeafSelector, params: PyTree) -> list[bool]:
    """One Python bool per leaf of ``params`` from ``None`` (all), a bool pytree or a callable.

    Shared with :mod:`jopt.compress.quantize`. Raises an error naming ``name`` when the
    selector's structure does not match ``params`` or a leaf is not a concrete bool.
    """
    num_leaves = len(jax.tree.leaves(params))
    if selector is None:
        return [True] * num_leaves
    if callable(selector):
        selector = selector(params)
    t_sel, t_par = jax.tree.structure(selector), jax.tree.structure(params)
    if t_sel != t_par:
        raise ValueError(
            f"`{name}` must be a pytree of bools with the structure of `params` (or a "
            f"callable returning one).\n  params: {t_par}\n  {name}: {t_sel}\n"
            f"Build it with e.g. `jax.tree.map(lambda p: p.ndim >= 2, params)`."
        )
    flags = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(selector):
        if isinstance(leaf, bool | np.bool_) or (
            is_concrete_number(leaf) and jnp.result_type(leaf) == jnp.bool_
        ):
            flags.append(bool(leaf))
        else:
            raise TypeError(
                f"`{name}` leaf {jax.tree_util.keystr(path) or '<root>'} must be a Python "
                f"bool (one flag per parameter leaf), got {leaf!r}."
            )
    return flags


# ------------------------------------------------------------------------------ scores


def magnitude_scores(params: PyTree) -> PyTree:
    """Magnitude saliency ``|w|`` (Han et al. 2015), a pytree like ``params``."""
    check_float_tree("params", params)
    return jax.tree.map(jnp.abs, params)


def taylor_scores(params: PyTree, grads: PyTree, *, batched: bool = False) -> PyTree:
    """First-order Taylor saliency ``|g ⊙ w|`` (Molchanov et al. 2017, §2.2).

    Setting ``w_i`` to zero changes the loss by ``−g_i w_i`` to first order; the score is
    its magnitude. At a minimum the full-batch gradient vanishes, so the criterion is
    usually averaged over minibatch gradients: with ``batched=True`` every leaf of
    ``grads`` carries a leading axis of ``B`` per-minibatch gradients and the score is
    ``mean_b |g_b ⊙ w|``.

    Args:
      params: parameters ``w`` (pytree of float arrays).
      grads: gradients like ``params`` (with a leading batch axis if ``batched``).
      batched: average ``|g_b ⊙ w|`` over the leading axis of ``grads``.
    """
    check_float_tree("params", params)
    if not isinstance(batched, bool):
        raise TypeError(f"`batched` must be a Python bool, got {batched!r}.")
    if batched:
        leading = {jnp.shape(g)[:1] for g in jax.tree.leaves(grads)}
        check_same_structure(
            "params", params, "grads (without the leading batch axis)",
            jax.tree.map(lambda g: g[0], grads),
        )
        if len(leading) != 1:
            raise ValueError(
                f"`grads` leaves must share one leading batch axis when `batched=True`, "
                f"got leading sizes {sorted(leading)}."
            )
        return jax.tree.map(
            lambda w, g: jnp.mean(jnp.abs(g * w[None]), axis=0).astype(w.dtype), params, grads
        )
    check_same_structure("params", params, "grads", grads)
    return jax.tree.map(lambda w, g: jnp.abs(g * w).astype(w.dtype), params, grads)


def obd_scores(params: PyTree, hess_diag: PyTree, *, abs_curvature: bool = True) -> PyTree:
    """Optimal Brain Damage saliency ``½ h_ii w_i²`` (LeCun, Denker & Solla 1990, eq. 5).

    The second-order estimate of the loss increase when ``w_i`` is set to zero, at a
    minimum (zero gradient) and neglecting off-diagonal curvature.

    Args:
      params: parameters ``w``.
      hess_diag: curvature diagonal like ``params`` — from :func:`hessian_diag` (exact or
        Hutchinson) or :func:`gauss_newton_diag` (positive semi-definite, as in the paper).
      abs_curvature: use ``|h_ii|`` (default). OBD's derivation assumes ``h_ii >= 0``;
        Hutchinson estimates and the Hessian of a non-convex loss can be negative, and a
        negative score would rank a large weight as the first to prune. ``False`` uses the
        signed ``h_ii`` as given.
    """
    check_float_tree("params", params)
    check_same_structure("params", params, "hess_diag", hess_diag)
    if not isinstance(abs_curvature, bool):
        raise TypeError(f"`abs_curvature` must be a Python bool, got {abs_curvature!r}.")

    def score(w: jax.Array, h: jax.Array) -> jax.Array:
        h = jnp.abs(h) if abs_curvature else h
        return (0.5 * h.astype(w.dtype) * w * w).astype(w.dtype)

    return jax.tree.map(score, params, hess_diag)


# ---------------------------------------------------------------- curvature diagonals


def _basis_diag(product: Callable[[PyTree], PyTree], params: PyTree,
                batch_size: int | None) -> PyTree:
    """Exact ``diag(A)`` from ``n`` products ``A e_i`` with the coordinate basis vectors."""
    flat, unravel = ravel_pytree(params)
    n = flat.size

    def entry(i: jax.Array) -> jax.Array:
        e = jnp.zeros(n, flat.dtype).at[i].set(1)
        return ravel_pytree(product(unravel(e)))[0][i]

    # Pad the indices to a multiple of the chunk (repeating the last one) so lax.map
    # compiles one vmapped body and no separate remainder.
    chunk = min(n, batch_size or 256)
    idx = jnp.minimum(jnp.arange(-(-n // chunk) * chunk), n - 1)
    diag = jax.lax.map(entry, idx, batch_size=chunk)[:n]
    return jax.tree.map(lambda d, p: d.astype(jnp.result_type(p)), unravel(diag), params)


def hessian_diag(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    key: jax.Array | None = None,
    num_samples: int = 64,
    *,
    batch_size: int | None = None,
) -> PyTree:
    """Diagonal of ``∇²loss(params)``: exact (``key=None``) or Hutchinson's estimate.

    Exact: one Hessian-vector product per coordinate, ``h_ii = e_iᵀ H e_i`` (the gradient
    is linearized once; products run in vmapped chunks of ``batch_size``, default 256) —
    ``n`` products, for small models. With a PRNG ``key``:
    :func:`jopt.hutchinson_diag` with ``num_samples`` Rademacher probes (Bekas et al. 2007).

    Returns:
      A pytree like ``params``.
    """
    check_float_tree("params", params)
    check_scalar_output("loss_fn", loss_fn, params)
    check_positive_int("num_samples", num_samples)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    if key is not None:
        return hutchinson_diag(loss_fn, params, key, num_samples, batch_size=batch_size)
    return _basis_diag(hvp_fn(loss_fn, params), params, batch_size)


def gauss_newton_diag(
    model_fn: Callable[[PyTree], PyTree],
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    key: jax.Array | None = None,
    num_samples: int = 64,
    *,
    batch_size: int | None = None,
) -> PyTree:
    """Diagonal of the generalized Gauss-Newton matrix ``G = Jᵀ H_L J`` (Schraudolph 2002).

    ``J`` is the Jacobian of ``model_fn`` (``params -> outputs``, e.g. logits) and ``H_L``
    the Hessian of ``loss_fn`` (``outputs -> scalar``, close over the labels) — the
    positive semi-definite curvature OBD was derived with (LeCun et al. 1990 drop the
    second-derivative-of-the-network terms, which is the Gauss-Newton approximation).

    Exact (``key=None``): ``n`` Gauss-Newton products with the coordinate basis vectors
    (model linearized once, vmapped chunks of ``batch_size``), for small models. With a
    PRNG ``key``: Hutchinson's estimate ``mean_s z_s ⊙ G z_s`` over ``num_samples``
    Rademacher probes.

    Returns:
      A pytree like ``params``.
    """
    check_float_tree("params", params)
    check_positive_int("num_samples", num_samples)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    product = gnvp_fn(model_fn, loss_fn, params)
    if key is None:
        return _basis_diag(product, params, batch_size)
    probes = rademacher_like(key, params, num_samples)

    def z_gz(z: PyTree) -> PyTree:
        return jax.tree.map(jnp.multiply, z, product(z))

    prods = jax.lax.map(z_gz, probes, batch_size=min(num_samples, batch_size or num_samples))
    return jax.tree.map(lambda p, x: jnp.mean(p, axis=0).astype(jnp.result_type(x)),
                        prods, params)


# ------------------------------------------------------------------------------- masks


def _check_sparsity(name: str, value: Any) -> None:
    if callable(value):
        raise TypeError(f"`{name}` must be a number in [0, 1), not a callable; evaluate the "
                        f"schedule first, e.g. `schedule(step)`.")
    if not is_concrete_number(value) and jnp.shape(value) != ():
        raise ValueError(f"`{name}` must be a scalar in [0, 1), got shape {jnp.shape(value)}.")
    check_in_range(name, value, 0.0, 1.0)


def _num_pruned(sparsity: Any, n: int) -> Any:
    """``round(s · n)`` (half to even) as a Python int when concrete, else a traced int."""
    if is_concrete_number(sparsity):
        return min(round(float(sparsity) * n), n)
    return jnp.minimum(jnp.round(jnp.asarray(sparsity) * n), n).astype(jnp.int32)


def _keep_flags(flat_scores: jax.Array, k: Any) -> jax.Array:
    """Boolean keep-vector: the ``k`` lowest scores (stable: earlier index first) pruned."""
    n = flat_scores.size
    if isinstance(k, numbers.Integral) and k == 0:
        return jnp.ones(n, bool)
    order = jnp.argsort(flat_scores, stable=True)
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return rank >= k


def compute_mask(
    scores: PyTree,
    sparsity: float | jax.Array | PyTree,
    *,
    scope: Scope = "global",
    prunable: LeafSelector = None,
) -> PyTree:
    """A keep-mask that prunes exactly ``round(s · N)`` of the lowest-scored weights.

    Args:
      scores: saliency pytree (like the parameters); higher = more important.
      sparsity: fraction ``s ∈ [0, 1)`` of prunable weights to remove — a number (may be
        traced, e.g. from a schedule under ``jit``) or, with ``scope="per_leaf"``, a pytree
        like ``scores`` with one target per leaf.
      scope: ``"global"`` ranks all prunable weights together (``N`` = their total count);
        ``"per_leaf"`` prunes each prunable leaf to its own target (``N`` = its size).
      prunable: which leaves may be pruned: ``None`` (all), a pytree of Python bools like
        ``scores``, or a callable ``params -> that pytree`` (e.g. :func:`weight_matrices`).
        Other leaves are kept entirely and do not count in ``N``.

    Returns:
      A pytree of bool arrays like ``scores`` (``True`` = keep).

    Ties are broken by position (earlier leaf, then row-major order, pruned first); NaN
    scores rank highest. See the module docstring for the exact rule.
    """
    check_float_tree("scores", scores)
    if scope not in ("global", "per_leaf"):
        raise ValueError(f"`scope` must be 'global' or 'per_leaf', got {scope!r}.")
    leaves, treedef = jax.tree.flatten(scores)
    flags = resolve_leaf_selector("prunable", prunable, scores)
    per_leaf_targets = not (is_concrete_number(sparsity) or isinstance(sparsity, jax.Array))
    if per_leaf_targets:
        if scope != "per_leaf":
            raise ValueError("A pytree of per-leaf `sparsity` targets needs `scope='per_leaf'`.")
        if jax.tree.structure(sparsity) != treedef:
            raise ValueError(
                f"`sparsity` as per-leaf targets must have the structure of `scores`.\n"
                f"  scores: {treedef}\n  sparsity: {jax.tree.structure(sparsity)}"
            )
        targets = jax.tree.leaves(sparsity)
        for t in targets:
            _check_sparsity("sparsity", t)
    else:
        _check_sparsity("sparsity", sparsity)
        targets = [sparsity] * len(leaves)

    keep = [jnp.ones(jnp.shape(x), bool) for x in leaves]
    chosen = [i for i, f in enumerate(flags) if f and jnp.size(leaves[i]) > 0]
    if scope == "per_leaf":
        for i in chosen:
            x = leaves[i]
            k = _num_pruned(targets[i], x.size)
            keep[i] = _keep_flags(jnp.ravel(x), k).reshape(x.shape)
    elif chosen:
        dtype = jnp.result_type(*[leaves[i] for i in chosen])
        flat = jnp.concatenate([jnp.ravel(leaves[i]).astype(dtype) for i in chosen])
        flat_keep = _keep_flags(flat, _num_pruned(sparsity, flat.size))
        offset = 0
        for i in chosen:
            size = leaves[i].size
            keep[i] = flat_keep[offset:offset + size].reshape(leaves[i].shape)
            offset += size
    return jax.tree.unflatten(treedef, keep)


def _check_mask(params: PyTree, mask: PyTree, name: str = "mask") -> None:
    check_same_structure("params", params, name, mask)
    for path, m in jax.tree_util.tree_leaves_with_path(mask):
        if jnp.result_type(m) != jnp.bool_:
            raise TypeError(
                f"`{name}` leaf {jax.tree_util.keystr(path) or '<root>'} has dtype "
                f"{jnp.result_type(m)}; masks are bool arrays (True = keep). "
                f"Use e.g. `jax.tree.map(lambda m: m > 0, {name})`."
            )


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """``params`` with pruned entries (``mask == False``) set to zero.

    Uses ``where`` rather than a product, so a pruned ``inf``/``NaN`` becomes an exact zero;
    structure, shapes and dtypes are unchanged.
    """
    _check_mask(params, mask)
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), jnp.result_type(p))),
                        params, mask)


def prune(
    params: PyTree,
    scores: PyTree,
    sparsity: float | jax.Array | PyTree,
    *,
    scope: Scope = "global",
    prunable: LeafSelector = None,
) -> tuple[PyTree, PyTree]:
    """``(pruned_params, mask)``: :func:`compute_mask` then :func:`apply_mask`."""
    check_same_structure("params", params, "scores", scores)
    mask = compute_mask(scores, sparsity, scope=scope, prunable=prunable)
    return apply_mask(params, mask), mask


def mask_sparsity(mask: PyTree, *, prunable: LeafSelector = None) -> float:
    """Fraction of pruned entries (``False``) among the ``prunable`` leaves of ``mask``."""
    flags = resolve_leaf_selector("prunable", prunable, mask)
    leaves = [np.asarray(m) for m, f in zip(jax.tree.leaves(mask), flags, strict=True) if f]
    total = sum(m.size for m in leaves)
    return float(sum(int((~m).sum()) for m in leaves)) / total if total else 0.0


# -------------------------------------------------------------------------- transforms


def _masked_updates(updates: PyTree, mask: PyTree, params: PyTree | None) -> PyTree:
    """Keep updates where the mask is set; elsewhere ``-params`` (or 0): pruned → exactly 0."""
    if params is None:
        return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros((), u.dtype)), updates, mask)
    return jax.tree.map(lambda u, m, p: jnp.where(m, u, (-p).astype(u.dtype)),
                        updates, mask, params)


def keep_pruned(mask: PyTree) -> optax.GradientTransformationExtraArgs:
    """Fine-tune with a fixed pruning mask: pruned weights stay exactly zero.

    Put it *last* in an ``optax.chain`` (after every transform that produces the step,
    weight decay included). Where ``mask`` is ``False`` the update becomes ``−params``
    (when ``params`` is passed to ``update``) so ``optax.apply_updates`` lands on an exact
    zero whatever the pruned weight was; without ``params`` it is ``0``, which keeps
    already-zero weights at zero. Kept entries pass unchanged. Stateless; extra arguments
    (``value``, ``value_fn``, …) are accepted and ignored.

    Args:
      mask: pytree of bool arrays like the parameters (``True`` = keep).

    References:
      Han, Pool, Tran & Dally (2015), §3.2 (retraining the remaining connections).
    """
    for path, m in jax.tree_util.tree_leaves_with_path(mask):
        if jnp.result_type(m) != jnp.bool_:
            raise TypeError(
                f"`mask` leaf {jax.tree_util.keystr(path) or '<root>'} has dtype "
                f"{jnp.result_type(m)}; masks are bool arrays (True = keep)."
            )

    def init(params: PyTree) -> optax.EmptyState:
        _check_mask(params, mask)
        return optax.EmptyState()

    def update(updates: PyTree, state: optax.EmptyState, params: PyTree = None,
               **extra_args: Any) -> tuple[PyTree, optax.EmptyState]:
        del extra_args
        _check_mask(updates, mask)
        if params is not None:
            check_same_structure("updates", updates, "params", params)
        return _masked_updates(updates, mask, params), state

    return optax.GradientTransformationExtraArgs(init, update)


def polynomial_sparsity_schedule(
    final_sparsity: float,
    num_updates: int,
    *,
    initial_sparsity: float = 0.0,
    begin_step: int = 0,
    update_every: int = 1,
    power: int = 3,
) -> optax.Schedule:
    r"""Zhu & Gupta's gradual pruning schedule (2017, eq. 1), as ``step -> sparsity``.

    .. math::
       s_t = s_f + (s_i - s_f)\Bigl(1 - \frac{t_k - t_0}{n\,\Delta t}\Bigr)^3,
       \qquad t_k = t_0 + \Delta t\,\min\bigl(\lfloor (t - t_0)/\Delta t \rfloor,\ n\bigr)

    The sparsity changes only at the ``n + 1`` pruning steps ``t_0, t_0 + Δt, …,
    t_0 + nΔt`` and is constant in between; before ``t_0`` it is ``s_i`` (no pruning when
    ``s_i = 0``), after ``t_0 + nΔt`` it is ``s_f``. Pruning fast early, when redundant
    weights are plentiful, and slowly near the target.

    Args:
      final_sparsity: ``s_f ∈ [0, 1)``.
      num_updates: ``n >= 1``, number of pruning steps after the first.
      initial_sparsity: ``s_i ∈ [0, s_f]``.
      begin_step: ``t_0 >= 0``.
      update_every: ``Δt >= 1`` steps between pruning steps.
      power: exponent (3 in the paper), an int ``>= 1``.
    """
    _check_sparsity("final_sparsity", final_sparsity)
    _check_sparsity("initial_sparsity", initial_sparsity)
    if float(initial_sparsity) > float(final_sparsity):
        raise ValueError(
            f"`initial_sparsity` ({initial_sparsity}) must not exceed `final_sparsity` "
            f"({final_sparsity}): the schedule only increases sparsity."
        )
    check_positive_int("num_updates", num_updates)
    check_positive_int("update_every", update_every)
    check_positive_int("power", power)
    if isinstance(begin_step, bool) or not isinstance(begin_step, numbers.Integral) \
            or begin_step < 0:
        raise ValueError(f"`begin_step` must be a Python int >= 0, got {begin_step!r}.")
    s_i, s_f = float(initial_sparsity), float(final_sparsity)

    def schedule(step: jax.Array) -> jax.Array:
        k = jnp.clip((jnp.asarray(step) - begin_step) // update_every, 0, num_updates)
        frac = 1.0 - k / num_updates
        return s_f + (s_i - s_f) * frac**power

    return schedule


class GradualPruningState(NamedTuple):
    """State of :func:`gradual_pruning`: step count and the current keep-mask."""

    count: jax.Array
    mask: PyTree


def gradual_pruning(
    schedule: optax.Schedule,
    *,
    score_fn: Callable[[PyTree], PyTree] = magnitude_scores,
    scope: Scope = "global",
    prunable: LeafSelector = None,
) -> optax.GradientTransformationExtraArgs:
    """Gradual pruning during training (Zhu & Gupta 2017), as a chainable transform.

    At every step whose target ``schedule(count)`` differs from the previous step's, the
    mask is recomputed from ``score_fn(params)`` at the new sparsity (already-pruned
    weights score ``−inf``, so a non-decreasing schedule never revives them); the update
    is then masked as in :func:`keep_pruned`, so pruned weights become and stay exactly
    zero. Put it last in an ``optax.chain``; it needs ``params`` in ``update``.

    Args:
      schedule: ``step -> sparsity``, e.g. :func:`polynomial_sparsity_schedule`.
      score_fn: saliency ``params -> scores`` (default: magnitude, as in the paper).
      scope, prunable: as in :func:`compute_mask`.
    """
    if not callable(schedule):
        raise TypeError("`schedule` must be a callable `step -> sparsity`, e.g. "
                        "`polynomial_sparsity_schedule(0.9, 10)`.")
    if scope not in ("global", "per_leaf"):
        raise ValueError(f"`scope` must be 'global' or 'per_leaf', got {scope!r}.")

    def init(params: PyTree) -> GradualPruningState:
        check_float_tree("params", params)
        resolve_leaf_selector("prunable", prunable, params)
        mask = jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params)
        return GradualPruningState(jnp.zeros([], jnp.int32), mask)

    def update(updates: PyTree, state: GradualPruningState, params: PyTree = None,
               **extra_args: Any) -> tuple[PyTree, GradualPruningState]:
        del extra_args
        if params is None:
            raise ValueError("`gradual_pruning` needs `params` in `update` to score weights.")
        check_same_structure("params", params, "updates", updates)
        s_now = schedule(state.count)
        s_prev = jnp.where(state.count > 0, schedule(state.count - 1), -1.0)

        def recompute(mask: PyTree) -> PyTree:
            scores = jax.tree.map(
                lambda s, m: jnp.where(m, s, jnp.asarray(-jnp.inf, s.dtype)),
                score_fn(params), mask)
            return compute_mask(scores, s_now, scope=scope, prunable=prunable)

        mask = jax.lax.cond(s_now != s_prev, recompute, lambda m: m, state.mask)
        count = jnp.where(state.count < jnp.iinfo(jnp.int32).max, state.count + 1, state.count)
        return _masked_updates(updates, mask, params), GradualPruningState(count, mask)

    return optax.GradientTransformationExtraArgs(init, update)
