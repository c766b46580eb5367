"""Steps of the Gauss–Newton model ``m(p) = ½‖Jp + r‖²`` from the thin SVD ``J = U S Vᵀ``.

All three methods work in the scaled variables of :mod:`jopt.lsq.solve` and share one
decomposition per Jacobian, given as ``uf = Uᵀr``, ``s`` and ``vt = Vᵀ``:

* :func:`gauss_newton_step`: ``p = −V S⁺ Uᵀ r``, the minimum-norm minimizer of the model
  (singular values below ``rcond·s_max`` dropped);
* :func:`levenberg_marquardt_step`: the minimizer of the model within ``‖p‖ ≤ Δ``,
  ``p(α) = −V diag(s/(s² + α)) Uᵀr`` with ``α`` found by Moré's safeguarded Newton
  iteration on ``1/‖p(α)‖ − 1/Δ`` (Moré 1978; Nocedal & Wright 2006, §4.3, Alg. 4.3);
* :func:`dogleg_step`: Powell's dogleg between the Cauchy point and the Gauss–Newton step
  (Nocedal & Wright 2006, §4.1).

References:
  Moré, J. J. (1978). The Levenberg–Marquardt algorithm: implementation and theory.
  Numerical Analysis, Lecture Notes in Mathematics 630, 105–116.
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., §4.1, §4.3, §10.3.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Model", "dogleg_step", "gauss_newton_step", "levenberg_marquardt_step",
           "model_decrease"]

_MORE_ITERATIONS = 10  # Moré's iteration converges in 2-3 steps; |‖p‖ − Δ| <= 0.1Δ suffices


class Model(NamedTuple):
    """The Gauss–Newton model of one Jacobian: ``uf = Uᵀr``, ``s``, ``vt = Vᵀ``, and the
    gradient ``g = Jᵀr = V S uf``."""

    uf: jax.Array
    s: jax.Array
    vt: jax.Array
    g: jax.Array


JACOBI_MAX_N = 10  # one-sided Jacobi for at most this many columns (and m >= n)

_JACOBI_SWEEPS = 30  # quadratic convergence: 5-10 sweeps in practice


def _rotation(a_p: jax.Array, a_q: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(c, s, rotated)``: the plane rotation that makes columns ``a_p``, ``a_q``
    orthogonal (Hestenes 1958; Golub & Van Loan §8.6.3), and whether they were not yet."""
    alpha, beta, gamma = a_p @ a_p, a_q @ a_q, a_p @ a_q
    eps = jnp.finfo(a_p.dtype).eps
    rotate = jnp.abs(gamma) > eps * jnp.sqrt(alpha * beta)
    zeta = (beta - alpha) / jnp.where(rotate, 2.0 * gamma, 1.0)
    big = jnp.abs(zeta) > 1.0  # (√(1 + ζ²) without overflow)
    root = jnp.where(big, jnp.abs(zeta) * jnp.sqrt(1.0 + 1.0 / jnp.where(big, zeta, 1.0) ** 2),
                     jnp.sqrt(1.0 + zeta ** 2))
    t = jnp.where(zeta >= 0, 1.0, -1.0) / (jnp.abs(zeta) + root)
    t = jnp.where(rotate, t, 0.0)
    c = 1.0 / jnp.sqrt(1.0 + t * t)
    return c, c * t, rotate


def jacobi_svd(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Thin SVD ``a = U diag(s) Vᵀ`` of an ``m × n`` matrix, ``m >= n`` small, by one-sided
    Jacobi: plane rotations ``A ← A J`` orthogonalize the columns, then ``sᵢ = ‖aᵢ‖``,
    ``uᵢ = aᵢ/sᵢ`` and ``V = Π J`` (Hestenes 1958; Demmel & Veselić 1992 for its high
    relative accuracy). Only vector operations: under ``vmap`` it runs as wide SIMD over
    the batch, where a batched LAPACK SVD loops over the members.

    Returns ``(u, s, vt)`` like ``jnp.linalg.svd(a, full_matrices=False)`` except that
    ``s`` is not sorted (``u``'s column is 0 where ``sᵢ = 0``).

    References:
      Hestenes, M. R. (1958). Inversion of matrices by biorthogonalization. J. SIAM 6(1).
      Demmel, J. & Veselić, K. (1992). Jacobi's method is more accurate than QR. SIAM J.
      Matrix Anal. Appl. 13(4). Golub & Van Loan (2013), Matrix Computations, §8.6.3.
    """
    n = a.shape[1]
    pairs = [(p, q) for p in range(n) for q in range(p + 1, n)]

    def sweep(carry):
        cols, vcols, _, count = carry
        cols, vcols, busy = list(cols), list(vcols), jnp.zeros([], bool)
        for p, q in pairs:
            c, s, rotate = _rotation(cols[p], cols[q])
            cols[p], cols[q] = c * cols[p] - s * cols[q], s * cols[p] + c * cols[q]
            vcols[p], vcols[q] = c * vcols[p] - s * vcols[q], s * vcols[p] + c * vcols[q]
            busy = busy | rotate
        return tuple(cols), tuple(vcols), busy, count + 1

    eye = jnp.eye(n, dtype=a.dtype)
    start = (tuple(a[:, i] for i in range(n)), tuple(eye[:, i] for i in range(n)),
             jnp.asarray(bool(pairs)), jnp.zeros([], jnp.int32))
    if n == 2:  # one rotation diagonalizes two columns (to rounding): one sweep, no loop
        cols, vcols, _, _ = sweep(start)
    else:
        cols, vcols, _, _ = jax.lax.while_loop(
            lambda c: c[2] & (c[3] < _JACOBI_SWEEPS), sweep, start)
    s = jnp.stack([jnp.sqrt(col @ col) for col in cols])
    u = jnp.stack([col / jnp.where(si > 0, si, 1.0) for col, si in zip(cols, s, strict=True)],
                  axis=1)
    return u, s, jnp.stack(vcols, axis=0)


def decompose(jac: jax.Array, r: jax.Array) -> Model:
    """The thin SVD of ``jac`` with ``Uᵀr`` and ``Jᵀr`` (one-sided Jacobi for a few
    columns, LAPACK otherwise)."""
    m, n = jac.shape
    if 0 < n <= JACOBI_MAX_N and m >= n:
        u, s, vt = jacobi_svd(jac)
    else:
        u, s, vt = jnp.linalg.svd(jac, full_matrices=False)
    uf = u.T @ r
    return Model(uf, s, vt, vt.T @ (s * uf))


def model_decrease(model: Model, p: jax.Array) -> jax.Array:
    """``m(0) − m(p) = −gᵀp − ½‖Jp‖²`` (``‖Jp‖ = ‖S Vᵀ p‖``)."""
    jp = model.s * (model.vt @ p)
    return -(model.g @ p) - 0.5 * (jp @ jp)


def _kept(s: jax.Array) -> jax.Array:
    """Singular values that count: above ``eps·max(m, n)·s_max`` (numerical rank)."""
    eps = jnp.finfo(s.dtype).eps
    return s > eps * s.size * jnp.max(s, initial=0.0)


def gauss_newton_step(model: Model) -> jax.Array:
    """``−V S⁺ Uᵀr``: the minimum-norm Gauss–Newton step."""
    kept = _kept(model.s)
    coef = jnp.where(kept, model.uf / jnp.where(kept, model.s, 1.0), 0.0)
    return -(model.vt.T @ coef)


def _p_norm(model: Model, alpha: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``‖p(α)‖`` and its derivative in ``α``."""
    s, uf = model.s, model.uf
    denom = s ** 2 + alpha
    denom = jnp.where(denom > 0, denom, 1.0)
    coef = s * uf / denom
    norm = jnp.sqrt(coef @ coef)
    dnorm = -jnp.sum(coef ** 2 / denom) / jnp.where(norm > 0, norm, 1.0)
    return norm, dnorm


def levenberg_marquardt_step(model: Model, delta: jax.Array, alpha: jax.Array
                             ) -> tuple[jax.Array, jax.Array]:
    """``(p, α)``: the trust-region step ``‖p‖ <= Δ`` of the model, and its multiplier
    (``α = 0`` when the Gauss–Newton step is inside). ``alpha``: the previous multiplier,
    a warm start."""
    s, uf = model.s, model.uf
    full_rank = jnp.all(_kept(s)) & (s.size > 0)
    p_gn = gauss_newton_step(model)
    inside = full_rank & (jnp.sqrt(p_gn @ p_gn) <= delta)
    tiny = jnp.finfo(s.dtype).tiny
    # Bounds on α (Moré 1978, §5): φ(α) = ‖p(α)‖ − Δ is convex and decreasing.
    norm0, dnorm0 = _p_norm(model, jnp.zeros_like(delta))
    lower = jnp.where(full_rank, -(norm0 - delta) / jnp.minimum(dnorm0, -tiny), 0.0)
    lower = jnp.maximum(lower, 0.0)
    upper = jnp.sqrt(jnp.sum((s * uf) ** 2)) / jnp.maximum(delta, tiny)

    def body(carry):
        a, lo, hi, done, count = carry
        bad = (a <= lo) | (a >= hi)
        a = jnp.where(bad, jnp.maximum(1e-3 * hi, jnp.sqrt(lo * hi)), a)
        norm, dnorm = _p_norm(model, a)
        phi = norm - delta
        newton = phi / jnp.minimum(dnorm, -tiny)
        # φ is convex and decreasing: ‖p(α)‖ < Δ puts α above the root, and a Newton step
        # on φ itself stays below it (Moré 1978, §5).
        new_hi = jnp.where(phi < 0, a, hi)
        new_lo = jnp.maximum(lo, a - newton)
        # Newton on 1/‖p‖ − 1/Δ, which is nearly linear in α (N&W eq. 4.44).
        step = newton * (norm / jnp.maximum(delta, tiny))
        now = done | (jnp.abs(phi) <= 0.1 * delta)
        return (jnp.where(now, a, jnp.maximum(a - step, 0.0)), jnp.where(now, lo, new_lo),
                jnp.where(now, hi, new_hi), now, count + 1)

    # (a while loop: 2-3 iterations in practice, also for a batch under vmap)
    alpha, *_ = jax.lax.while_loop(
        lambda c: ~c[3] & (c[4] < _MORE_ITERATIONS), body,
        (jnp.asarray(alpha, s.dtype), lower, upper, inside,
         jnp.zeros([], jnp.int32)))
    coef = s * uf / jnp.where(s ** 2 + alpha > 0, s ** 2 + alpha, 1.0)
    p = -(model.vt.T @ coef)
    norm = jnp.sqrt(p @ p)
    p = jnp.where(norm > delta, p * (delta / jnp.maximum(norm, tiny)), p)  # (to rounding)
    return jnp.where(inside, p_gn, p), jnp.where(inside, 0.0, alpha)


def dogleg_step(model: Model, delta: jax.Array) -> jax.Array:
    """Powell's dogleg: the Gauss–Newton step if inside the region, else along the path
    from the Cauchy point ``−(gᵀg/‖Jg‖²) g`` to it, cut at ``‖p‖ = Δ``."""
    g = model.g
    tiny = jnp.finfo(g.dtype).tiny
    p_gn = gauss_newton_step(model)
    jg = model.s * (model.vt @ g)
    p_c = -(g @ g) / jnp.maximum(jg @ jg, tiny) * g
    gn_norm, c_norm = jnp.sqrt(p_gn @ p_gn), jnp.sqrt(p_c @ p_c)
    # ‖p_c + τ(p_gn − p_c)‖ = Δ for τ in [0, 1].
    d = p_gn - p_c
    a, b, c = d @ d, 2 * (p_c @ d), p_c @ p_c - delta ** 2
    tau = (-b + jnp.sqrt(jnp.maximum(b * b - 4 * a * c, 0.0))) / jnp.maximum(2 * a, tiny)
    on_path = p_c + jnp.clip(tau, 0.0, 1.0) * d
    steepest = -delta / jnp.maximum(jnp.sqrt(g @ g), tiny) * g
    return jnp.where(gn_norm <= delta, p_gn, jnp.where(c_norm >= delta, steepest, on_path))
