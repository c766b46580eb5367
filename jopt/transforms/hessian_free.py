"""Hessian-free optimization (Martens 2010): damped Gauss-Newton steps by truncated CG.

Each update minimises the damped quadratic model

    q(p) = gᵀp + ½ pᵀ(G + λI) p,        g = ∇f(x),

by (preconditioned) conjugate gradients on pytree vectors, where ``G`` is the generalized
Gauss-Newton matrix ``Jᵀ H_L J`` of a ``model_fn`` / ``loss_fn`` split (products from
:func:`jopt.gnvp_fn`: one linearization of the model per update, one JVP + loss-HVP +
transposed JVP per product) and ``λ`` the Tikhonov damping. The pieces of Martens'
Algorithm 1 are small pure functions below:

* CG warm-started from the previous update's final CG iterate decayed by ``ζ = 0.95``
  (§4.5); a warm start with ``q(ζp) >= 0`` is replaced by ``p = 0`` (a safeguard added
  here, so CG never starts worse than the zero step);
* the relative-progress stopping rule (§4.4): stop at iteration ``i > k`` when
  ``(q_i − q_{i−k}) / q_i < k·ε`` with ``k = max(10, ⌊i/10⌋)``; ``q_i`` comes from the CG
  recurrences for free, ``q(p) = ½ pᵀ(r + g)`` with ``r = (G + λI)p + g``;
* CG-iterate backtracking (§4.6): iterates at iterations ``⌈1.3^j⌉`` are kept in a
  fixed-size buffer; starting from the final iterate, earlier ones are tried while the
  objective keeps decreasing (one evaluation per loop step);
* the Levenberg-Marquardt rule (§4.1): ``ρ = (f(x+p) − f(x)) / (q̃(p) − q̃(0))``;
  ``λ ← 3/2·λ`` when ``ρ < 1/4``, ``λ ← 2/3·λ`` when ``ρ > 3/4``. ``q̃`` is the *undamped*
  model ``gᵀp + ½pᵀGp`` (the trust-region reading of the damping: ``λ`` is the multiplier
  of an implicit trust region, not part of the model of ``f``);
* an Armijo backtracking line search on the chosen step, the simple search of Martens &
  Sutskever (2012): ``α ∈ {1, 0.8, 0.8², …}``, ``c = 10⁻²`` (it shares one ``lax`` loop
  with the CG-iterate backtracking, so under ``vmap`` a batch pays the longest member's
  evaluations once, not the sum of two maxima);
* an optional diagonal preconditioner (§4.7) ``M = (diag(Σ_i ∇f_i²) + λ)^ξ``, ``ξ = 0.75``.

Every objective evaluation is a ``value_and_grad`` (so the gradient at the accepted point
is known without a further pass, and the driver's ``nfev``/``njev`` stay honest); all loops
make exactly one evaluation or one curvature product per step and decide by ``jnp.where``,
so the transform is jit- and vmap-friendly.

References:
  Martens, J. (2010). Deep learning via Hessian-free optimization. ICML, §4.1 (damping,
  Levenberg-Marquardt rule), §4.2 (Gauss-Newton products), §4.4 (CG termination), §4.5
  (sharing information across iterations), §4.6 (CG iteration backtracking), §4.7
  (preconditioning), Algorithm 1.
  Martens, J. & Sutskever, I. (2012). Training deep and recurrent networks with
  Hessian-free optimization. In Neural Networks: Tricks of the Trade, 2nd ed., Springer.
  Schraudolph, N. N. (2002). Fast curvature matrix-vector products for second-order
  gradient descent. Neural Computation 14(7).
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.: Alg. 3.1
  (backtracking), Alg. 5.3 (preconditioned CG), §4.1 and §10.3 (ρ, Levenberg-Marquardt).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jopt._checks import (
    check_float_tree,
    check_in_range,
    check_nonnegative,
    check_positive_int,
    check_same_structure,
    is_concrete_number,
)
from jopt.step import StepRecord, StepStatus, step_status
from jopt.transforms.martens import (
    MartensCGResult,
    StepChoice,
    cast_like,
    curvature_matvec,
    diagonal_preconditioner,
    levenberg_marquardt,
    martens_cg,
    reduction_ratio,
    save_iterations,
    select_step,
    tree_dtype,
    value_and_grad_as,
)
from jopt.tree import (
    tree_inf_norm,
    tree_scale,
    tree_select,
    tree_vdot,
)

PyTree = Any

__all__ = ["HessianFreeState", "MartensCGResult", "StepChoice", "diagonal_preconditioner",
           "hessian_free", "levenberg_marquardt", "martens_cg", "save_iterations",
           "select_step"]


class HessianFreeState(NamedTuple):
    """State of :func:`hessian_free`.

    Attributes:
      damping: current Tikhonov damping ``λ``.
      prev_solution: final CG iterate of the last update (the warm start, decayed by ``ζ``).
      cg_iters: CG iterations of the last update.
      ratio: reduction ratio ``ρ`` of the last update (``-inf`` for a non-finite trial).
      accepted: the last update took a nonzero step.
      record: value and gradient at the new point, step status and cumulative work
        (curvature-vector products, linearizations, evaluations): a
        :class:`jopt.StepRecord`, which ``jopt.minimize`` reads.
    """

    damping: jax.Array
    prev_solution: PyTree
    cg_iters: jax.Array
    ratio: jax.Array
    accepted: jax.Array
    record: StepRecord


# ------------------------------------------------------------------- the transform


def _resolve(name: str, given: Any, default: Any) -> Any:
    if given is not None and not callable(given):
        raise TypeError(f"`{name}` must be a function, got {type(given).__name__}.")
    return given if given is not None else default


def _objectives(model_fn, loss_fn, value_fn):
    """Value function and curvature source; clear errors for incomplete objectives."""
    if (model_fn is None) != (loss_fn is None):
        have, missing = ("model_fn", "loss_fn") if loss_fn is None else ("loss_fn", "model_fn")
        raise ValueError(
            f"hessian_free got `{have}` but no `{missing}`: the Gauss-Newton products need "
            f"both (pass them to `hessian_free(...)` or as extra arguments of `update`), or "
            f"neither (then the Hessian of `value_fn` is used).")
    if model_fn is None and value_fn is None:
        raise ValueError(
            "hessian_free needs the objective: pass `model_fn` and `loss_fn` (to "
            "`hessian_free(model_fn, loss_fn)` or as extra arguments of `update`) for "
            "Gauss-Newton products, or `value_fn=fun` to `update` for damped Hessian "
            "products.")
    if value_fn is None:
        def value_fn(p):
            return loss_fn(model_fn(p))
    return value_fn


def _check_options(damping, max_cg_iters, cg_tol, warm_start_decay, precondition_exponent,
                   min_damping, max_damping, armijo_c1, armijo_shrink,
                   max_linesearch_steps) -> None:
    """:func:`hessian_free`'s argument checks (each error names the argument)."""
    check_nonnegative("damping", damping)
    check_positive_int("max_cg_iters", max_cg_iters)
    check_nonnegative("cg_tol", cg_tol)
    check_in_range("warm_start_decay", warm_start_decay, 0.0, 1.0, hi_open=False)
    check_in_range("precondition_exponent", precondition_exponent, 0.0, 1.0, hi_open=False)
    check_nonnegative("min_damping", min_damping)
    if not max_damping >= min_damping:
        raise ValueError(f"Need `min_damping` <= `max_damping`, got {min_damping}, "
                         f"{max_damping}.")
    check_in_range("armijo_c1", armijo_c1, 0.0, 1.0)
    check_in_range("armijo_shrink", armijo_shrink, 0.0, 1.0)
    if not (armijo_c1 > 0 and armijo_shrink > 0):
        raise ValueError(f"`armijo_c1` and `armijo_shrink` must lie in (0, 1), got "
                         f"{armijo_c1}, {armijo_shrink}.")
    check_positive_int("max_linesearch_steps", max_linesearch_steps)


def hessian_free(
    model_fn: Callable[[PyTree], PyTree] | None = None,
    loss_fn: Callable[[PyTree], jax.Array] | None = None,
    *,
    damping: float | jax.Array = 1.0,
    max_cg_iters: int = 250,
    cg_tol: float | jax.Array = 5e-4,
    warm_start_decay: float = 0.95,
    backtrack_cg: bool = True,
    precondition: bool = False,
    precondition_exponent: float = 0.75,
    adapt_damping: bool = True,
    min_damping: float = 0.0,
    max_damping: float = math.inf,
    armijo_c1: float = 1e-2,
    armijo_shrink: float = 0.8,
    max_linesearch_steps: int = 60,
) -> optax.GradientTransformationExtraArgs:
    """Hessian-free optimization: Martens (2010) Algorithm 1 as one transform.

    Each update runs truncated CG on the damped Gauss-Newton model (see the module
    docstring for the rules and their sections in the paper), picks the best kept CG
    iterate, updates the damping ``λ`` by the Levenberg-Marquardt rule, and scales the
    chosen step by an Armijo backtracking search. The returned updates are the full step
    ``α·p``. A step for which no trial length decreases ``f`` enough is rejected: zero
    updates, ``λ`` raised (its ``ρ < 1/4``), and the next update retries with the larger
    damping; ``record.status`` is ``FAILED`` only when the rejected step was already
    negligible next to ``x`` (no progress possible at this precision).

    Objective. Give ``model_fn: params -> z`` and ``loss_fn: z -> scalar`` (the loss
    convex in ``z`` makes ``G`` positive semi-definite) either here (full-batch problems;
    then ``jopt.minimize(lambda w: loss_fn(model_fn(w)), x0, method=hessian_free(model_fn,
    loss_fn))`` works) or as extra arguments of every ``update`` call (minibatch training,
    where they close over the batch): ``update(grads, state, params, value=f,
    model_fn=..., loss_fn=...)``; ``update``'s ones win. ``value_fn`` (extra argument) is the
    objective evaluated in the backtracking and line search; by default
    ``loss_fn ∘ model_fn``. Without a model/loss split, ``value_fn`` alone gives damped
    *Hessian*-vector products (:func:`jopt.hvp_fn`): Hessian-free Newton, where CG stops
    at the first direction of non-positive damped curvature and the damping grows until
    ``H + λI`` is positive along the CG directions. Neither given: ``ValueError``.

    Costs per update, counted in ``record.work``: one linearization of the model (or of
    the gradient, ``njev``), ``num_matvecs`` curvature products (``nhvp``), and one
    ``value_and_grad`` per backtracking/line-search trial (``nfev``; plus one when
    ``value`` is not passed to ``update``). Memory: the kept CG iterates,
    ``len(save_iterations(max_cg_iters))`` parameter-sized vectors (20 for 250), plus a
    handful of CG work vectors.

    Args:
      model_fn, loss_fn: the Gauss-Newton split (see above).
      damping: initial Tikhonov damping ``λ >= 0`` (may be traced).
      max_cg_iters: CG iteration cap per update (Python int >= 1).
      cg_tol: ``ε`` of Martens' relative-progress rule (§4.4; paper: 5e-4).
      warm_start_decay: ``ζ`` in ``[0, 1]`` (§4.5; 0 disables the warm start and saves the
        product computing its residual).
      backtrack_cg: try kept CG iterates (§4.6); False evaluates only the final one.
      precondition: use the diagonal preconditioner of §4.7. Its diagonal is the extra
        argument ``grad_sq`` of ``update`` (sum of squared per-example gradients, e.g.
        ``jnp.sum(jax.vmap(jax.grad(per_example_loss))(...)**2, 0)``) when given, else the
        square of the batch gradient ``g ⊙ g`` (a one-sample proxy: a crude Fisher
        diagonal, but cheap).
      precondition_exponent: ``ξ`` in ``[0, 1]`` (paper: 0.75).
      adapt_damping: apply the Levenberg-Marquardt rule (False: ``λ`` stays fixed).
      min_damping, max_damping: clip range of ``λ`` (``damping = 0`` with
        ``min_damping = 0`` stays 0: undamped Gauss-Newton).
      armijo_c1, armijo_shrink, max_linesearch_steps: the Armijo search (paper: 1e-2,
        0.8, 60 trials).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`HessianFreeState`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> X, y = jnp.ones((8, 3)), jnp.arange(8.0)
      >>> model = lambda w: X @ w
      >>> loss = lambda z: 0.5 * jnp.mean((z - y) ** 2)
      >>> res = jopt.minimize(lambda w: loss(model(w)), jnp.zeros(3),
      ...                     method=jopt.hessian_free(model, loss))
    """
    model_fn0 = _resolve("model_fn", model_fn, None)
    loss_fn0 = _resolve("loss_fn", loss_fn, None)
    _check_options(damping, max_cg_iters, cg_tol, warm_start_decay, precondition_exponent,
                   min_damping, max_damping, armijo_c1, armijo_shrink, max_linesearch_steps)
    no_warm_start = is_concrete_number(warm_start_decay) and float(warm_start_decay) == 0

    def init(params: PyTree) -> HessianFreeState:
        check_float_tree("params", params)
        dtype = tree_dtype(params)
        return HessianFreeState(
            damping=jnp.asarray(damping, dtype), prev_solution=jax.tree.map(jnp.zeros_like,
                                                                            params),
            cg_iters=jnp.zeros([], jnp.int32), ratio=jnp.zeros([], dtype),
            accepted=jnp.zeros([], bool),
            record=StepRecord.initial(params, ("nfev", "njev", "nhvp")))

    def update(
        grads: PyTree,
        state: HessianFreeState,
        params: PyTree = None,
        *,
        value: jax.Array | None = None,
        value_fn: Callable[[PyTree], jax.Array] | None = None,
        model_fn: Callable[[PyTree], PyTree] | None = None,
        loss_fn: Callable[[PyTree], jax.Array] | None = None,
        grad_sq: PyTree = None,
        **extra: Any,
    ) -> tuple[PyTree, HessianFreeState]:
        del extra  # e.g. `grad` from jopt.minimize: the gradient at params is `grads`
        if params is None:
            raise ValueError("hessian_free needs `params`: call update(grads, state, params, "
                             "...).")
        mf = _resolve("model_fn", model_fn, model_fn0)
        lf = _resolve("loss_fn", loss_fn, loss_fn0)
        value_fn = _objectives(mf, lf, _resolve("value_fn", value_fn, None))
        check_same_structure("params", params, "grads", grads)
        dtype = state.damping.dtype
        evaluate = value_and_grad_as(value_fn, params, dtype)
        zeros = jax.tree.map(jnp.zeros_like, params)
        first_evals = 0
        if value is None:
            value, grads = evaluate(zeros)
            first_evals = 1
        f0 = jnp.asarray(value).astype(dtype)
        grads = cast_like(grads, params)
        # After a failed step the method restarts itself (the step protocol): initial
        # damping, no warm start.
        restart = state.record.status == StepStatus.FAILED
        lam = jnp.where(restart, jnp.asarray(damping, dtype), state.damping)
        prev_solution = tree_select(restart, jax.tree.map(jnp.zeros_like, params),
                                    state.prev_solution)

        matvec, lin_cost = curvature_matvec(params, lam, model_fn=mf, loss_fn=lf,
                                            value_fn=value_fn)
        precond = None
        if precondition:
            sq = (jax.tree.map(jnp.square, grads) if grad_sq is None
                  else cast_like(grad_sq, params))
            precond = diagonal_preconditioner(sq, lam, precondition_exponent)
        x0 = None if no_warm_start else tree_scale(warm_start_decay, prev_solution)
        sol = martens_cg(matvec, grads, x0, max_iters=max_cg_iters, eps=cg_tol,
                         precond=precond, save_base=1.3 if backtrack_cg else None)

        choice = select_step(evaluate, sol, f0, grads, c1=armijo_c1, shrink=armijo_shrink,
                             max_steps=max_linesearch_steps)
        rho = reduction_ratio(choice.value_at_one - f0, choice.q, lam,
                              tree_vdot(choice.step, choice.step))
        new_lam = (levenberg_marquardt(lam, rho, min_damping=min_damping,
                                       max_damping=max_damping) if adapt_damping else lam)
        found = choice.found

        eps = jnp.finfo(dtype).eps
        negligible = tree_inf_norm(choice.step) <= eps * jnp.maximum(tree_inf_norm(params), 1)
        failed = ~found & negligible & ~sol.negative_at_start
        evals = first_evals + choice.num_evals
        record = StepRecord(
            value=jnp.where(found, choice.value, f0),
            grad=tree_select(found, choice.grad, grads),
            step=choice.alpha,
            slope=tree_vdot(grads, choice.step).astype(dtype),
            status=step_status(failed),
            reset=jnp.zeros([], bool),
            work=state.record.work.add(nfev=evals, njev=lin_cost, nhvp=sol.num_matvecs),
        )
        updates = tree_select(found, tree_scale(choice.alpha, choice.step), zeros)
        return updates, HessianFreeState(
            damping=new_lam.astype(dtype),
            prev_solution=sol.x,
            cg_iters=sol.num_iters,
            ratio=rho.astype(dtype),
            accepted=found,
            record=record,
        )

    return optax.GradientTransformationExtraArgs(init, update)
