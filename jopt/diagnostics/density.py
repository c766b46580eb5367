"""The Hessian spectral density by stochastic Lanczos quadrature, and its plot."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jopt._checks import (
    check_positive_int,
    is_concrete_number,
)
from jopt.diagnostics.common import (
    LossFn,
    SpectralDensityResult,
    as_key,
    check_problem,
    compiled,
    hessian_operator,
)
from jopt.linalg import lanczos, tridiagonal_eigh

PyTree = Any


# ------------------------------------------------------------ spectral density


@compiled(("num_probes", "num_iters", "num_points"))
def _density_impl(loss_fn, params, batches, probes, sigma, grid, *, num_probes, num_iters,
                  num_points):
    matvec, _ = hessian_operator(loss_fn, params, batches)
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
    check_problem(loss_fn, params, batches)
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
    probes = jax.random.rademacher(as_key(key), (num_probes, flat.shape[0]), flat.dtype)
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
