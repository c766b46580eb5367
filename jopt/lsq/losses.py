"""Robust losses for least squares, and the rescaling that lets a Gauss–Newton model use
them (Triggs et al. 2000, §4.3).

A loss ``ρ`` acts on ``z = (r/c)²`` for a residual ``r`` and soft margin ``c = f_scale``;
the cost is ``C(x) = ½ Σᵢ c²·ρ(zᵢ)``. With ``ρ(z) = z`` this is plain least squares.
Each loss returns ``(ρ, ρ', ρ'')`` at ``z``:

* ``linear``: ``z``;
* ``soft_l1``: ``2(√(1+z) − 1)``;
* ``huber``: ``z`` for ``z ≤ 1``, else ``2√z − 1``;
* ``cauchy``: ``ln(1 + z)``;
* ``arctan``: ``arctan(z)``.

:func:`rescale` turns the residuals ``r`` and Jacobian ``J`` into ``r̃, J̃`` whose
Gauss–Newton model ``½‖J̃p + r̃‖²`` has the robust cost's gradient ``Jᵀρ'r`` and the
curvature ``Jᵀ(ρ' + 2ρ''z)J`` (clipped at a small positive value where the loss is
concave), as ``scipy.optimize.least_squares`` does.

References:
  Triggs, B., McLauchlan, P., Hartley, R. & Fitzgibbon, A. (2000). Bundle adjustment — a
  modern synthesis. Vision Algorithms: Theory and Practice, §4.3 (robustified least
  squares and the rescaled Gauss–Newton model).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["LOSSES", "rescale", "rescaled_residuals", "robust_cost"]

Rho = tuple[jax.Array, jax.Array, jax.Array]


def _linear(z: jax.Array) -> Rho:
    return z, jnp.ones_like(z), jnp.zeros_like(z)


def _soft_l1(z: jax.Array) -> Rho:
    t = 1.0 + z
    return 2.0 * (jnp.sqrt(t) - 1.0), 1.0 / jnp.sqrt(t), -0.5 * t ** -1.5


def _huber(z: jax.Array) -> Rho:
    inside = z <= 1.0
    safe = jnp.where(inside, 1.0, z)  # (no 1/√0 in the branch not taken)
    return (jnp.where(inside, z, 2.0 * jnp.sqrt(safe) - 1.0),
            jnp.where(inside, 1.0, 1.0 / jnp.sqrt(safe)),
            jnp.where(inside, 0.0, -0.5 * safe ** -1.5))


def _cauchy(z: jax.Array) -> Rho:
    t = 1.0 + z
    return jnp.log1p(z), 1.0 / t, -1.0 / t ** 2


def _arctan(z: jax.Array) -> Rho:
    t = 1.0 + z ** 2
    return jnp.arctan(z), 1.0 / t, -2.0 * z / t ** 2


LOSSES: dict[str, Callable[[jax.Array], Rho]] = {
    "linear": _linear,
    "soft_l1": _soft_l1,
    "huber": _huber,
    "cauchy": _cauchy,
    "arctan": _arctan,
}


def robust_cost(loss: str, r: jax.Array, f_scale: jax.Array) -> jax.Array:
    """``½ Σ c²·ρ((r/c)²)``."""
    rho, _, _ = LOSSES[loss]((r / f_scale) ** 2)
    return 0.5 * f_scale ** 2 * jnp.sum(rho)


def rescale(loss: str, r: jax.Array, jac: jax.Array, f_scale: jax.Array
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(cost, r̃, J̃)`` for the robust loss (see the module docstring); the linear loss
    returns ``r`` and ``J`` unchanged."""
    if loss == "linear":
        return 0.5 * jnp.sum(r ** 2), r, jac
    z = (r / f_scale) ** 2
    rho, rho1, rho2 = LOSSES[loss](z)
    cost = 0.5 * f_scale ** 2 * jnp.sum(rho)
    eps = jnp.finfo(r.dtype).eps
    weight = jnp.sqrt(jnp.maximum(rho1 + 2.0 * rho2 * z, eps))
    return cost, rho1 / weight * r, weight[:, None] * jac


def rescaled_residuals(loss: str, r: jax.Array, f_scale: jax.Array) -> jax.Array:
    """``r̃`` of :func:`rescale` alone (``J̃ᵀr̃ = Jᵀρ'r`` is the cost's gradient)."""
    if loss == "linear":
        return r
    z = (r / f_scale) ** 2
    _, rho1, rho2 = LOSSES[loss](z)
    eps = jnp.finfo(r.dtype).eps
    return rho1 / jnp.sqrt(jnp.maximum(rho1 + 2.0 * rho2 * z, eps)) * r
