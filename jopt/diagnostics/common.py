"""What the Hessian diagnostics share: result types, input checks, the batch-averaged
Hessian operator, and compilation through the platform layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jopt import _platform as platform
from jopt._checks import (
    check_float_tree,
    check_scalar_output,
)
from jopt.calculus import hvp_fn

PyTree = Any
LossFn = Callable[..., jax.Array]
Which = Literal["largest", "smallest", "both"]


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


def tree_size(tree: PyTree) -> int:
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(tree))


def num_batches(batches: PyTree) -> int:
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


def check_problem(loss_fn: LossFn, params: PyTree, batches: PyTree) -> None:
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be a function, got {type(loss_fn).__name__}.")
    check_float_tree("params", params)
    if batches is None:
        check_scalar_output("loss_fn", loss_fn, params)
    else:
        num_batches(batches)
        one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)),
                           batches)
        check_scalar_output("loss_fn", loss_fn, params, one)


def as_key(key: jax.Array | int | None) -> jax.Array:
    if key is None:
        return jax.random.PRNGKey(0)
    if isinstance(key, int) and not isinstance(key, bool):
        return jax.random.PRNGKey(key)
    return key


def check_which(which: Any) -> None:
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"`which` must be 'largest', 'smallest' or 'both', got {which!r}.")


# -------------------------------------------------------------- Hessian products


def hessian_operator(
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
compiled = platform.loop_program
