"""Hessian spectrum diagnostics: extreme eigenpairs, traces and spectral densities.

Every function here takes a loss and a point ``params`` (any pytree of float arrays) and
touches the Hessian only through Hessian-vector products (HVPs), so it scales to networks
whose Hessian could never be stored. The loss is either

* ``loss_fn(params) -> scalar`` (``batches=None``): the gradient is linearized once
  (:func:`jopt.calculus.hvp_fn`) and each further product costs about one gradient; or
* ``loss_fn(params, batch) -> scalar`` with ``batches`` a pytree whose leaves share a
  leading batch axis of length ``B``: every product is the average
  ``(1/B) Σ_b ∇²loss_fn(params, batch_b) v``, one forward-over-reverse HVP per batch in a
  ``lax.scan`` (memory of one batch). For per-batch means over equal-sized batches this
  is exactly the Hessian of the full-data loss.

All iterations are compiled ``lax`` loops; results are ``NamedTuple``s of arrays that
report their cost in ``num_hvps`` — products with the (batch-averaged) Hessian, each one
sweep over all ``B`` batches. Results keep the parameters' dtype. The functions are
jit-compiled internally (the loss and every integer option are static; a new ``loss_fn``
object compiles anew) and can be called inside ``jax.jit``.

References:
  Lanczos, C. (1950). An iteration method for the solution of the eigenvalue problem of
  linear differential and integral operators. J. Res. Nat. Bur. Standards 45.
  Golub, G. H. & Van Loan, C. F. (2013). Matrix Computations, 4th ed., §10.1 (Lanczos,
  Ritz pairs and their residuals, §10.1.4), §10.3.1 (full re-orthogonalisation).
  Parlett, B. N. (1998). The Symmetric Eigenvalue Problem, SIAM, §13.2 (restarting an
  exhausted Krylov space), Thm. 4.5.1 (a Ritz value lies within its residual norm of an
  eigenvalue).
  Hutchinson, M. F. (1989). A stochastic estimator of the trace of the influence matrix
  for Laplacian smoothing splines. Comm. Statist. Simul. Comput. 18(3).
  Avron, H. & Toledo, S. (2011). Randomized algorithms for estimating the trace of an
  implicit symmetric positive semi-definite matrix. J. ACM 58(2) (estimator variance).
  Chan, T. F., Golub, G. H. & LeVeque, R. J. (1983). Algorithms for computing the sample
  variance. Amer. Statist. 37(3) (pairwise/Welford merging of running moments).
  Golub, G. H. & Welsch, J. H. (1969). Calculation of Gauss quadrature rules. Math. Comp.
  23 (nodes and weights from the Jacobi matrix).
  Lin, L., Saad, Y. & Yang, C. (2016). Approximating spectral densities of large
  matrices. SIAM Review 58(1), §3.2 (stochastic Lanczos quadrature, eq. 3.13-3.16).
  Ghorbani, B., Krishnan, S. & Xiao, Y. (2019). An investigation into neural net
  optimization via Hessian eigenvalue density. ICML, §2 and Appendix A.
  Yao, Z., Gholami, A., Keutzer, K. & Mahoney, M. W. (2020). PyHessian: Neural networks
  through the lens of the Hessian. IEEE BigData (top eigenvalues, trace, density).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jopt import _platform as platform
from jopt._checks import (
    check_float_tree,
    check_nonnegative,
    check_positive_int,
    check_scalar_output,
    is_concrete_number,
)
from jopt.calculus import hvp_fn
from jopt.linalg import lanczos, safe_div, tridiagonal_eigh

PyTree = Any
LossFn = Callable[..., jax.Array]
Which = Literal["largest", "smallest", "both"]

__all__ = [
    "HessianEigResult",
    "HessianTraceResult",
    "SpectralDensityResult",
    "hessian_eigs",
    "hessian_spectral_density",
    "hessian_trace",
    "plot_spectral_density",
]


# ------------------------------------------------------------------------- results


class HessianEigResult(NamedTuple):
    """Result of :func:`hessian_eigs`.

    Attributes:
      eigenvalues: Ritz values, shape ``(k,)``: descending for ``which="largest"``
        (``eigenvalues[0]`` is the top one), ascending for ``"smallest"``, and ascending
        for ``"both"`` (the ``k // 2`` smallest, then the ``k - k // 2`` largest).
      eigenvectors: the Ritz vectors as a pytree like ``params`` whose leaves have a
        leading axis ``k`` (``tree[i]`` belongs to ``eigenvalues[i]``); orthonormal in
        the flattened inner product.
      residual_norms: ``‖H v_i − θ_i v_i‖`` of each Ritz pair by the Lanczos identity
        ``β_m |s_i[m]|`` (GVL §10.1.4; exact in exact arithmetic — rounding in the
        products adds about ``eps·‖H‖``). Some eigenvalue of ``H`` lies within
        ``residual_norms[i]`` of ``eigenvalues[i]`` (Parlett Thm. 4.5.1); small means
        converged.
      num_iters: Lanczos steps ``m`` made.
      num_restarts: times the Krylov space was exhausted and a fresh random direction,
        orthogonal to the basis, was taken (repeated eigenvalues, e.g. a null space).
      num_hvps: Hessian-vector products used (``m``).
      finite: False when a Hessian-vector product was NaN/Inf (e.g. a NaN loss): the
        other fields are then meaningless. Numerical trouble is reported here, never
        raised inside the compiled loop.
    """

    eigenvalues: jax.Array
    eigenvectors: PyTree
    residual_norms: jax.Array
    num_iters: jax.Array
    num_restarts: jax.Array
    num_hvps: jax.Array
    finite: jax.Array


class HessianTraceResult(NamedTuple):
    """Result of :func:`hessian_trace`.

    Attributes:
      estimate: Hutchinson estimate of ``tr(H)``, the mean of ``zᵀHz`` over the probes.
      stderr: standard error of that mean, ``s / √S`` with ``s`` the sample standard
        deviation of the ``S`` per-probe values.
      per_leaf: a pytree like ``params`` with one scalar per leaf: the estimate of the
        trace of that leaf's diagonal block of ``H`` (from the same probes; the leaves
        sum to ``estimate``).
      per_leaf_stderr: the standard error of each ``per_leaf`` entry.
      num_samples: probes used ``S``.
      converged: the stopping rule ``stderr <= max(rtol·|estimate|, atol)`` was met
        (False when ``max_samples`` ran out first).
      num_hvps: Hessian-vector products used (one per probe).
      finite: False when a probe's product was NaN/Inf (e.g. a NaN loss); the estimate is
        then meaningless.
    """

    estimate: jax.Array
    stderr: jax.Array
    per_leaf: PyTree
    per_leaf_stderr: PyTree
    num_samples: jax.Array
    converged: jax.Array
    num_hvps: jax.Array
    finite: jax.Array


class SpectralDensityResult(NamedTuple):
    """Result of :func:`hessian_spectral_density`.

    The density estimates ``φ(t) = (1/n) Σ_i δ(t − λ_i)`` (eigenvalues ``λ_i`` of the
    ``n × n`` Hessian) smoothed by a Gaussian of width ``sigma``; it integrates to one.

    Attributes:
      nodes: Gauss quadrature nodes (Ritz values) per probe, shape ``(num_probes, m)``.
      weights: their weights ``τ = (first components of the eigenvectors of T)²``, shape
        ``(num_probes, m)``; each row sums to one. Padding after a Lanczos breakdown has
        weight zero. ``Σ_i τ_i θ_i^p = vᵀ H^p v`` exactly for ``p <= 2m − 1``.
      grid: the points ``t`` at which ``density`` is evaluated, shape ``(num_points,)``.
      density: ``φ_σ(t) = (1/P) Σ_probes Σ_i τ_i N(t; θ_i, σ²)`` on ``grid``.
      sigma: the Gaussian width ``σ`` used.
      num_hvps: Hessian-vector products used (``num_probes · m``).
      finite: False when a Hessian-vector product was NaN/Inf (e.g. a NaN loss).
    """

    nodes: jax.Array
    weights: jax.Array
    grid: jax.Array
    density: jax.Array
    sigma: jax.Array
    num_hvps: jax.Array
    finite: jax.Array


# -------------------------------------------------------------------- input checks


def _size(tree: PyTree) -> int:
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(tree))


def _num_batches(batches: PyTree) -> int:
    """Common leading-axis length of ``batches``' leaves (raises naming ``batches``)."""
    leaves_with_path = jax.tree_util.tree_leaves_with_path(batches)
    if not leaves_with_path:
        raise ValueError("`batches` has no array leaves; pass a pytree of arrays whose "
                         "leaves share a leading batch axis, or `batches=None`.")
    sizes = {}
    for path, leaf in leaves_with_path:
        shape = jnp.shape(leaf)
        name = jax.tree_util.keystr(path) or "<root>"
        if len(shape) == 0:
            raise ValueError(f"`batches` leaf {name} is a scalar; every leaf needs a "
                             f"leading batch axis (shape (num_batches, ...)).")
        sizes[name] = shape[0]
    if len(set(sizes.values())) != 1:
        listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(f"`batches` leaves must share the same leading (batch) axis "
                         f"length, got {listing}. Stack equal numbers of batches per leaf.")
    num = next(iter(sizes.values()))
    if num < 1:
        raise ValueError("`batches` has a leading axis of length 0; pass at least one batch.")
    return num


def _check_problem(loss_fn: LossFn, params: PyTree, batches: PyTree) -> None:
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be a function, got {type(loss_fn).__name__}.")
    check_float_tree("params", params)
    if batches is None:
        check_scalar_output("loss_fn", loss_fn, params)
    else:
        _num_batches(batches)
        one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)),
                           batches)
        check_scalar_output("loss_fn", loss_fn, params, one)


def _key(key: jax.Array | int | None) -> jax.Array:
    if key is None:
        return jax.random.PRNGKey(0)
    if isinstance(key, int) and not isinstance(key, bool):
        return jax.random.PRNGKey(key)
    return key


def _check_which(which: Any) -> None:
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"`which` must be 'largest', 'smallest' or 'both', got {which!r}.")


# -------------------------------------------------------------- Hessian products


def _hessian_operator(
    loss_fn: LossFn, params: PyTree, batches: PyTree
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], PyTree]]:
    """``v -> H v`` on flat vectors (``ravel_pytree`` order and dtype) and the unravel map.

    The loops below work on one flat vector, so their program size (and compile time)
    does not grow with the number of leaves; only the product itself sees the pytree.
    """
    flat, unravel = ravel_pytree(params)
    dtype = flat.dtype

    def to_flat(tree: PyTree) -> jax.Array:
        return ravel_pytree(tree)[0].astype(dtype)

    if batches is None:
        product = hvp_fn(loss_fn, params)
        return (lambda v: to_flat(product(unravel(v)))), unravel

    num = jax.tree.leaves(batches)[0].shape[0]

    def batched_product(v: jax.Array) -> jax.Array:
        tangent = unravel(v)

        def body(acc, batch):
            grad = jax.grad(lambda p: loss_fn(p, batch))
            return acc + to_flat(jax.jvp(grad, (params,), (tangent,))[1]), None

        total, _ = jax.lax.scan(body, jnp.zeros_like(v), batches)
        return total / jnp.asarray(num, dtype)

    return batched_product, unravel


# ------------------------------------------------------------------ compilation

# The diagnostics' loops compile through the platform layer (cheaper backend passes on
# XLA:CPU; plain jit elsewhere and inside a caller's trace).
_compiled = platform.loop_program


# ----------------------------------------------------------------- eigenvalues


def _least_covered_coordinate(basis: jax.Array) -> jax.Array:
    """The unit vector ``e_i`` least represented in the rows of ``basis`` (``m × n``).

    ``Σ_i ‖(I − QQᵀ)e_i‖² = n − j`` for ``j`` orthonormal rows, so ``i = argmin_i ‖Qᵀe_i‖``
    keeps at least ``(n − j)/n`` of its squared norm after projection: a safe restart
    direction, chosen without random numbers (cheap to compile).
    """
    coverage = jnp.sum(basis * basis, axis=0)
    return (jnp.arange(basis.shape[1]) == jnp.argmin(coverage)).astype(basis.dtype)


_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes in the orthogonalisation on GPUs


def _orthogonalize(basis: jax.Array, w: jax.Array) -> jax.Array:
    """``w − Q(Qᵀw)`` twice (classical Gram-Schmidt, "twice is enough")."""
    for _ in range(2):
        w = w - jnp.dot(jnp.dot(basis, w, precision=_HIGHEST), basis, precision=_HIGHEST)
    return w


def _lanczos_with_restarts(
    matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, m: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Fully re-orthogonalised Lanczos that restarts instead of stopping at breakdown.

    Same recurrence as :func:`jopt.linalg.lanczos` (on a flat vector), but when the
    Krylov space becomes invariant (``β_j`` negligible) the next vector is a new
    direction orthogonalised against the basis (the least-covered coordinate vector) and
    ``β_j`` is set to zero, so ``T`` becomes block diagonal and the iteration goes on in
    the orthogonal complement (Parlett §13.2). That finds repeated eigenvalues — a single
    Krylov space holds only one copy of each. ``m <= n`` is required.

    Returns ``(alphas (m,), betas (m,), basis (m, n), num_restarts)``; ``betas[m-1]`` is
    the residual coefficient ``β_m``.
    """
    dtype = v0.dtype
    rel_tol = 100 * jnp.finfo(dtype).eps
    one, zero = jnp.ones([], dtype), jnp.zeros([], dtype)
    q0 = v0 * safe_div(one, jnp.linalg.norm(v0))

    def restart_direction(basis: jax.Array) -> jax.Array:
        r = _orthogonalize(basis, _least_covered_coordinate(basis))
        return r * safe_div(one, jnp.linalg.norm(r))

    def body(j, carry):
        basis, alphas, betas, q, q_prev, beta_prev, anorm, restarts = carry
        basis = basis.at[j].set(q)
        w = matvec(q)
        anorm = jnp.maximum(anorm, jnp.linalg.norm(w))
        alpha = jnp.dot(q, w, precision=_HIGHEST)
        w = _orthogonalize(basis, w - alpha * q - beta_prev * q_prev)
        beta = jnp.linalg.norm(w)
        exhausted = ~(beta > rel_tol * anorm)  # also catches NaN
        # A restart after the last step would be unused (and for m = n, impossible).
        restart = exhausted & (j < m - 1)
        beta = jnp.where(exhausted, 0, beta)
        q_next = jax.lax.cond(restart, restart_direction,
                              lambda _: w * safe_div(one, beta), basis)
        return (basis, alphas.at[j].set(alpha), betas.at[j].set(beta), q_next, q, beta,
                anorm, restarts + restart.astype(jnp.int32))

    init = (jnp.zeros((m, v0.shape[0]), dtype), jnp.zeros([m], dtype), jnp.zeros([m], dtype),
            q0, jnp.zeros_like(v0), zero, zero, jnp.zeros([], jnp.int32))
    basis, alphas, betas, _, _, _, _, restarts = jax.lax.fori_loop(0, m, body, init)
    return alphas, betas, basis, restarts


@_compiled(("k", "which", "num_iters"))
def _eigs_impl(loss_fn, params, batches, v0, *, k, which, num_iters):
    matvec, unravel = _hessian_operator(loss_fn, params, batches)
    alphas, betas, basis, restarts = _lanczos_with_restarts(matvec, v0, num_iters)
    theta, s = tridiagonal_eigh(alphas, betas[:-1])  # ascending
    m = num_iters
    if which == "largest":
        idx = np.arange(m - 1, m - 1 - k, -1)
    elif which == "smallest":
        idx = np.arange(k)
    else:
        low = k // 2
        idx = np.concatenate([np.arange(low), np.arange(m - (k - low), m)])
    s_sel = s[:, idx]  # (m, k)
    vectors = jax.vmap(unravel)(jnp.dot(s_sel.T, basis, precision=_HIGHEST))
    residuals = jnp.abs(betas[-1] * s_sel[-1])
    count = jnp.asarray(m, jnp.int32)
    finite = jnp.all(jnp.isfinite(alphas)) & jnp.all(jnp.isfinite(betas))
    return HessianEigResult(theta[idx], vectors, residuals, count, restarts, count, finite)


def hessian_eigs(
    loss_fn: LossFn,
    params: PyTree,
    k: int = 1,
    *,
    which: Which = "largest",
    batches: PyTree = None,
    num_iters: int | None = None,
    key: jax.Array | int | None = None,
) -> HessianEigResult:
    """Extreme eigenvalues and eigenvectors of the Hessian of ``loss_fn`` at ``params``.

    Runs ``m = num_iters`` steps of Lanczos with full re-orthogonalisation (two
    Gram-Schmidt passes per step, GVL §10.3.1) from a Gaussian random start, then takes
    the Ritz pairs of the tridiagonal ``T_m`` (:func:`jopt.linalg.tridiagonal_eigh`). The
    extreme Ritz values converge first (GVL §10.1.5), typically long before ``m = n``;
    with ``m = n`` the whole spectrum is found to working precision. If the Krylov space
    is exhausted early (an exactly repeated eigenvalue, e.g. a null space of the
    network), the iteration restarts from a new direction orthogonal to the basis (the
    coordinate vector it covers least; Parlett §13.2), so multiplicities are found too.
    Check convergence with ``residual_norms``: each returned value is within its
    residual of a true eigenvalue.

    Cost: ``m`` HVPs and ``O(m² n)`` work for the re-orthogonalisation; memory ``m·n``.

    Args:
      loss_fn: ``params -> scalar``, or ``(params, batch) -> scalar`` with ``batches``.
      params: the point (pytree of float arrays).
      k: number of eigenpairs, ``1 <= k <= n`` (``n`` = number of parameters).
      which: ``"largest"`` (algebraically largest), ``"smallest"`` (algebraically
        smallest, e.g. the most negative curvature) or ``"both"`` (``k // 2`` smallest
        and ``k − k // 2`` largest, as scipy's ``eigsh(which="BE")``).
      batches: optional pytree of arrays with a shared leading batch axis; the Hessian
        is then the average of the per-batch Hessians.
      num_iters: Lanczos steps ``m`` with ``k <= m <= n``; default
        ``min(n, max(2k + 20, 40))``.
      key: PRNG key (or int seed) of the start vector; default ``PRNGKey(0)``.

    Returns:
      A :class:`HessianEigResult` (``num_hvps = m``).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> loss = lambda p: jnp.sum(jnp.arange(1.0, 5.0) * p["w"] ** 2)
      >>> jopt.hessian_eigs(loss, {"w": jnp.ones(4)}, k=2).eigenvalues  # ≈ [8, 6]
    """
    _check_problem(loss_fn, params, batches)
    _check_which(which)
    n = _size(params)
    check_positive_int("k", k)
    if k > n:
        raise ValueError(f"`k` must be at most the number of parameters n = {n}, got {k}.")
    if num_iters is None:
        num_iters = min(n, max(2 * k + 20, 40))
    else:
        check_positive_int("num_iters", num_iters)
        if not k <= num_iters <= n:
            raise ValueError(f"`num_iters` must satisfy k <= num_iters <= n (k = {k}, "
                             f"n = {n}), got {num_iters}.")
    flat = ravel_pytree(params)[0]
    # Drawn outside the compiled solver: eagerly, this small program is shared by every
    # loss of the same size.
    v0 = jax.random.normal(_key(key), flat.shape, flat.dtype)
    return _eigs_impl(loss_fn, params, batches, v0, k=k, which=which, num_iters=num_iters)


# ------------------------------------------------------------------------ trace


def _merge_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan, Golub & LeVeque (1983): combine (count, mean, Σ(x − mean)²) of two samples."""
    n = n_a + n_b
    delta = mean_b - mean_a
    frac = n_b / n
    return n, mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac


@_compiled(("min_samples", "max_samples", "block_size"))
def _trace_impl(loss_fn, params, batches, key, rtol, atol, *, min_samples, max_samples,
                block_size):
    matvec, _ = _hessian_operator(loss_fn, params, batches)
    flat = ravel_pytree(params)[0]
    dtype, n = flat.dtype, flat.shape[0]
    leaves, treedef = jax.tree.flatten(params)
    num_leaves = len(leaves)
    ends = np.cumsum([math.prod(jnp.shape(x)) for x in leaves])
    max_blocks = -(-max_samples // block_size)
    rtol = jnp.asarray(rtol, dtype)
    atol = jnp.asarray(atol, dtype)

    def block_values(b: jax.Array) -> jax.Array:
        """``z_lᵀ (H z)_l`` per probe and leaf, shape ``(block_size, num_leaves)``."""
        z = jax.random.rademacher(jax.random.fold_in(key, b), (block_size, n), dtype)
        prod = z * jax.vmap(matvec)(z)
        leaf_of = jnp.searchsorted(jnp.asarray(ends), jnp.arange(n), side="right")
        per_leaf = jax.ops.segment_sum(prod.T, leaf_of, num_segments=num_leaves,
                                       indices_are_sorted=True)
        return per_leaf.T

    def stderr_of(count, m2):
        var = m2 / jnp.maximum(count - 1, 1)
        return jnp.sqrt(jnp.maximum(var, 0) / count)

    def done(count, mean, m2):
        se = stderr_of(count, m2[-1])
        small = se <= jnp.maximum(rtol * jnp.abs(mean[-1]), atol)
        return (count >= min_samples) & small

    def cond(carry):
        b, count, mean, m2 = carry
        return (b < max_blocks) & ~done(count, mean, m2)

    def body(carry):
        b, count, mean, m2 = carry
        vals = block_values(b)
        vals = jnp.concatenate([vals, jnp.sum(vals, axis=1, keepdims=True)], axis=1)
        n_b = jnp.asarray(block_size, dtype)
        mean_b = jnp.mean(vals, axis=0)
        m2_b = jnp.sum((vals - mean_b[None]) ** 2, axis=0)
        count, mean, m2 = _merge_moments(count, mean, m2, n_b, mean_b, m2_b)
        return b + 1, count, mean, m2

    zeros = jnp.zeros([num_leaves + 1], dtype)
    init = (jnp.zeros([], jnp.int32), jnp.zeros([], dtype), zeros, zeros)
    _, count, mean, m2 = jax.lax.while_loop(cond, body, init)
    se = stderr_of(count, m2)
    samples = count.astype(jnp.int32)
    return HessianTraceResult(
        estimate=mean[-1],
        stderr=se[-1],
        per_leaf=jax.tree.unflatten(treedef, list(mean[:-1])),
        per_leaf_stderr=jax.tree.unflatten(treedef, list(se[:-1])),
        num_samples=samples,
        converged=done(count, mean, m2),
        num_hvps=samples,
        finite=jnp.all(jnp.isfinite(mean)) & jnp.all(jnp.isfinite(m2)),
    )


def hessian_trace(
    loss_fn: LossFn,
    params: PyTree,
    *,
    batches: PyTree = None,
    rtol: float | jax.Array = 1e-2,
    atol: float | jax.Array = 0.0,
    min_samples: int = 10,
    max_samples: int = 1000,
    block_size: int = 1,
    key: jax.Array | int | None = None,
) -> HessianTraceResult:
    """Hutchinson estimate of ``tr(∇²loss)`` with a standard-error stopping rule.

    Draws Rademacher probes ``z`` (entries ±1) and averages ``zᵀHz``, an unbiased estimate
    of ``tr(H)`` with variance ``2 Σ_{i≠j} H_ij²`` per probe (Hutchinson 1989; Avron &
    Toledo 2011). Probes are drawn in blocks of ``block_size`` (evaluated together with
    ``vmap``) inside a ``lax.while_loop`` that stops as soon as at least ``min_samples``
    probes give a standard error of the mean ``<= max(rtol·|mean|, atol)``, or after
    ``max_samples`` probes (rounded up to whole blocks). Running means and variances are
    merged blockwise (Chan, Golub & LeVeque 1983). The same probes give every leaf's
    block trace ``tr(H_ll) ≈ mean(z_lᵀ (Hz)_l)`` (per-layer traces).

    Block ``b`` uses the probes ``jax.random.rademacher(jax.random.fold_in(key, b),
    (block_size, n), dtype)`` in ``jax.flatten_util.ravel_pytree(params)`` order.

    Args:
      loss_fn: ``params -> scalar``, or ``(params, batch) -> scalar`` with ``batches``.
      params: the point (pytree of float arrays).
      batches: optional pytree of arrays with a shared leading batch axis (see module).
      rtol: relative standard-error target, ``> 0`` (may be traced).
      atol: absolute standard-error target, ``>= 0`` (for traces near zero).
      min_samples: probes before the rule may stop, Python int ``>= 2``.
      max_samples: budget of probes, Python int ``>= min_samples``.
      block_size: probes per loop iteration (Python int ``>= 1``).
      key: PRNG key (or int seed); default ``PRNGKey(0)``.

    Returns:
      A :class:`HessianTraceResult` (``num_hvps`` = probes used).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> loss = lambda p: jnp.sum(jnp.arange(1.0, 5.0) * p["w"] ** 2)
      >>> jopt.hessian_trace(loss, {"w": jnp.ones(4)}).estimate   # 20 (diagonal H: exact)
    """
    _check_problem(loss_fn, params, batches)
    if is_concrete_number(rtol) and not float(rtol) > 0:
        raise ValueError(f"`rtol` must be > 0 (a relative standard-error target, e.g. "
                         f"1e-2), got {rtol!r}.")
    check_nonnegative("atol", atol)
    check_positive_int("min_samples", min_samples)
    check_positive_int("max_samples", max_samples)
    check_positive_int("block_size", block_size)
    if min_samples < 2:
        raise ValueError(f"`min_samples` must be >= 2 (a standard error needs two probes), "
                         f"got {min_samples}.")
    if max_samples < min_samples:
        raise ValueError(f"`max_samples` must be >= `min_samples` = {min_samples}, got "
                         f"{max_samples}.")
    return _trace_impl(loss_fn, params, batches, _key(key), rtol, atol,
                       min_samples=min_samples, max_samples=max_samples,
                       block_size=block_size)


# ------------------------------------------------------------ spectral density


@_compiled(("num_probes", "num_iters", "num_points"))
def _density_impl(loss_fn, params, batches, probes, sigma, grid, *, num_probes, num_iters,
                  num_points):
    matvec, _ = _hessian_operator(loss_fn, params, batches)
    dtype = probes.dtype

    def quadrature(v):
        res = lanczos(matvec, v, num_iters, reorthogonalize=True)
        theta, s = tridiagonal_eigh(res.alphas, res.betas, res.num_steps)
        return theta, s[0] ** 2

    nodes, weights = jax.lax.map(quadrature, probes)
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    width = hi - lo
    scale = jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), 1)
    scale = jnp.where(width > 0, width, scale)
    sigma = 0.01 * scale if sigma is None else jnp.asarray(sigma, dtype)
    if grid is None:
        pad = 6 * sigma
        grid = jnp.linspace(lo - pad, hi + pad, num_points, dtype=dtype)
    else:
        grid = jnp.asarray(grid, dtype)
    diff = (grid[:, None, None] - nodes[None]) / sigma
    kernel = jnp.exp(-0.5 * diff * diff) / (sigma * math.sqrt(2 * math.pi))
    density = jnp.sum(kernel * weights[None], axis=(1, 2)) / num_probes
    finite = jnp.all(jnp.isfinite(nodes)) & jnp.all(jnp.isfinite(weights))
    return SpectralDensityResult(nodes, weights, grid, density, sigma,
                                 jnp.asarray(num_probes * num_iters, jnp.int32), finite)


def hessian_spectral_density(
    loss_fn: LossFn,
    params: PyTree,
    *,
    batches: PyTree = None,
    num_probes: int = 10,
    num_iters: int = 50,
    num_points: int = 1000,
    sigma: float | jax.Array | None = None,
    grid: jax.Array | None = None,
    key: jax.Array | int | None = None,
) -> SpectralDensityResult:
    """Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

    For each of ``P = num_probes`` random unit vectors ``v`` (Rademacher, normalised),
    ``m`` steps of re-orthogonalised Lanczos (:func:`jopt.linalg.lanczos`) from ``v`` give
    the Jacobi matrix ``T_m``; its eigenvalues ``θ_i`` and squared first eigenvector
    components ``τ_i`` are the nodes and weights of the ``m``-point Gauss quadrature of
    the spectral measure ``μ_v = Σ_j (vᵀu_j)² δ_{λ_j}`` (Golub & Welsch 1969), exact for
    polynomials of degree ``<= 2m − 1``. Since ``E[μ_v] = (1/n) Σ_j δ_{λ_j}``, averaging
    over probes and smoothing each node by a Gaussian of width ``σ`` estimates the
    spectral density (Lin, Saad & Yang 2016, §3.2; Ghorbani, Krishnan & Xiao 2019, §2).
    Moments: ``∫ t^p φ_σ`` has mean ``tr(H^p)/n`` for ``p = 0, 1`` and ``tr(H²)/n + σ²``
    for ``p = 2``.

    The probes are ``jax.random.rademacher(key, (num_probes, n), dtype)`` (before
    normalisation) in ``jax.flatten_util.ravel_pytree(params)`` order. A probe whose
    Krylov space is exhausted early (breakdown) gives an exact quadrature with fewer
    nodes; the unused nodes get weight zero.

    Args:
      loss_fn: ``params -> scalar``, or ``(params, batch) -> scalar`` with ``batches``.
      params: the point (pytree of float arrays).
      batches: optional pytree of arrays with a shared leading batch axis (see module).
      num_probes: probes ``P`` (Python int ``>= 1``).
      num_iters: Lanczos steps ``m`` per probe (Python int ``>= 1``; values above the
        parameter count ``n`` are reduced to ``n``).
      num_points: size of the default grid (Python int ``>= 2``); ignored with ``grid``.
      sigma: Gaussian width ``σ > 0``; default ``0.01·(θ_max − θ_min)``.
      grid: optional 1-D array of evaluation points; default ``num_points`` equispaced
        points over ``[θ_min − 6σ, θ_max + 6σ]``.
      key: PRNG key (or int seed) of the probes; default ``PRNGKey(0)``.

    Returns:
      A :class:`SpectralDensityResult` (``num_hvps = P·m``).
    """
    _check_problem(loss_fn, params, batches)
    check_positive_int("num_probes", num_probes)
    check_positive_int("num_iters", num_iters)
    check_positive_int("num_points", num_points)
    if num_points < 2:
        raise ValueError(f"`num_points` must be >= 2, got {num_points}.")
    if sigma is not None and is_concrete_number(sigma) and not float(sigma) > 0:
        raise ValueError(f"`sigma` must be > 0 (the Gaussian smoothing width), got "
                         f"{sigma!r}; pass None for the default.")
    if grid is not None and jnp.ndim(grid) != 1:
        raise ValueError(f"`grid` must be a 1-D array of evaluation points, got shape "
                         f"{jnp.shape(grid)}.")
    flat = ravel_pytree(params)[0]
    num_iters = min(num_iters, flat.shape[0])
    probes = jax.random.rademacher(_key(key), (num_probes, flat.shape[0]), flat.dtype)
    return _density_impl(loss_fn, params, batches, probes, sigma, grid,
                         num_probes=num_probes, num_iters=num_iters, num_points=num_points)


# ------------------------------------------------------------------------ plotting


def plot_spectral_density(
    result: SpectralDensityResult,
    ax: Any = None,
    *,
    log_scale: bool = True,
    floor: float = 1e-6,
    **plot_kwargs: Any,
) -> Any:
    """Plot a :class:`SpectralDensityResult` with matplotlib (imported only here).

    Args:
      result: from :func:`hessian_spectral_density`.
      ax: a matplotlib ``Axes`` to draw into; default a new ``Figure`` with one axes
        (no pyplot state is touched; save it with ``ax.figure.savefig(path)``).
      log_scale: logarithmic density axis (the usual view: a bulk near zero and a few
        outliers); densities below ``floor · max(density)`` are clipped to it.
      floor: smallest density shown on the log scale, relative to the peak (``> 0``).
      **plot_kwargs: passed to ``ax.plot``.

    Returns:
      The ``Axes``.

    Raises:
      ImportError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "plot_spectral_density needs matplotlib, which is not installed. Install it "
            "with `pip install matplotlib` (or `pip install 'jopt[examples]'`)."
        ) from err
    if not isinstance(result, SpectralDensityResult):
        raise TypeError(f"`result` must be a SpectralDensityResult (from "
                        f"jopt.hessian_spectral_density), got {type(result).__name__}.")
    if ax is None:
        ax = Figure(figsize=(6, 4), layout="constrained").add_subplot()
    grid = np.asarray(result.grid, np.float64)
    density = np.asarray(result.density, np.float64)
    if log_scale:
        density = np.maximum(density, floor * np.max(density))
        ax.set_yscale("log")
    ax.plot(grid, density, **plot_kwargs)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"Hessian spectral density (SLQ, {result.nodes.shape[0]} probes, "
                 f"{int(result.num_hvps)} HVPs)")
    return ax
