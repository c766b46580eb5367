"""``jopt.curve_fit``: fit ``ydata ≈ f(xdata, *p)`` by least squares, with the parameters'
covariance, as ``scipy.optimize.curve_fit`` defines them.

The residuals are ``(f(xdata, *p) − ydata)/σ`` for a 1-D ``sigma``, or ``L⁻¹(f − y)``
for a covariance ``sigma = L Lᵀ`` (2-D), solved by :func:`jopt.least_squares`. The
covariance of the estimate is ``(JᵀJ)⁻¹`` from the Jacobian at the solution (by its SVD,
dropping singular values below ``eps·max(m, n)·s_max``), multiplied by the residual
variance ``2C/(m − n)`` unless ``absolute_sigma`` (then ``sigma`` is taken as the data's
true standard deviations). With ``m <= n`` the variance is undefined and the covariance
is ``inf``, as in scipy.

References:
  Seber, G. A. F. & Wild, C. J. (1989). Nonlinear Regression, §2.1 (the asymptotic
  covariance ``σ²(JᵀJ)⁻¹`` of least-squares estimates).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jopt.lsq.solve import LeastSquaresResult, least_squares

__all__ = ["covariance", "curve_fit", "residuals_of", "weights"]


_RESIDUALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def residuals_of(model: Callable) -> Callable:
    """One residual function per model (held while the model lives), so that repeated
    fits of one model reuse one compiled program."""

    def residuals(p: jax.Array, xdata: Any, ydata: jax.Array, weight: jax.Array | None,
                  chol: jax.Array | None) -> jax.Array:
        diff = jnp.ravel(model(xdata, *p)) - ydata
        if chol is not None:
            return jax.scipy.linalg.solve_triangular(chol, diff, lower=True)
        return diff if weight is None else diff * weight

    try:
        with _LOCK:
            found = _RESIDUALS.get(model)
            if found is None:
                found = _RESIDUALS[model] = residuals
            return found
    except TypeError:  # a model that cannot be weakly referenced: a fresh function
        return residuals


def covariance(jac: jax.Array, cost: jax.Array, absolute_sigma: bool = False) -> jax.Array:
    """``(JᵀJ)⁺``, times ``2·cost/(m − n)`` unless ``absolute_sigma`` (see the module
    docstring)."""
    m, n = jac.shape
    _, s, vt = jnp.linalg.svd(jac, full_matrices=False)
    kept = s > jnp.finfo(jac.dtype).eps * max(m, n) * jnp.max(s, initial=0.0)
    inv_s2 = jnp.where(kept, 1.0 / jnp.where(kept, s, 1.0) ** 2, 0.0)
    pcov = (vt.T * inv_s2[None, :]) @ vt
    if absolute_sigma:
        return pcov
    if m <= n:
        return jnp.full_like(pcov, jnp.inf)
    return pcov * (2.0 * cost / (m - n))


def weights(sigma: Any, m: int, dtype: Any) -> tuple[jax.Array | None, jax.Array | None]:
    """``(1/σ, None)`` for a 1-D ``sigma``, ``(None, L)`` for a covariance matrix."""
    if sigma is None:
        return None, None
    sigma = jnp.asarray(sigma, dtype)
    if sigma.shape == (m,):
        return 1.0 / sigma, None
    if sigma.shape == (m, m):
        return None, jnp.linalg.cholesky(sigma)
    raise ValueError(f"`sigma` must have shape ({m},) (standard deviations) or ({m}, {m}) "
                     f"(a covariance matrix) for {m} data points, got {sigma.shape}.")


def curve_fit(
    model: Callable[..., jax.Array],
    xdata: Any,
    ydata: Any,
    p0: Any,
    sigma: Any = None,
    absolute_sigma: bool = False,
    *,
    method: str = "lm",
    full_output: bool = False,
    **least_squares_options: Any,
) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, LeastSquaresResult]:
    """Fit ``model(xdata, *p)`` to ``ydata``; returns ``(popt, pcov)`` as scipy does.

    Args:
      model: ``f(xdata, *params) -> y`` (an array of ``ydata``'s size). Define it once: a
        new function is a new program to compile.
      xdata: the predictor(s): any pytree ``model`` accepts (traced, so new data does not
        recompile).
      ydata: the observations (flattened).
      p0: the starting parameters, a 1-D array (its dtype is kept; use float64 for
        certified accuracy).
      sigma: ``None``, the standard deviations of ``ydata`` (shape ``(m,)``), or their
        covariance matrix (``(m, m)``).
      absolute_sigma: ``sigma`` is the data's true scale (the covariance is not rescaled
        by the residual variance).
      method: as in :func:`jopt.least_squares` (``"lm"``, ``"dogleg"``,
        ``"gauss-newton"``); other keywords (``loss``, ``f_scale``, ``ftol``, …) go there.
      full_output: also return the :class:`~jopt.LeastSquaresResult`.

    Returns:
      ``(popt, pcov)`` (and the result with ``full_output``). ``jax.vmap`` over
      ``ydata`` (or ``xdata``, ``p0``, ``sigma``) fits many datasets in one program.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> x = jnp.linspace(0.0, 4.0, 30)
      >>> y = 3.0 * jnp.exp(-0.7 * x) + 0.01 * jnp.cos(9.0 * x)
      >>> popt, pcov = jopt.curve_fit(lambda x, a, k: a * jnp.exp(-k * x), x, y,
      ...                             jnp.array([1.0, 1.0]))
      >>> [round(float(v), 2) for v in popt], pcov.shape
      ([3.0, 0.7], (2, 2))
    """
    p0 = jnp.asarray(p0)
    if p0.ndim != 1 or not jnp.issubdtype(p0.dtype, jnp.floating):
        raise ValueError(f"`p0` must be a 1-D float array of the parameters, got shape "
                         f"{p0.shape} and dtype {p0.dtype}.")
    ydata = jnp.ravel(jnp.asarray(ydata, p0.dtype))
    m = ydata.size
    weight, chol = weights(sigma, m, p0.dtype)
    if not callable(model):
        raise TypeError(f"`model` must be a function `f(xdata, *params)`, got "
                        f"{type(model).__name__}.")
    res = least_squares(residuals_of(model), p0, (xdata, ydata, weight, chol), method=method,
                        return_jac=True, **least_squares_options)
    pcov = covariance(res.jac, res.cost, absolute_sigma)
    if full_output:
        return res.x, pcov, res
    return res.x, pcov
