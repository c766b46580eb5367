"""The model of L-BFGS-B and its generalized Cauchy point (Byrd, Lu, Nocedal & Zhu 1995).

* :class:`CompactBFGS`: the limited-memory BFGS matrix in compact form,
  ``B = θI − W M Wᵀ`` with ``W = [Y  θS]`` never formed (BLNZ eq. 3.2–3.4; Byrd, Nocedal
  & Schnabel 1994), and :func:`middle_matrix`, ``M`` by Zhu et al.'s (1997) factorization.
* :func:`cauchy_point`: the first local minimizer of the model along the projected
  steepest-descent path (BLNZ §4, Algorithm CP), walked 64 breakpoints at a time.

:mod:`jopt.transforms.lbfgsb` builds the iteration on them (see its docstring).

References:
  Byrd, R. H., Lu, P., Nocedal, J. & Zhu, C. (1995). A limited memory algorithm for
  bound constrained optimization. SIAM J. Sci. Comput. 16(5), 1190–1208.
  Byrd, R. H., Nocedal, J. & Schnabel, R. B. (1994). Representations of quasi-Newton
  matrices and their use in limited memory methods. Math. Program. 63, 129–156.
  Zhu, C., Byrd, R. H., Lu, P. & Nocedal, J. (1997). Algorithm 778: L-BFGS-B. ACM Trans.
  Math. Softw. 23(4), 550–560.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "CAUCHY_CHUNK",
    "CompactBFGS",
    "breakpoints",
    "cauchy_point",
    "gram_blocks",
    "middle_matrix",
    "slot_ages",
]


# ------------------------------------------------------------------ the compact form


class CompactBFGS(NamedTuple):
    """``B = θI − W M Wᵀ`` for one iteration, ``W = [Y  θS]`` never formed.

    Attributes:
      theta: ``θ``.
      y / s: the ``(m, n)`` histories (rows in slot order; a slot may hold a stale pair).
      valid: ``(2m,)`` bool, the columns of ``W`` that hold a pair (the others count as
        zero columns: every product with ``W`` is masked in the ``2m``-space, so no
        ``n``-sized copy is made).
      middle: ``M``, ``(2m, 2m)`` symmetric (identity blocks at empty slots).
      ok: whether ``M`` is finite (the factorization succeeded).
    """

    theta: jax.Array
    y: jax.Array
    s: jax.Array
    valid: jax.Array
    middle: jax.Array
    ok: jax.Array

    def w_dot(self, v: jax.Array) -> jax.Array:
        """``Wᵀv`` (a ``2m``-vector)."""
        out = jnp.concatenate([self.y @ v, self.theta * (self.s @ v)])
        return jnp.where(self.valid, out, 0.0)

    def w_times(self, a: jax.Array) -> jax.Array:
        """``W a`` (an ``n``-vector)."""
        a = jnp.where(self.valid, a, 0.0)
        m = self.y.shape[0]
        return a[:m] @ self.y + (self.theta * a[m:]) @ self.s

    def w_columns(self, idx: jax.Array) -> jax.Array:
        """Rows ``idx`` of ``W`` (the vectors ``w_b``), as a ``(len(idx), 2m)`` array."""
        rows = jnp.concatenate([self.y[:, idx], self.theta * self.s[:, idx]]).T
        return jnp.where(self.valid[None, :], rows, 0.0)

    def gram(self, z: jax.Array) -> jax.Array:
        """``Wᵀ diag(z) W`` (``2m × 2m``) from the three distinct ``m × m`` blocks."""
        return self.gram_of(*gram_blocks(self.y, self.s, z))

    def gram_of(self, yy: jax.Array, sy: jax.Array, ss: jax.Array) -> jax.Array:
        """``WᵀZW`` from the blocks ``YᵀZY``, ``SᵀZY`` and ``SᵀZS`` (slot order)."""
        th = self.theta
        out = jnp.block([[yy, th * sy.T], [th * sy, th * th * ss]])
        both = self.valid[:, None] & self.valid[None, :]
        return jnp.where(both, out, 0.0)

    @property
    def wt(self) -> jax.Array:
        """``Wᵀ`` as a ``(2m, n)`` array (for tests and small problems)."""
        rows = jnp.concatenate([self.y, self.theta * self.s])
        return jnp.where(self.valid[:, None], rows, 0.0)

    def dense(self) -> jax.Array:
        """``B`` as an ``(n, n)`` matrix (for tests and small problems)."""
        wt = self.wt
        n = wt.shape[1]
        return self.theta * jnp.eye(n, dtype=wt.dtype) - wt.T @ self.middle @ wt


def gram_blocks(y: jax.Array, s: jax.Array, z: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(YᵀZY, SᵀZY, SᵀZS)`` for the ``(m, n)`` histories and weights ``z`` (``O(m²n)``)."""
    zy = y * z[None, :]
    return zy @ y.T, s @ zy.T, (s * z[None, :]) @ s.T


def slot_ages(head: jax.Array, num_pairs: jax.Array, memory_size: int
              ) -> tuple[jax.Array, jax.Array]:
    """``(age, valid)`` of the ring buffer's slots: ``age`` grows with recency (the newest
    pair has ``m − 1``), ``valid`` marks the ``num_pairs`` slots that hold a pair."""
    age = (jnp.arange(memory_size) - head) % memory_size
    return age, age >= memory_size - num_pairs


def middle_matrix(sy: jax.Array, ss: jax.Array, theta: jax.Array, age: jax.Array,
                  valid: jax.Array) -> jax.Array:
    """``M = [[−D, Lᵀ], [L, θSᵀS]]⁻¹`` (BLNZ eq. 3.4) in slot order, by the factorization
    of Zhu et al. (1997, ``formt``/``bmv``): with ``J Jᵀ = θSᵀS + L D⁻¹ Lᵀ`` (Cholesky),
    ``K [u; v] = [a; b]`` has ``v = (JJᵀ)⁻¹(b + L D⁻¹ a)`` and ``u = D⁻¹(Lᵀ v − a)``.

    Slots are in ring-buffer order, not by age: ``M`` is the same matrix up to a symmetric
    permutation, and ``W`` is kept in the same order. An empty slot gets an identity block
    (its rows of ``W`` are zero, so it contributes nothing)."""
    dtype = sy.dtype
    # (LAPACK has no half-precision Cholesky: small factorizations in float32 at least)
    work = jnp.promote_types(dtype, jnp.float32)
    sy, ss, theta = sy.astype(work), ss.astype(work), jnp.asarray(theta, work)
    m = sy.shape[0]
    both = valid[:, None] & valid[None, :]
    eye = jnp.eye(m, dtype=sy.dtype)
    d = jnp.where(valid, jnp.diagonal(sy), 1.0)
    lower = jnp.where(both & (age[:, None] > age[None, :]), sy, 0.0)
    theta_ss = jnp.where(both, theta * ss, eye)
    schur = theta_ss + (lower / d[None, :]) @ lower.T
    chol = jnp.linalg.cholesky(0.5 * (schur + schur.T))
    # Solve K X = I column block by column block: [a; b] = [I; 0] and [0; I].
    a = jnp.concatenate([eye, jnp.zeros_like(eye)], axis=1)  # (m, 2m)
    b = jnp.concatenate([jnp.zeros_like(eye), eye], axis=1)
    v = jax.scipy.linalg.cho_solve((chol, True), b + (lower / d[None, :]) @ a)
    u = (lower.T @ v - a) / d[:, None]
    middle = jnp.concatenate([u, v], axis=0)
    return (0.5 * (middle + middle.T)).astype(dtype)


# ------------------------------------------------------------ generalized Cauchy point


def breakpoints(x: jax.Array, g: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    """``tᵢ``: where coordinate ``i`` of the path ``x − t g`` reaches its bound (BLNZ §4);
    ``inf`` for ``gᵢ = 0`` or an infinite bound, 0 for a variable already held."""
    safe_g = jnp.where(g != 0, g, 1.0)
    t = jnp.where(g < 0, (x - upper) / safe_g, jnp.where(g > 0, (x - lower) / safe_g, jnp.inf))
    return jnp.where(t > 0, t, 0.0)


class _Walk(NamedTuple):
    done: jax.Array  # the minimizer lies in the current segment
    passed: jax.Array  # (n,) bool: breakpoints already passed
    t_old: jax.Array  # start of the current segment
    dt_min: jax.Array  # minimizer of the 1-D model in the current segment, from t_old
    f1: jax.Array  # slope f′ at t_old
    f2: jax.Array  # curvature f″
    p: jax.Array  # Wᵀd
    c: jax.Array  # Wᵀ(x(t_old) − x)


CAUCHY_CHUNK = 64  # breakpoints taken per pass of the walk


def _pass_chunk(s: _Walk, t: jax.Array, g: jax.Array, z: jax.Array, form: CompactBFGS,
                f2_floor: jax.Array, chunk: int) -> _Walk:
    """Pass the next ``chunk`` breakpoints (or stop among them) in one vectorized step.

    The recurrences of Algorithm CP over ``K`` ordered breakpoints ``b₁ … b_K`` are prefix
    sums: with ``uⱼ = g_bⱼ w_bⱼ`` and ``pⱼ = p + Σ_{i<j} uᵢ`` (``Wᵀd`` on segment ``j``),
    ``cⱼ = c + Σ_{i≤j} Δtᵢ pᵢ``,
    ``f″ⱼ = f″ + Σ_{i≤j} (−θ g_bᵢ² − 2 g_bᵢ w_bᵢᵀMpᵢ − g_bᵢ² w_bᵢᵀMw_bᵢ)`` and
    ``f′ⱼ = f′ + Σ_{i≤j} (Δtᵢ f″ᵢ₋₁ + g_bᵢ² + θ g_bᵢ z_bᵢ − g_bᵢ w_bᵢᵀMcᵢ)``, each a product
    with a ``K × K`` triangular matrix. Breakpoint ``j + 1`` is passed while the segment's
    minimizer ``−f′ⱼ/f″ⱼ`` lies beyond it; the first that is not ends the walk.

    The chunk is the ``K`` smallest remaining breakpoints by ``lax.top_k`` on their float32
    values (XLA's float32 top-k is a fast selection; a float64 sort of all ``n`` costs far
    more), ordered exactly in the working precision. Rounding to float32 is monotone, so
    the chunk can only misplace breakpoints within one float32 ulp of each other; the
    segment lengths are clipped at 0 there.
    """
    theta, mid = form.theta, form.middle
    dtype = s.f1.dtype
    keys = jnp.where(s.passed, jnp.inf, t.astype(jnp.float32))  # (t = 0: passed from the start)
    _, idx = jax.lax.top_k(-keys, chunk)
    valid = ~s.passed[idx] & jnp.isfinite(t[idx])
    order = jnp.argsort(jnp.where(valid, t[idx], jnp.inf))  # (exact order in the chunk)
    idx, valid = idx[order], valid[order]
    tb = jnp.where(valid, t[idx], jnp.inf)
    gb = jnp.where(valid, g[idx], 0.0)
    zb = jnp.where(valid, z[idx], 0.0)
    wb = jnp.where(valid[:, None], form.w_columns(idx), 0.0)  # (K, 2m)
    mwb = wb @ mid
    t_prev = jnp.concatenate([s.t_old[None], tb[:-1]])
    dt = jnp.where(valid, jnp.maximum(tb - t_prev, 0.0), 0.0)
    lower_strict = jnp.tri(chunk, k=-1, dtype=dtype)
    lower_incl = jnp.tri(chunk, dtype=dtype)
    p_seg = s.p[None, :] + lower_strict @ (gb[:, None] * wb)  # Wᵀd before passing each breakpoint
    c_at = s.c[None, :] + lower_incl @ (dt[:, None] * p_seg)
    df2 = (-theta * gb * gb - 2.0 * gb * jnp.sum(mwb * p_seg, axis=1)
           - gb * gb * jnp.sum(mwb * wb, axis=1))
    f2_after = jnp.maximum(s.f2 + jnp.cumsum(df2), f2_floor)
    f2_before = jnp.concatenate([s.f2[None], f2_after[:-1]])
    df1 = (dt * f2_before + gb * gb + theta * gb * zb - gb * jnp.sum(mwb * c_at, axis=1))
    f1_after = s.f1 + jnp.cumsum(df1)
    dt_min_after = -f1_after / f2_after
    # Breakpoint j is passed when the model still falls past it from the previous one.
    dt_min_before = jnp.concatenate([s.dt_min[None], dt_min_after[:-1]])
    passes = valid & (dt_min_before >= tb - t_prev)
    num = jnp.sum(jnp.cumprod(passes.astype(jnp.int32)))  # (a prefix)
    last = jnp.maximum(num - 1, 0)
    moved = num > 0
    pick = lambda after, before: jnp.where(moved, after[last], before)  # noqa: E731
    return _Walk(
        done=num < chunk,
        passed=s.passed.at[idx].set(s.passed[idx] | (jnp.arange(chunk) < num)),
        t_old=pick(tb, s.t_old), dt_min=pick(dt_min_after, s.dt_min),
        f1=pick(f1_after, s.f1), f2=pick(f2_after, s.f2),
        p=jnp.where(moved, p_seg[last] + gb[last] * wb[last], s.p),
        c=pick(c_at, s.c))


def cauchy_point(x: jax.Array, g: jax.Array, lower: jax.Array, upper: jax.Array,
                 form: CompactBFGS, chunk: int = CAUCHY_CHUNK) -> tuple[jax.Array, jax.Array]:
    """The generalized Cauchy point: the first local minimizer of the model along
    ``P(x − t g)`` (BLNZ Algorithm CP). Returns ``(xᶜ, t*)``.

    A ``lax.while_loop`` runs while the 1-D model still decreases beyond the nearest
    breakpoint not yet passed (one ``O(n)`` reduction to test), and each pass takes up to
    ``chunk`` breakpoints at once (:func:`_pass_chunk`), so an iteration that passes few
    breakpoints, the common case, costs ``O(n)`` and a few small products, not a sort
    of all ``n``. With ``n <= chunk`` one pass holds every breakpoint and there is no
    loop. ``f″`` is kept at least ``ε·f″₀`` (as in Zhu et al.'s code) so a
    rounding-level curvature cannot divide by zero.
    """
    if x.size == 0:  # (no variables: nothing to walk)
        return x, jnp.zeros([], x.dtype)
    n = x.shape[0]
    chunk = min(chunk, n)
    eps = jnp.finfo(x.dtype).eps
    theta, mid = form.theta, form.middle
    t = breakpoints(x, g, lower, upper)
    d = jnp.where(t > 0, -g, 0.0)
    held_at = jnp.where(g < 0, upper, lower)
    p = form.w_dot(d)
    dd = d @ d
    f1 = -dd
    f2_0 = jnp.maximum(theta * dd - p @ (mid @ p), eps * theta * dd)
    f2_0 = jnp.maximum(f2_0, jnp.finfo(x.dtype).tiny)
    start = _Walk(done=jnp.zeros([], bool), passed=t == 0, t_old=jnp.zeros([], x.dtype),
                  dt_min=-f1 / f2_0, f1=f1, f2=f2_0, p=p, c=jnp.zeros_like(p))

    def walks_on(s: _Walk) -> jax.Array:
        nearest = jnp.min(jnp.where(s.passed, jnp.inf, t))
        return ~s.done & jnp.isfinite(nearest) & (s.dt_min >= nearest - s.t_old)

    def pass_chunk(s: _Walk) -> _Walk:
        return _pass_chunk(s, t, g, held_at - x, form, eps * f2_0, chunk)

    # One chunk holds every breakpoint when n <= chunk: a single pass, no loop (each
    # iteration of a small XLA:CPU while_loop costs its kernels' launches).
    end = pass_chunk(start) if n <= chunk else jax.lax.while_loop(walks_on, pass_chunk, start)
    t_star = end.t_old + jnp.maximum(end.dt_min, 0.0)
    # The passed breakpoints are those at or before t* (the next one lies beyond it); a
    # variable whose breakpoint it is sits exactly on its bound.
    xc = jnp.where(t <= t_star, held_at, x - t_star * g)
    return jnp.clip(xc, lower, upper), t_star
