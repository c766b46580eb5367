"""Extreme Hessian eigenvalues by restarted Lanczos (:func:`hessian_eigs`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jopt._checks import (
    check_positive_int,
)
from jopt.diagnostics.common import (
    HessianEigResult,
    LossFn,
    Which,
    as_key,
    check_problem,
    check_which,
    compiled,
    hessian_operator,
    tree_size,
)
from jopt.linalg import safe_div, tridiagonal_eigh

PyTree = Any


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


@compiled(("k", "which", "num_iters"))
def _eigs_impl(loss_fn, params, batches, v0, *, k, which, num_iters):
    matvec, unravel = hessian_operator(loss_fn, params, batches)
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
      >>> res = jopt.hessian_eigs(loss, {"w": jnp.ones(4)}, k=2)
      >>> [round(float(v), 3) for v in res.eigenvalues]  # H = diag(2, 4, 6, 8)
      [8.0, 6.0]
    """
    check_problem(loss_fn, params, batches)
    check_which(which)
    n = tree_size(params)
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
    v0 = jax.random.normal(as_key(key), flat.shape, flat.dtype)
    return _eigs_impl(loss_fn, params, batches, v0, k=k, which=which, num_iters=num_iters)
