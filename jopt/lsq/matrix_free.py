"""Least squares with the Jacobian never formed: a trust-region Gauss–Newton method whose
step comes from Steihaug–Toint CG on the model's normal equations.

Each iteration linearizes the residuals once at ``x`` (``jax.linearize``: ``J·v`` by a JVP,
``Jᵀ·u`` by its transpose), so memory is ``O(m + n)`` whatever the Jacobian's size. The
step minimizes the Gauss–Newton model ``gᵀp + ½‖J̃ D p‖²`` within ``‖p‖ <= Δ`` in the
scaled variables by truncated CG (N&W Alg. 7.2; the first iterate is the Cauchy point,
which gives the trust-region method its global convergence), stopped at the forcing
tolerance ``min(½, √‖g‖)·‖g‖`` (N&W eq. 7.3). Trial steps with the same linearization
shrink ``Δ`` as in :mod:`jopt.lsq.solve` until the cost decreases; the stopping tests and
statuses are the same. ``x_scale="jac"`` is not available (the column norms would need the
Jacobian): the variables are scaled by ``x_scale`` as given (1 by default).

References:
  Steihaug, T. (1983). The conjugate gradient method and trust regions in large scale
  optimization. SIAM J. Numer. Anal. 20(3), 626–637.
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., §7.1 (Alg. 7.2,
  eq. 7.3) and §10.3 (Gauss–Newton in a trust region).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jopt.linalg import steihaug_cg
from jopt.lsq import losses

__all__ = ["solve_matrix_free"]


class _Outer(NamedTuple):
    x: jax.Array
    r: jax.Array
    cost: jax.Array
    grad: jax.Array  # unscaled ∇C at x (from the last linearization)
    delta: jax.Array
    nfev: jax.Array
    njev: jax.Array
    nit: jax.Array
    status: jax.Array


class _Trial(NamedTuple):
    delta: jax.Array
    x: jax.Array
    r: jax.Array
    cost: jax.Array
    accepted: jax.Array
    done: jax.Array  # a stopping test fired inside (collapse, evaluations)
    small_f: jax.Array
    small_x: jax.Array
    nfev: jax.Array
    nit: jax.Array


def _weights(loss: str, r: jax.Array, f_scale: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(w, r̃)``: ``J̃ = diag(w) J`` and the rescaled residuals of the loss."""
    if loss == "linear":
        return jnp.ones_like(r), r
    z = (r / f_scale) ** 2
    _, rho1, rho2 = losses.LOSSES[loss](z)
    w = jnp.sqrt(jnp.maximum(rho1 + 2.0 * rho2 * z, jnp.finfo(r.dtype).eps))
    return w, rho1 / w * r


def solve_matrix_free(fn: Callable[[jax.Array], jax.Array], loss: str, max_nfev: int,
                      x0: jax.Array, f_scale: jax.Array, scale: jax.Array, ftol: jax.Array,
                      xtol: jax.Array, gtol: jax.Array, codes: dict) -> _Outer:
    """Run the method from ``x0``; ``codes`` maps status names to their integers."""
    r0 = fn(x0)
    cost0 = losses.robust_cost(loss, r0, f_scale)
    norm = jnp.linalg.norm(x0 / scale)
    zero = jnp.zeros([], jnp.int32)
    start = _Outer(x0, r0, cost0, jnp.zeros_like(x0), jnp.where(norm > 0, norm, 1.0),
                   zero + 1, zero, zero,
                   jnp.where(jnp.isfinite(cost0), codes["RUNNING"], codes["NONFINITE"])
                   .astype(jnp.int32))

    def outer(s: _Outer) -> _Outer:
        r, jvp = jax.linearize(fn, s.x)
        vjp = jax.linear_transpose(jvp, s.x)
        w, r_tilde = _weights(loss, r, f_scale)
        grad = vjp(w * r_tilde)[0]
        g = scale * grad  # the scaled gradient

        def gauss_newton(v: jax.Array) -> jax.Array:
            return scale * vjp(w * w * jvp(scale * v))[0]

        g_norm = jnp.sqrt(g @ g)
        forcing = jnp.minimum(0.5, jnp.sqrt(g_norm))
        gtol_met = jnp.max(jnp.abs(grad), initial=0.0) <= gtol

        def trial(t: _Trial) -> _Trial:
            sub = steihaug_cg(gauss_newton, g, t.delta, rtol=forcing, maxiter=max(
                10, min(200, s.x.size)))
            p = sub.step
            x_new = s.x + scale * p
            r_new = fn(x_new)
            cost_new = losses.robust_cost(loss, r_new, f_scale)
            actual = jnp.where(jnp.isfinite(cost_new), s.cost - cost_new, -jnp.inf)
            predicted = sub.model_decrease
            ratio = jnp.where(predicted > 0, actual / jnp.where(predicted > 0, predicted, 1.0),
                              jnp.where(actual > 0, 1.0, -1.0))
            p_norm = jnp.sqrt(p @ p)
            delta = jnp.where(ratio < 0.25, 0.25 * p_norm,
                              jnp.where((ratio > 0.75) & sub.hits_boundary, 2.0 * t.delta,
                                        t.delta))
            accept = actual > 0
            small_step = jnp.linalg.norm(scale * p) <= xtol * (xtol + jnp.linalg.norm(s.x))
            nfev = t.nfev + 1
            done = (~accept & small_step) | (nfev >= max_nfev)
            return _Trial(delta.astype(t.delta.dtype),
                          jnp.where(accept, x_new, t.x), jnp.where(accept, r_new, t.r),
                          jnp.where(accept, cost_new, t.cost), accept, done,
                          accept & (ratio > 0.25) & (actual < ftol * s.cost),
                          small_step, nfev, t.nit + 1)

        first = _Trial(s.delta, s.x, s.r, s.cost, jnp.zeros([], bool), gtol_met,
                       jnp.zeros([], bool), jnp.zeros([], bool), s.nfev, s.nit)
        t = jax.lax.while_loop(lambda t: ~t.accepted & ~t.done, trial, first)
        status = jnp.select(
            [gtol_met, t.small_f & t.small_x, t.small_f, t.small_x,
             t.accepted & ~jnp.isfinite(t.cost), t.nfev >= max_nfev],
            [codes["GTOL"], codes["FTOL_XTOL"], codes["FTOL"], codes["XTOL"],
             codes["NONFINITE"], codes["MAXFEV"]], codes["RUNNING"]).astype(jnp.int32)
        return _Outer(t.x, t.r, t.cost, grad, t.delta, t.nfev, s.njev + 1, t.nit, status)

    final = jax.lax.while_loop(lambda s: s.status < 0, outer, start)
    # The gradient at the final point (the last one was taken where the step started).
    r, vjp_fn = jax.vjp(fn, final.x)
    _, r_tilde = _weights(loss, r, f_scale)
    w, _ = _weights(loss, r, f_scale)
    return final._replace(grad=vjp_fn(w * r_tilde)[0])
