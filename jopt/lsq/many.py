"""``jopt.least_squares_many`` and ``jopt.curve_fit_many``: many independent fits in
compiled segments, finished fits dropped between segments.

``jax.vmap(jopt.least_squares)`` fits a batch in one ``lax.while_loop`` that runs until
its slowest member stops, computing every member each iteration. Here the batch runs in
segments of ``segment`` iterations; between segments the finished fits are dropped and the
rest packed into the smallest of a few fixed batch sizes (:mod:`jopt.solve.batching`, the
scheme of :func:`jopt.minimize_many`). Each member follows exactly the iterations of its
own :func:`jopt.least_squares` solve (the dense method: Jacobian formed, SVD steps).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jopt import _platform as platform
from jopt._checks import check_float_tree
from jopt.lsq.fit import covariance, residuals_of, weights
from jopt.lsq.solve import (
    LeastSquaresResult,
    LeastSquaresStatus,
    continue_state,
    finish,
    init_state,
    setup,
    unflatten_residuals,
)
from jopt.solve import batching, checks

PyTree = Any

__all__ = ["curve_fit_many", "least_squares_many"]

DEFAULT_SEGMENT = 8


def _init(config, axes: tuple, x0s, args, f_scale, x_scale, tols):
    return jax.vmap(lambda x0, a: init_state(config, x0, a, f_scale, x_scale, tols),
                    in_axes=(0, axes))(x0s, args)


def _segment(config, axes: tuple, states, idx, args, f_scale, tols, num_steps):
    """One segment on the members at ``idx`` (padding lanes marked finished)."""
    size = states.nit.shape[0]
    sub = batching.gather(states, idx)
    sub = sub._replace(status=jnp.where(idx < size, sub.status, LeastSquaresStatus.MAXFEV)
                       .astype(jnp.int32))
    new = jax.vmap(lambda s, a: continue_state(config, s, a, f_scale, tols, num_steps),
                   in_axes=(0, axes))(sub, batching.gather_args(args, axes, idx))
    return batching.scatter(states, new, idx)


def _finish(config, states, f_scale):
    return jax.vmap(lambda s: finish(config, s, f_scale))(states)


@functools.cache
def _programs() -> tuple[platform.BoundedJit, ...]:
    return (platform.BoundedJit(_init, 2), platform.BoundedJit(_segment, 2, donate_argnums=(2,)),
            platform.BoundedJit(_finish, 1))


def least_squares_many(
    residuals: Callable[..., PyTree],
    x0s: PyTree,
    args: tuple = (),
    *,
    args_axes: int | Sequence[int | None] | None = None,
    method: str = "lm",
    loss: str = "linear",
    f_scale: float = 1.0,
    x_scale: str | float | jax.Array = "jac",
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    max_nfev: int | None = None,
    return_jac: bool = False,
    segment: int = DEFAULT_SEGMENT,
    bucket_sizes: Sequence[int] | None = None,
) -> LeastSquaresResult:
    """:func:`jopt.least_squares` from each of a batch of starting points (and data).

    Args:
      residuals: ``(x, *args) -> r`` for one member.
      x0s: starting points: a pytree whose leaves all have a leading batch axis.
      args: extra arguments of ``residuals``; ``args_axes`` says which are per member:
        ``None`` (all shared), ``0`` (all batched along a leading axis), or a tuple of
        ``0``/``None`` per argument.
      method, loss, f_scale, x_scale, ftol, xtol, gtol, max_nfev, return_jac: as in
        :func:`jopt.least_squares` (shared by every member; the dense method only).
      segment: iterations per compiled segment; bucket_sizes: the batch sizes running
        members are packed into (default: powers of two below the batch size, down to 32).

    Returns:
      A batched :class:`~jopt.LeastSquaresResult` (every field has a leading member axis,
      in the order of ``x0s``).

    Example::

        ys = model(t, true_params) + noise            # (10_000, m): many datasets
        res = jopt.least_squares_many(lambda b, y: model(t, b) - y,
                                      jnp.tile(b0, (10_000, 1)), (ys,), args_axes=0)
    """
    check_float_tree("x0s", x0s)
    checks.check_count("segment", segment)
    size = batching.batch_size(x0s)
    axes = batching.normalize_axes(args_axes, args, size)
    sizes = batching.buckets(bucket_sizes, size)
    if checks.traced((x0s, args, f_scale, x_scale, ftol, xtol, gtol)):
        raise TypeError("`least_squares_many` runs a host-side loop over compiled segments "
                        "and cannot be traced (jit/vmap/grad); use "
                        "`jax.vmap(jopt.least_squares)` inside a transformation.")
    x0s = jax.tree.map(checks.strong, x0s)
    member = jax.tree.map(lambda leaf: leaf[0], x0s)
    member_args = tuple(jax.tree.map(lambda leaf: leaf[0], a) if axis == 0 else a
                        for a, axis in zip(args, axes, strict=True))
    prep = setup(residuals, member, member_args, method=method, loss=loss, f_scale=f_scale,
                 x_scale=x_scale, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev,
                 return_jac=return_jac, tr_solver="exact")
    flat = jax.vmap(lambda x: ravel_pytree(x)[0])(x0s)
    init, run, done = _programs()
    with checks.objective_errors(residuals, member, member_args, name="x0s[0]"):
        states = init(prep.config, axes, flat, args, prep.f_scale, prep.x_scale, prep.tols)
    steps = np.asarray(segment, np.int32)
    states, _ = batching.run_segments(
        states, lambda st, idx: run(prep.config, axes, st, idx, args, prep.f_scale,
                                    prep.tols, steps), size, sizes)
    out = done(prep.config, states, prep.f_scale)
    success = (out.status >= 1) & (out.status <= 4)
    return LeastSquaresResult(
        x=jax.vmap(prep.unravel)(out.x), cost=out.cost,
        fun=jax.vmap(lambda r: unflatten_residuals(prep.out_shape, r))(out.r),
        grad=jax.vmap(prep.unravel)(out.grad),
        optimality=jnp.max(jnp.abs(out.grad), axis=-1, initial=0.0), nfev=out.nfev,
        njev=out.njev, nit=out.nit, status=out.status, success=success, jac=out.jac)


def curve_fit_many(
    model: Callable[..., jax.Array],
    xdata: Any,
    ydatas: Any,
    p0: Any,
    sigma: Any = None,
    absolute_sigma: bool = False,
    *,
    xdata_batched: bool = False,
    full_output: bool = False,
    **options: Any,
) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, LeastSquaresResult]:
    """:func:`jopt.curve_fit` of one model to many datasets, by :func:`least_squares_many`.

    Args:
      model: ``f(xdata, *params) -> y``, as in :func:`jopt.curve_fit`.
      xdata: the predictors, shared by every dataset (or one per dataset along a leading
        axis with ``xdata_batched=True``).
      ydatas: ``(B, m)``: one row of observations per dataset.
      p0: ``(n,)`` (one start for all) or ``(B, n)`` (one per dataset).
      sigma: ``None``, ``(m,)`` shared standard deviations, ``(m, m)`` a shared covariance,
        or ``(B, m)`` standard deviations per dataset (when ``B != m``).
      absolute_sigma, full_output: as in :func:`jopt.curve_fit`; other keywords go to
        :func:`least_squares_many` (``method``, ``loss``, ``ftol``, ``segment``, …).

    Returns:
      ``(popts, pcovs)`` of shapes ``(B, n)`` and ``(B, n, n)`` (and the batched result).
    """
    ydatas = jnp.asarray(ydatas)
    if ydatas.ndim != 2:
        raise ValueError(f"`ydatas` must be a 2-D array (one dataset per row), got shape "
                         f"{ydatas.shape}.")
    p0 = jnp.asarray(p0)
    if p0.ndim not in (1, 2) or not jnp.issubdtype(p0.dtype, jnp.floating):
        raise ValueError(f"`p0` must be a float array of shape (n,) or (B, n), got shape "
                         f"{p0.shape} and dtype {p0.dtype}.")
    size, m = ydatas.shape
    p0s = jnp.broadcast_to(p0, (size, p0.shape[-1])) if p0.ndim == 1 else p0
    ydatas = ydatas.astype(p0.dtype)
    sigma = None if sigma is None else jnp.asarray(sigma, p0.dtype)
    per_member = sigma is not None and sigma.shape == (size, m) and size != m
    if per_member:  # one row of standard deviations per dataset
        weight, chol = 1.0 / sigma, None
    else:
        weight, chol = weights(sigma, m, p0.dtype)
    if not callable(model):
        raise TypeError(f"`model` must be a function `f(xdata, *params)`, got "
                        f"{type(model).__name__}.")
    axes = (0 if xdata_batched else None, 0, 0 if per_member else None, None)
    res = least_squares_many(residuals_of(model), p0s, (xdata, ydatas, weight, chol),
                             args_axes=axes, return_jac=True, **options)
    pcov = jax.vmap(lambda j, c: covariance(j, c, absolute_sigma))(res.jac, res.cost)
    return (res.x, pcov, res) if full_output else (res.x, pcov)
