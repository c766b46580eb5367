"""Trust-region Newton-CG for bound constraints, after TRON (Lin & Moré 1999).

Problem: ``min f(x)`` subject to ``lower <= x <= upper`` (a box ``Ω``; ``±inf`` entries
for missing bounds). Write ``P`` for the projection onto ``Ω``, ``g = ∇f(x)``, ``B`` the
Hessian ``∇²f(x)`` (used only through products ``Bv``) and

    ψ(s) = gᵀs + ½ sᵀBs

for the quadratic model of ``f(x + s) − f(x)``. One update (a *major iteration*) is:

1. **Cauchy step** (Lin & Moré §2, eqs. 2.3–2.4). Along the projected gradient path
   ``s(α) = P(x − αg) − x`` find ``α > 0`` with

       ψ(s(α)) <= μ₀ gᵀs(α)        (sufficient decrease, μ₀ = 0.01)
       ‖s(α)‖  <= Δ                 (inside the trust region)

   by the paper's projected search: start from the previous iteration's ``α``; if it
   passes, extrapolate (``α ← 10α``) while the conditions keep holding and the path still
   moves (``α`` below the last breakpoint), keeping the last passing ``α``; if it fails,
   backtrack (``α ← α/10``) until they hold. So ``α`` is not needlessly short: either it
   reaches the end of the path or ``10α`` fails. Each trial costs one product ``Bs``.

2. **Minor iterations**. From the Cauchy point ``x₀ = x + s(α)``, repeat: fix the
   variables at a bound at ``xⱼ`` (the face of the current point; the *free* set ``F`` is
   the rest), run truncated (Steihaug) CG on the reduced model

       min_w  ∇ψ(sⱼ)_Fᵀ w + ½ wᵀ B_FF w     subject to  ‖sⱼ + w‖ <= Δ,  w_i = 0 (i ∉ F)

   (products ``Bv`` with the fixed entries of ``v`` zeroed, the output masked the same
   way; ``sⱼ = xⱼ − x``), then a projected search along ``w``: ``xⱼ₊₁ = P(xⱼ + βw)``
   with ``β = 1, ½, ¼, …`` until

       ψ(sⱼ₊₁) <= ψ(sⱼ) + μ₀ ∇ψ(sⱼ)ᵀ(sⱼ₊₁ − sⱼ),

   and at the latest ``β`` = the first breakpoint (the largest step with ``xⱼ + βw``
   feasible, where the model decreases along ``w`` — the paper's guarantee that the
   search ends). The minor iterations stop when the search met no new bound (then the CG
   step was taken whole: it converged, reached the trust-region boundary or found
   negative curvature), when the reduced model gradient is below the CG tolerance, or
   after ``max_minor`` of them. The model only decreases, so ``ψ(s) <= ψ(s(α))``: the
   step keeps the Cauchy decrease on which the paper's global convergence rests (§2).

3. **Trust-region test** (§2): ``f`` and ``∇f`` are evaluated once at ``x + s`` and
   ``ρ = (f(x) − f(x + s)) / (−ψ(s))``. The step is taken when ``ρ > η₀`` and the radius
   follows the paper's rules (Moré 1983) with ``σ₁ = ¼, σ₂ = ½, σ₃ = 4``,
   ``η₁ = ¼, η₂ = ¾``: with ``α*`` the minimizer of the quadratic interpolating
   ``f(x + ts)`` at ``t = 0`` (value and slope) and ``t = 1``,

   * ``ρ <= η₀``:       ``Δ ← min(max(α*, σ₁)‖s‖, σ₂Δ)``          (rejected)
   * ``ρ ∈ (η₀, η₁]``:  ``Δ ← max(σ₁Δ, min(α*‖s‖, σ₂Δ))``
   * ``ρ ∈ (η₁, η₂)``:  ``Δ ← max(σ₁Δ, min(α*‖s‖, σ₃Δ))``
   * ``ρ >= η₂``:       ``Δ ← max(Δ, min(α*‖s‖, σ₃Δ))``

   capped at ``max_radius``. A rejected step is an ordinary outcome: zero update, step 0,
   status ACCEPTED, the value and gradient at ``x`` kept (no evaluation repeated).

Differences from the paper, on purpose: no incomplete-Cholesky preconditioner (plain CG,
so no scaling ``D`` in the trust region); CG stops when the reduced model gradient is
below ``η·min(‖g_F‖, ‖∇ψ(s(α))_F‖)`` with the forcing term ``η = min(½, √‖P(x − g) − x‖)``
(N&W eq. 7.3; superlinear local convergence; ``F`` the Cauchy point's free variables — the
smaller norm, so that CG always improves on a Cauchy step that undershot); the CG trust
region is the shifted ball ``‖sⱼ + w‖ <= Δ``, so every step satisfies ``‖s‖ <= Δ``; at
most ``max_minor`` minor iterations (default 10; as each one meets a new bound, the
method itself makes at most ``n``); the projected search along ``w`` halves ``β``.
Where the predicted decrease is at the rounding level of ``f``, the actual one is
measured with the gradients (trapezoid rule, Conn, Gould & Toint 2000 §17.4.2), as in
:func:`jopt.trust_ncg`.

Without bounds (``lower = upper = None``) every variable is free, the path is the
steepest-descent ray and the projected search takes the whole CG step: a trust-region
Newton-CG whose Steihaug iteration starts at the Cauchy point.

Work: one evaluation of ``f`` and ``∇f`` per update (at ``x + s``), one linearization of
``∇f`` at ``x`` (counted as a gradient, ``njev``), and one Hessian-vector product per
Cauchy trial, per CG iteration and per projected-search trial (``nhvp``).

References:
  Lin, C.-J. & Moré, J. J. (1999). Newton's method for large bound-constrained
  optimization problems. SIAM J. Optim. 9(4), 1100–1127.
  Moré, J. J. (1983). Recent developments in algorithms and software for trust region
  methods. In Mathematical Programming: The State of the Art, Springer, 258–287.
  Steihaug, T. (1983). The conjugate gradient method and trust regions in large scale
  optimization. SIAM J. Numer. Anal. 20(3), 626–637.
  Conn, A. R., Gould, N. I. M. & Toint, Ph. L. (2000). Trust-Region Methods, SIAM.
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.: Alg. 7.2
  (CG-Steihaug), eq. 7.3 (forcing terms).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jopt._checks import check_float_tree, check_positive_int
from jopt.box import active_set, clip, max_step, projected_gradient
from jopt.calculus import grad_and_hvp_fn, value_and_grad_of
from jopt.step import StepRecord, StepStatus
from jopt.transforms.newton import actual_decrease, dtype_cap, need_objective, tree_size
from jopt.transforms.projection import broadcast_box, feasible_update
from jopt.tree import (
    tree_add_scaled,
    tree_inf_norm,
    tree_l2_norm,
    tree_select,
    tree_vdot,
    tree_vdots,
)

PyTree = Any
MatVec = Callable[[PyTree], PyTree]

__all__ = ["TronState", "trust_region_newton"]

MU0 = 0.01  # sufficient decrease in the projected searches (Lin & Moré's μ₀)
ETA1, ETA2 = 0.25, 0.75  # ratio thresholds of the radius update
SIGMA1, SIGMA2, SIGMA3 = 0.25, 0.5, 4.0  # radius factors
EXTRAPOLATE, INTERPOLATE = 10.0, 0.1  # Cauchy search factors
CAUCHY_TRIALS = 40  # product budget of one Cauchy search (a normal one makes 1-3)
SEARCH_TRIALS = 20  # product budget of one search along a CG step (then: the breakpoint)


# -------------------------------------------------------------------- box helpers


def _free(x: PyTree, lower: PyTree | None, upper: PyTree | None) -> PyTree:
    """1 where ``x`` is strictly inside its bounds (a free variable), else 0, in ``x``'s
    dtypes."""
    if lower is None and upper is None:
        return jax.tree.map(jnp.ones_like, x)
    return jax.tree.map(lambda at, a: (~at).astype(a.dtype), active_set(x, lower, upper), x)


def _masked(mask: PyTree, v: PyTree) -> PyTree:
    return jax.tree.map(lambda m, a: (m * a).astype(a.dtype), mask, v)


def _last_breakpoint(x: PyTree, d: PyTree, lower: PyTree | None,
                     upper: PyTree | None) -> jax.Array:
    """The ``α`` beyond which ``P(x + αd)`` stops moving: the largest breakpoint of the
    projected path, ``inf`` when an entry moves towards an infinite bound, 0 when none
    moves."""
    dtype = jnp.result_type(*jax.tree.leaves(x))
    if lower is None and upper is None:
        return jnp.asarray(jnp.inf, dtype)

    def leaf(a, di, lo, hi):
        room = jnp.where(di > 0, hi - a, jnp.where(di < 0, lo - a, 0.0))
        ratio = jnp.where(di != 0, room / jnp.where(di != 0, di, 1.0), 0.0)
        return jnp.max(jnp.maximum(ratio, 0.0), initial=0.0)

    return jnp.max(jnp.stack(jax.tree.leaves(jax.tree.map(leaf, x, d, lower, upper))))


def _path_step(x: PyTree, d: PyTree, alpha: jax.Array, lower: PyTree | None,
               upper: PyTree | None) -> tuple[PyTree, PyTree]:
    """``(P(x + αd), P(x + αd) − x)``."""
    point = clip(tree_add_scaled(x, alpha, d), lower, upper)
    return point, jax.tree.map(jnp.subtract, point, x)


# ---------------------------------------------------------------- Cauchy step (§2)


class _Cauchy(NamedTuple):
    i: jax.Array  # trials made (one product each)
    alpha: jax.Array  # next trial
    mode: jax.Array  # 0: first trial, 1: extrapolating, 2: backtracking
    done: jax.Array
    found: jax.Array  # some trial passed
    best_alpha: jax.Array
    point: PyTree  # P(x − α g) at the best passing α (x when none passed)
    bs: PyTree  # B (point − x)
    psi: jax.Array  # ψ(point − x)


def _cauchy_step(hvp: MatVec, x: PyTree, g: PyTree, lower: PyTree | None,
                 upper: PyTree | None, radius: jax.Array, alpha0: jax.Array) -> _Cauchy:
    """The generalized Cauchy step: the projected search of Lin & Moré §2 for an ``α``
    with ``ψ(s(α)) <= μ₀ gᵀs(α)`` and ``‖s(α)‖ <= Δ``, ``s(α) = P(x − αg) − x``."""
    dtype = radius.dtype
    d = jax.tree.map(jnp.negative, g)
    last = _last_breakpoint(x, d, lower, upper)
    # ‖s‖ = Δ to rounding passes (a first trial α = Δ/‖g‖ lands on the boundary).
    reach = radius * (1 + 16 * jnp.finfo(dtype).eps)

    def body(c: _Cauchy) -> _Cauchy:
        point, s = _path_step(x, d, c.alpha, lower, upper)
        bs = hvp(s)
        gs, sbs, ss = tree_vdots([(g, s), (s, bs), (s, s)])
        psi = gs + 0.5 * sbs
        ok = (psi <= MU0 * gs) & (jnp.sqrt(ss) <= reach) & jnp.isfinite(psi)
        extrapolating = ((c.mode == 0) & ok) | (c.mode == 1)
        done = jnp.where(extrapolating, ~ok | (c.alpha >= last), ok) | (c.i + 1 >= CAUCHY_TRIALS)
        return _Cauchy(
            i=c.i + 1,
            alpha=jnp.where(extrapolating, EXTRAPOLATE, INTERPOLATE) * c.alpha,
            mode=jnp.where(extrapolating, 1, 2).astype(jnp.int32),
            done=done,
            found=c.found | ok,
            best_alpha=jnp.where(ok, c.alpha, c.best_alpha),
            point=tree_select(ok, point, c.point),
            bs=tree_select(ok, bs, c.bs),
            psi=jnp.where(ok, psi, c.psi),
        )

    zero = jnp.zeros([], dtype)
    init = _Cauchy(jnp.zeros([], jnp.int32), alpha0.astype(dtype), jnp.zeros([], jnp.int32),
                   jnp.zeros([], bool), jnp.zeros([], bool), zero, x,
                   jax.tree.map(jnp.zeros_like, x), zero)
    return jax.lax.while_loop(lambda c: ~c.done, body, init)


# ------------------------------------------------------ Steihaug CG in a shifted ball


class _CGCarry(NamedTuple):
    i: jax.Array
    w: PyTree  # the step from the minor iterate
    r: PyTree  # the model gradient at w: r0 + B w
    d: PyTree
    rr: jax.Array
    decrease: jax.Array  # −(r0ᵀw + ½wᵀBw) >= 0
    boundary: jax.Array
    negative: jax.Array


def _tau_to_sphere(yy: jax.Array, yd: jax.Array, dd: jax.Array,
                   radius2: jax.Array) -> jax.Array:
    """The root ``τ >= 0`` of ``‖y + τd‖² = Δ²`` for ``‖y‖ <= Δ`` (cancellation-free)."""
    c = jnp.minimum(yy - radius2, 0.0)
    root = jnp.sqrt(jnp.maximum(yd * yd - dd * c, 0.0))
    pos = yd > 0
    num = jnp.where(pos, -c, root - yd)
    den = jnp.where(pos, yd + root, dd)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _steihaug_shifted(matvec: MatVec, r0: PyTree, center: PyTree, radius: jax.Array,
                      tol: jax.Array, maxiter: int) -> _CGCarry:
    """Truncated CG for ``min r0ᵀw + ½wᵀBw`` subject to ``‖center + w‖ <= Δ``.

    Steihaug's iteration (N&W Alg. 7.2) from ``w = 0`` with the trust region centred at
    ``-center``: it stops on the residual test ``‖r0 + Bw‖ <= tol``, on non-positive
    curvature or on leaving the ball (then at the sphere, ``τ`` by
    :func:`_tau_to_sphere`), or after ``maxiter`` products. Every iterate lowers the
    model (the CG directions satisfy ``rᵀd = −‖r‖² < 0``).
    """
    radius2 = radius * radius

    def cond(c: _CGCarry) -> jax.Array:
        return (c.i < maxiter) & (jnp.sqrt(c.rr) > tol) & ~c.boundary

    def body(c: _CGCarry) -> _CGCarry:
        bd = matvec(c.d)
        y = jax.tree.map(jnp.add, center, c.w)
        dbd, yy, yd, dd, rd = tree_vdots([(c.d, bd), (y, y), (y, c.d), (c.d, c.d), (c.r, c.d)])
        alpha = c.rr / jnp.where(dbd > 0, dbd, 1.0)
        negative = ~(dbd > 0) | ~jnp.isfinite(alpha)
        alpha = jnp.where(negative, 0.0, alpha)
        crosses = yy + 2 * alpha * yd + alpha * alpha * dd >= radius2
        boundary = negative | crosses
        tau = jnp.where(boundary, _tau_to_sphere(yy, yd, dd, radius2), alpha)
        r = tree_add_scaled(c.r, tau, bd)
        rr = tree_vdot(r, r)
        beta = jnp.where(c.rr > 0, rr / jnp.where(c.rr > 0, c.rr, 1.0), 0.0)
        return _CGCarry(
            i=c.i + 1,
            w=tree_add_scaled(c.w, tau, c.d),
            r=r,
            d=tree_add_scaled(jax.tree.map(jnp.negative, r), beta, c.d),
            rr=rr,
            decrease=c.decrease - (tau * rd + 0.5 * tau * tau * dbd),
            boundary=boundary,
            negative=negative,
        )

    rr0 = tree_vdot(r0, r0)
    init = _CGCarry(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, r0), r0,
                    jax.tree.map(jnp.negative, r0), rr0, jnp.zeros([], rr0.dtype),
                    jnp.zeros([], bool), jnp.zeros([], bool))
    return jax.lax.while_loop(cond, body, init)


# ---------------------------------------------------------- projected search along w


class _Search(NamedTuple):
    i: jax.Array
    beta: jax.Array
    done: jax.Array
    ok: jax.Array
    point: PyTree
    dgpsi: PyTree  # B (new point − old point)
    dpsi: jax.Array  # ψ change


def _projected_search(hvp: MatVec, point: PyTree, w: PyTree, gpsi: PyTree,
                      lower: PyTree | None, upper: PyTree | None, first_break: jax.Array,
                      skip: jax.Array) -> _Search:
    """``P(point + βw)`` for ``β = 1, ½, …`` down to ``first_break`` (the largest
    feasible step along ``w``), the first with ``Δψ <= μ₀ ∇ψᵀ(new − old)``; at
    ``first_break`` a model decrease is enough. ``skip``: no search (the caller takes
    the whole step)."""
    dtype = first_break.dtype

    def body(c: _Search) -> _Search:
        new, t = _path_step(point, w, c.beta, lower, upper)
        bt = hvp(t)
        gt, tbt = tree_vdots([(gpsi, t), (t, bt)])
        dpsi = gt + 0.5 * tbt
        at_break = c.beta <= first_break
        ok = ((dpsi <= MU0 * gt) | (at_break & (dpsi <= 0))) & jnp.isfinite(dpsi)
        last_try = c.i + 2 >= SEARCH_TRIALS
        beta = jnp.where(last_try, first_break, jnp.maximum(0.5 * c.beta, first_break))
        return _Search(c.i + 1, beta.astype(dtype), ok | at_break | (c.i + 1 >= SEARCH_TRIALS),
                       ok, tree_select(ok, new, c.point), tree_select(ok, bt, c.dgpsi),
                       jnp.where(ok, dpsi, c.dpsi))

    init = _Search(jnp.zeros([], jnp.int32), jnp.ones([], dtype), skip, jnp.zeros([], bool),
                   point, jax.tree.map(jnp.zeros_like, gpsi), jnp.zeros([], dtype))
    return jax.lax.while_loop(lambda c: ~c.done, body, init)


# --------------------------------------------------------------------- minor iterations


class _Minor(NamedTuple):
    j: jax.Array
    point: PyTree  # x + s_j, in the box
    gpsi: PyTree  # ∇ψ(s_j) = g + B s_j (exact on the free variables)
    psi: jax.Array  # ψ(s_j)
    done: jax.Array
    nhvp: jax.Array


def _minor_iterations(hvp: MatVec, x: PyTree, cauchy: _Cauchy, g: PyTree,
                      lower: PyTree | None, upper: PyTree | None, radius: jax.Array,
                      rtol: jax.Array, maxiter: int, max_minor: int) -> _Minor:
    """Lin & Moré's minor iterations from the Cauchy point: CG on the face of the current
    point, then a projected search, until no new bound is met (see the module doc)."""
    gpsi0 = jax.tree.map(jnp.add, g, cauchy.bs)
    face = _free(cauchy.point, lower, upper)
    tol = rtol * jnp.minimum(tree_l2_norm(_masked(face, g)), tree_l2_norm(_masked(face, gpsi0)))

    def body(m: _Minor) -> _Minor:
        free = _free(m.point, lower, upper)
        reduced = lambda v: _masked(free, hvp(_masked(free, v)))  # noqa: E731
        center = jax.tree.map(jnp.subtract, m.point, x)
        cg = _steihaug_shifted(reduced, _masked(free, m.gpsi), center, radius, tol, maxiter)
        first_break = max_step(m.point, cg.w, lower, upper).astype(radius.dtype)
        whole = first_break >= 1  # the CG step stays in the box: no search, no product
        search = _projected_search(hvp, m.point, cg.w, m.gpsi, lower, upper, first_break,
                                   whole)
        point = tree_select(whole, tree_add_scaled(m.point, 1.0, cg.w), search.point)
        gpsi = tree_select(whole, jax.tree.map(lambda f, r, a: jnp.where(f > 0, r, a),
                                               free, cg.r, m.gpsi),
                           jax.tree.map(jnp.add, m.gpsi, search.dgpsi))
        psi = m.psi + jnp.where(whole, -cg.decrease, search.dpsi)
        point = clip(point, lower, upper)  # (exact bounds for the variables that hit one)
        new_free = _free(point, lower, upper)
        shrank = tree_inf_norm(jax.tree.map(jnp.subtract, free, new_free)) > 0
        small = tree_l2_norm(_masked(new_free, gpsi)) <= tol
        moved = whole | search.ok
        return _Minor(m.j + 1, point, gpsi, psi,
                      ~shrank | small | ~moved | (m.j + 1 >= max_minor),
                      m.nhvp + cg.i + search.i)

    init = _Minor(jnp.zeros([], jnp.int32), cauchy.point, gpsi0, cauchy.psi,
                  ~cauchy.found, jnp.zeros([], jnp.int32))
    return jax.lax.while_loop(lambda m: ~m.done, body, init)


# ----------------------------------------------------------- radius update (§2)


def _new_radius(ratio: jax.Array, radius: jax.Array, step_norm: jax.Array, slope: jax.Array,
                actual: jax.Array, eta: float) -> jax.Array:
    """Lin & Moré's radius rules with Moré's (1983) interpolation (module doc, step 3).

    ``α*`` minimizes the quadratic through ``φ(0) = f(x)``, ``φ'(0) = gᵀs`` and
    ``φ(1) = f(x + s) = f(x) − actual``; without positive curvature it is ``σ₃``.
    """
    curvature = -actual - slope  # φ(1) − φ(0) − φ'(0)
    alpha = jnp.where(curvature > 0, -0.5 * slope / jnp.where(curvature > 0, curvature, 1.0),
                      SIGMA3)
    alpha = jnp.where(jnp.isfinite(alpha), alpha, SIGMA1)
    interp = alpha * step_norm
    return jnp.select(
        [~(ratio > eta), ratio <= ETA1, ratio < ETA2],
        [jnp.minimum(jnp.maximum(alpha, SIGMA1) * step_norm, SIGMA2 * radius),
         jnp.maximum(SIGMA1 * radius, jnp.minimum(interp, SIGMA2 * radius)),
         jnp.maximum(SIGMA1 * radius, jnp.minimum(interp, SIGMA3 * radius))],
        jnp.maximum(radius, jnp.minimum(interp, SIGMA3 * radius)),
    )


# ------------------------------------------------------------------- transform


class TronState(NamedTuple):
    """State of :func:`trust_region_newton`.

    Attributes:
      radius: the trust radius ``Δ`` for the next update (0: start from ``‖P(x − g) − x‖``
        at the next update, as after a restart).
      cauchy_alpha: ``α`` of the last Cauchy step, the next search's first trial (0: start
        from ``Δ/‖P(x − g) − x‖``).
      ratio: ``ρ`` of the last trial step.
      accepted: the last trial step was taken.
      minor_iters: minor iterations (faces visited) in the last update.
      record: the :class:`jopt.StepRecord` (value and gradient at the current point,
        evaluations ``nfev``, linearizations ``njev`` and products ``nhvp``).
    """

    radius: jax.Array
    cauchy_alpha: jax.Array
    ratio: jax.Array
    accepted: jax.Array
    minor_iters: jax.Array
    record: StepRecord


def trust_region_newton(
    initial_radius: float | None = None,
    max_radius: float = 1e10,
    eta: float = 1e-3,
    maxiter: int | None = None,
    max_minor: int = 10,
) -> optax.GradientTransformationExtraArgs:
    """Projected trust-region Newton-CG for ``lower <= x <= upper`` (TRON; Lin & Moré 1999).

    Each update takes a Cauchy step along the projected gradient path, improves it by
    minor iterations of Steihaug CG on the free variables with projected searches, and
    accepts or rejects it by the trust-region ratio test; the module documentation has
    the mathematics and what differs from the paper. Curvature comes from Hessian-vector
    products of ``value_fn`` (``∇f`` linearized once per update). Every iterate stays in
    the box; without bounds it is a trust-region Newton-CG method.

    ``update(grads, state, params, *, value=None, value_fn, lower=None, upper=None)``:
    ``value_fn`` is the objective (required), ``value`` its value at ``params`` (evaluated
    and counted when missing), ``lower`` / ``upper`` the bounds (``None``: unbounded;
    a number or a pytree like ``params``, ``±inf`` where there is none; they may be
    traced). ``params`` must lie in the box. The state's ``record`` (a
    :class:`jopt.StepRecord`) holds the value and gradient after the step, ``step`` 1 (taken)
    or 0 (rejected), ``slope = ψ(s)`` (minus the predicted decrease), and
    ``status = FAILED`` when the radius collapsed below rounding of ``x`` with no step
    found; the next update then restarts from the initial radius.

    Args:
      initial_radius: the first trust radius, also after a restart (default
        ``‖P(x₀ − ∇f(x₀)) − x₀‖₂``: the paper's ``‖∇f(x₀)‖`` in its projected form).
      max_radius: the largest radius.
      eta: the acceptance threshold ``η₀`` on ``ρ``, in ``[0, 1/4)`` (paper: ``10⁻³``).
      maxiter: CG iterations per minor iteration (default ``20·n`` capped at 1000).
      max_minor: minor iterations per update (faces visited; default 10).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`TronState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jopt.transforms.tron import trust_region_newton
      >>> fun = lambda x: jnp.sum((x - jnp.array([2.0, -1.0, 0.5])) ** 2)
      >>> lower, upper = jnp.zeros(3), jnp.ones(3)
      >>> tx = trust_region_newton()
      >>> @jax.jit
      ... def step(x, state):
      ...     u, state = tx.update(jax.grad(fun)(x), state, x, value=fun(x), value_fn=fun,
      ...                          lower=lower, upper=upper)
      ...     return optax.apply_updates(x, u), state
      >>> x = jnp.full(3, 0.5)
      >>> state = tx.init(x)
      >>> for _ in range(3):
      ...     x, state = step(x, state)
      >>> x.tolist(), int(state.record.work.nfev)
      ([1.0, 0.0, 0.5], 3)
    """
    if initial_radius is not None and not 0 < initial_radius <= max_radius:
        raise ValueError(f"Need 0 < `initial_radius` <= `max_radius`, got {initial_radius}, "
                         f"{max_radius}.")
    if not max_radius > 0:
        raise ValueError(f"`max_radius` must be positive, got {max_radius}.")
    if not 0 <= eta < 0.25:
        raise ValueError(f"`eta` must lie in [0, 0.25), got {eta}.")
    if maxiter is not None:
        check_positive_int("maxiter", maxiter)
    check_positive_int("max_minor", max_minor)

    def init(params: PyTree) -> TronState:
        check_float_tree("params", params)
        dtype = jnp.result_type(*jax.tree.leaves(params))
        radius = 0.0 if initial_radius is None else dtype_cap(initial_radius, dtype)
        zero = jnp.zeros([], dtype)
        return TronState(jnp.asarray(radius, dtype), zero, zero, jnp.zeros([], bool),
                         jnp.zeros([], jnp.int32),
                         StepRecord.initial(params, ("nfev", "njev", "nhvp")))

    def update(grads, state, params=None, *, value=None, value_fn=None, lower=None,
               upper=None, **extra):
        del extra
        need_objective("trust_region_newton", value_fn, params)
        lower, upper = broadcast_box(params, lower, upper)
        value_and_grad = value_and_grad_of(value_fn, params)
        evals = 0
        if value is None:
            value, grads = value_and_grad(params)
            evals = 1
        dtype = state.radius.dtype
        eps = jnp.finfo(dtype).eps
        pg_norm = tree_l2_norm(projected_gradient(params, grads, lower, upper))
        default_radius = jnp.where(pg_norm > 0, pg_norm, 1.0) if initial_radius is None \
            else dtype_cap(initial_radius, dtype)
        # After a failed step the method restarts itself (the step protocol).
        restart = (state.record.status == StepStatus.FAILED) | ~(state.radius > 0)
        radius = jnp.minimum(jnp.where(restart, default_radius, state.radius),
                             dtype_cap(max_radius, dtype)).astype(dtype)
        alpha0 = jnp.where(restart | ~(state.cauchy_alpha > 0),
                           radius / jnp.where(pg_norm > 0, pg_norm, 1.0), state.cauchy_alpha)

        _, hvp = grad_and_hvp_fn(value_fn, params)
        cauchy = _cauchy_step(hvp, params, grads, lower, upper, radius, alpha0)
        limit = maxiter or min(max(20 * tree_size(params), 1), 1000)
        rtol = jnp.minimum(0.5, jnp.sqrt(pg_norm))
        minor = _minor_iterations(hvp, params, cauchy, grads, lower, upper, radius, rtol,
                                  limit, max_minor)

        step = feasible_update(params, minor.point, lower, upper)
        trial_value, trial_grad = value_and_grad(optax.apply_updates(params, step))
        predicted = -minor.psi
        actual = actual_decrease(value, trial_value, grads, trial_grad, step, predicted)
        finite = jnp.isfinite(trial_value) & jnp.isfinite(tree_inf_norm(trial_grad))
        ratio = jnp.where(finite & (predicted > 0),
                          actual / jnp.where(predicted > 0, predicted, 1.0), -jnp.inf)
        accept = ratio > eta
        step_norm = tree_l2_norm(step)
        new_radius = _new_radius(ratio, radius, step_norm, tree_vdot(grads, step),
                                 jnp.where(finite, actual, -jnp.inf), eta)
        new_radius = jnp.minimum(new_radius, dtype_cap(max_radius, dtype))
        collapsed = ~accept & (new_radius <= eps * jnp.maximum(tree_inf_norm(params), 1.0))
        record = StepRecord(
            value=jnp.where(accept, trial_value, value),
            grad=tree_select(accept, trial_grad, grads),
            step=jnp.where(accept, 1.0, 0.0).astype(dtype),
            slope=minor.psi.astype(dtype),
            status=jnp.where(collapsed, StepStatus.FAILED,
                             StepStatus.ACCEPTED).astype(jnp.int32),
            reset=jnp.zeros([], bool),
            work=state.record.work.add(nfev=1 + evals, njev=1,
                                       nhvp=cauchy.i + minor.nhvp),
        )
        updates = tree_select(accept, step, jax.tree.map(jnp.zeros_like, step))
        return updates, TronState(
            radius=new_radius.astype(dtype),
            cauchy_alpha=jnp.where(cauchy.found, cauchy.best_alpha, 0.0).astype(dtype),
            ratio=ratio.astype(dtype),
            accepted=accept,
            minor_iters=minor.j,
            record=record,
        )

    return optax.GradientTransformationExtraArgs(init, update)
