"""Matrix-free Krylov solvers on pytree vectors: CG, Steihaug-Toint CG and Lanczos.

A *vector* is any pytree of real floating-point arrays; an operator is a function
``matvec: pytree -> pytree`` (e.g. :func:`jopt.hvp_fn`), assumed linear and symmetric.
Every solver keeps the caller's dtypes, works under ``jax.jit`` and ``jax.vmap``, and
never raises inside a compiled loop: numerical trouble (non-positive curvature,
breakdown, exhausted budgets) is reported in the result.

Loops that stay fast under ``vmap``: each step of every loop makes exactly one ``matvec``
and all branching is arithmetic (``jnp.where`` / :func:`jopt.tree.tree_select`) on its
result, so a batch costs what its slowest member costs.

References:
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., Springer:
  Alg. 5.3 (preconditioned CG), Alg. 7.1 (Newton-CG, negative curvature test),
  Alg. 7.2 (CG-Steihaug), §4.1 (Cauchy point, Lemma 4.3).
  Saad, Y. (2003). Iterative Methods for Sparse Linear Systems, 2nd ed., SIAM, Alg. 9.1.
  Steihaug, T. (1983). The conjugate gradient method and trust regions in large scale
  optimization. SIAM J. Numer. Anal. 20(3).
  Conn, A. R., Gould, N. I. M. & Toint, Ph. L. (2000). Trust-Region Methods, SIAM,
  Alg. 7.5.1 (preconditioned truncated CG; M-norm recurrences, eq. 7.5.5-7.5.7).
  Golub, G. H. & Van Loan, C. F. (2013). Matrix Computations, 4th ed., JHU Press,
  §10.1 (Lanczos), §10.3.1 (full re-orthogonalisation).
  Paige, C. C. (1971). The computation of eigenvalues and eigenvectors of very large
  sparse matrices. PhD thesis, University of London (loss of orthogonality in Lanczos).
  Giraud, L., Langou, J. & Rozložník, M. (2005). The loss of orthogonality in the
  Gram-Schmidt process. Comput. Math. Appl. 50 ("twice is enough").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt._checks import (
    check_float_tree,
    check_nonnegative,
    check_positive_int,
    check_same_structure,
    is_concrete_number,
)
from jopt.tree import set_row, tree_add_scaled, tree_l2_norm, tree_scale, tree_select, tree_vdot

PyTree = Any
MatVec = Callable[[PyTree], PyTree]

__all__ = [
    "CGResult",
    "LanczosResult",
    "SteihaugResult",
    "cg",
    "lanczos",
    "steihaug_cg",
    "tridiagonal_eigh",
]


# ----------------------------------------------------------------------- helpers


def _size(tree: PyTree) -> int:
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(tree))


def _scalar_dtype(tree: PyTree) -> Any:
    """Dtype of inner products of ``tree`` with itself (the leaves' promoted dtype)."""
    return jnp.result_type(*jax.tree.leaves(tree))


def _operator(name: str, fn: Any, like: PyTree, like_name: str) -> MatVec:
    """Check ``fn: like -> like`` at trace time; return it with outputs cast to ``like``'s dtypes.

    The cast keeps loop carries type-stable (an operator that promotes float32 to float64
    would otherwise break ``lax.while_loop``).
    """
    if not callable(fn):
        raise TypeError(f"`{name}` must be a function `{like_name} -> pytree like "
                        f"{like_name}`, got {type(fn).__name__}.")
    out = jax.eval_shape(fn, like)
    check_same_structure(like_name, like, f"{name}({like_name})", out)
    check_float_tree(f"{name}({like_name})", out)
    dtypes = [jnp.result_type(leaf) for leaf in jax.tree.leaves(like)]
    treedef = jax.tree.structure(like)

    def apply(v: PyTree) -> PyTree:
        leaves = jax.tree.leaves(fn(v))
        return jax.tree.unflatten(treedef, [x.astype(d) for x, d in zip(leaves, dtypes,
                                                                         strict=True)])

    return apply


def _check_maxiter(maxiter: int | None, tree: PyTree) -> int:
    if maxiter is None:
        return max(_size(tree), 1)
    check_positive_int("maxiter", maxiter)
    return int(maxiter)


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` with 0 where ``den == 0`` (no NaN in masked-out lanes)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def _zeros_like(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, tree)


# ---------------------------------------------------------------------------- CG


class CGResult(NamedTuple):
    """Result of :func:`cg`.

    Attributes:
      x: the final iterate. On ``negative_curvature`` it is the iterate *before* the step
        along the offending direction (so it is finite and the model never increased).
      num_iters: loop iterations made, each exactly one ``matvec`` (int32). A given ``x0``
        costs one further ``matvec`` (the initial residual), not counted here.
      residual_norm: ``‖b - A x‖₂`` of the returned ``x`` (by the CG recurrence).
      converged: ``residual_norm <= max(rtol·‖b‖₂, atol)``.
      negative_curvature: a direction ``p`` with ``pᵀAp <= 0`` (or non-finite) was met
        and the iteration stopped there.
      curvature_direction: that direction ``p`` (zeros when ``negative_curvature`` is
        False). It satisfies ``pᵀAp <= 0`` up to rounding.
      curvature: ``pᵀAp`` of that direction (0 when ``negative_curvature`` is False;
        NaN/Inf when the product was not finite).
    """

    x: PyTree
    num_iters: jax.Array
    residual_norm: jax.Array
    converged: jax.Array
    negative_curvature: jax.Array
    curvature_direction: PyTree
    curvature: jax.Array


class _CGCarry(NamedTuple):
    i: jax.Array
    x: PyTree
    r: PyTree
    p: PyTree
    rz: jax.Array  # rᵀ M⁻¹ r
    rnorm: jax.Array  # ‖r‖₂
    negative: jax.Array
    pap: jax.Array  # pᵀAp of the last direction


def cg(
    matvec: MatVec,
    b: PyTree,
    *,
    x0: PyTree | None = None,
    rtol: float | jax.Array = 1e-5,
    atol: float | jax.Array = 0.0,
    maxiter: int | None = None,
    precond: MatVec | None = None,
) -> CGResult:
    """Solve ``A x = b`` for symmetric ``A`` by preconditioned conjugate gradients.

    Nocedal & Wright (2006) Alg. 5.3 (Saad 2003 Alg. 9.1), with the negative-curvature
    exit of N&W Alg. 7.1: CG never divides by a curvature ``pᵀAp <= 0``. When it meets
    one it stops, returns the current iterate (before the step) and reports the direction,
    so Newton-CG can fall back to it or to steepest descent. For symmetric positive
    definite ``A`` (and ``M``) CG terminates in at most ``n`` steps in exact arithmetic.

    Iterations stop when ``‖r‖₂ <= max(rtol·‖b‖₂, atol)`` (``r = b - A x``, the true
    Euclidean residual, also with a preconditioner), on non-positive curvature, or after
    ``maxiter`` iterations. ``num_iters`` counts loop iterations = ``matvec`` calls in the
    loop; with ``x0`` one more ``matvec`` computes ``r0 = b - A x0`` (always made when
    ``x0`` is passed, as its value is not known at trace time). With ``x0=None`` the
    start is ``x = 0``, ``r0 = b`` (no extra ``matvec``); ``b = 0`` then returns
    ``x = 0`` after 0 iterations.

    Args:
      matvec: ``v -> A v`` for a symmetric linear ``A`` (pytree like ``b`` in and out).
      b: right-hand side, a pytree of float arrays.
      x0: optional initial guess, same structure and shapes as ``b``.
      rtol: relative tolerance on ``‖r‖₂ / ‖b‖₂`` (may be traced).
      atol: absolute tolerance on ``‖r‖₂`` (may be traced).
      maxiter: iteration budget, a Python int ``>= 1`` (default: the size of ``b``).
      precond: optional ``r -> M⁻¹ r`` for a symmetric positive definite ``M ≈ A``
        (e.g. ``lambda r: jax.tree.map(jnp.divide, r, diag)`` for Jacobi).

    Returns:
      A :class:`CGResult`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> A = jnp.array([[4.0, 1.0], [1.0, 3.0]])
      >>> res = jopt.cg(lambda v: A @ v, jnp.array([1.0, 2.0]), rtol=1e-10)
      >>> [round(float(v), 4) for v in res.x]  # [1/11, 7/11]
      [0.0909, 0.6364]
    """
    check_float_tree("b", b)
    matvec = _operator("matvec", matvec, b, "b")
    if precond is not None:
        precond = _operator("precond", precond, b, "b")
    if x0 is not None:
        check_same_structure("b", b, "x0", x0)
        check_float_tree("x0", x0)
    check_nonnegative("rtol", rtol)
    check_nonnegative("atol", atol)
    maxiter = _check_maxiter(maxiter, b)

    dtype = _scalar_dtype(b)
    apply_m = precond if precond is not None else (lambda r: r)
    if x0 is None:
        x = _zeros_like(b)
        r = b
    else:
        x = jax.tree.map(lambda u, ref: u.astype(ref.dtype), x0, b)
        r = jax.tree.map(jnp.subtract, b, matvec(x))
    z = apply_m(r)
    rnorm = tree_l2_norm(r)
    tol = jnp.maximum(jnp.asarray(rtol, dtype) * tree_l2_norm(b), jnp.asarray(atol, dtype))

    def cond(c: _CGCarry) -> jax.Array:
        return (c.i < maxiter) & (c.rnorm > tol) & ~c.negative

    def body(c: _CGCarry) -> _CGCarry:
        ap = matvec(c.p)
        pap = tree_vdot(c.p, ap)
        alpha = c.rz / jnp.where(pap > 0, pap, 1)
        # Non-positive, NaN, or so small that α overflows: do not step along p.
        negative = ~(pap > 0) | ~jnp.isfinite(alpha)
        alpha = jnp.where(negative, 0, alpha)
        x = tree_add_scaled(c.x, alpha, c.p)
        r = tree_add_scaled(c.r, -alpha, ap)
        z = apply_m(r)
        rz = tree_vdot(r, z)
        beta = safe_div(rz, c.rz)
        p = tree_select(negative, c.p, tree_add_scaled(z, beta, c.p))
        return _CGCarry(
            i=c.i + 1,
            x=tree_select(negative, c.x, x),
            r=tree_select(negative, c.r, r),
            p=p,
            rz=jnp.where(negative, c.rz, rz),
            rnorm=jnp.where(negative, c.rnorm, tree_l2_norm(r)),
            negative=negative,
            pap=pap,
        )

    init = _CGCarry(
        i=jnp.zeros([], jnp.int32),
        x=x,
        r=r,
        p=z,
        rz=tree_vdot(r, z),
        rnorm=rnorm,
        negative=jnp.zeros([], bool),
        pap=jnp.zeros([], dtype),
    )
    c = jax.lax.while_loop(cond, body, init)
    return CGResult(
        x=c.x,
        num_iters=c.i,
        residual_norm=c.rnorm,
        converged=c.rnorm <= tol,
        negative_curvature=c.negative,
        curvature_direction=tree_select(c.negative, c.p, _zeros_like(b)),
        curvature=jnp.where(c.negative, c.pap, 0).astype(dtype),
    )


# ------------------------------------------------------------------ Steihaug-Toint


class SteihaugResult(NamedTuple):
    """Result of :func:`steihaug_cg`.

    Attributes:
      step: the approximate minimizer ``p`` of ``gᵀp + ½pᵀBp`` with ``‖p‖ <= radius``.
      num_iters: loop iterations made, each exactly one ``matvec`` (int32).
      hits_boundary: ``p`` lies on the trust-region boundary (crossed it, or followed
        non-positive curvature to it).
      negative_curvature: a direction ``d`` with ``dᵀBd <= 0`` was met.
      converged: interior exit on the residual test ``‖g + Bp‖₂ <= max(rtol·‖g‖₂, atol)``.
        The iteration ended regularly iff ``converged | hits_boundary``; otherwise
        ``maxiter`` ran out and ``step`` is the last interior iterate.
      model_decrease: ``-(gᵀp + ½pᵀBp) >= 0``, from the CG recurrences (no extra
        ``matvec``).
    """

    step: PyTree
    num_iters: jax.Array
    hits_boundary: jax.Array
    negative_curvature: jax.Array
    converged: jax.Array
    model_decrease: jax.Array


class _STCarry(NamedTuple):
    i: jax.Array
    z: PyTree
    r: PyTree  # gradient of the model at z: g + B z
    d: PyTree
    rv: jax.Array  # rᵀ M⁻¹ r
    zz: jax.Array  # ‖z‖²  (M-norm with a preconditioner)
    zd: jax.Array  # ⟨z, d⟩
    dd: jax.Array  # ‖d‖²
    model: jax.Array  # gᵀz + ½zᵀBz
    rnorm: jax.Array
    boundary: jax.Array
    negative: jax.Array


def _boundary_tau(zz: jax.Array, zd: jax.Array, dd: jax.Array, radius2: jax.Array) -> jax.Array:
    """The root ``τ >= 0`` of ``‖z + τd‖² = Δ²`` (``zz = ‖z‖² <= Δ²``), without cancellation."""
    c = jnp.minimum(zz - radius2, 0)  # <= 0: z is inside (up to rounding)
    root = jnp.sqrt(zd * zd - dd * c)  # >= |zd|
    # (-zd + root)/dd when zd <= 0; the equal form -c/(zd + root) when zd > 0.
    return jnp.where(zd > 0, safe_div(-c, zd + root), safe_div(root - zd, dd))


def _steihaug_arguments(matvec, g, radius, rtol, atol, maxiter, precond):
    """:func:`steihaug_cg`'s checks: ``(matvec, precond, maxiter)`` checked and resolved."""
    check_float_tree("g", g)
    matvec = _operator("matvec", matvec, g, "g")
    if precond is not None:
        precond = _operator("precond", precond, g, "g")
    if is_concrete_number(radius) and not float(radius) > 0:
        raise ValueError(f"`radius` must be a positive number, got {radius!r}. "
                         f"The trust-region radius bounds the step length ‖p‖.")
    if rtol is not None:
        check_nonnegative("rtol", rtol)
    check_nonnegative("atol", atol)
    return matvec, precond, _check_maxiter(maxiter, g)


def steihaug_cg(
    matvec: MatVec,
    g: PyTree,
    radius: float | jax.Array,
    *,
    rtol: float | jax.Array | None = None,
    atol: float | jax.Array = 0.0,
    maxiter: int | None = None,
    precond: MatVec | None = None,
) -> SteihaugResult:
    """Steihaug-Toint truncated CG for the trust-region subproblem.

    Approximately solves ``min_p m(p) = gᵀp + ½pᵀBp`` subject to ``‖p‖ <= radius`` for
    symmetric (possibly indefinite) ``B`` — Nocedal & Wright (2006) Alg. 7.2 (Steihaug
    1983). CG starts at ``z = 0`` (``r = g``, ``d = -r``) and stops

    * on the residual test ``‖r‖₂ <= max(rtol·‖g‖₂, atol)`` with ``r = g + Bz`` (interior
      step, ``converged``);
    * on non-positive curvature ``dᵀBd <= 0``: it goes to the boundary along ``d``,
      ``p = z + τd`` with ``τ >= 0`` and ``‖p‖ = radius`` (``negative_curvature``,
      ``hits_boundary``);
    * when the next iterate would leave the region: same ``τ`` (``hits_boundary``);
    * after ``maxiter`` iterations (none of the flags; ``step`` is the last iterate).

    The model decreases monotonically along the iterates and the first one is the Cauchy
    point, so ``model_decrease`` is at least the Cauchy decrease (N&W §4.1, Lemma 4.3),
    which gives global convergence of the trust-region method. ``model_decrease`` is
    accumulated as ``m(z + τd) = m(z) + τ·rᵀd + ½τ²·dᵀBd`` from quantities the loop
    already has, so it costs no ``matvec``.

    With ``precond`` (``r -> M⁻¹r``, ``M`` symmetric positive definite) the trust region
    is the ellipsoid ``‖p‖_M = sqrt(pᵀMp) <= radius`` (Steihaug 1983; Conn, Gould &
    Toint 2000, Alg. 7.5.1); ``‖·‖_M`` of the iterates is tracked by the CG recurrences
    ``⟨z,d⟩_M ← β(⟨z,d⟩_M + α‖d‖²_M)``, ``‖d‖²_M ← rᵀM⁻¹r + β²‖d‖²_M`` (CGT eq. 7.5.5-7),
    since ``M`` itself is not available. Without it the region is the Euclidean ball and
    the norms are computed exactly.

    Args:
      matvec: ``v -> B v`` for a symmetric linear ``B`` (e.g. a Hessian-vector product).
      g: model gradient (pytree of float arrays).
      radius: trust-region radius ``Δ > 0`` (may be traced).
      rtol: relative residual tolerance. Default ``None``: N&W's forcing term
        ``min(0.5, sqrt(‖g‖₂))`` (N&W eq. 7.3, superlinear local convergence).
      atol: absolute residual tolerance.
      maxiter: iteration budget, Python int ``>= 1`` (default: the size of ``g``).
      precond: optional ``r -> M⁻¹ r`` (see above).

    Returns:
      A :class:`SteihaugResult`.
    """
    matvec, precond, maxiter = _steihaug_arguments(matvec, g, radius, rtol, atol, maxiter,
                                                   precond)
    dtype = _scalar_dtype(g)
    gnorm = tree_l2_norm(g)
    if rtol is None:
        rtol = jnp.minimum(0.5, jnp.sqrt(gnorm))
    tol = jnp.maximum(jnp.asarray(rtol, dtype) * gnorm, jnp.asarray(atol, dtype))
    radius2 = jnp.square(jnp.asarray(radius, dtype))
    exact_norms = precond is None
    apply_m = precond if precond is not None else (lambda r: r)

    def cond(c: _STCarry) -> jax.Array:
        return (c.i < maxiter) & (c.rnorm > tol) & ~c.boundary

    def body(c: _STCarry) -> _STCarry:
        bd = matvec(c.d)
        dbd = tree_vdot(c.d, bd)
        rd = tree_vdot(c.r, c.d)
        alpha = c.rv / jnp.where(dbd > 0, dbd, 1)
        negative = ~(dbd > 0) | ~jnp.isfinite(alpha)
        alpha = jnp.where(negative, 0, alpha)
        crosses = c.zz + 2 * alpha * c.zd + alpha * alpha * c.dd >= radius2
        boundary = negative | crosses
        tau = jnp.where(boundary, _boundary_tau(c.zz, c.zd, c.dd, radius2), alpha)
        z = tree_add_scaled(c.z, tau, c.d)
        model = c.model + tau * rd + 0.5 * tau * tau * dbd
        r = tree_add_scaled(c.r, alpha, bd)
        v = apply_m(r)
        rv = tree_vdot(r, v)
        beta = safe_div(rv, c.rv)
        d = tree_add_scaled(tree_scale(-1.0, v), beta, c.d)
        if exact_norms:
            zz, zd, dd = tree_vdot(z, z), tree_vdot(z, d), tree_vdot(d, d)
        else:  # M-norm recurrences (CGT 2000, eq. 7.5.5-7.5.7)
            zz = c.zz + 2 * alpha * c.zd + alpha * alpha * c.dd
            zd = beta * (c.zd + alpha * c.dd)
            dd = rv + beta * beta * c.dd
        return _STCarry(
            i=c.i + 1,
            z=z,
            r=r,
            d=d,
            rv=rv,
            zz=zz,
            zd=zd,
            dd=dd,
            model=model,
            rnorm=tree_l2_norm(r),
            boundary=boundary,
            negative=negative,
        )

    v0 = apply_m(g)
    d0 = tree_scale(-1.0, v0)
    rv0 = tree_vdot(g, v0)
    zero = jnp.zeros([], dtype)
    init = _STCarry(
        i=jnp.zeros([], jnp.int32),
        z=_zeros_like(g),
        r=g,
        d=d0,
        rv=rv0,
        zz=zero,
        zd=zero,
        dd=tree_vdot(d0, d0) if exact_norms else rv0,
        model=zero,
        rnorm=gnorm,
        boundary=jnp.zeros([], bool),
        negative=jnp.zeros([], bool),
    )
    c = jax.lax.while_loop(cond, body, init)
    return SteihaugResult(
        step=c.z,
        num_iters=c.i,
        hits_boundary=c.boundary,
        negative_curvature=c.negative,
        converged=~c.boundary & (c.rnorm <= tol),
        model_decrease=-c.model,
    )


# ------------------------------------------------------------------------ Lanczos


class LanczosResult(NamedTuple):
    """Result of :func:`lanczos` with ``m = num_iters``.

    In exact arithmetic ``A Q = Q T + β_m q_{m+1} e_mᵀ`` with ``Q = basis`` (orthonormal
    rows) and ``T`` the symmetric tridiagonal matrix with diagonal ``alphas`` and
    off-diagonal ``betas``.

    Breakdown convention: if the Krylov space becomes invariant after ``k < m`` steps
    (``β_k ≈ 0``), the iteration stops growing. Then ``num_steps = k``,
    ``breakdown = True``, ``basis[k:]``, ``alphas[k:]`` and ``betas[k-1:]`` are zero (so
    ``T = T_k ⊕ 0``, and the leading ``k×k`` block is exact), and ``residual_norm = 0``.
    Pass ``num_steps`` to :func:`tridiagonal_eigh` to drop the padding.

    Attributes:
      alphas: diagonal of ``T``, shape ``(m,)``.
      betas: off-diagonal of ``T``, shape ``(m-1,)``.
      basis: the Lanczos vectors, a pytree like ``v0`` whose leaves have a leading axis
        of length ``m`` (``basis[j]`` is ``q_{j+1}``).
      residual_norm: ``β_m = ‖A q_m - α_m q_m - β_{m-1} q_{m-1}‖``. A Ritz pair
        ``(θ_i, Q s_i)`` has residual norm ``β_m |s_i[-1]|`` (GVL §10.1.4).
      num_steps: number of valid Lanczos vectors ``k`` (``m`` unless breakdown; 0 for
        ``v0 = 0``), int32.
      breakdown: an invariant subspace was found: ``β_k <= 100·eps·max_j ‖A q_j‖``. Where
        rounding in the products exceeds that (large ``n``, inexact HVPs) the iteration
        goes on with the orthogonalised rounding noise as the next vector; with
        ``reorthogonalize`` that is harmless (it acts as a restart, ``β_k`` stays tiny so
        ``T`` is numerically block diagonal and every Ritz value is still genuine).
    """

    alphas: jax.Array
    betas: jax.Array
    basis: PyTree
    residual_norm: jax.Array
    num_steps: jax.Array
    breakdown: jax.Array


def _stack_set(stacked: PyTree, j: jax.Array, v: PyTree) -> PyTree:
    return jax.tree.map(lambda s, x: set_row(s, j, x), stacked, v)


def _project_out(stacked: PyTree, w: PyTree) -> PyTree:
    """``w - Q (Qᵀ w)`` (one classical Gram-Schmidt pass against all stored rows).

    Full-precision products: on GPUs the default matmul precision may be TF32, which would
    undo the re-orthogonalisation in float32.
    """
    hi = jax.lax.Precision.HIGHEST
    coeffs = [jnp.tensordot(q, x, axes=x.ndim, precision=hi) for q, x in
              zip(jax.tree.leaves(stacked), jax.tree.leaves(w), strict=True)]
    coeff = sum(coeffs[1:], coeffs[0])
    return jax.tree.map(
        lambda q, x: x - jnp.tensordot(coeff.astype(x.dtype), q, axes=1, precision=hi),
        stacked, w)


def lanczos(
    matvec: MatVec,
    v0: PyTree,
    num_iters: int,
    *,
    reorthogonalize: bool = True,
) -> LanczosResult:
    """Lanczos tridiagonalisation ``Qᵀ A Q = T`` of a symmetric operator from ``v0``.

    Golub & Van Loan (2013) §10.1 (Alg. 10.1.1): ``q_1 = v0/‖v0‖``, then for each step
    ``w = A q_j − α_j q_j − β_{j−1} q_{j−1}``, ``α_j = q_jᵀ A q_j``, ``β_j = ‖w‖``,
    ``q_{j+1} = w / β_j``. With ``reorthogonalize`` (GVL §10.3.1) ``w`` is also
    orthogonalised against every stored vector by two classical Gram-Schmidt passes
    ("twice is enough", Giraud et al. 2005), which keeps the basis orthonormal to
    working precision and the Ritz values free of spurious copies (Paige 1971); it costs
    ``O(m·n)`` per step. Without it the three-term recurrence alone is used (cheaper;
    orthogonality is lost as Ritz values converge).

    Runs in a ``lax.fori_loop`` with one ``matvec`` per step (``num_iters`` in all; after
    a breakdown the remaining steps multiply a zero vector and change nothing), so it is
    jit/vmap-able and reverse-mode differentiable. See :class:`LanczosResult` for the
    breakdown convention; ``num_iters`` larger than the dimension ``n`` is allowed and
    ends in breakdown after ``n`` steps.

    Args:
      matvec: ``v -> A v`` for a symmetric linear ``A``.
      v0: nonzero starting vector (pytree of float arrays); need not be normalised.
      num_iters: number of steps ``m``, a Python int ``>= 1``.
      reorthogonalize: full re-orthogonalisation (default True).

    Returns:
      A :class:`LanczosResult`; :func:`tridiagonal_eigh` gives Ritz values and vectors.
    """
    check_float_tree("v0", v0)
    check_positive_int("num_iters", num_iters)
    matvec = _operator("matvec", matvec, v0, "v0")
    m = num_iters
    dtype = _scalar_dtype(v0)
    eps = jnp.finfo(dtype).eps
    rel_tol = 100 * eps

    norm0 = tree_l2_norm(v0)
    dead0 = ~(norm0 > 0)
    q0 = tree_scale(safe_div(jnp.ones([], dtype), norm0), v0)
    zero = jnp.zeros([], dtype)

    def body(j, carry):
        basis, alphas, betas, q, q_prev, beta_prev, anorm, dead, k = carry
        basis = _stack_set(basis, j, q)
        w = matvec(q)
        anorm = jnp.maximum(anorm, tree_l2_norm(w))
        alpha = tree_vdot(q, w)
        w = tree_add_scaled(tree_add_scaled(w, -alpha, q), -beta_prev, q_prev)
        if reorthogonalize:
            w = _project_out(basis, _project_out(basis, w))
        beta = tree_l2_norm(w)
        stop = dead | ~(beta > rel_tol * anorm)  # also catches NaN
        beta = jnp.where(stop, 0, beta)
        q_next = tree_scale(safe_div(jnp.ones([], dtype), beta), w)  # zero when stopped
        alphas = set_row(alphas, j, jnp.where(dead, 0, alpha))
        betas = set_row(betas, j, beta)
        k = k + jnp.where(dead, 0, 1).astype(jnp.int32)
        return basis, alphas, betas, q_next, q, beta, anorm, stop, k

    init = (
        jax.tree.map(lambda x: jnp.zeros((m, *jnp.shape(x)), jnp.result_type(x)), v0),
        jnp.zeros([m], dtype),
        jnp.zeros([m], dtype),
        q0,
        _zeros_like(v0),
        zero,
        zero,
        dead0,
        jnp.zeros([], jnp.int32),
    )
    basis, alphas, betas, _, _, _, _, dead, k = jax.lax.fori_loop(0, m, body, init)
    return LanczosResult(
        alphas=alphas,
        betas=betas[: m - 1],
        basis=basis,
        residual_norm=betas[m - 1],
        num_steps=k,
        breakdown=dead,
    )


@jax.jit
def tridiagonal_eigh(
    alphas: jax.Array, betas: jax.Array, num_steps: jax.Array | int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Eigen-decomposition ``T = S diag(θ) Sᵀ`` of the symmetric tridiagonal ``T``.

    ``T`` has diagonal ``alphas`` (shape ``(m,)``) and off-diagonal ``betas`` (``(m-1,)``);
    for a :class:`LanczosResult` the ``θ`` are the Ritz values and ``basis``-combinations
    ``Σ_j S[j, i] q_j`` the Ritz vectors (GVL §10.1.4). Computed with ``jnp.linalg.eigh``
    of the dense ``m×m`` matrix (``m`` is small).

    With ``num_steps = k`` (may be traced) only the leading ``k×k`` block is valid (the
    :class:`LanczosResult` breakdown convention): the first ``k`` eigenvalues (ascending)
    are those of ``T_k``; the trailing ``m - k`` slots repeat the largest of them and
    their eigenvectors vanish on the valid block (``S[:k, i] = 0``), so they carry zero
    weight in quadrature (``S[0, i]² = 0``) and leave ``min``/``max`` unchanged.

    Returns:
      ``(eigenvalues, eigenvectors)``: ascending ``θ`` of shape ``(m,)`` and ``S`` of
      shape ``(m, m)`` with eigenvectors in columns, as ``jnp.linalg.eigh``.

    Compiled with ``jax.jit`` (many small ops: eager dispatch would dominate).
    """
    alphas = jnp.asarray(alphas)
    betas = jnp.asarray(betas, alphas.dtype)
    m = alphas.shape[-1] if alphas.ndim else 0
    if alphas.ndim != 1 or betas.shape != (m - 1,):
        raise ValueError(f"`alphas` must have shape (m,) and `betas` shape (m-1,), got "
                         f"{alphas.shape} and {betas.shape}.")
    if num_steps is None:
        t = jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)
        return jnp.linalg.eigh(t)
    valid = jnp.arange(m) < num_steps
    off_valid = jnp.arange(m - 1) < num_steps - 1
    a = jnp.where(valid, alphas, 0)
    b = jnp.where(off_valid, betas, 0)
    # Padding pushed strictly above the spectrum of T_k (Gershgorin bound), so it sorts last.
    b_pad = jnp.concatenate([jnp.zeros([1], b.dtype), jnp.abs(b)])
    b_pad2 = jnp.concatenate([jnp.abs(b), jnp.zeros([1], b.dtype)])
    gersh = jnp.max(jnp.abs(a) + b_pad + b_pad2)
    a = jnp.where(valid, a, 2 * gersh + 1)
    t = jnp.diag(a) + jnp.diag(b, 1) + jnp.diag(b, -1)
    values, vectors = jnp.linalg.eigh(t)
    largest = values[jnp.clip(num_steps - 1, 0, m - 1)]
    values = jnp.where(valid, values, largest)
    return values, vectors
