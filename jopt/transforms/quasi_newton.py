"""Quasi-Newton and nonlinear conjugate-gradient directions, and the ready-made solvers.

``scale_by_lbfgs``, ``scale_by_bfgs`` and ``scale_by_nonlinear_cg`` turn a gradient into a
search direction (sign included: the result is a descent direction ``d``); chained with a
line search from :mod:`jopt.linesearch` they give ``lbfgs``, ``bfgs`` and ``nonlinear_cg``.
Each direction transform forms its curvature pair ``(s, y)`` from the parameters and
gradient it is called with and the ones it saw last, so it works in any loop where the
gradient passed in is the one at ``params`` (``jopt.minimize`` passes the line search's
final gradient, so nothing is evaluated twice).

Curvature pairs with ``sᵀy ≤ ε‖s‖‖y‖`` (``ε`` scales with the dtype's precision) are
skipped instead of dividing by a tiny or negative number, so tiny or non-finite pairs
never poison the approximation with NaN/Inf.

Restarts: a zero step since the last call (a failed line search, which takes no step)
discards the curvature information, and the next direction is steepest descent, exactly as
from a freshly initialised state (scipy's L-BFGS-B restarts the same way). The transforms
do this themselves, with a few scalar selects, so a driver never has to replace their
state: ``jopt.minimize`` relies on it, because swapping an L-BFGS state of ``2·m·n``
numbers in and out of a ``lax.cond`` copied the whole history every iteration.

References:
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.: §6.1 (BFGS, eq.
  6.17, initial scaling eq. 6.20), Algorithms 7.4/7.5 (L-BFGS two-loop recursion and
  γ = sᵀy/yᵀy, eq. 7.20), §5.2 (nonlinear CG: FR, PR+, HS, restarts eq. 5.52).
  Dai, Y. H. & Yuan, Y. (1999). A nonlinear conjugate gradient method with a strong global
  convergence property. SIAM J. Optim. 10(1) (DY).
  Hager, W. W. & Zhang, H. (2005). SIAM J. Optim. 16(1), eq. 1.4-1.6 (HZ β with lower
  bound η_k).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jopt._checks import check_float_tree, check_positive_int
from jopt.linesearch import scale_by_strong_wolfe
from jopt.tree import set_row, tree_l2_norm, tree_scale, tree_select, tree_vdot, tree_vdots

PyTree = Any

__all__ = [
    "BFGSState",
    "LBFGSState",
    "NonlinearCGState",
    "bfgs",
    "lbfgs",
    "nonlinear_cg",
    "scale_by_bfgs",
    "scale_by_lbfgs",
    "scale_by_nonlinear_cg",
]


def curvature_eps(dtype: Any) -> float:
    """Relative threshold of the curvature test: 1e-10 in float64, ~1e-5 in float32."""
    return max(1e-10, 100.0 * float(jnp.finfo(dtype).eps))


def _tree_dtype(tree: PyTree) -> Any:
    return jnp.result_type(*jax.tree.leaves(tree))


def _sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.subtract, a, b)


def pair_is_usable(s: PyTree, y: PyTree, has_prev: jax.Array) -> tuple[jax.Array, ...]:
    """``(ok, sᵀy, yᵀy, sᵀs)``: whether the pair passes the relative curvature test."""
    sy, yy, ss = tree_vdots([(s, y), (y, y), (s, s)])
    eps = curvature_eps(sy.dtype)
    ok = has_prev & jnp.isfinite(sy) & jnp.isfinite(yy) & (sy > eps * jnp.sqrt(ss * yy))
    return ok, sy, yy, ss


# -------------------------------------------------------------------------- L-BFGS


DEFAULT_MEMORY = 10  # curvature pairs kept by lbfgs() (and so by method="lbfgs")


def _history_zeros(params: PyTree, memory_size: int) -> PyTree:
    """Zero ``(m, *shape)`` history leaves."""
    return jax.tree.map(lambda p: jnp.zeros((memory_size, *jnp.shape(p)), p.dtype), params)


def _history_write(history: PyTree, idx: jax.Array, new: PyTree, ok: jax.Array) -> PyTree:
    """``history`` with row ``idx`` set to ``new`` where ``ok`` (unchanged elsewhere)."""
    return jax.tree.map(lambda h, v: jnp.where(ok, set_row(h, idx, v), h), history, new)


class LBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs`: a ring buffer of the last ``m`` curvature pairs
    (each history leaf an ``(m, *leaf.shape)`` array)."""

    count: jax.Array
    s_history: PyTree  # leaves of shape (m, *leaf.shape)
    y_history: PyTree
    rho: jax.Array  # (m,) 1/sᵀy, 0 for empty slots
    head: jax.Array  # slot written next
    gamma: jax.Array  # initial inverse-Hessian scale sᵀy/yᵀy (0: no pair yet)
    prev_params: PyTree
    prev_grad: PyTree


def lbfgs_direction(grad: PyTree, state: LBFGSState, memory_size: int) -> PyTree:
    """``-H g`` by the two-loop recursion (N&W Alg. 7.4); empty slots have ``ρ = 0``."""
    def slot(history, idx):
        return jax.tree.map(lambda h: h[idx], history)

    def newest_first(j, carry):
        q, alphas = carry
        idx = (state.head - 1 - j) % memory_size
        a = state.rho[idx] * tree_vdot(slot(state.s_history, idx), q)
        q = jax.tree.map(lambda qi, yi: qi - a.astype(qi.dtype) * yi, q, slot(state.y_history, idx))
        return q, set_row(alphas, j, a)

    alphas0 = jnp.zeros([memory_size], state.rho.dtype)
    q, alphas = jax.lax.fori_loop(0, memory_size, newest_first, (grad, alphas0))
    g_norm = tree_l2_norm(grad)
    tiny = jnp.finfo(g_norm.dtype).tiny
    gamma = jnp.where(state.gamma > 0, state.gamma, 1.0 / jnp.maximum(g_norm, tiny))
    r = tree_scale(gamma, q)

    def oldest_first(k, r):
        j = memory_size - 1 - k
        idx = (state.head - 1 - j) % memory_size
        b = state.rho[idx] * tree_vdot(slot(state.y_history, idx), r)
        coef = alphas[j] - b
        return jax.tree.map(lambda ri, si: ri + coef.astype(ri.dtype) * si, r,
                            slot(state.s_history, idx))

    r = jax.lax.fori_loop(0, memory_size, oldest_first, r)
    return tree_scale(-1.0, r)


def scale_by_lbfgs(memory_size: int = DEFAULT_MEMORY) -> optax.GradientTransformationExtraArgs:
    """L-BFGS direction ``d = -H_k ∇f`` from the last ``memory_size`` curvature pairs.

    ``H_0 = γ I`` with ``γ = sᵀy/yᵀy`` of the newest pair (N&W eq. 7.20); before the first
    pair ``γ = 1/‖∇f‖`` (a unit-length steepest-descent trial step). Pairs failing the
    relative curvature test are skipped; a zero step since the last call clears the
    memory (restart). Chain with a line search (see :func:`lbfgs`).

    The output is already a descent direction (jopt's directions all are: a line search
    scales them by α > 0). ``optax.scale_by_lbfgs`` returns ``+H_k ∇f`` for a negative
    learning rate to follow; here a fixed step is a positive scale,
    ``optax.chain(jopt.scale_by_lbfgs(), optax.scale(0.5))``.
    """
    check_positive_int("memory_size", memory_size)

    def init(params: PyTree) -> LBFGSState:
        check_float_tree("params", params)
        dtype = _tree_dtype(params)
        hist = _history_zeros(params, memory_size)
        return LBFGSState(
            count=jnp.zeros([], jnp.int32),
            s_history=hist,
            y_history=hist,
            rho=jnp.zeros([memory_size], dtype),
            head=jnp.zeros([], jnp.int32),
            gamma=jnp.zeros([], dtype),
            prev_params=params,
            prev_grad=jax.tree.map(jnp.zeros_like, params),
        )

    def update(grads: PyTree, state: LBFGSState, params: PyTree = None, **extra: Any):
        del extra
        if params is None:
            raise ValueError("scale_by_lbfgs needs `params`: call update(grads, state, params).")
        s, y = _sub(params, state.prev_params), _sub(grads, state.prev_grad)
        ok, sy, yy, ss = pair_is_usable(s, y, state.count > 0)
        # A zero step (failed line search) restarts: with every ρ = 0 and γ = 0 the stored
        # pairs contribute exact zeros to the two-loop recursion, as empty slots do.
        restart = (state.count > 0) & (ss == 0)
        rho = jnp.where(restart, 0.0, state.rho).astype(state.rho.dtype)
        gamma = jnp.where(restart, 0.0, state.gamma).astype(state.gamma.dtype)

        def write(history, new):
            return _history_write(history, state.head, new, ok)

        rho_new = jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0).astype(state.rho.dtype)
        state = LBFGSState(
            count=state.count + 1,
            s_history=write(state.s_history, s),
            y_history=write(state.y_history, y),
            rho=jnp.where(ok, set_row(rho, state.head, rho_new), rho),
            head=jnp.where(ok, (state.head + 1) % memory_size, state.head),
            gamma=jnp.where(ok, sy / jnp.where(ok, yy, 1.0), gamma).astype(
                state.gamma.dtype),
            prev_params=params,
            prev_grad=grads,
        )
        return lbfgs_direction(grads, state, memory_size), state

    return optax.GradientTransformationExtraArgs(init, update)


def lbfgs(
    memory_size: int = DEFAULT_MEMORY,
    linesearch: optax.GradientTransformationExtraArgs | None = None,
) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with a strong-Wolfe line search (N&W Alg. 7.5).

    Needs ``value_fn`` (and preferably ``value`` and ``grad``) as extra arguments of
    ``update``; ``jopt.minimize(fun, x0, method="lbfgs")`` runs it to convergence.

    Args:
      memory_size: number of curvature pairs ``m`` kept.
      linesearch: a line-search transform; default
        ``scale_by_strong_wolfe(c1=1e-4, c2=0.9, initial_step="unit")``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> res = jopt.minimize(f, jnp.zeros(3), method=jopt.lbfgs())
    """
    return optax.chain(scale_by_lbfgs(memory_size),
                       linesearch or scale_by_strong_wolfe())


# --------------------------------------------------------------------------- BFGS


class BFGSState(NamedTuple):
    """State of :func:`scale_by_bfgs`: the dense ``(n, n)`` inverse-Hessian approximation
    in ``ravel_pytree`` order."""

    count: jax.Array
    inv_hessian: jax.Array
    prev_params: PyTree
    prev_grad: PyTree


def scale_by_bfgs() -> optax.GradientTransformationExtraArgs:
    """BFGS direction ``d = -H_k ∇f`` with the dense inverse update (N&W eq. 6.17).

    Before the first update ``H_0`` is rescaled to ``(yᵀs/yᵀy) I`` (N&W eq. 6.20); pairs
    failing the curvature test leave ``H`` unchanged; a zero step since the last call
    restarts from the identity. Memory is ``n²``: meant for ``n`` up to a few thousand.
    """

    def init(params: PyTree) -> BFGSState:
        check_float_tree("params", params)
        flat, _ = ravel_pytree(params)
        return BFGSState(
            count=jnp.zeros([], jnp.int32),
            inv_hessian=jnp.eye(flat.size, dtype=flat.dtype),
            prev_params=params,
            prev_grad=jax.tree.map(jnp.zeros_like, params),
        )

    def update(grads: PyTree, state: BFGSState, params: PyTree = None, **extra: Any):
        del extra
        if params is None:
            raise ValueError("scale_by_bfgs needs `params`: call update(grads, state, params).")
        s, _ = ravel_pytree(_sub(params, state.prev_params))
        y, _ = ravel_pytree(_sub(grads, state.prev_grad))
        g, unravel = ravel_pytree(grads)
        # A zero step (failed line search) restarts, as from a fresh state: count 0 gives
        # steepest descent now, and H is rebuilt from the identity at the next pair.
        count = jnp.where((state.count > 0) & (s @ s == 0), 0, state.count)
        ok, sy, yy, _ = pair_is_usable(s, y, count > 0)
        eye = jnp.eye(g.size, dtype=g.dtype)
        scale = jnp.where(ok & (count == 1), sy / jnp.where(ok, yy, 1.0), 1.0)
        h = scale * jnp.where(count == 1, eye, state.inv_hessian)
        safe_sy = jnp.where(ok, sy, 1.0)
        hy = h @ y
        c = (sy + y @ hy) / safe_sy**2
        h = jnp.where(ok, h + c * jnp.outer(s, s)
                      - (jnp.outer(hy, s) + jnp.outer(s, hy)) / safe_sy, h)
        first = count == 0
        direction = jnp.where(first, -g / jnp.maximum(jnp.linalg.norm(g),
                                                       jnp.finfo(g.dtype).tiny), -(h @ g))
        return unravel(direction), BFGSState(count + 1, h, params, grads)

    return optax.GradientTransformationExtraArgs(init, update)


def bfgs(
    linesearch: optax.GradientTransformationExtraArgs | None = None,
) -> optax.GradientTransformationExtraArgs:
    """BFGS with a strong-Wolfe line search (N&W Alg. 6.1). See :func:`scale_by_bfgs`."""
    return optax.chain(scale_by_bfgs(), linesearch or scale_by_strong_wolfe())


# ------------------------------------------------------------------- nonlinear CG

_BETAS = ("hz", "pr+", "hs", "fr", "dy")


class NonlinearCGState(NamedTuple):
    """State of :func:`scale_by_nonlinear_cg`."""

    count: jax.Array
    prev_grad: PyTree
    prev_direction: PyTree


def _cg_beta(kind: str, g, g_prev, d_prev, eta: float):
    y = _sub(g, g_prev)
    gg, gy = tree_vdot(g, g), tree_vdot(g, y)
    gg_prev, dy = tree_vdot(g_prev, g_prev), tree_vdot(d_prev, y)
    tiny = jnp.finfo(gg.dtype).tiny
    safe = lambda x: jnp.where(jnp.abs(x) > tiny, x, tiny)  # noqa: E731
    if kind == "fr":
        return gg / safe(gg_prev)
    if kind == "pr+":
        return jnp.maximum(gy / safe(gg_prev), 0.0)
    if kind == "hs":
        return jnp.maximum(gy / safe(dy), 0.0)
    if kind == "dy":
        return gg / safe(dy)
    # Hager-Zhang (2005) eq. 1.4 with the lower bound of eq. 1.6.
    yy, dg = tree_vdot(y, y), tree_vdot(d_prev, g)
    beta = (gy - 2.0 * yy * dg / safe(dy)) / safe(dy)
    bound = -1.0 / safe(tree_l2_norm(d_prev) * jnp.minimum(eta, jnp.sqrt(gg_prev)))
    return jnp.maximum(beta, bound)


def scale_by_nonlinear_cg(
    beta: str = "hz", restart_every: int | None = None, eta: float = 0.01
) -> optax.GradientTransformationExtraArgs:
    """Nonlinear conjugate-gradient direction ``d_k = -g_k + β_k d_{k-1}``.

    Args:
      beta: ``"hz"`` (Hager-Zhang), ``"pr+"`` (Polak-Ribière+), ``"hs"`` (Hestenes-Stiefel,
        clipped at 0), ``"fr"`` (Fletcher-Reeves) or ``"dy"`` (Dai-Yuan).
      restart_every: restart with ``-g`` every this many steps (default: the dimension ``n``).
      eta: HZ lower-bound parameter ``η``.

    Restarts also happen when ``d_k`` is not a descent direction, ``β`` is not finite or
    the gradient did not change (a zero step: the last line search failed),
    and (except for HZ, which guarantees descent) when successive gradients are far from
    orthogonal, ``|g_kᵀg_{k-1}| ≥ 0.2‖g_k‖²`` (Powell's test, N&W eq. 5.52).
    """
    if beta not in _BETAS:
        raise ValueError(f"`beta` must be one of {_BETAS}, got {beta!r}.")
    if restart_every is not None:
        check_positive_int("restart_every", restart_every)

    def init(params: PyTree) -> NonlinearCGState:
        check_float_tree("params", params)
        zeros = jax.tree.map(jnp.zeros_like, params)
        return NonlinearCGState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads: PyTree, state: NonlinearCGState, params: PyTree = None, **extra: Any):
        del params, extra
        n = sum(x.size for x in jax.tree.leaves(grads))
        period = restart_every or n
        # An unchanged gradient means a zero step (failed line search): restart, as from a
        # fresh state (count 0).
        y = _sub(grads, state.prev_grad)
        count = jnp.where((state.count > 0) & (tree_vdot(y, y) == 0), 0, state.count)
        b = _cg_beta(beta, grads, state.prev_grad, state.prev_direction, eta)
        direction = jax.tree.map(lambda g, d: -g + b.astype(g.dtype) * d, grads,
                                 state.prev_direction)
        gg = tree_vdot(grads, grads)
        restart = (count % period == 0) | ~jnp.isfinite(b)
        restart |= ~(tree_vdot(grads, direction) < 0)
        if beta != "hz":
            restart |= jnp.abs(tree_vdot(grads, state.prev_grad)) >= 0.2 * gg
        direction = tree_select(restart, tree_scale(-1.0, grads), direction)
        return direction, NonlinearCGState(count + 1, grads, direction)

    return optax.GradientTransformationExtraArgs(init, update)


def nonlinear_cg(
    beta: str = "hz",
    restart_every: int | None = None,
    linesearch: optax.GradientTransformationExtraArgs | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Nonlinear CG with a strong-Wolfe line search (``c2 = 0.1``, adaptive first step).

    See :func:`scale_by_nonlinear_cg` for the ``beta`` choices.
    """
    search = linesearch or scale_by_strong_wolfe(c2=0.1, initial_step="adaptive")
    return optax.chain(scale_by_nonlinear_cg(beta, restart_every), search)
