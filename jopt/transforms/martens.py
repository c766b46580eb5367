"""The pieces of Martens' Hessian-free Algorithm 1 as small pure functions: curvature
products, CG with the relative-progress stop and iterate backtracking, step selection with
an Armijo search, the reduction ratio and the Levenberg-Marquardt damping rule (see
:mod:`jopt.transforms.hessian_free` for the method and its references)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.calculus import gnvp_fn, grad_and_hvp_fn
from jopt.tree import (
    set_row,
    tree_add_scaled,
    tree_inf_norm,
    tree_l2_norm,
    tree_scale,
    tree_select,
    tree_vdot,
)

PyTree = Any
MatVec = Callable[[PyTree], PyTree]
ValueAndGrad = Callable[[PyTree], tuple[jax.Array, PyTree]]

__all__ = ["MartensCGResult", "StepChoice", "cast_like", "curvature_matvec",
           "diagonal_preconditioner", "levenberg_marquardt", "martens_cg", "reduction_ratio",
           "save_iterations", "select_step", "tree_dtype", "value_and_grad_as"]


# --------------------------------------------------------------------- small helpers


def tree_dtype(tree: PyTree) -> Any:
    return jnp.result_type(*jax.tree.leaves(tree))


def cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """``tree`` with the leaf dtypes of ``like`` (keeps ``lax`` loop carries type-stable)."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x).astype(jnp.result_type(ref)), tree, like)


def _stack_get(stacked: PyTree, j: jax.Array) -> PyTree:
    return jax.tree.map(lambda s: s[j], stacked)


def save_iterations(max_iters: int, base: float = 1.3) -> np.ndarray:
    """The CG iterations ``⌈base^j⌉ <= max_iters`` (unique, ascending) whose iterates are kept.

    Martens (2010) §4.6 keeps iterates at geometrically spaced iterations so that
    backtracking over them costs ``O(log max_iters)`` stored vectors.
    """
    out: list[int] = []
    j = 0
    while (i := math.ceil(base**j)) <= max_iters:
        if not out or i > out[-1]:
            out.append(i)
        j += 1
    return np.asarray(out, np.int32)


def _slot_table(saves: np.ndarray, max_iters: int) -> np.ndarray:
    """``table[i]`` = buffer slot of iteration ``i`` (``-1``: not kept)."""
    table = np.full(max_iters + 1, -1, np.int32)
    table[saves] = np.arange(saves.size, dtype=np.int32)
    return table


def value_and_grad_as(value_fn: Callable[[PyTree], jax.Array], params: PyTree,
                    dtype: Any) -> ValueAndGrad:
    """``p -> (f(params + p), ∇f(params + p))`` with the value non-finite mapped to ``+inf``."""
    vg = jax.value_and_grad(value_fn)

    def evaluate(p: PyTree) -> tuple[jax.Array, PyTree]:
        f, g = vg(tree_add_scaled(params, 1.0, p))
        f = jnp.asarray(f).astype(dtype)
        return jnp.where(jnp.isfinite(f), f, jnp.inf), cast_like(g, params)

    return evaluate


# ---------------------------------------------------------------- curvature products


def curvature_matvec(
    params: PyTree,
    damping: jax.Array,
    *,
    model_fn: Callable[[PyTree], PyTree] | None,
    loss_fn: Callable[[PyTree], jax.Array] | None,
    value_fn: Callable[[PyTree], jax.Array] | None,
) -> tuple[MatVec, int]:
    """Damped curvature product ``v -> (C + λI) v`` and the gradient evaluations it cost.

    ``C`` is the Gauss-Newton matrix ``Jᵀ H_L J`` when ``model_fn`` and ``loss_fn`` are given
    (Martens 2010 §4.2; Schraudolph 2002), else the Hessian of ``value_fn`` (the gradient is
    linearized once: one gradient evaluation). The Hessian may be indefinite; CG then stops
    at the first direction of non-positive damped curvature.
    """
    if model_fn is not None and loss_fn is not None:
        product, cost = gnvp_fn(model_fn, loss_fn, params), 0
    else:
        _, product = grad_and_hvp_fn(value_fn, params)
        cost = 1

    def matvec(v: PyTree) -> PyTree:
        cv = cast_like(product(v), params)
        return jax.tree.map(lambda a, b: a + jnp.asarray(damping, b.dtype) * b, cv, v)

    return matvec, cost


def diagonal_preconditioner(sq_grads: PyTree, damping: jax.Array,
                            exponent: float | jax.Array) -> MatVec:
    """``r -> M⁻¹ r`` with ``M = (diag(Σ_i ∇f_i²) + λ)^ξ`` (Martens 2010 §4.7).

    ``sq_grads`` is the sum of squared per-example gradients (the empirical Fisher
    diagonal) or, when only a batch gradient is at hand, its square ``g ⊙ g``. Entries are
    floored at ``eps·max`` so a zero diagonal with ``λ = 0`` cannot divide by zero.
    """
    diag = jax.tree.map(lambda s: s + jnp.asarray(damping, s.dtype), sq_grads)
    dtype = tree_dtype(diag)
    top = tree_inf_norm(diag)
    floor = jnp.maximum(jnp.finfo(dtype).eps * top, jnp.finfo(dtype).tiny)
    m = jax.tree.map(lambda d: jnp.maximum(d, floor.astype(d.dtype))
                     ** jnp.asarray(exponent, d.dtype), diag)
    return lambda r: jax.tree.map(jnp.divide, r, m)


# ----------------------------------------------------------------------- Martens CG


class MartensCGResult(NamedTuple):
    """Result of :func:`martens_cg`.

    Attributes:
      x: final iterate. q: its model value ``q(x)`` (damped model).
      saved: iterates at the iterations of :func:`save_iterations` (leading axis: slot).
      saved_q: their model values.
      num_saved: slots holding an iterate strictly earlier than the final one.
      num_iters: CG iterations (one product each). num_matvecs: products in all (plus one
        for the residual of a warm start).
      negative_curvature: stopped at a direction with ``dᵀAd <= 0``.
      negative_at_start: that happened at the first iteration (``x`` is the start).
    """

    x: PyTree
    q: jax.Array
    saved: PyTree
    saved_q: jax.Array
    num_saved: jax.Array
    num_iters: jax.Array
    num_matvecs: jax.Array
    negative_curvature: jax.Array
    negative_at_start: jax.Array


class _CGCarry(NamedTuple):
    i: jax.Array
    x: PyTree
    r: PyTree  # gradient of the model: A x + g
    d: PyTree
    rz: jax.Array  # rᵀ M⁻¹ r
    q: jax.Array
    q_hist: jax.Array  # q after each iteration, index 0: start
    saved: PyTree
    saved_q: jax.Array
    stop: jax.Array
    negative: jax.Array


def _progress_stop(q_hist: jax.Array, i: jax.Array, q: jax.Array, eps: jax.Array) -> jax.Array:
    """Martens (2010) §4.4: ``i > k`` and ``(q_i − q_{i−k}) / q_i < k·ε``, ``k = max(10, i/10)``.

    With ``q_i < 0`` the test reads ``q_i − q_{i−k} > k·ε·q_i`` (no division).
    """
    k = jnp.maximum(10, i // 10)
    q_prev = q_hist[jnp.maximum(i - k, 0)]
    return (i > k) & (q < 0) & (q - q_prev > k.astype(q.dtype) * eps * q)


def martens_cg(
    matvec: MatVec,
    g: PyTree,
    x0: PyTree | None,
    *,
    max_iters: int,
    eps: float | jax.Array,
    precond: MatVec | None = None,
    save_base: float | None = 1.3,
) -> MartensCGResult:
    """Preconditioned CG on ``min q(x) = gᵀx + ½xᵀAx`` with Martens' stopping rule.

    Nocedal & Wright Alg. 5.3 with the relative-progress test of Martens (2010) §4.4, a
    residual floor ``‖r‖ <= eps_dtype·‖g‖`` and a stop at non-positive curvature (the
    iterate before that direction is returned). A start ``x0`` with ``q(x0) >= 0`` is
    replaced by ``0`` (one product computes its residual either way). Iterates at the
    iterations of :func:`save_iterations` (``save_base``; ``None``: none) are kept.
    """
    dtype = tree_dtype(g)
    eps = jnp.asarray(eps, dtype)
    apply_m = precond if precond is not None else (lambda r: r)
    gnorm = tree_l2_norm(g)
    r_floor = jnp.finfo(dtype).eps * gnorm
    zeros = jax.tree.map(jnp.zeros_like, g)
    if x0 is None:
        x, r, q0, extra = zeros, g, jnp.zeros([], dtype), 0
    else:
        r_warm = tree_add_scaled(matvec(x0), 1.0, g)
        q_warm = 0.5 * (tree_vdot(x0, r_warm) + tree_vdot(x0, g))
        good = q_warm < 0
        x = tree_select(good, x0, zeros)
        r = tree_select(good, r_warm, g)
        q0 = jnp.where(good, q_warm, 0).astype(dtype)
        extra = 1
    saves = save_iterations(max_iters, save_base) if save_base else np.zeros([0], np.int32)
    table = jnp.asarray(_slot_table(saves, max_iters))
    num_slots = saves.size
    z = apply_m(r)

    def cond(c: _CGCarry) -> jax.Array:
        return ~c.stop & (c.i < max_iters)

    def body(c: _CGCarry) -> _CGCarry:
        ad = matvec(c.d)
        dad = tree_vdot(c.d, ad)
        alpha = c.rz / jnp.where(dad > 0, dad, 1)
        negative = ~(dad > 0) | ~jnp.isfinite(alpha)
        alpha = jnp.where(negative, 0, alpha)
        x = tree_add_scaled(c.x, alpha, c.d)
        r = tree_add_scaled(c.r, alpha, ad)
        z = apply_m(r)
        rz = tree_vdot(r, z)
        beta = jnp.where(c.rz > 0, rz / jnp.where(c.rz > 0, c.rz, 1), 0)
        d = tree_add_scaled(tree_scale(-1.0, z), beta, c.d)
        q = 0.5 * (tree_vdot(x, r) + tree_vdot(x, g))
        x, r, q = (tree_select(negative, c.x, x), tree_select(negative, c.r, r),
                   jnp.where(negative, c.q, q))
        i = c.i + 1
        q_hist = set_row(c.q_hist, i, q)
        saved, saved_q = c.saved, c.saved_q
        if num_slots:
            slot = table[i]
            keep, at = slot >= 0, jnp.maximum(slot, 0)
            saved = jax.tree.map(lambda s, v: set_row(s, at, jnp.where(keep, v, s[at])), saved, x)
            saved_q = set_row(saved_q, at, jnp.where(keep, q, saved_q[at]))
        small = tree_l2_norm(r) <= r_floor
        stop = negative | small | _progress_stop(q_hist, i, q, eps)
        return _CGCarry(i, x, r, d, rz, q, q_hist, saved, saved_q, stop, negative)

    init = _CGCarry(
        i=jnp.zeros([], jnp.int32),
        x=x,
        r=r,
        d=tree_scale(-1.0, z),
        rz=tree_vdot(r, z),
        q=q0,
        q_hist=set_row(jnp.zeros([max_iters + 1], dtype), 0, q0),
        saved=jax.tree.map(lambda v: jnp.zeros((num_slots, *v.shape), v.dtype), g),
        saved_q=jnp.zeros([num_slots], dtype),
        stop=tree_l2_norm(r) <= r_floor,
        negative=jnp.zeros([], bool),
    )
    c = jax.lax.while_loop(cond, body, init)
    num_saved = jnp.sum(jnp.asarray(saves) < c.i).astype(jnp.int32)
    return MartensCGResult(
        x=c.x,
        q=c.q,
        saved=c.saved,
        saved_q=c.saved_q,
        num_saved=num_saved,
        num_iters=c.i,
        num_matvecs=c.i + extra,
        negative_curvature=c.negative,
        negative_at_start=c.negative & (c.i == 1),
    )


# ------------------------------------------------------------------ step selection


class StepChoice(NamedTuple):
    """Result of :func:`select_step`.

    Attributes:
      step: the chosen CG iterate ``p`` (before the line search).
      q: its damped model value. value_at_one: ``f(x + p)`` (for ``ρ``).
      alpha: accepted step length (0 when none was found). found: one was found.
      value, grad: ``f`` and ``∇f`` at ``x + α p`` (at ``x + p`` when none was found).
      num_evals: ``value_and_grad`` evaluations made.
    """

    step: PyTree
    q: jax.Array
    value_at_one: jax.Array
    alpha: jax.Array
    found: jax.Array
    value: jax.Array
    grad: PyTree
    num_evals: jax.Array


class _SelectCarry(NamedTuple):
    searching: jax.Array  # phase 1 (Armijo) rather than phase 0 (CG-iterate backtracking)
    ptr: jax.Array  # candidate slot evaluated next (num_slots: the final iterate)
    alpha: jax.Array  # Armijo trial evaluated next
    trials: jax.Array  # Armijo trials made (α < 1)
    chosen: PyTree
    chosen_q: jax.Array
    f_one: jax.Array  # f(x + chosen)
    g_one: PyTree
    found: jax.Array
    step: jax.Array
    value: jax.Array
    grad: PyTree
    evals: jax.Array
    done: jax.Array


def _kept_iterate(cg_result: MartensCGResult, ptr: jax.Array) -> tuple[PyTree, jax.Array]:
    """The kept CG iterate at slot ``ptr`` and its model value (slot ``num_slots``: the
    final iterate)."""
    num_slots = cg_result.saved_q.shape[0]
    if num_slots == 0:
        return cg_result.x, cg_result.q
    at = jnp.minimum(ptr, num_slots - 1)
    last = ptr == num_slots
    return (tree_select(last, cg_result.x, _stack_get(cg_result.saved, at)),
            jnp.where(last, cg_result.q, cg_result.saved_q[at]))


def select_step(
    evaluate: ValueAndGrad,
    cg_result: MartensCGResult,
    f0: jax.Array,
    g0: PyTree,
    *,
    c1: float,
    shrink: float,
    max_steps: int,
) -> StepChoice:
    """CG-iterate backtracking (Martens 2010 §4.6) then Armijo backtracking, in one loop.

    Phase 0 evaluates ``f(x + p)`` for the final CG iterate, then for the kept iterates
    from the latest backwards while the objective keeps decreasing, and chooses the best.
    Phase 1 is the Armijo search ``f(x + αp) <= f(x) + c1·α·gᵀp`` over
    ``α ∈ {1, shrink, shrink², …}`` (N&W Alg. 3.1; ``α = 1`` is already known from phase
    0; at most ``max_steps`` further trials). A chosen ``p`` that is not a descent
    direction is never accepted. One loop, one ``value_and_grad`` per step, all branching
    by ``jnp.where``: under ``vmap`` a batch costs its slowest member's evaluations.
    """
    dtype = f0.dtype
    num_slots = cg_result.saved_q.shape[0]

    def candidate(ptr):
        return _kept_iterate(cg_result, ptr)[0]

    def candidate_q(ptr):
        return _kept_iterate(cg_result, ptr)[1]

    def body(c: _SelectCarry) -> _SelectCarry:
        p = tree_select(c.searching, tree_scale(c.alpha, c.chosen), candidate(c.ptr))
        f, g = evaluate(p)
        # Phase 0: keep the best iterate; the final one is always the first "best".
        better = ~c.searching & ((f < c.f_one) | (c.ptr == num_slots))
        chosen = tree_select(better, p, c.chosen)
        chosen_q = jnp.where(better, candidate_q(c.ptr), c.chosen_q)
        f_one = jnp.where(better, f, c.f_one)
        g_one = tree_select(better, g, c.g_one)
        nxt = jnp.where(c.ptr == num_slots, cg_result.num_saved - 1, c.ptr - 1)
        scanning = better & (nxt >= 0)
        end_scan = ~c.searching & ~scanning
        slope = tree_vdot(g0, chosen)
        descent = slope < 0
        # Armijo at α = 1 when the scan ends; at α = c.alpha in phase 1.
        ok_one = end_scan & descent & (f_one <= f0 + c1 * slope)
        ok_trial = c.searching & descent & (f <= f0 + c1 * c.alpha * slope)
        found = ok_one | ok_trial
        trials = c.trials + c.searching.astype(jnp.int32)
        searching = c.searching | end_scan
        done = found | (end_scan & ~descent) | (c.searching & (trials >= max_steps))
        return _SelectCarry(
            searching=searching,
            ptr=jnp.where(scanning, nxt, c.ptr),
            alpha=jnp.where(end_scan, shrink, jnp.where(c.searching, shrink * c.alpha,
                                                         c.alpha)).astype(dtype),
            trials=trials,
            chosen=chosen,
            chosen_q=chosen_q,
            f_one=f_one,
            g_one=g_one,
            found=found,
            step=jnp.where(ok_one, 1, jnp.where(ok_trial, c.alpha, c.step)).astype(dtype),
            value=jnp.where(ok_one, f_one, jnp.where(ok_trial, f, c.value)),
            grad=tree_select(ok_one, g_one, tree_select(ok_trial, g, c.grad)),
            evals=c.evals + 1,
            done=done,
        )

    init = _SelectCarry(
        searching=jnp.zeros([], bool),
        ptr=jnp.asarray(num_slots, jnp.int32),
        alpha=jnp.ones([], dtype),
        trials=jnp.zeros([], jnp.int32),
        chosen=cg_result.x,
        chosen_q=cg_result.q,
        f_one=jnp.full([], jnp.inf, dtype),
        g_one=g0,
        found=jnp.zeros([], bool),
        step=jnp.zeros([], dtype),
        value=f0,
        grad=g0,
        evals=jnp.zeros([], jnp.int32),
        done=jnp.zeros([], bool),
    )
    c = jax.lax.while_loop(lambda c: ~c.done, body, init)
    return StepChoice(
        step=c.chosen,
        q=c.chosen_q,
        value_at_one=c.f_one,
        alpha=jnp.where(c.found, c.step, 0).astype(dtype),
        found=c.found,
        value=jnp.where(c.found, c.value, c.f_one),
        grad=tree_select(c.found, c.grad, c.g_one),
        num_evals=c.evals,
    )


def reduction_ratio(actual: jax.Array, q_damped: jax.Array, damping: jax.Array,
                    step_sq_norm: jax.Array) -> jax.Array:
    """``ρ = (f(x+p) − f(x)) / q̃(p)`` with the undamped model ``q̃ = q − ½λ‖p‖²``.

    ``-inf`` when the trial value is not finite or the model predicts no decrease.
    """
    predicted = q_damped - 0.5 * damping * step_sq_norm
    ok = jnp.isfinite(actual) & (predicted < 0)
    return jnp.where(ok, actual / jnp.where(ok, predicted, -1), -jnp.inf)


def levenberg_marquardt(damping: jax.Array, rho: jax.Array, *, increase: float = 1.5,
                        decrease: float = 2.0 / 3.0, min_damping: float = 0.0,
                        max_damping: float = math.inf) -> jax.Array:
    """Martens (2010) §4.1: ``λ·3/2`` if ``ρ < 1/4``, ``λ·2/3`` if ``ρ > 3/4``, clipped."""
    new = jnp.where(rho < 0.25, increase * damping,
                    jnp.where(rho > 0.75, decrease * damping, damping))
    return jnp.clip(new, min_damping, max_damping).astype(damping.dtype)
