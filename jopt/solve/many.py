"""``jopt.minimize_many``: a batch of independent solves, re-batched as members finish.

Under ``jax.vmap`` a ``lax.while_loop`` runs until its slowest member stops: every
iteration computes the whole batch and masks out the members that are done, so a batch
whose iteration counts range over 10× costs ``batch × slowest`` iterations. Most of that
work is thrown away.

:func:`minimize_many` runs the batch in compiled *segments* instead. One segment advances
the members still running by at most ``segment`` iterations — the vmapped loop of
:func:`jopt.minimize_run`, so each member keeps its own optimizer state, counters and
status, exactly as in a separate solve. Between segments the host reads the members'
statuses, drops the finished ones and packs the rest into the smallest *bucket* that
holds them. Buckets are a few fixed batch sizes (by default the full size and the powers
of two below it down to 32), so at most one program is compiled per bucket size, and the
total work follows the sum of the members' iteration counts (plus at most ``segment``
iterations per member and the padding of the last buckets) rather than ``batch ×
slowest``.

The scheme (buckets, gather, scatter, the host loop) is :mod:`jopt.solve.batching`'s.

A member whose objective turns NaN ends with ``status = NONFINITE`` at its last finite
point, exactly as in :func:`jopt.minimize`; the other members are unaffected.

References:
  The segmented loop is the resumable :class:`jopt.SolverState` API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt import _platform as platform
from jopt._checks import check_float_tree
from jopt.box import active_set, clip
from jopt.solve import batching, checks
from jopt.solve.api import minimize_result
from jopt.solve.loop import LoopConfig, SolverState, continue_state, init_state
from jopt.solve.registry import check_bounded_method, resolve_method
from jopt.solve.status import MinimizeResult, Status

PyTree = Any

__all__ = ["DEFAULT_SEGMENT", "minimize_many"]

DEFAULT_SEGMENT = 16
"""Iterations per compiled segment (``benchmarks/minimize_many.py`` measures the choice)."""

ManyStats = batching.BatchStats  # (the name benchmarks and tests know)


def minimize_many(
    fun: Callable[..., jax.Array],
    x0s: PyTree,
    args: tuple = (),
    *,
    method: str | optax.GradientTransformation = "lbfgs",
    args_axes: int | Sequence[int | None] | None = None,
    bounds: Any = None,
    tol: float | jax.Array = 1e-6,
    ftol: float | jax.Array = 0.0,
    xtol: float | jax.Array = 0.0,
    maxiter: int = 10_000,
    maxfev: int | None = None,
    history: bool = False,
    history_size: int | None = None,
    segment: int = DEFAULT_SEGMENT,
    bucket_sizes: Sequence[int] | None = None,
    options: dict[str, Any] | None = None,
) -> MinimizeResult:
    """Minimize ``fun(x, *args)`` from each of a batch of starting points (and args).

    Each member is solved as by :func:`jopt.minimize` with the same options; the batch
    runs in compiled segments of ``segment`` iterations, dropping finished members
    between segments (see the module docstring for the scheme).

    Args:
      fun: objective ``(x, *args) -> scalar`` for one member.
      x0s: starting points: a pytree whose leaves all have the same leading (batch) axis.
      method, options: as in :func:`jopt.minimize`.
      args: extra arguments of ``fun``.
      args_axes: which ``args`` are per-member: ``None`` (all shared, the default), ``0``
        (all batched along a leading axis of the batch size), or a tuple with ``0`` or
        ``None`` per argument.
      bounds: as in :func:`jopt.minimize`, shared (shaped like one member, or numbers)
        or per member (shaped like ``x0s``); the result's ``active_mask`` is batched.
      tol, ftol, xtol, maxiter, maxfev, history, history_size: as in
        :func:`jopt.minimize` (scalars shared by every member).
      segment: iterations per compiled segment (>= 1). Smaller segments drop finished
        members sooner but pay a host round trip more often.
      bucket_sizes: batch sizes the running members are padded to (the full batch size is
        always one). Default: powers of two from below the batch size down to 32 (each
        size compiles once).

    Returns:
      A batched :class:`jopt.MinimizeResult`: every field has a leading axis over the
      members, in the order of ``x0s`` (``message`` gives an array of texts).

    Example::

        starts = jax.random.normal(key, (256, 10))
        res = jopt.minimize_many(fun, starts, method="lbfgs", tol=1e-8)
        best = res.x[jnp.argmin(jnp.where(res.success, res.fun, jnp.inf))]
    """
    return _minimize_many(fun, x0s, method=method, args=args, args_axes=args_axes, tol=tol,
                          ftol=ftol, xtol=xtol, maxiter=maxiter, maxfev=maxfev,
                          history=history, history_size=history_size, segment=segment,
                          bucket_sizes=bucket_sizes, options=options, bounds=bounds)[0]


def _minimize_many(
    fun: Callable[..., jax.Array],
    x0s: PyTree,
    *,
    method: str | optax.GradientTransformation,
    args: tuple,
    args_axes: int | Sequence[int | None] | None,
    tol: Any,
    ftol: Any,
    xtol: Any,
    maxiter: int,
    maxfev: int | None,
    history: bool,
    history_size: int | None,
    segment: int,
    bucket_sizes: Sequence[int] | None,
    options: dict[str, Any] | None = None,
    bounds: Any = None,
) -> tuple[MinimizeResult, ManyStats]:
    """:func:`minimize_many` that also reports its :class:`ManyStats`."""
    check_float_tree("x0s", x0s)
    for name, value in (("tol", tol), ("ftol", ftol), ("xtol", xtol)):
        if isinstance(value, jax.Array | np.ndarray) and np.ndim(value) != 0:
            raise ValueError(f"`{name}` must be a scalar shared by all members, got shape "
                             f"{np.shape(value)}.")
    checks.check_run_options(args, tol, ftol, xtol, maxiter, maxfev)
    checks.check_count("history_size", history_size)
    checks.check_count("segment", segment)
    size = batching.batch_size(x0s)
    axes = batching.normalize_axes(args_axes, args, size)
    sizes = batching.buckets(bucket_sizes, size)
    if checks.traced((x0s, args)):
        raise TypeError("`minimize_many` runs a host-side loop over compiled segments and "
                        "cannot be traced (jit/vmap/grad); use `jax.vmap(jopt.minimize)` "
                        "inside a transformation.")
    tx = resolve_method(method, options)
    x0s = jax.tree.map(checks.strong, x0s)
    box = checks.box(bounds, x0s)  # (one member's bounds broadcast over the batch)
    if box is not None:
        check_bounded_method(method)
        x0s = clip(x0s, *box)
        args, axes = (box, *args), (0, *axes)
    dtype = np.result_type(*(leaf.dtype for leaf in jax.tree.leaves(x0s)))
    # The platform's plan for one member, as a batch (never outlined).
    member = jax.tree.map(lambda leaf: leaf[0], x0s)
    member_args = tuple(jax.tree.map(lambda leaf: leaf[0], a) if axis == 0 else a
                        for a, axis in zip(args, axes, strict=True))[box is not None:]
    the_plan = platform.plan(fun, member, member_args, nested=False, batched=True)
    config = LoopConfig(platform.weakly(fun), maxiter, maxfev, 0, checks.test_on(ftol),
                        checks.test_on(xtol), the_plan.split,
                        checks.history_length(history, history_size, maxiter),
                        bounded=box is not None)
    tol, ftol, xtol = (checks.strong(t, dtype) for t in (tol, ftol, xtol))
    init = platform.compiled(_batched_init, 3, the_plan.profile)
    run = platform.compiled(_segment_many, 3, the_plan.profile, donate_argnums=(3,))
    with checks.objective_errors(fun, member, member_args, name="x0s[0]"):
        states = init(config, tx, axes, x0s, args, tol)
    steps = np.asarray(segment, np.int32)
    states, stats = batching.run_segments(
        states, lambda st, idx: run(config, tx, axes, st, idx, args, tol, ftol, xtol, steps),
        size, sizes)
    res = minimize_result(states)
    if box is not None:
        res = res._replace(active_mask=active_set(res.x, *box))
    return res, stats


def _batched_init(config: LoopConfig, tx, axes: tuple, x0s, args, tol) -> SolverState:
    return jax.vmap(lambda x0, a: init_state(config, tx, x0, a, tol),
                    in_axes=(0, axes))(x0s, args)


def _segment_many(config: LoopConfig, tx, axes: tuple, states: SolverState, idx: jax.Array,
                  args: tuple, tol, ftol, xtol, num_steps) -> SolverState:
    """One segment on the members at ``idx`` (see the module docstring)."""
    size = states.nit.shape[0]
    real = idx < size
    sub = batching.gather(states, idx)
    # Padding lanes hold a copy of a real member; a finished status keeps them idle.
    sub = sub._replace(status=jnp.where(real, sub.status, Status.MAXITER).astype(jnp.int32))
    sub_args = batching.gather_args(args, axes, idx)
    new = jax.vmap(
        lambda s, a: continue_state(config, tx, s, a, tol, ftol, xtol, num_steps),
        in_axes=(0, axes))(sub, sub_args)
    return batching.scatter(states, new, idx)
