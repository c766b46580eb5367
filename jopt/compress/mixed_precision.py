"""Hessian-aware mixed precision (HAWQ-V2): one bit width per leaf under a size budget.

The sensitivity of leaf ``l`` at ``b`` bits is ``Ω_l(b) = (Tr(H_l) / n_l) · ‖Q_b(W_l) − W_l‖²``
(average Hessian trace of the leaf's diagonal block times the squared quantization
perturbation of :mod:`jopt.compress.quantize`), and :func:`allocate_bits` picks one bit
width per leaf from a candidate set to minimise ``Σ_l Ω_l(b_l)`` under a size budget —
*exactly*, by dynamic programming over the Pareto front of (size, sensitivity) of partial
assignments (:func:`min_cost_assignment`). Sizes are :func:`jopt.compress.quantized_size`'s.

Non-finite traces or budgets raise a ``ValueError`` naming the argument (the allocation is
always eager); under ``jit`` a NaN or inf trace gives NaN or inf sensitivities.

References
----------
* Dong, Z., Yao, Z., Arfeen, D., Gholami, A., Mahoney, M. W. & Keutzer, K. (2020). HAWQ-V2:
  Hessian aware trace-weighted quantization of neural networks. NeurIPS, §3 (eq. 4, trace
  sensitivity; Pareto-frontier bit selection), §3.2 (Hutchinson trace).
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt._checks import check_float_tree, check_positive_int
from jopt.compress.prune import LeafSelector, hessian_diag, resolve_leaf_selector
from jopt.compress.quantize import (
    WHY_WEIGHTS,
    check_bits,
    check_bool,
    check_finite_leaves,
    check_finite_tree,
    describe_nonfinite,
    leaf_axis,
    leaf_bytes,
    quantization_error_unchecked,
    quantized_size,
)

PyTree = Any

__all__ = [
    "BitAllocation",
    "allocate_bits",
    "hawq_sensitivities",
    "hessian_traces",
    "min_cost_assignment",
]

DEFAULT_CANDIDATE_BITS = (2, 3, 4, 5, 6, 7, 8)
_WHY_TRACES = ("Sensitivities scale with the trace, so a NaN or inf trace makes every bit "
               "width of the leaf equally (un)attractive.")


def hessian_traces(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    key: jax.Array | None = None,
    num_samples: int = 64,
    *,
    batch_size: int | None = None,
) -> PyTree:
    """Per-leaf Hessian traces ``Tr(H_ll)`` (the leaf's diagonal block), a pytree of scalars.

    With a PRNG ``key``: Hutchinson's estimator (HAWQ-V2, §3.2) — the per-leaf sums of
    :func:`jopt.hutchinson_diag` over ``num_samples`` Rademacher probes; ``key=None``: exact,
    from the exact diagonal (:func:`jopt.compress.hessian_diag`, ``n`` HVPs, small models).
    """
    diag = hessian_diag(loss_fn, params, key, num_samples, batch_size=batch_size)
    return jax.tree.map(jnp.sum, diag)


def _check_traces_structure(params: PyTree, traces: PyTree) -> None:
    if jax.tree.structure(traces) != jax.tree.structure(params):
        raise ValueError(
            f"`traces` must be a pytree of scalars with the structure of `params`.\n"
            f"  params: {jax.tree.structure(params)}\n  traces: {jax.tree.structure(traces)}"
        )


def _check_candidates(candidate_bits: Sequence[int]) -> tuple[int, ...]:
    if isinstance(candidate_bits, numbers.Integral) or not len(candidate_bits):
        raise ValueError(
            f"`candidate_bits` must be a non-empty sequence of ints in 2..8, got "
            f"{candidate_bits!r}."
        )
    return tuple(sorted({check_bits("candidate_bits", b) for b in candidate_bits}))


def hawq_sensitivities(
    params: PyTree,
    traces: PyTree,
    candidate_bits: Sequence[int] = DEFAULT_CANDIDATE_BITS,
    *,
    symmetric: bool = True,
    channel_axis: int | None = None,
) -> PyTree:
    """HAWQ-V2 sensitivities ``Ω_l(b) = |Tr(H_l)| / n_l · ‖Q_b(W_l) − W_l‖²`` (eq. 4).

    Args:
      params: pytree of float arrays ``W_l``.
      traces: per-leaf Hessian traces, a pytree of scalars like ``params`` (e.g. from
        :func:`hessian_traces`). Their magnitude is used: HAWQ assumes a positive
        semi-definite block, and a noisy negative estimate must not reward coarse bits.
      candidate_bits: bit widths (sorted, duplicates removed).
      symmetric, channel_axis: the quantizer, as in :func:`fake_quantize_tree`.

    Returns:
      A pytree like ``params`` whose leaves are vectors of ``len(candidate_bits)``
      sensitivities, in the order of the sorted candidates.

    Raises:
      ValueError: in an eager call, naming the leaf of ``params`` or ``traces`` that holds
        NaN or inf. Traced (e.g. under ``jit``), such a leaf gives NaN or inf sensitivities.
    """
    check_float_tree("params", params)
    cands = _check_candidates(candidate_bits)
    _check_traces_structure(params, traces)
    check_finite_tree("params", params, WHY_WEIGHTS)
    check_finite_tree("traces", traces, _WHY_TRACES)

    def leaf(w: jax.Array, tr: Any) -> jax.Array:
        if jnp.shape(tr) != ():
            raise ValueError(f"`traces` leaves must be scalars, got shape {jnp.shape(tr)}.")
        avg = jnp.abs(jnp.asarray(tr, w.dtype)) / max(w.size, 1)
        axis = leaf_axis(w, channel_axis)
        errs = jax.vmap(lambda b: quantization_error_unchecked(w, b, symmetric, axis, None))(
            jnp.asarray(cands, jnp.int32))  # one compiled body for all candidates
        return avg * errs

    return jax.tree.map(leaf, params, traces)


_hawq_sensitivities_jit = jax.jit(
    hawq_sensitivities, static_argnames=("candidate_bits", "symmetric", "channel_axis"))


class BitAllocation(NamedTuple):
    """Result of :func:`allocate_bits`."""

    bits: PyTree  # Python ints like params; 0 = kept in floating point
    size_bytes: int  # quantized_size(...).total of this allocation
    sensitivity: float  # Σ_l Ω_l(b_l), the minimised objective


def _check_knapsack(sizes: Any, costs: Any, budget: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, costs)`` as int64 / float64 ``(L, B)`` arrays, checked with ``budget``."""
    raw = np.asarray(sizes)
    costs = np.asarray(costs, np.float64)
    if raw.ndim != 2 or 0 in raw.shape or costs.shape != raw.shape:
        raise ValueError(f"`sizes` and `costs` must be non-empty (L, B) arrays of one shape, "
                         f"got {raw.shape} and {costs.shape}.")
    if not (np.issubdtype(raw.dtype, np.number) and np.all(np.isfinite(raw))
            and np.all(raw >= 0) and np.all(raw == np.round(raw))):
        raise ValueError("`sizes` must be non-negative integers (no NaN or inf).")
    if not np.all(np.isfinite(costs)):
        bad = ~np.isfinite(costs)
        raise ValueError(describe_nonfinite(
            "`costs`", bad, "A NaN or inf cost cannot be compared, so no choice is optimal."))
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or math.isnan(budget):
        raise ValueError(f"`budget` must be a number (not NaN), got {budget!r}.")
    sizes = raw.astype(np.int64)
    if int(sizes.min(axis=1).sum()) > budget:
        raise ValueError(f"`budget`={budget} is infeasible: the smallest choice of every row "
                         f"already takes {int(sizes.min(axis=1).sum())}.")
    return sizes, costs


def min_cost_assignment(sizes: np.ndarray, costs: np.ndarray, budget: int) -> list[int]:
    """Exact multiple-choice knapsack: one column per row, ``Σ size ≤ budget``, min ``Σ cost``.

    Dynamic programming over the Pareto front of partial assignments (rows taken in
    order): after each row only the states not dominated in (size, cost) are kept —
    strictly lower cost for larger size — and states that cannot be completed within the
    budget are dropped. The front never holds more states than distinct feasible sizes,
    so the cost is pseudo-polynomial, and it is exact (no dominated state can lead to a
    better completion). Ties go to the smaller total size, then to the earlier choices.

    Args:
      sizes: ``(L, B)`` non-negative integer sizes.
      costs: ``(L, B)`` finite float costs.
      budget: integer capacity (must be feasible; ``inf`` means unconstrained).

    Returns:
      The chosen column index for every row.

    Raises:
      ValueError: naming the argument when ``sizes`` are not non-negative integers,
        ``costs`` hold NaN or inf, ``budget`` is NaN, or no assignment fits ``budget``.
    """
    sizes, costs = _check_knapsack(sizes, costs, budget)
    num_rows, num_cols = sizes.shape
    min_rest = np.concatenate([np.cumsum(sizes.min(axis=1)[::-1])[::-1], [0]])
    front_size = np.zeros(1, np.int64)
    front_cost = np.zeros(1, np.float64)
    back: list[tuple[np.ndarray, np.ndarray]] = []
    for r in range(num_rows):
        cand_size = (front_size[:, None] + sizes[r][None, :]).ravel()
        cand_cost = (front_cost[:, None] + costs[r][None, :]).ravel()
        parent = np.repeat(np.arange(front_size.size), num_cols)
        choice = np.tile(np.arange(num_cols), front_size.size)
        ok = cand_size + min_rest[r + 1] <= budget
        cand_size, cand_cost, parent, choice = (a[ok] for a in (cand_size, cand_cost,
                                                                  parent, choice))
        order = np.lexsort((choice, parent, cand_cost, cand_size))  # size, cost, then index
        cand_size, cand_cost, parent, choice = (a[order] for a in (cand_size, cand_cost,
                                                                     parent, choice))
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(cand_cost)[:-1]])
        keep = cand_cost < best_before
        front_size, front_cost = cand_size[keep], cand_cost[keep]
        back.append((parent[keep], choice[keep]))
    state = int(np.argmin(front_cost))  # first minimum = smallest size among ties
    picks = [0] * num_rows
    for r in range(num_rows - 1, -1, -1):
        parent, choice = back[r]
        picks[r] = int(choice[state])
        state = int(parent[state])
    return picks


def _is_finite_positive(value: Any) -> bool:
    """A real number > 0 that is not NaN or inf (any Python int > 0 counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if isinstance(value, numbers.Integral):
        return value > 0
    return math.isfinite(value) and value > 0


def _floor_capped(budget: float, sizes: np.ndarray) -> int:
    """``floor(budget)``, capped at the largest size (a huge budget would overflow an int)."""
    largest = int(sizes.max(axis=1).sum())
    return largest if not budget < largest else math.floor(budget)


def _check_used_leaves_finite(params: PyTree, traces: PyTree, rows: list[int]) -> None:
    """The quantizable leaves of ``params`` and their ``traces`` must be finite."""
    for name, tree, why in (("params", params, WHY_WEIGHTS), ("traces", traces, _WHY_TRACES)):
        pairs = jax.tree_util.tree_leaves_with_path(tree)
        check_finite_leaves(name, [pairs[i] for i in rows], why)


def _check_costs_finite(costs: np.ndarray, params: PyTree, rows: list[int]) -> None:
    """Finite weights and traces can still overflow ``|Tr| / n · error`` to inf."""
    bad = [r for r in range(len(rows)) if not np.all(np.isfinite(costs[r]))]
    if bad:
        path = jax.tree_util.tree_leaves_with_path(params)[rows[bad[0]]][0]
        raise ValueError(
            f"The HAWQ sensitivities of leaf {jax.tree_util.keystr(path)} overflow to inf "
            f"(`traces` times the squared quantization error exceeds the dtype's range). "
            f"Rescale `traces` (only their ratios matter), or compute in float64.")


def allocate_bits(
    params: PyTree,
    traces: PyTree,
    *,
    budget_bytes: int | None = None,
    budget_bits: int | None = None,
    average_bits: float | None = None,
    candidate_bits: Sequence[int] = DEFAULT_CANDIDATE_BITS,
    symmetric: bool = True,
    channel_axis: int | None = None,
    quantizable: LeafSelector = None,
    scale_bytes: int = 4,
) -> BitAllocation:
    """Hessian-aware mixed precision (HAWQ-V2): per-leaf bit widths under a size budget.

    Minimises the total sensitivity ``Σ_l Ω_l(b_l)`` (:func:`hawq_sensitivities`) over
    one ``b_l`` from ``candidate_bits`` per quantizable leaf, subject to one budget:

    * ``budget_bytes`` / ``budget_bits``: the whole model's :func:`quantized_size` (codes,
      scales, zero points, and the float leaves that are not quantized);
    * ``average_bits``: ``Σ_l n_l b_l ≤ average_bits · Σ_l n_l`` over the quantizable
      leaves (code bits only) — e.g. ``4.0`` for "int4 on average".

    The choice is exact (:func:`min_cost_assignment`: DP over the Pareto front, which is
    also how HAWQ-V2 §3 picks its configuration); it runs on the host, so call it outside
    ``jit`` (the sensitivities themselves are jit-compatible).

    Args:
      params: pytree of float arrays.
      traces: per-leaf Hessian traces (:func:`hessian_traces`, or your own numbers).
      budget_bytes, budget_bits, average_bits: exactly one budget.
      candidate_bits: allowed widths (ints in 2..8).
      symmetric, channel_axis, quantizable, scale_bytes: as in :func:`quantized_size`.

    Returns:
      A :class:`BitAllocation`: ``bits`` (pytree of ints, 0 for non-quantizable leaves),
      its ``size_bytes`` and the minimised ``sensitivity``.

    Raises:
      ValueError: naming the argument when the budget is not a finite positive number or
        is below what the narrowest candidate needs, or when a quantizable leaf of
        ``params`` or ``traces`` holds NaN or inf (or its sensitivities overflow).
    """
    given = {k: v for k, v in (("budget_bytes", budget_bytes), ("budget_bits", budget_bits),
                               ("average_bits", average_bits)) if v is not None}
    if len(given) != 1:
        raise ValueError("Pass exactly one of `budget_bytes`, `budget_bits`, `average_bits`; "
                         f"got {sorted(given) or 'none'}.")
    (budget_name, budget_value), = given.items()
    if not _is_finite_positive(budget_value):
        raise ValueError(
            f"`{budget_name}` must be a finite positive number, got {budget_value!r}. For "
            f"no real limit pass the size at the widest candidate, e.g. "
            f"`average_bits=max(candidate_bits)`.")
    value = float(min(budget_value, sys.float_info.max))  # a huge int would not convert
    check_bool("symmetric", symmetric)
    check_positive_int("scale_bytes", scale_bytes)
    cands = _check_candidates(candidate_bits)
    flags = resolve_leaf_selector("quantizable", quantizable, params)
    check_float_tree("params", params)
    _check_traces_structure(params, traces)
    leaves, treedef = jax.tree.flatten(params)
    rows = [i for i, f in enumerate(flags) if f]
    if not rows:
        raise ValueError("No leaf is `quantizable`; nothing to allocate.")
    _check_used_leaves_finite(params, traces, rows)

    if budget_name == "average_bits":
        sizes = np.array([[math.prod(jnp.shape(leaves[i])) * b for b in cands] for i in rows])
        total = int(sizes[:, 0].sum()) // cands[0]
        budget = _floor_capped(value * total * (1 + 1e-12), sizes)
        fixed = 0
        unit, shown = 1, f"{cands[0]} bits per quantizable weight"
    else:
        def leaf_bits(i: int, b: int) -> int:
            return 8 * sum(leaf_bytes(leaves[i], b, symmetric, channel_axis, scale_bytes))
        sizes = np.array([[leaf_bits(i, b) for b in cands] for i in rows])
        fixed = sum(leaf_bits(i, 0) for i, f in enumerate(flags) if not f)
        unit = 1 if budget_name == "budget_bits" else 8
        budget = _floor_capped(value * unit - fixed, sizes)
        shown = f"{(fixed + int(sizes.min(axis=1).sum())) // unit}"
    if int(sizes.min(axis=1).sum()) > budget:
        raise ValueError(
            f"`{budget_name}`={budget_value} is below the smallest achievable size "
            f"({shown}, every quantizable leaf at {cands[0]} bits). Raise the budget, "
            f"add narrower `candidate_bits`, or quantize more leaves."
        )
    sens = _hawq_sensitivities_jit(params, traces, cands, symmetric=symmetric,
                                   channel_axis=channel_axis)
    sens_leaves = [np.asarray(s, np.float64) for s in jax.tree.leaves(sens)]
    costs = np.stack([sens_leaves[i] for i in rows])
    _check_costs_finite(costs, params, rows)
    picks = min_cost_assignment(sizes, costs, budget)
    widths = [0] * len(leaves)
    for r, i in enumerate(rows):
        widths[i] = cands[picks[r]]
    bits_tree = jax.tree.unflatten(treedef, widths)
    report = quantized_size(params, bits_tree, symmetric=symmetric, channel_axis=channel_axis,
                            scale_bytes=scale_bytes)
    objective = float(sum(costs[r, picks[r]] for r in range(len(rows))))
    return BitAllocation(bits_tree, report.total, objective)
