"""The solver loop: state, body and stopping tests — pure JAX, no backend, no caches.

One iteration::

    transform.update(g, state, x, value=f, grad=g, value_fn=fun)
        -> updates, state   ──►   x + updates   ──►   f, ∇f at the new point
                                                      (the step record's, else evaluated)
        -> stopping tests (gradient, f / x change, failures, stall, limits) -> status

The loop reads a transform's state only through :func:`jopt.step_record` and
:func:`jopt.step.total_work` (the step protocol, :mod:`jopt.step`). Stopping tests and
status texts follow ``scipy.optimize.minimize``; a failed step, then a second one before
progress, ends the run (scipy's L-BFGS-B rule); ``STALL_LIMIT`` iterations without
progress end it with ``PRECISION`` (at the rounding floor a search can keep "succeeding"
on noise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jopt._checks import check_scalar_output
from jopt.box import clip, projected_gradient
from jopt.calculus import Objective, value_and_grad_fn
from jopt.solve.status import MinimizeResult, Status
from jopt.step import StepStatus, step_record, total_work
from jopt.tree import set_row, tree_inf_norm

PyTree = Any

__all__ = ["IntermediateResult", "LoopConfig", "SolverState", "continue_state", "init_state",
           "result", "summary"]

STALL_LIMIT = 200
NO_LIMIT = 2**31 - 1
_PAUSED = -2  # internal: a segment reached its step limit


class SolverState(NamedTuple):
    """The state of :func:`jopt.minimize`'s loop between two iterations (a pytree of arrays).

    It is the ``lax.while_loop`` carry itself, so a run can be stopped after any number of
    iterations, saved (every leaf is an array), restored, moved between devices, batched
    with ``jax.vmap``, and continued with :func:`jopt.minimize_run` exactly as if it had
    never stopped.

    Attributes:
      x: current point. f / g: objective and gradient at ``x``.
      opt_state: the transform's state (curvature memory, step record, work counters).
      nit: iterations made so far. nfev: evaluations the loop itself made (the
        transform's own are in its work counters).
      status: ``-1`` while running, else a :class:`jopt.Status` code.
      fresh: the last step failed (a second failure before progress ends the run).
      f_hist / g_hist: per-iteration ``f`` and ``‖∇f‖∞`` buffers (length 0 without history).
      stall: iterations since the last progress (``f`` decreasing by more than rounding,
        or ``‖∇f‖∞`` halving); counted for transforms with a step record.
      ref_gnorm: ``‖∇f‖∞`` at the last progress.
    """

    x: PyTree
    f: jax.Array
    g: PyTree
    opt_state: PyTree
    nit: jax.Array
    nfev: jax.Array
    status: jax.Array
    fresh: jax.Array
    f_hist: jax.Array
    g_hist: jax.Array
    stall: jax.Array
    ref_gnorm: jax.Array


class LoopConfig(NamedTuple):
    """The loop's static options (part of the compiled program's key).

    ``ftol_on`` / ``xtol_on``: whether those tests are compiled in (False only for a
    concrete 0). ``split``: evaluate with the backward pass split off (a speed choice of
    the platform layer; same values).
    """

    fun: Callable
    maxiter: int
    maxfev: int | None = None
    verbose: int = 0
    ftol_on: bool = True
    xtol_on: bool = True
    split: bool = False
    history_size: int = 0
    callback: Callable | None = None  # host function of an IntermediateResult
    callback_every: int = 1
    bounded: bool = False  # args = ((lower, upper), *fun's args)


def split_bounds(config: LoopConfig, args: tuple) -> tuple[tuple, tuple]:
    """``((lower, upper), fun's args)`` of the loop's ``args`` (``(None, None)`` when
    unbounded): a bounded loop carries its box as the first argument, so the box is traced,
    batched and sharded like any argument."""
    if config.bounded:
        return tuple(args[0]), tuple(args[1:])
    return (None, None), tuple(args)


def stationarity(x: PyTree, g: PyTree, bounds: tuple) -> jax.Array:
    """``‖∇f‖∞``, or with bounds the projected gradient's ``‖P(x − ∇f) − x‖∞``."""
    if bounds[0] is None and bounds[1] is None:
        return tree_inf_norm(g)
    return tree_inf_norm(projected_gradient(x, g, *bounds))


def _value_and_grad(config: LoopConfig, args: tuple, x: PyTree) -> tuple[Objective, Callable]:
    """The objective of ``x`` alone (carrying its value-and-gradient form) and that form."""
    value_fn = lambda y: config.fun(y, *args)  # noqa: E731
    vg = value_and_grad_fn(value_fn, x, split=config.split)
    return Objective(value_fn, vg), vg


def init_state(config: LoopConfig, tx: optax.GradientTransformationExtraArgs, x0: PyTree,
               args: tuple, tol: Any) -> SolverState:
    """The state before the first iteration: ``f`` and ``∇f`` at ``x0`` (one evaluation),
    the transform initialised, status CONVERGED / NONFINITE / running."""
    bounds, args = split_bounds(config, args)
    check_scalar_output("fun", lambda x: config.fun(x, *args), x0)
    _, vg = _value_and_grad(config, args, x0)
    dtype = jnp.result_type(*jax.tree.leaves(x0))
    tol = jnp.asarray(tol, dtype)
    f0, g0 = vg(x0)
    gnorm0 = stationarity(x0, g0, bounds)
    finite0 = jnp.isfinite(f0) & jnp.isfinite(gnorm0)
    status0 = jnp.where(~finite0, Status.NONFINITE,
                        jnp.where(gnorm0 <= tol, Status.CONVERGED, -1)).astype(jnp.int32)
    hsize = config.history_size
    if hsize:
        f_hist = set_row(jnp.full([hsize], jnp.nan, dtype), 0, f0)
        g_hist = set_row(jnp.full([hsize], jnp.nan, dtype), 0, gnorm0)
    else:
        f_hist = g_hist = jnp.zeros([0], dtype)
    zero = jnp.zeros([], jnp.int32)
    return SolverState(x0, f0, g0, tx.init(x0), zero, jnp.ones([], jnp.int32), status0,
                       jnp.zeros([], bool), f_hist, g_hist, zero, gnorm0.astype(dtype))


def check_state(tx: optax.GradientTransformationExtraArgs, state: SolverState) -> None:
    """``state`` must have the structure :func:`init_state` gives for ``tx`` (trace time)."""
    expected = jax.eval_shape(tx.init, state.x)
    got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                       state.opt_state)
    same = jax.tree.structure(expected) == jax.tree.structure(got) and all(
        (a.shape, a.dtype) == (b.shape, b.dtype)
        for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True))
    if not same:
        raise ValueError(
            "`state.opt_state` does not match `method`: pass the `method` (and an `x` of "
            "the same shapes) that `minimize_init` made the state with."
        )
    if jax.tree.structure(state.g) != jax.tree.structure(state.x):
        raise ValueError("`state.g` must have the structure of `state.x`.")


class IntermediateResult(NamedTuple):
    """What ``minimize``'s ``callback`` receives (on the host, as NumPy arrays): the
    iterate ``x`` after iteration ``nit``, ``fun`` and ``jac`` there, and ``status``
    (``-1`` while running, the final code on the last call)."""

    x: PyTree
    fun: Any
    jac: PyTree
    nit: Any
    status: Any


def _call_back(config: LoopConfig, info: IntermediateResult) -> None:
    """Call the host ``callback`` every ``callback_every`` iterations and at the end, by
    ``jax.debug.callback`` (so also under ``jit``, and under ``vmap`` once per member)."""
    callback = config.callback
    jax.lax.cond(
        (info.nit % config.callback_every == 0) | (info.status >= 0),
        lambda: jax.debug.callback(lambda i: callback(IntermediateResult(*i)), tuple(info)),
        lambda: None,
    )


def _body(config: LoopConfig, tx: optax.GradientTransformationExtraArgs, args: tuple,
          tol: jax.Array, ftol: jax.Array, xtol: jax.Array) -> Callable:
    """One iteration, ``SolverState -> SolverState``."""

    bounds, args = split_bounds(config, args)
    box = dict(zip(("lower", "upper"), bounds, strict=True)) if config.bounded else {}

    def body(s: SolverState) -> SolverState:
        value_fn, vg = _value_and_grad(config, args, s.x)
        dtype = jnp.result_type(*jax.tree.leaves(s.x))
        updates, opt_state = tx.update(s.g, s.opt_state, s.x, value=s.f, grad=s.g,
                                       value_fn=value_fn, **box)
        x_new = optax.apply_updates(s.x, updates)
        record = step_record(opt_state)
        if record is None and config.bounded:  # (a bounded method keeps its own iterates in)
            x_new = clip(x_new, *bounds)  # projected steps: any transform stays feasible
            updates = jax.tree.map(jnp.subtract, x_new, s.x)
        nfev = s.nfev
        if record is not None:
            f_new, g_new = record.value, record.grad
            failed = record.status == StepStatus.FAILED
            # A failure where the first-order decrease predicted for the full step is at
            # rounding level of f is a precision limit, not a failure of the method.
            at_precision = jnp.abs(record.slope) <= 100 * jnp.finfo(dtype).eps * jnp.abs(s.f)
        else:
            f_new, g_new = vg(x_new)
            nfev = nfev + 1
            failed = at_precision = jnp.zeros([], bool)
        nit = s.nit + 1
        gnorm = stationarity(x_new, g_new, bounds)
        finite = jnp.isfinite(f_new) & jnp.isfinite(gnorm)
        if record is not None and not config.xtol_on:
            moved = record.step > 0  # (no reduction over the updates needed)
        else:
            step = tree_inf_norm(updates)
            moved = step > 0
        small_f = small_x = jnp.zeros([], bool)
        if config.ftol_on:
            small_f = (ftol > 0) & moved & (jnp.abs(s.f - f_new) <= ftol * jnp.maximum(
                jnp.maximum(jnp.abs(s.f), jnp.abs(f_new)), 1.0))
        if config.xtol_on:
            small_x = (xtol > 0) & moved & (step <= xtol * (xtol + tree_inf_norm(s.x)))
        # A first failure lets the transform restart itself; a second one, before the
        # restarted method made progress, ends the run.
        ends = failed & s.fresh
        stall, ref_gnorm = s.stall, s.ref_gnorm
        if record is not None:
            noise = 10 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(s.f), jnp.abs(f_new))
            progress = finite & ((f_new < s.f - noise) | (gnorm <= 0.5 * s.ref_gnorm))
            stall = jnp.where(progress, 0, s.stall + moved.astype(jnp.int32))
            ref_gnorm = jnp.where(progress, gnorm, s.ref_gnorm).astype(s.ref_gnorm.dtype)
        status = jnp.select(
            [~finite, ends & at_precision, ends, gnorm <= tol, small_f, small_x,
             stall >= STALL_LIMIT, nit >= config.maxiter],
            [Status.NONFINITE, Status.PRECISION, Status.STEP_FAILED, Status.CONVERGED,
             Status.SMALL_CHANGE, Status.SMALL_CHANGE, Status.PRECISION, Status.MAXITER],
            -1,
        ).astype(jnp.int32)
        if config.maxfev is not None:
            total = nfev + total_work(opt_state).nfev
            status = jnp.where((status < 0) & (total >= config.maxfev), Status.MAXFEV, status)
        keep = finite  # on NaN/Inf, stay at the last finite point
        x_out = jax.tree.map(lambda a, b: jnp.where(keep, a, b), x_new, s.x)
        f_out = jnp.where(keep, f_new, s.f)
        g_out = jax.tree.map(lambda a, b: jnp.where(keep, a, b), g_new, s.g)
        f_hist, g_hist = s.f_hist, s.g_hist
        if f_hist.shape[0]:
            idx = jnp.minimum(nit, f_hist.shape[0] - 1)
            f_hist = set_row(f_hist, idx, f_out)
            g_hist = set_row(g_hist, idx, stationarity(x_out, g_out, bounds))
        if config.verbose:
            jax.lax.cond(
                (nit % config.verbose == 0) | (status >= 0),
                lambda: jax.debug.print("iter {i:6d}  f = {f:.6e}  |g|inf = {g:.3e}",
                                        i=nit, f=f_out, g=gnorm),
                lambda: None,
            )
        if config.callback is not None:
            _call_back(config, IntermediateResult(x_out, f_out, g_out, nit, status))
        fresh = (failed & ~s.fresh) | (s.fresh & ~moved)  # until the method progresses
        return SolverState(x_out, f_out, g_out, opt_state, nit, nfev, status, fresh,
                           f_hist, g_hist, stall, ref_gnorm)

    return body


def continue_state(config: LoopConfig, tx: optax.GradientTransformationExtraArgs,
                   state: SolverState, args: tuple, tol: Any, ftol: Any, xtol: Any,
                   num_steps: jax.Array | None = None) -> SolverState:
    """Iterate from ``state`` until a stopping test fires, or ``num_steps`` iterations
    (then ``status`` stays -1). ``maxiter`` counts total iterations."""
    dtype = jnp.result_type(*jax.tree.leaves(state.x))
    tol, ftol, xtol = (jnp.asarray(t, dtype) for t in (tol, ftol, xtol))
    at_limit = (state.status < 0) & (state.nit >= config.maxiter)
    state = state._replace(status=jnp.where(at_limit, Status.MAXITER, state.status)
                           .astype(jnp.int32))
    body = _body(config, tx, args, tol, ftol, xtol)
    if num_steps is None:
        return jax.lax.while_loop(lambda s: s.status < 0, body, state)
    # The step limit is checked in the body (a pause code), not in the loop condition: an
    # extra condition or carried counter costs more than the check.
    stop_at = jnp.where(num_steps > NO_LIMIT - state.nit, NO_LIMIT, state.nit + num_steps)

    def limited(s: SolverState) -> SolverState:
        s = body(s)
        return s._replace(status=jnp.where((s.status < 0) & (s.nit >= stop_at), _PAUSED,
                                           s.status))

    final = jax.lax.while_loop(lambda s: s.status == -1, limited, state)
    return final._replace(status=jnp.where(final.status == _PAUSED, -1, final.status))


def summary(state: SolverState) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(nfev, njev, nhev, success)`` of ``state``: the loop's evaluations plus the
    transform's work."""
    work = total_work(state.opt_state)
    nfev = state.nfev + work.nfev
    success = (state.status == Status.CONVERGED) | (state.status == Status.SMALL_CHANGE)
    return nfev, nfev + work.njev, work.nhvp + work.nhess, success


def result(state: SolverState) -> MinimizeResult:
    """The :class:`MinimizeResult` of ``state``."""
    nfev, njev, nhev, success = summary(state)
    with_history = state.f_hist.shape[0] > 0
    return MinimizeResult(
        x=state.x, fun=state.f, jac=state.g, nit=state.nit, nfev=nfev, njev=njev,
        nhev=nhev, success=success, status=state.status,
        f_history=state.f_hist if with_history else None,
        gnorm_history=state.g_hist if with_history else None,
    )
