"""The Hessian trace by Hutchinson probes with a statistical stop (:func:`hessian_trace`)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jopt._checks import (
    check_nonnegative,
    check_positive_int,
    is_concrete_number,
)
from jopt.diagnostics.common import (
    HessianTraceResult,
    LossFn,
    as_key,
    check_problem,
    compiled,
    hessian_operator,
)

PyTree = Any


# ------------------------------------------------------------------------ trace


def _merge_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan, Golub & LeVeque (1983): combine (count, mean, Σ(x − mean)²) of two samples."""
    n = n_a + n_b
    delta = mean_b - mean_a
    frac = n_b / n
    return n, mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac


@compiled(("min_samples", "max_samples", "block_size"))
def _trace_impl(loss_fn, params, batches, key, rtol, atol, *, min_samples, max_samples,
                block_size):
    matvec, _ = hessian_operator(loss_fn, params, batches)
    flat = ravel_pytree(params)[0]
    dtype, n = flat.dtype, flat.shape[0]
    leaves, treedef = jax.tree.flatten(params)
    num_leaves = len(leaves)
    ends = np.cumsum([math.prod(jnp.shape(x)) for x in leaves])
    max_blocks = -(-max_samples // block_size)
    rtol = jnp.asarray(rtol, dtype)
    atol = jnp.asarray(atol, dtype)

    def block_values(b: jax.Array) -> jax.Array:
        """``z_lᵀ (H z)_l`` per probe and leaf, shape ``(block_size, num_leaves)``."""
        z = jax.random.rademacher(jax.random.fold_in(key, b), (block_size, n), dtype)
        prod = z * jax.vmap(matvec)(z)
        leaf_of = jnp.searchsorted(jnp.asarray(ends), jnp.arange(n), side="right")
        per_leaf = jax.ops.segment_sum(prod.T, leaf_of, num_segments=num_leaves,
                                       indices_are_sorted=True)
        return per_leaf.T

    def stderr_of(count, m2):
        var = m2 / jnp.maximum(count - 1, 1)
        return jnp.sqrt(jnp.maximum(var, 0) / count)

    def done(count, mean, m2):
        se = stderr_of(count, m2[-1])
        small = se <= jnp.maximum(rtol * jnp.abs(mean[-1]), atol)
        return (count >= min_samples) & small

    def cond(carry):
        b, count, mean, m2 = carry
        return (b < max_blocks) & ~done(count, mean, m2)

    def body(carry):
        b, count, mean, m2 = carry
        vals = block_values(b)
        vals = jnp.concatenate([vals, jnp.sum(vals, axis=1, keepdims=True)], axis=1)
        n_b = jnp.asarray(block_size, dtype)
        mean_b = jnp.mean(vals, axis=0)
        m2_b = jnp.sum((vals - mean_b[None]) ** 2, axis=0)
        count, mean, m2 = _merge_moments(count, mean, m2, n_b, mean_b, m2_b)
        return b + 1, count, mean, m2

    zeros = jnp.zeros([num_leaves + 1], dtype)
    init = (jnp.zeros([], jnp.int32), jnp.zeros([], dtype), zeros, zeros)
    _, count, mean, m2 = jax.lax.while_loop(cond, body, init)
    se = stderr_of(count, m2)
    samples = count.astype(jnp.int32)
    return HessianTraceResult(
        estimate=mean[-1],
        stderr=se[-1],
        per_leaf=jax.tree.unflatten(treedef, list(mean[:-1])),
        per_leaf_stderr=jax.tree.unflatten(treedef, list(se[:-1])),
        num_samples=samples,
        converged=done(count, mean, m2),
        num_hvps=samples,
        finite=jnp.all(jnp.isfinite(mean)) & jnp.all(jnp.isfinite(m2)),
    )


def hessian_trace(
    loss_fn: LossFn,
    params: PyTree,
    *,
    batches: PyTree = None,
    rtol: float | jax.Array = 1e-2,
    atol: float | jax.Array = 0.0,
    min_samples: int = 10,
    max_samples: int = 1000,
    block_size: int = 1,
    key: jax.Array | int | None = None,
) -> HessianTraceResult:
    """Hutchinson estimate of ``tr(∇²loss)`` with a standard-error stopping rule.

    Draws Rademacher probes ``z`` (entries ±1) and averages ``zᵀHz``, an unbiased estimate
    of ``tr(H)`` with variance ``2 Σ_{i≠j} H_ij²`` per probe (Hutchinson 1989; Avron &
    Toledo 2011). Probes are drawn in blocks of ``block_size`` (evaluated together with
    ``vmap``) inside a ``lax.while_loop`` that stops as soon as at least ``min_samples``
    probes give a standard error of the mean ``<= max(rtol·|mean|, atol)``, or after
    ``max_samples`` probes (rounded up to whole blocks). Running means and variances are
    merged blockwise (Chan, Golub & LeVeque 1983). The same probes give every leaf's
    block trace ``tr(H_ll) ≈ mean(z_lᵀ (Hz)_l)`` (per-layer traces).

    Block ``b`` uses the probes ``jax.random.rademacher(jax.random.fold_in(key, b),
    (block_size, n), dtype)`` in ``jax.flatten_util.ravel_pytree(params)`` order.

    Args:
      loss_fn: ``params -> scalar``, or ``(params, batch) -> scalar`` with ``batches``.
      params: the point (pytree of float arrays).
      batches: optional pytree of arrays with a shared leading batch axis (see module).
      rtol: relative standard-error target, ``> 0`` (may be traced).
      atol: absolute standard-error target, ``>= 0`` (for traces near zero).
      min_samples: probes before the rule may stop, Python int ``>= 2``.
      max_samples: budget of probes, Python int ``>= min_samples``.
      block_size: probes per loop iteration (Python int ``>= 1``).
      key: PRNG key (or int seed); default ``PRNGKey(0)``.

    Returns:
      A :class:`HessianTraceResult` (``num_hvps`` = probes used).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> loss = lambda p: jnp.sum(jnp.arange(1.0, 5.0) * p["w"] ** 2)
      >>> res = jopt.hessian_trace(loss, {"w": jnp.ones(4)})
      >>> round(float(res.estimate), 3)  # tr diag(2, 4, 6, 8); Rademacher probes: exact
      20.0
    """
    check_problem(loss_fn, params, batches)
    if is_concrete_number(rtol) and not float(rtol) > 0:
        raise ValueError(f"`rtol` must be > 0 (a relative standard-error target, e.g. "
                         f"1e-2), got {rtol!r}.")
    check_nonnegative("atol", atol)
    check_positive_int("min_samples", min_samples)
    check_positive_int("max_samples", max_samples)
    check_positive_int("block_size", block_size)
    if min_samples < 2:
        raise ValueError(f"`min_samples` must be >= 2 (a standard error needs two probes), "
                         f"got {min_samples}.")
    if max_samples < min_samples:
        raise ValueError(f"`max_samples` must be >= `min_samples` = {min_samples}, got "
                         f"{max_samples}.")
    return _trace_impl(loss_fn, params, batches, as_key(key), rtol, atol,
                       min_samples=min_samples, max_samples=max_samples,
                       block_size=block_size)
