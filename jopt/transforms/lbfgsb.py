"""L-BFGS-B: limited-memory BFGS for ``min f(x)`` subject to ``lower <= x <= upper``.

One iteration from a feasible ``x`` with gradient ``g`` (Byrd, Lu, Nocedal & Zhu 1995):

1. **Model.** The quadratic ``m(z) = f + gᵀ(z − x) + ½(z − x)ᵀB(z − x)`` with the
   limited-memory BFGS matrix in compact form (BLNZ eq. 3.2–3.4; Byrd, Nocedal & Schnabel
   1994)::

       B = θI − W M Wᵀ,   W = [Y  θS]  (n × 2m),   M = [[−D, Lᵀ], [L, θSᵀS]]⁻¹,

   ``S``/``Y`` the last ``m`` pairs ``s = x₊ − x``, ``y = g₊ − g``, ``D = diag(sᵢᵀyᵢ)``,
   ``L`` the strictly lower triangle of ``SᵀY`` (by age), ``θ = yᵀy/sᵀy`` of the newest
   pair (1 before any). A pair is stored only if ``sᵀy > ε·yᵀy`` (BLNZ's test, ``ε``
   the dtype's machine epsilon: 2.2e-16 in float64), which keeps ``B`` positive
   definite.
2. **Generalized Cauchy point** ``xᶜ`` (BLNZ §4, Algorithm CP): the first local minimizer
   of ``m`` along the projected steepest-descent path ``P(x − t g)``, found by visiting the
   path's breakpoints ``tᵢ`` in increasing order. Each segment costs ``O(m²)``: the
   slope and curvature of the 1-D model are updated with ``M`` products of ``2m``-vectors
   (``f′ ← f′ + Δt f″ + g_b² + θ g_b z_b − g_b w_bᵀMc``,
   ``f″ ← f″ − θ g_b² − 2 g_b w_bᵀMp − g_b² w_bᵀMw_b``). Here a ``lax.while_loop``
   takes the breakpoints 64 at a time, nearest first (a top-k selection, not a sort of
   all ``n``), and passes a chunk at once with prefix sums of these recurrences,
   until the minimizer lies inside the current segment: an iteration that passes no
   breakpoint costs one ``O(n)`` reduction.
3. **Subspace minimization** over the variables free at ``xᶜ`` (BLNZ §5.1, the direct
   primal method): ``d̂ = −B̂⁻¹ r̂ᶜ`` with the reduced gradient
   ``r̂ᶜ = Zᵀ(g + θ(xᶜ − x) − W M c)``, ``c = Wᵀ(xᶜ − x)``, and the reduced inverse by
   Sherman–Morrison–Woodbury::

       B̂⁻¹ = (1/θ) I + (1/θ²) ZᵀW (I − (1/θ) M WᵀZZᵀW)⁻¹ M WᵀZ,

   which needs one ``2m × 2m`` solve. ``WᵀZZᵀW`` is kept in the state as its three
   ``m × m`` blocks and updated, as in Zhu et al.'s ``formk``, from the variables that
   enter or leave the free set (a low-rank update while at most 64 do, the ``O(m²n)``
   product otherwise) and from each new pair's row (``O(mn)``).
4. **Into the box.** By default Morales & Nocedal's (2011) projection: ``x̄ = P(xᶜ + d̂)``,
   kept when ``x̄ − x`` is a descent direction; otherwise (or with
   ``subspace_step="truncated"``) the paper's backtrack ``x̄ = xᶜ + α* d̂`` with the
   largest ``α* <= 1`` that stays feasible (BLNZ §5.1). If neither is a descent
   direction, the Cauchy step ``xᶜ − x`` is used (``reset`` in the step record).
5. **Line search** along ``d = x̄ − x`` for the strong Wolfe conditions with the step
   capped at ``α_max``, the largest feasible step (at least 1, as ``x̄`` is feasible); with
   an empty memory and any finite bound ``α_max = 1``, and unless every variable has both
   bounds the first trial is ``min(1/‖d‖, α_max)`` (the rules of Zhu et al. 1997's
   ``lnsrlb``). Trial points are projected onto the box, so ``f`` is only ever evaluated
   at feasible points and ``x + update`` lies in the box exactly. A step that ends on a
   bound lands on it exactly wherever some update can (``x + (ℓ − x)`` need not round to
   ``ℓ``; else it stops one ulp of the update inside); the unit step aims at ``x̄``
   itself, not ``x + 1·d``.

A search that finds no decrease takes a zero step with ``status = FAILED``; the memory is
cleared then, so the next update restarts from ``θ = 1`` (as scipy's L-BFGS-B does). So is
a middle matrix that could not be factored in the working precision.

Without bounds (``lower = upper = None``) the Cauchy point has no breakpoints, every
variable is free and ``x̄ = x − B⁻¹g``: the method is L-BFGS with ``H₀ = (1/θ) I``.

References:
  Byrd, R. H., Lu, P., Nocedal, J. & Zhu, C. (1995). A limited memory algorithm for
  bound constrained optimization. SIAM J. Sci. Comput. 16(5), 1190–1208.
  Zhu, C., Byrd, R. H., Lu, P. & Nocedal, J. (1997). Algorithm 778: L-BFGS-B. ACM Trans.
  Math. Softw. 23(4), 550–560.
  Morales, J. L. & Nocedal, J. (2011). Remark on "Algorithm 778". ACM Trans. Math. Softw.
  38(1), 7:1–7:4.
  Byrd, R. H., Nocedal, J. & Schnabel, R. B. (1994). Representations of quasi-Newton
  matrices and their use in limited memory methods. Math. Program. 63, 129–156.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jopt._checks import check_float_tree, check_in_range, check_positive_int
from jopt.box import clip, max_step
from jopt.calculus import value_and_grad_of
from jopt.linesearch import LineSearchStatus, strong_wolfe_search
from jopt.step import StepRecord, step_status
from jopt.transforms.lbfgsb_model import (
    CompactBFGS,
    cauchy_point,
    gram_blocks,
    middle_matrix,
    slot_ages,
)
from jopt.transforms.projection import feasible_update
from jopt.tree import set_row

PyTree = Any

__all__ = [
    "CompactBFGS",
    "LBFGSBState",
    "SubspaceKind",
    "cauchy_point",
    "compact_form",
    "free_gram",
    "full_bounds",
    "gram_blocks",
    "lbfgsb",
    "lbfgsb_direction",
    "store_pair",
    "subspace_minimizer",
]

DEFAULT_MEMORY = 10  # scipy's `maxcor`
_SUBSPACE_STEPS = ("projected", "truncated")


class SubspaceKind:
    """Codes in :attr:`LBFGSBState.subspace_kind`: the point the direction aims at."""

    PROJECTED = 0  # P(xᶜ + d̂) (Morales & Nocedal 2011)
    TRUNCATED = 1  # xᶜ + α* d̂, α* <= 1 the largest feasible step (BLNZ §5.1)
    CAUCHY = 2  # the generalized Cauchy point xᶜ itself
    NONE = 3  # no descent direction (a zero step, FAILED)


class LBFGSBState(NamedTuple):
    """State of :func:`lbfgsb` (all arrays; ``n`` is the number of parameters).

    Attributes:
      s_history / y_history: ``(m, n)`` ring buffers of the curvature pairs, in
        ``ravel_pytree`` order; slot ``head`` is written next.
      sy / ss: ``(m, m)`` inner products ``sᵢᵀyⱼ`` and ``sᵢᵀsⱼ`` of the stored pairs, kept up
        to date as pairs are written (``O(mn)`` per pair).
      num_pairs: how many slots hold a pair (the newest ``num_pairs`` before ``head``).
      head: the slot written next (int32).
      theta: the scaling ``θ = yᵀy/sᵀy`` of the newest pair (1 with an empty memory).
      free: ``(n,)`` bool, the free set ``Z`` of the last subspace step (all before one).
      zyy / zsy / zss: ``(m, m)`` products ``yᵢᵀZyⱼ``, ``sᵢᵀZyⱼ`` and ``sᵢᵀZsⱼ`` for that
        ``Z``: the blocks of ``WᵀZZᵀW``, updated as variables enter or leave the free set
        and as pairs are written (:func:`free_gram`).
      subspace_kind: the :class:`SubspaceKind` of the last step.
      linesearch_status: the last search's :class:`jopt.linesearch.LineSearchStatus`.
      record: the :class:`jopt.StepRecord` (value and gradient at the new point, step,
        slope ``gᵀd``, status, reset, evaluations).
    """

    s_history: jax.Array
    y_history: jax.Array
    sy: jax.Array
    ss: jax.Array
    num_pairs: jax.Array
    head: jax.Array
    theta: jax.Array
    free: jax.Array
    zyy: jax.Array
    zsy: jax.Array
    zss: jax.Array
    subspace_kind: jax.Array
    linesearch_status: jax.Array
    record: StepRecord


# ------------------------------------------------------------------ the compact form


GRAM_CHANGES = 64  # free-set changes applied to WᵀZZᵀW as a low-rank update


def free_gram(state: LBFGSBState, free: jax.Array, changes: int = GRAM_CHANGES
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The blocks of ``WᵀZZᵀW`` for the free set ``free``, from ``state``'s blocks for its
    own free set (Zhu et al. 1997, ``formk``): a variable ``i`` that enters adds
    ``wᵢwᵢᵀ`` and one that leaves subtracts it, so up to ``changes`` of them cost
    ``O(m² · changes)`` after an ``O(n)`` search, instead of the ``O(m²n)`` product
    that is made when more change."""
    moved = free != state.free
    count = jnp.sum(moved)

    def low_rank(_):
        k = min(changes, free.shape[0])
        _, idx = jax.lax.top_k(moved.astype(jnp.float32), k)
        sign = jnp.where(moved[idx], jnp.where(free[idx], 1.0, -1.0), 0.0).astype(
            state.zyy.dtype)
        yc, sc = state.y_history[:, idx], state.s_history[:, idx]  # (m, k)
        ys = yc * sign[None, :]
        return (state.zyy + ys @ yc.T, state.zsy + sc @ ys.T,
                state.zss + (sc * sign[None, :]) @ sc.T)

    def full(_):
        return gram_blocks(state.y_history, state.s_history, free.astype(state.zyy.dtype))

    return jax.lax.cond(count <= changes, low_rank, full, None)


def compact_form(state: LBFGSBState) -> CompactBFGS:
    """The compact representation of ``B`` held by ``state`` (BLNZ eq. 3.2–3.4)."""
    m = state.sy.shape[0]
    age, valid = slot_ages(state.head, state.num_pairs, m)
    middle = middle_matrix(state.sy, state.ss, state.theta, age, valid)
    return CompactBFGS(state.theta, state.y_history, state.s_history,
                       jnp.concatenate([valid, valid]), middle,
                       jnp.all(jnp.isfinite(middle)))


def _empty_form(form: CompactBFGS) -> CompactBFGS:
    """``B = I``: the form with every slot empty (a restart)."""
    two_m = form.middle.shape[0]
    return form._replace(theta=jnp.ones_like(form.theta), valid=jnp.zeros_like(form.valid),
                         middle=jnp.eye(two_m, dtype=form.middle.dtype),
                         ok=jnp.ones([], bool))


def _select_form(pred: jax.Array, a: CompactBFGS, b: CompactBFGS) -> CompactBFGS:
    """``a`` where ``pred``, else ``b`` (the histories are shared, not selected)."""
    return a._replace(**{k: jnp.where(pred, getattr(a, k), getattr(b, k))
                         for k in ("theta", "valid", "middle", "ok")})


# --------------------------------------------------------------- subspace minimization


def subspace_minimizer(x: jax.Array, g: jax.Array, xc: jax.Array, free: jax.Array,
                       form: CompactBFGS, gram: jax.Array | None = None) -> jax.Array:
    """``d̂``: the minimizer of the model over the ``free`` variables from ``xᶜ``, zero
    elsewhere (BLNZ §5.1, the direct primal method).

    ``d̂ = −B̂⁻¹r̂ᶜ``, ``r̂ᶜ = Zᵀ(g + θ(xᶜ − x) − W M Wᵀ(xᶜ − x))``, with ``B̂⁻¹`` by
    Sherman–Morrison–Woodbury: one ``(2m × 2m)`` solve with ``I − (1/θ) M WᵀZZᵀW``
    (``gram``, made from the histories when not given).
    """
    theta, mid = form.theta, form.middle
    z = free.astype(x.dtype)
    dx = xc - x
    r = z * (g + theta * dx - form.w_times(mid @ form.w_dot(dx)))
    gram = form.gram(z) if gram is None else gram  # WᵀZZᵀW
    eye = jnp.eye(mid.shape[0], dtype=mid.dtype)
    work = jnp.promote_types(mid.dtype, jnp.float32)  # (no half-precision LAPACK solve)
    v = jnp.linalg.solve((eye - (mid @ gram) / theta).astype(work),
                         (mid @ form.w_dot(r)).astype(work)).astype(mid.dtype)
    return -r / theta - z * form.w_times(v) / (theta * theta)


def subspace_point(x: jax.Array, g: jax.Array, xc: jax.Array, du: jax.Array,
                   lower: jax.Array, upper: jax.Array, projected: bool
                   ) -> tuple[jax.Array, jax.Array]:
    """``(x̄, kind)``: the first of ``P(xᶜ + d̂)`` (if ``projected``), ``xᶜ + α* d̂`` (BLNZ
    §5.1) and ``xᶜ`` whose direction from ``x`` is a descent one; ``kind`` a
    :class:`SubspaceKind` (``NONE`` and ``x̄ = x`` when none is)."""
    alpha = jnp.minimum(1.0, max_step(xc, du, lower, upper))
    truncated = jnp.clip(xc + alpha * du, lower, upper)
    candidates = [truncated, xc]
    kinds = [SubspaceKind.TRUNCATED, SubspaceKind.CAUCHY]
    if projected:
        candidates.insert(0, clip(xc + du, lower, upper))
        kinds.insert(0, SubspaceKind.PROJECTED)
    point, kind = x, jnp.asarray(SubspaceKind.NONE, jnp.int32)
    for cand, code in zip(reversed(candidates), reversed(kinds), strict=True):
        descent = g @ (cand - x) < 0
        point = jnp.where(descent, cand, point)
        kind = jnp.where(descent, code, kind)
    return point, kind


# -------------------------------------------------------------------- feasible steps


def full_bounds(params: PyTree, lower: PyTree | None, upper: PyTree | None
                ) -> tuple[PyTree, PyTree]:
    """``lower``/``upper`` as pytrees like ``params`` (``∓inf`` where ``None``)."""
    def side(bound, fill):
        if bound is None:
            return jax.tree.map(lambda p: jnp.full(jnp.shape(p), fill, p.dtype), params)
        return jax.tree.map(lambda b, p: jnp.broadcast_to(jnp.asarray(b, p.dtype),
                                                          jnp.shape(p)), bound, params)
    return side(lower, -jnp.inf), side(upper, jnp.inf)


# ------------------------------------------------------------------------ the update


class _Direction(NamedTuple):
    d: jax.Array
    point: jax.Array
    kind: jax.Array
    reset: jax.Array
    form: CompactBFGS
    free: jax.Array
    blocks: tuple  # (YᵀZY, SᵀZY, SᵀZS) for `free`


def lbfgsb_direction(x: jax.Array, g: jax.Array, lower: jax.Array, upper: jax.Array,
                     state: LBFGSBState, projected: bool) -> _Direction:
    """``d = x̄ − x`` (steps 1–4 of the iteration; see the module docstring)."""
    form = compact_form(state)
    reset = ~form.ok
    form = _select_form(form.ok, form, _empty_form(form))
    xc, _ = cauchy_point(x, g, lower, upper, form)
    free = (xc > lower) & (xc < upper)
    blocks = free_gram(state, free)
    du = subspace_minimizer(x, g, xc, free, form, form.gram_of(*blocks))
    du = jnp.where(jnp.isfinite(du), du, 0.0)
    point, kind = subspace_point(x, g, xc, du, lower, upper, projected)
    reset = reset | (kind == SubspaceKind.CAUCHY)
    return _Direction(point - x, point, kind, reset, form, free, blocks)


def _initial_and_max_step(x: jax.Array, d: jax.Array, lower: jax.Array, upper: jax.Array,
                          empty: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(α₀, α_max)`` of the search (Zhu et al. 1997, ``lnsrlb``): ``α_max`` the largest
    feasible step (at least 1), or 1 with an empty memory when some bound is finite; the
    first trial 1, or ``min(1/‖d‖, α_max)`` with an empty memory unless every variable has
    both bounds."""
    constrained = jnp.any(jnp.isfinite(lower) | jnp.isfinite(upper))
    boxed = jnp.all(jnp.isfinite(lower) & jnp.isfinite(upper))
    feasible = jnp.maximum(max_step(x, d, lower, upper), 1.0)
    alpha_max = jnp.where(empty & constrained, 1.0, feasible).astype(x.dtype)
    norm = jnp.linalg.norm(d)
    tiny = jnp.finfo(x.dtype).tiny
    first = jnp.minimum(1.0 / jnp.maximum(norm, tiny), alpha_max)
    alpha0 = jnp.where(empty & ~boxed, first, 1.0).astype(x.dtype)
    return alpha0, alpha_max


def store_pair(state: LBFGSBState, s: jax.Array, y: jax.Array, ok: jax.Array,
               memory_size: int) -> LBFGSBState:
    """``state`` with the pair ``(s, y)`` written to slot ``head`` where ``ok``, and the
    products ``sy``/``ss`` and ``zyy``/``zsy``/``zss`` (for ``state.free``) brought up
    to date (``O(mn)``)."""
    h = state.head
    s_hist = set_row(state.s_history, h, jnp.where(ok, s, state.s_history[h]))
    y_hist = set_row(state.y_history, h, jnp.where(ok, y, state.y_history[h]))
    z = state.free.astype(s.dtype)
    # One product per history: columns y, s, Zy, Zs.
    cols = jnp.stack([y, s, z * y, z * s], axis=1)
    s_p, y_p = s_hist @ cols, y_hist @ cols
    s_y, y_s, s_s = s_p[:, 0], y_p[:, 1], s_p[:, 1]  # sᵢᵀy, yⱼᵀs, sᵢᵀs
    sy = jnp.where(ok, state.sy.at[h, :].set(y_s).at[:, h].set(s_y), state.sy)
    ss = jnp.where(ok, state.ss.at[h, :].set(s_s).at[:, h].set(s_s), state.ss)

    def with_slot(block: jax.Array, row: jax.Array, col: jax.Array) -> jax.Array:
        return jnp.where(ok, block.at[h, :].set(row).at[:, h].set(col), block)

    zyy = with_slot(state.zyy, y_p[:, 2], y_p[:, 2])
    zsy = with_slot(state.zsy, y_p[:, 3], s_p[:, 2])  # row: sᵀZyⱼ; column: sᵢᵀZy
    zss = with_slot(state.zss, s_p[:, 3], s_p[:, 3])
    theta = jnp.where(ok, (y @ y) / jnp.where(ok, s @ y, 1.0), state.theta)
    return state._replace(
        s_history=s_hist, y_history=y_hist, sy=sy, ss=ss, zyy=zyy, zsy=zsy, zss=zss,
        num_pairs=jnp.where(ok, jnp.minimum(state.num_pairs + 1, memory_size),
                            state.num_pairs),
        head=jnp.where(ok, (h + 1) % memory_size, h),
        theta=theta.astype(state.theta.dtype))


def lbfgsb(
    memory_size: int = DEFAULT_MEMORY,
    *,
    c1: float = 1e-3,
    c2: float = 0.9,
    max_linesearch_steps: int = 20,
    subspace_step: str = "projected",
    approx_wolfe: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995) as a transform that takes the step itself.

    ``update(grads, state, params, value=f, grad=g, value_fn=fun, lower=lo, upper=hi)``
    returns an update with ``params + update`` inside the box ``lo <= x <= hi`` (pytrees
    like ``params``; ``±inf`` for a missing bound; ``None`` for none), and keeps the new
    point's value and gradient in the state's :class:`jopt.StepRecord`. ``params`` must
    lie in the box. The iteration (compact BFGS model, generalized Cauchy point, subspace
    minimization, projection, bounded strong-Wolfe search) is described in
    :mod:`jopt.transforms.lbfgsb`. A driver stops when ``‖P(x − g) − x‖∞`` is small;
    ``jopt.minimize(fun, x0, method=lbfgsb(), bounds=(lo, hi))`` runs it to convergence.

    Args:
      memory_size: pairs ``m`` kept (scipy's ``maxcor``).
      c1: sufficient-decrease constant of the search (scipy's L-BFGS-B: ``1e-3``).
      c2: curvature constant (``0.9``).
      max_linesearch_steps: evaluations per search (scipy's ``maxls``: 20).
      subspace_step: ``"projected"`` (Morales & Nocedal 2011: project the subspace
        minimizer, backtrack only if that is not a descent direction) or ``"truncated"``
        (BLNZ 1995: the largest feasible fraction of the subspace step).
      approx_wolfe: also accept Hager–Zhang approximate Wolfe points (searches where
        ``f`` changes below rounding, as in float32).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> from jopt.transforms.lbfgsb import lbfgsb
      >>> f = lambda x: jnp.sum((x - 2.0) ** 2)
      >>> tx, lo, hi = lbfgsb(), jnp.zeros(2), jnp.ones(2)
      >>> @jax.jit
      ... def step(x, state):
      ...     return tx.update(jax.grad(f)(x), state, x, value_fn=f, lower=lo, upper=hi)
      >>> x = jnp.zeros(2)
      >>> u, state = step(x, tx.init(x))
      >>> [float(v) for v in x + u], int(state.record.status)
      ([1.0, 1.0], 0)
    """
    check_positive_int("memory_size", memory_size)
    check_in_range("c1", c1, 0.0, 0.5)
    check_in_range("c2", c2, float(c1), 1.0)
    if not c1 > 0:
        raise ValueError(f"`c1` must be > 0, got {c1}.")
    check_positive_int("max_linesearch_steps", max_linesearch_steps)
    if subspace_step not in _SUBSPACE_STEPS:
        raise ValueError(f"`subspace_step` must be one of {_SUBSPACE_STEPS}, got "
                         f"{subspace_step!r}.")
    projected = subspace_step == "projected"

    def init(params: PyTree) -> LBFGSBState:
        check_float_tree("params", params)
        flat, _ = ravel_pytree(params)
        n, m = flat.size, memory_size
        zeros = jnp.zeros([m, n], flat.dtype)
        return LBFGSBState(
            s_history=zeros, y_history=zeros,
            sy=jnp.zeros([m, m], flat.dtype), ss=jnp.zeros([m, m], flat.dtype),
            num_pairs=jnp.zeros([], jnp.int32), head=jnp.zeros([], jnp.int32),
            theta=jnp.ones([], flat.dtype), free=jnp.ones([n], bool),
            zyy=jnp.zeros([m, m], flat.dtype), zsy=jnp.zeros([m, m], flat.dtype),
            zss=jnp.zeros([m, m], flat.dtype),
            subspace_kind=jnp.asarray(SubspaceKind.NONE, jnp.int32),
            linesearch_status=jnp.zeros([], jnp.int32),
            record=StepRecord.initial(params))

    def update(
        grads: PyTree,
        state: LBFGSBState,
        params: PyTree = None,
        *,
        value: jax.Array | None = None,
        grad: PyTree = None,
        value_fn: Callable[[PyTree], jax.Array] | None = None,
        lower: PyTree | None = None,
        upper: PyTree | None = None,
        **extra: Any,
    ) -> tuple[PyTree, LBFGSBState]:
        del extra
        if value_fn is None or params is None:
            raise ValueError(
                "lbfgsb needs the objective: call `update(grads, state, params, value=f, "
                "grad=g, value_fn=fun, lower=lo, upper=hi)` (value at `params` is optional "
                "but saves one evaluation).")
        value_and_grad = value_and_grad_of(value_fn, params)
        given = value is not None
        if given:
            grad = grads if grad is None else grad
        else:
            value, grad = value_and_grad(params)
        value = jnp.asarray(value)
        lo_tree, hi_tree = full_bounds(params, lower, upper)
        x, unravel = ravel_pytree(params)
        g = ravel_pytree(grad)[0].astype(x.dtype)
        lo = ravel_pytree(lo_tree)[0].astype(x.dtype)
        hi = ravel_pytree(hi_tree)[0].astype(x.dtype)

        direction = lbfgsb_direction(x, g, lo, hi, state, projected)
        zyy, zsy, zss = direction.blocks
        state = state._replace(num_pairs=jnp.where(direction.reset & ~direction.form.ok, 0,
                                                   state.num_pairs),
                               theta=direction.form.theta.astype(state.theta.dtype),
                               free=direction.free, zyy=zyy, zsy=zsy, zss=zss)
        has_direction = direction.kind != SubspaceKind.NONE
        d = jnp.where(has_direction, direction.d, 0.0)
        slope = g @ d
        alpha0, alpha_max = _initial_and_max_step(x, d, lo, hi, state.num_pairs == 0)

        xbar = jnp.where(has_direction, direction.point, x)

        def update_at(alpha: jax.Array) -> PyTree:
            # The unit step goes to x̄ itself (x + (x̄ − x) may round off a bound x̄ is on;
            # Zhu et al.'s code also sets x = x̄ then). A select keeps α·d rounded to the
            # dtype before the add (no fused multiply-add: the same point every time).
            step = alpha * d
            step = jnp.where(step == step, step, jnp.nan)
            target = jnp.where(alpha == 1, xbar, jnp.clip(x + step, lo, hi))
            return feasible_update(params, unravel(target), lo_tree, hi_tree)

        def evaluate(alpha: jax.Array) -> tuple[jax.Array, jax.Array, PyTree]:
            f, gt = value_and_grad(optax.apply_updates(params, update_at(alpha)))
            return f, ravel_pytree(gt)[0].astype(x.dtype) @ d, gt

        step, new_value, new_grad, ls_status, trials = strong_wolfe_search(
            evaluate, value, slope, grad, alpha0, c1=c1, c2=c2,
            max_steps=max_linesearch_steps, approx_wolfe=approx_wolfe, max_step=alpha_max)
        failed = ~has_direction | (ls_status == LineSearchStatus.FAILED)
        step = jnp.where(failed, 0.0, step).astype(x.dtype)
        new_value = jnp.where(failed, value, new_value)
        new_grad = jax.tree.map(lambda a, b: jnp.where(failed, a, b), grad, new_grad)
        updates = update_at(step)

        s = ravel_pytree(updates)[0].astype(x.dtype)
        y = ravel_pytree(new_grad)[0].astype(x.dtype) - g
        sy, yy = s @ y, y @ y
        eps = jnp.finfo(x.dtype).eps
        usable = ~failed & jnp.isfinite(sy) & jnp.isfinite(yy) & (sy > eps * yy)
        state = store_pair(state, s, y, usable, memory_size)
        # A failed search restarts the method: the next update starts from B = I.
        state = state._replace(num_pairs=jnp.where(failed, 0, state.num_pairs),
                               theta=jnp.where(failed, 1.0, state.theta).astype(x.dtype))
        record = StepRecord(
            value=new_value, grad=new_grad, step=step, slope=slope,
            status=step_status(failed), reset=direction.reset,
            work=state.record.work.add(nfev=trials + (0 if given else 1)))
        ls_status = jnp.where(has_direction, ls_status, LineSearchStatus.FAILED)
        state = state._replace(subspace_kind=direction.kind,
                               linesearch_status=ls_status.astype(jnp.int32), record=record)
        return updates, state

    return optax.GradientTransformationExtraArgs(init, update)
