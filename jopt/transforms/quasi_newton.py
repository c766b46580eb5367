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

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jopt._checks import check_float_tree, check_positive_int
from jopt.linesearch import scale_by_strong_wolfe
from jopt.tree import set_row, tree_l2_norm, tree_scale, tree_select, tree_vdot, tree_vdots

PyTree = Any

__all__ = [
    "BFGSState",
    "ColumnChunks",
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


def _pair_is_usable(s: PyTree, y: PyTree, has_prev: jax.Array) -> tuple[jax.Array, ...]:
    """``(ok, sᵀy, yᵀy, sᵀs)``: whether the pair passes the relative curvature test."""
    sy, yy, ss = tree_vdots([(s, y), (y, y), (s, s)])
    eps = curvature_eps(sy.dtype)
    ok = has_prev & jnp.isfinite(sy) & jnp.isfinite(yy) & (sy > eps * jnp.sqrt(ss * yy))
    return ok, sy, yy, ss


# -------------------------------------------------------------------------- L-BFGS


# XLA:CPU runs the kernels of a compiled program (and of each loop body) inline, one after
# another, only when every buffer they touch is at most 512 bytes; otherwise it schedules
# them on its thread pool, which costs far more than tiny kernels do (xla/backends/cpu/
# runtime/thunk_executor.h, ``execute_sequential_buffer_threshold``; not configurable).
# An (m, n) history of m = 10 float64 pairs passes that size at n = 7, long before the
# vectors do (n = 65), so for small problems each history leaf is kept as a few column
# chunks of at most 512 bytes and the whole L-BFGS loop runs inline. Whole solves, one
# core, the same iterates bit for bit (`python -m benchmarks.history_layout`): the
# suite's problems with 7 <= n <= 12 took a median 0.66-0.69x the time (EXT_ROSENBROCK-10
# 280 -> 159 µs, PENALTY1-10 375 -> 227 µs). BFGS's (n, n) matrix is kept as row blocks
# for the same reason (see scale_by_bfgs). Objectives with larger buffers of their own
# (WATSON-9, OSBORNE2-11, BROYDEN_BANDED-10) stay on the pool and gain nothing, so
# `minimize` by name keeps rows for them (see jopt.minimize._resolve_method). Every
# chunk adds a kernel to each pair write: on Rosenbrock, n = 24 (4 chunks) 0.75x,
# n = 30 (5) 0.72-0.75x, n = 36 (6) 1.05-1.25x, n = 48 (8) 1.35-1.46x. Hence at most
# _MAX_CHUNKS chunks.
_CHUNK_BYTES = 512
_MAX_CHUNKS = 5
DEFAULT_MEMORY = 10  # curvature pairs kept by lbfgs() (and so by method="lbfgs")


@jax.tree_util.register_pytree_node_class
class ColumnChunks:
    """An ``(m, *shape)`` history leaf stored as column chunks of the flattened rows.

    ``chunks[k]`` has shape ``(m, c_k)`` with ``c_k`` consecutive entries of each
    flattened row, each chunk at most 512 bytes (see ``_CHUNK_BYTES``). :meth:`dense`
    gives the ``(m, *shape)`` array.
    """

    def __init__(self, chunks: tuple, shape: tuple):
        self.chunks = tuple(chunks)
        self.shape = tuple(shape)

    def tree_flatten(self):
        return self.chunks, self.shape

    @classmethod
    def tree_unflatten(cls, shape, chunks):
        return cls(chunks, shape)

    def dense(self) -> jax.Array:
        """The history as one ``(m, *shape)`` array."""
        rows = jnp.concatenate(self.chunks, axis=1)
        return rows.reshape(rows.shape[:1] + self.shape)

    def row(self, idx: jax.Array) -> jax.Array:
        """Row ``idx`` (a traced index) with the leaf's shape."""
        return jnp.concatenate([c[idx] for c in self.chunks]).reshape(self.shape)

    def write(self, idx: jax.Array, value: jax.Array, ok: jax.Array) -> ColumnChunks:
        """These chunks with row ``idx`` set to ``value`` where ``ok`` (else unchanged)."""
        flat, start, out = jnp.ravel(value), 0, []
        for c in self.chunks:
            width = c.shape[1]
            out.append(jnp.where(ok, set_row(c, idx, flat[start:start + width]), c))
            start += width
        return ColumnChunks(tuple(out), self.shape)


def _is_chunks(node: Any) -> bool:
    return isinstance(node, ColumnChunks)


def _chunk_width(leaf: Any, memory_size: int) -> int:
    """Entries per row in a chunk of at most ``_CHUNK_BYTES`` (at least 1)."""
    return max(1, _CHUNK_BYTES // (memory_size * jnp.dtype(jnp.result_type(leaf)).itemsize))


def _inline_backend() -> bool:
    """Whether programs run on XLA:CPU, whose inline limit the blocks are for. (On a GPU
    every kernel is a launch of its own, and more blocks would only add launches.)"""
    return jax.default_backend() == "cpu"


def _use_chunks(params: PyTree, memory_size: int) -> bool:
    """Whether to chunk: on the CPU, some ``(m, *shape)`` leaf is over ``_CHUNK_BYTES`` and
    every leaf fits in ``_MAX_CHUNKS`` chunks (so every leaf is small and the loop can run
    inline)."""
    leaves = jax.tree.leaves(params)
    if not leaves or not _inline_backend():
        return False
    sizes = [(math.prod(jnp.shape(p)), _chunk_width(p, memory_size)) for p in leaves]
    return (any(size > width for size, width in sizes)
            and all(-(-size // width) <= _MAX_CHUNKS for size, width in sizes))


def _history_zeros(params: PyTree, memory_size: int, allow_chunks: bool) -> PyTree:
    """Zero ``(m, *shape)`` history leaves, chunked for small problems (see ColumnChunks)."""
    if not (allow_chunks and _use_chunks(params, memory_size)):
        return jax.tree.map(lambda p: jnp.zeros((memory_size, *jnp.shape(p)), p.dtype), params)

    def chunked(p):
        size, width = math.prod(jnp.shape(p)), _chunk_width(p, memory_size)
        widths = [min(width, size - start) for start in range(0, size, width)] or [0]
        return ColumnChunks(tuple(jnp.zeros((memory_size, w), p.dtype) for w in widths),
                            jnp.shape(p))

    return jax.tree.map(chunked, params)


def _history_row(history: PyTree, idx: jax.Array) -> PyTree:
    """Row ``idx`` of every history leaf (a tree shaped like the parameters)."""
    return jax.tree.map(lambda h: h.row(idx) if _is_chunks(h) else h[idx], history,
                        is_leaf=_is_chunks)


def _history_write(history: PyTree, idx: jax.Array, new: PyTree, ok: jax.Array) -> PyTree:
    """``history`` with row ``idx`` set to ``new`` where ``ok`` (unchanged elsewhere)."""
    def write(h, v):
        if _is_chunks(h):
            return h.write(idx, v, ok)
        return jnp.where(ok, set_row(h, idx, v), h)

    return jax.tree.map(write, history, new, is_leaf=_is_chunks)


class LBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs`: a ring buffer of the last ``m`` curvature pairs.

    Each history leaf is an ``(m, *leaf.shape)`` array, or for small problems a
    :class:`ColumnChunks` (``.dense()`` gives the array): XLA:CPU then runs the loop
    inline instead of on its thread pool.
    """

    count: jax.Array
    s_history: PyTree  # leaves of shape (m, *leaf.shape), or ColumnChunks
    y_history: PyTree
    rho: jax.Array  # (m,) 1/sᵀy, 0 for empty slots
    head: jax.Array  # slot written next
    gamma: jax.Array  # initial inverse-Hessian scale sᵀy/yᵀy (0: no pair yet)
    prev_params: PyTree
    prev_grad: PyTree


def _lbfgs_direction(grad: PyTree, state: LBFGSState, memory_size: int) -> PyTree:
    """``-H g`` by the two-loop recursion (N&W Alg. 7.4); empty slots have ``ρ = 0``."""
    slot = _history_row

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


def scale_by_lbfgs(memory_size: int = DEFAULT_MEMORY, chunked_history: bool = True
                   ) -> optax.GradientTransformationExtraArgs:
    """L-BFGS direction ``d = -H_k ∇f`` from the last ``memory_size`` curvature pairs.

    ``H_0 = γ I`` with ``γ = sᵀy/yᵀy`` of the newest pair (N&W eq. 7.20); before the first
    pair ``γ = 1/‖∇f‖`` (a unit-length steepest-descent trial step). Pairs failing the
    relative curvature test are skipped; a zero step since the last call clears the
    memory (restart). Chain with a line search (see :func:`lbfgs`).

    The output is already a descent direction (jopt's directions all are: a line search
    scales them by α > 0). ``optax.scale_by_lbfgs`` returns ``+H_k ∇f`` for a negative
    learning rate to follow; here a fixed step is a positive scale,
    ``optax.chain(jopt.scale_by_lbfgs(), optax.scale(0.5))``.

    ``chunked_history``: keep each history leaf as column chunks of at most 512 bytes
    (:class:`ColumnChunks`) so that XLA:CPU runs a small problem's loop inline instead of
    on its thread pool (~30 % faster solves at n = 7-30 in float64). ``True``
    (default): chunked exactly when that makes every history buffer small, on the CPU
    backend only; ``False``: never. Pass ``False`` for a program you ``vmap``: a batch's
    buffers are large anyway, and each chunk then costs the batched program a gather and
    a scatter (``jopt.minimize_many`` does this for method names). The directions are the same
    either way.
    """
    check_positive_int("memory_size", memory_size)
    if not isinstance(chunked_history, bool):
        raise TypeError(f"`chunked_history` must be True or False, got {chunked_history!r}.")

    def init(params: PyTree) -> LBFGSState:
        check_float_tree("params", params)
        dtype = _tree_dtype(params)
        hist = _history_zeros(params, memory_size, chunked_history)
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
        ok, sy, yy, ss = _pair_is_usable(s, y, state.count > 0)
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
        return _lbfgs_direction(grads, state, memory_size), state

    return optax.GradientTransformationExtraArgs(init, update)


def lbfgs(
    memory_size: int = DEFAULT_MEMORY,
    linesearch: optax.GradientTransformationExtraArgs | None = None,
    chunked_history: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with a strong-Wolfe line search (N&W Alg. 7.5).

    Needs ``value_fn`` (and preferably ``value`` and ``grad``) as extra arguments of
    ``update``; ``jopt.minimize(fun, x0, method="lbfgs")`` runs it to convergence.

    Args:
      memory_size: number of curvature pairs ``m`` kept.
      linesearch: a line-search transform; default
        ``scale_by_strong_wolfe(c1=1e-4, c2=0.9, initial_step="unit")``.
      chunked_history: the history's layout (see :func:`scale_by_lbfgs`).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> res = jopt.minimize(f, jnp.zeros(3), method=jopt.lbfgs())
    """
    return optax.chain(scale_by_lbfgs(memory_size, chunked_history),
                       linesearch or scale_by_strong_wolfe())


# --------------------------------------------------------------------------- BFGS


class BFGSState(NamedTuple):
    """State of :func:`scale_by_bfgs`: the dense inverse-Hessian approximation.

    ``inv_hessian`` is a tuple of row blocks whose concatenation is the ``(n, n)`` matrix
    in ``ravel_pytree`` order: one block, or for small problems a few of at most 512 bytes
    each, so that XLA:CPU runs the loop inline (see :func:`scale_by_bfgs`).
    """

    count: jax.Array
    inv_hessian: tuple  # row blocks (r_k, n); jnp.concatenate(blocks) is H
    prev_params: PyTree
    prev_grad: PyTree


def _bfgs_block_rows(n: int, dtype: Any, chunked: bool) -> list[int]:
    """Rows per block of the ``(n, n)`` inverse Hessian: one block, unless ``chunked``, on
    the CPU, and blocks of at most ``_CHUNK_BYTES`` (at most ``_MAX_CHUNKS`` of them) make
    every buffer small."""
    row_bytes = n * jnp.dtype(dtype).itemsize
    if (not chunked or not _inline_backend() or n * row_bytes <= _CHUNK_BYTES
            or row_bytes > _CHUNK_BYTES):
        return [n]
    rows = _CHUNK_BYTES // row_bytes
    if -(-n // rows) > _MAX_CHUNKS:
        return [n]
    return [min(rows, n - start) for start in range(0, n, rows)]


def scale_by_bfgs(chunked_hessian: bool = True) -> optax.GradientTransformationExtraArgs:
    """BFGS direction ``d = -H_k ∇f`` with the dense inverse update (N&W eq. 6.17).

    Before the first update ``H_0`` is rescaled to ``(yᵀs/yᵀy) I`` (N&W eq. 6.20); pairs
    failing the curvature test leave ``H`` unchanged; a zero step since the last call
    restarts from the identity. Memory is ``n²``: meant for ``n`` up to a few thousand.

    ``chunked_hessian``: for small problems (``n²`` over 512 bytes but at most 5 blocks
    of 512 bytes: 9 <= n <= 16 in float64), keep ``H`` as row blocks of at most 512
    bytes, so that XLA:CPU runs the loop inline instead of on its thread pool (as
    :func:`scale_by_lbfgs`'s ``chunked_history``; CPU backend only). ``False``: always
    one block (pass it for a program you ``vmap``). The directions are the same either way.
    """
    if not isinstance(chunked_hessian, bool):
        raise TypeError(f"`chunked_hessian` must be True or False, got {chunked_hessian!r}.")

    def init(params: PyTree) -> BFGSState:
        check_float_tree("params", params)
        flat, _ = ravel_pytree(params)
        return BFGSState(
            count=jnp.zeros([], jnp.int32),
            inv_hessian=_eye_blocks(flat.size, flat.dtype,
                                    _bfgs_block_rows(flat.size, flat.dtype, chunked_hessian)),
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
        ok, sy, yy, _ = _pair_is_usable(s, y, count > 0)
        rows = [b.shape[0] for b in state.inv_hessian]
        eye = _eye_blocks(g.size, g.dtype, rows)
        scale = jnp.where(ok & (count == 1), sy / jnp.where(ok, yy, 1.0), 1.0)
        blocks = tuple(scale * jnp.where(count == 1, e, h)
                       for e, h in zip(eye, state.inv_hessian, strict=True))
        safe_sy = jnp.where(ok, sy, 1.0)
        hy = jnp.concatenate([h @ y for h in blocks])
        c = (sy + y @ hy) / safe_sy**2
        starts = np.cumsum([0, *rows])
        blocks = tuple(
            jnp.where(ok, h + c * jnp.outer(s[a:b], s)
                      - (jnp.outer(hy[a:b], s) + jnp.outer(s[a:b], hy)) / safe_sy, h)
            for h, a, b in zip(blocks, starts[:-1], starts[1:], strict=True))
        first = count == 0
        hg = jnp.concatenate([h @ g for h in blocks])
        direction = jnp.where(first, -g / jnp.maximum(jnp.linalg.norm(g),
                                                       jnp.finfo(g.dtype).tiny), -hg)
        new_state = BFGSState(count + 1, blocks, params, grads)
        return unravel(direction), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def _eye_blocks(n: int, dtype: Any, rows: list[int]) -> tuple:
    """The ``(n, n)`` identity as row blocks of ``rows`` rows each."""
    starts = np.cumsum([0, *rows])
    return tuple(jnp.eye(r, n, k=int(a), dtype=dtype) for r, a in zip(rows, starts[:-1],
                                                                        strict=True))


def bfgs(
    linesearch: optax.GradientTransformationExtraArgs | None = None,
    chunked_hessian: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """BFGS with a strong-Wolfe line search (N&W Alg. 6.1). See :func:`scale_by_bfgs`."""
    return optax.chain(scale_by_bfgs(chunked_hessian), linesearch or scale_by_strong_wolfe())


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
