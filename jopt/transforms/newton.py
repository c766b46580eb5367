"""Newton methods driven by Hessian-vector products: Newton-CG, trust-region Newton-CG,
and exact (dense, modified) Newton for small problems.

Each transform takes the objective as ``value_fn`` (an extra argument of ``update``, as
for the line searches) and builds curvature from :mod:`jopt.calculus`: the gradient is
linearized once per outer iteration (``jax.linearize``) and every inner CG step costs
one tangent evaluation. The states count their work in a :class:`jopt.Work` (Hessian-vector
products, the extra gradient each linearization makes, dense Hessians), and trust-ncg
reports its step in a :class:`jopt.StepRecord` (the step protocol, :mod:`jopt.step`), so
drivers report honest ``nhev`` / ``njev``.

References:
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.: Algorithm 7.1
  (line-search Newton-CG, forcing term η_k = min(0.5, √‖∇f‖)), Algorithm 4.1 (trust-region
  radius updates), Algorithm 7.2 (CG-Steihaug), §3.4 (Hessian modification by eigenvalue
  shifts).
  Steihaug, T. (1983). The conjugate gradient method and trust regions in large scale
  optimization. SIAM J. Numer. Anal. 20(3).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jopt._checks import check_float_tree, check_positive_int
from jopt.calculus import grad_and_hvp_fn, hessian_matrix, value_and_grad_of
from jopt.linalg import cg, steihaug_cg
from jopt.linesearch import scale_by_strong_wolfe
from jopt.step import StepRecord, StepStatus, Work
from jopt.tree import (
    tree_add_scaled,
    tree_inf_norm,
    tree_l2_norm,
    tree_scale,
    tree_select,
    tree_vdot,
)

PyTree = Any

__all__ = [
    "NewtonCGState",
    "NewtonState",
    "TrustNCGState",
    "actual_decrease",
    "dtype_cap",
    "need_objective",
    "newton",
    "newton_cg",
    "scale_by_newton",
    "scale_by_newton_cg",
    "tree_size",
    "trust_ncg",
]


def need_objective(name: str, value_fn: Any, params: Any) -> None:
    if value_fn is None or params is None:
        raise ValueError(
            f"{name} needs the objective: call `update(grads, state, params, value_fn=fun)`."
        )


def _forcing_rtol(grads: PyTree) -> jax.Array:
    """N&W Alg. 7.1: η_k = min(0.5, √‖∇f‖) — CG solves loosely far away, tightly near x*."""
    return jnp.minimum(0.5, jnp.sqrt(tree_l2_norm(grads)))


def tree_size(tree: PyTree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------- Newton-CG


def _scaled_steepest_descent(grads: PyTree, curvature: jax.Array) -> PyTree:
    """``-(gᵀg/|gᵀHg|)·g``; plain ``-g`` when the curvature is 0 or not finite."""
    gg = tree_vdot(grads, grads)
    scale = gg / jnp.abs(curvature)
    scale = jnp.where(jnp.isfinite(scale) & (scale > 0), scale, 1.0)
    return tree_scale(-scale, grads)


class NewtonCGState(NamedTuple):
    """State of :func:`scale_by_newton_cg`."""

    work: Work  # cumulative HVPs and the gradients linearization recomputes
    cg_iters: jax.Array  # CG iterations of the last step
    negative_curvature: jax.Array  # last CG run met pᵀHp <= 0


def scale_by_newton_cg(maxiter: int | None = None) -> optax.GradientTransformationExtraArgs:
    """Truncated-Newton direction: CG on ``∇²f p = -∇f`` stopped by the forcing term.

    Negative curvature met at the first CG iteration gives the steepest-descent direction,
    scaled by the curvature's magnitude, ``-(‖g‖²/|gᵀ∇²f g|)·g`` (so the unit trial step
    is the step to the minimum of the quadratic with curvature ``|gᵀ∇²f g|``, as in scipy's
    Newton-CG); met later, the CG iterate so far (N&W Alg. 7.1). Chain with a line search (see
    :func:`newton_cg`). ``maxiter`` bounds the CG iterations per outer step (default
    ``20·n`` as in scipy, capped at 1000).
    """
    if maxiter is not None:
        check_positive_int("maxiter", maxiter)

    def init(params: PyTree) -> NewtonCGState:
        check_float_tree("params", params)
        return NewtonCGState(Work.zeros("njev", "nhvp"), jnp.zeros([], jnp.int32),
                             jnp.zeros([], bool))

    def update(grads, state, params=None, *, value_fn=None, **extra):
        del extra
        need_objective("scale_by_newton_cg", value_fn, params)
        _, hvp = grad_and_hvp_fn(value_fn, params)
        limit = maxiter or min(max(20 * tree_size(params), 1), 1000)
        res = cg(hvp, tree_scale(-1.0, grads), rtol=_forcing_rtol(grads), maxiter=limit)
        first = res.negative_curvature & (res.num_iters <= 1)
        direction = tree_select(first, _scaled_steepest_descent(grads, res.curvature), res.x)
        return direction, NewtonCGState(
            work=state.work.add(njev=1, nhvp=res.num_iters),
            cg_iters=res.num_iters.astype(jnp.int32),
            negative_curvature=res.negative_curvature,
        )

    return optax.GradientTransformationExtraArgs(init, update)


def newton_cg(
    maxiter: int | None = None,
    linesearch: optax.GradientTransformationExtraArgs | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Line-search Newton-CG (N&W Alg. 7.1) with a strong-Wolfe search (unit first step).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> res = jopt.minimize(lambda x: jnp.sum((x - 1) ** 4 + x**2), jnp.zeros(3),
      ...                     method="newton-cg")
    """
    return optax.chain(scale_by_newton_cg(maxiter), linesearch or scale_by_strong_wolfe())


# ------------------------------------------------------------- trust-region Newton-CG


def actual_decrease(value, trial_value, grads, trial_grad, step, predicted):
    """``f(x) - f(x + p)``, by the trapezoid rule where f's difference is rounding noise.

    Near a minimizer the predicted decrease falls to the rounding level of ``f`` (e.g.
    ``|f| ~ 1e4``, ``‖g‖ ~ 1e-6``): the difference of two f values is then noise, ρ is
    random and the radius collapses before ``‖∇f‖`` reaches the tolerance. There the
    decrease is ``-½ (∇f(x) + ∇f(x+p))ᵀ p`` (exact for quadratics, error O(‖p‖³)),
    which uses the gradient already evaluated at the trial point — Conn, Gould & Toint,
    *Trust-Region Methods* (2000), §17.4.2 (computing ρ accurately).
    """
    eps = jnp.finfo(predicted.dtype).eps
    noise = 1000.0 * eps * jnp.maximum(jnp.abs(value), jnp.abs(trial_value))
    by_values = value - trial_value
    by_gradients = -0.5 * (tree_vdot(grads, step) + tree_vdot(trial_grad, step))
    return jnp.where((predicted <= noise) & jnp.isfinite(by_gradients), by_gradients,
                     by_values)


class TrustNCGState(NamedTuple):
    """State of :func:`trust_ncg`; ``record`` (a :class:`jopt.StepRecord`) carries the
    value and gradient at the current point and the work done."""

    radius: jax.Array
    ratio: jax.Array  # ρ of the last trial step
    accepted: jax.Array
    record: StepRecord


def dtype_cap(value: float, dtype: Any) -> float:
    """``value`` clipped to ``dtype``'s largest finite number (``max_radius = 1e10`` in
    float16 would otherwise cast to inf, with a numpy overflow warning)."""
    return min(value, float(jnp.finfo(dtype).max))


def trust_ncg(
    initial_radius: float = 1.0,
    max_radius: float = 1e10,
    eta: float = 0.15,
    maxiter: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Trust-region Newton-CG: CG-Steihaug steps with ρ-based radius updates.

    Each update solves the model ``min gᵀp + ½pᵀ∇²f p, ‖p‖ ≤ Δ`` by CG-Steihaug (N&W Alg.
    7.2, forcing term ``min(0.5, √‖g‖)``), evaluates ``f`` and ``∇f`` once at ``x + p`` and
    compares actual with predicted decrease, ``ρ``. The radius shrinks to ``‖p‖/4`` when
    ``ρ < 1/4`` and doubles (up to ``max_radius``) when ``ρ > 3/4`` on the boundary; the step
    is taken when ``ρ > eta`` (N&W Alg. 4.1). A rejected step returns zero updates and keeps
    the value and gradient at ``x``: no evaluation is repeated. Where the predicted decrease
    is at the rounding level of ``f``, the actual decrease in ``ρ`` is measured with the
    gradients (trapezoid rule, Conn, Gould & Toint 2000 §17.4.2), so the radius does not
    collapse on rounding noise before ``‖∇f‖`` reaches the tolerance. A radius collapsing
    below machine precision relative to ``x`` gives ``record.status = FAILED``, and the
    next update restarts from ``initial_radius`` (the step protocol's restart rule).

    Args:
      initial_radius, max_radius: trust radii (``0 < initial <= max``).
      eta: acceptance threshold in ``[0, 1/4)``.
      maxiter: CG iterations per step (default ``20·n`` capped at 1000).
    """
    if not (0 < initial_radius <= max_radius):
        raise ValueError(
            f"Need 0 < `initial_radius` <= `max_radius`, got {initial_radius}, {max_radius}.")
    if not 0 <= eta < 0.25:
        raise ValueError(f"`eta` must lie in [0, 0.25), got {eta}.")
    if maxiter is not None:
        check_positive_int("maxiter", maxiter)

    def init(params: PyTree) -> TrustNCGState:
        check_float_tree("params", params)
        dtype = jnp.result_type(*jax.tree.leaves(params))
        return TrustNCGState(jnp.asarray(dtype_cap(initial_radius, dtype), dtype),
                             jnp.zeros([], dtype), jnp.zeros([], bool),
                             StepRecord.initial(params, ("nfev", "njev", "nhvp")))

    def update(grads, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
        del extra, grad  # the gradient at params is `grads`
        need_objective("trust_ncg", value_fn, params)
        value_and_grad = value_and_grad_of(value_fn, params)
        evals = 0
        if value is None:
            value, grads = value_and_grad(params)
            evals = 1
        dtype = state.radius.dtype
        eps = jnp.finfo(dtype).eps
        # After a failed step the method restarts itself (the step protocol).
        restart = state.record.status == StepStatus.FAILED
        start_radius = jnp.where(restart, dtype_cap(initial_radius, dtype), state.radius)
        _, hvp = grad_and_hvp_fn(value_fn, params)
        limit = maxiter or min(max(20 * tree_size(params), 1), 1000)
        sub = steihaug_cg(hvp, grads, start_radius, rtol=_forcing_rtol(grads), maxiter=limit)
        trial_value, trial_grad = value_and_grad(tree_add_scaled(params, 1.0, sub.step))
        predicted = sub.model_decrease
        actual = actual_decrease(value, trial_value, grads, trial_grad, sub.step, predicted)
        finite = jnp.isfinite(trial_value) & jnp.isfinite(tree_inf_norm(trial_grad))
        ratio = jnp.where(finite & (predicted > 0), actual / jnp.where(predicted > 0,
                                                                         predicted, 1.0),
                          -jnp.inf)
        step_norm = tree_l2_norm(sub.step)
        radius = jnp.where(
            ratio < 0.25, 0.25 * step_norm,
            jnp.where((ratio > 0.75) & sub.hits_boundary,
                      jnp.minimum(2.0 * start_radius, dtype_cap(max_radius, dtype)),
                      start_radius))
        accept = ratio > eta
        collapsed = ~accept & (radius <= eps * jnp.maximum(tree_inf_norm(params), 1.0))
        record = StepRecord(
            value=jnp.where(accept, trial_value, value),
            grad=tree_select(accept, trial_grad, grads),
            step=jnp.where(accept, 1.0, 0.0).astype(dtype),
            slope=-predicted,
            status=jnp.where(collapsed, StepStatus.FAILED,
                             StepStatus.ACCEPTED).astype(jnp.int32),
            reset=jnp.zeros([], bool),
            work=state.record.work.add(nfev=1 + evals, njev=1, nhvp=sub.num_iters),
        )
        updates = tree_select(accept, sub.step, jax.tree.map(jnp.zeros_like, sub.step))
        return updates, TrustNCGState(
            radius=radius.astype(dtype),
            ratio=ratio.astype(dtype),
            accepted=accept,
            record=record,
        )

    return optax.GradientTransformationExtraArgs(init, update)


# --------------------------------------------------------------------- exact Newton


class NewtonState(NamedTuple):
    """State of :func:`scale_by_newton`; ``work.nhess`` counts dense Hessians formed."""

    work: Work
    min_eigenvalue: jax.Array  # smallest Hessian eigenvalue at the last step


def scale_by_newton(shift: float | None = None) -> optax.GradientTransformationExtraArgs:
    """Modified Newton direction ``-B⁻¹∇f`` from the dense Hessian (small ``n`` only).

    ``B = Q diag(max(|λ_i|, δ)) Qᵀ`` for the eigen-decomposition ``∇²f = Q Λ Qᵀ``: negative
    eigenvalues are flipped and tiny ones lifted to ``δ = shift`` (default
    ``√eps·max(1, max|λ|)``), so indefinite or singular Hessians still give a descent
    direction (N&W §3.4, eq. 3.41 and the absolute-value modification).
    """

    def init(params: PyTree) -> NewtonState:
        check_float_tree("params", params)
        dtype = jnp.result_type(*jax.tree.leaves(params))
        return NewtonState(Work.zeros("nhess"), jnp.zeros([], dtype))

    def update(grads, state, params=None, *, value_fn=None, **extra):
        del extra
        need_objective("scale_by_newton", value_fn, params)
        h = hessian_matrix(value_fn, params)
        g, unravel = ravel_pytree(grads)
        # (LAPACK has no half-precision eigh: half-precision problems decompose in float32)
        work_dtype = jnp.promote_types(g.dtype, jnp.float32)
        out_dtype, g, h = g.dtype, g.astype(work_dtype), h.astype(work_dtype)
        lam, q = jnp.linalg.eigh(0.5 * (h + h.T))
        scale = jnp.max(jnp.abs(lam), initial=0.0)
        delta = (jnp.sqrt(jnp.finfo(g.dtype).eps) * jnp.maximum(1.0, scale)
                 if shift is None else jnp.asarray(shift, g.dtype))
        modified = jnp.maximum(jnp.abs(lam), delta)
        direction = -(q @ ((q.T @ g) / modified))
        ok = jnp.all(jnp.isfinite(direction))
        direction = jnp.where(ok, direction, -g).astype(out_dtype)
        smallest = jnp.min(lam, initial=jnp.inf)  # (inf for an empty x: no eigenvalues)
        return unravel(direction), NewtonState(state.work.add(nhess=1),
                                               smallest.astype(state.min_eigenvalue.dtype))

    return optax.GradientTransformationExtraArgs(init, update)


def newton(
    shift: float | None = None,
    linesearch: optax.GradientTransformationExtraArgs | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Exact modified Newton with a strong-Wolfe search; see :func:`scale_by_newton`."""
    return optax.chain(scale_by_newton(shift), linesearch or scale_by_strong_wolfe())

