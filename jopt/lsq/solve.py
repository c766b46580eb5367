"""``jopt.least_squares``: nonlinear least squares by Levenberg–Marquardt, dogleg or
Gauss–Newton, in one compiled loop.

Minimizes ``C(x) = ½ Σᵢ c²·ρ((rᵢ(x)/c)²)`` (``ρ(z) = z``: ``½‖r(x)‖²``) over a pytree
``x``. Each accepted iterate forms the Jacobian ``J`` (forward mode when ``x`` has at most
as many entries as ``r``, reverse mode otherwise), rescales it for the loss
(:mod:`jopt.lsq.losses`), scales the variables by ``x_scale`` (by default the Jacobian's
column norms, as MINPACK does: the method is then invariant to the units of ``x``), and
takes its thin SVD, from which every trial step of that Jacobian is computed
(:mod:`jopt.lsq.subproblem`):

* ``"lm"`` — Levenberg–Marquardt in Moré's trust-region form: the step minimizes the
  model within ``‖D p‖ <= Δ``; ``Δ`` shrinks to a quarter of the step after a ratio of
  actual to predicted decrease below ¼, doubles after one above ¾ on the boundary, and a
  step is taken when the cost decreases (Moré 1978).
* ``"dogleg"`` — the same trust region with Powell's dogleg step (N&W §4.1).
* ``"gauss-newton"`` — the minimum-norm Gauss–Newton step with a backtracking (Armijo)
  line search on the cost (N&W §10.3).

Stopping tests are scipy's: ``ftol`` (the cost fell by less than ``ftol·C`` on a step the
model predicted well), ``xtol`` (``‖Δx‖ <= xtol·(xtol + ‖x‖)``), ``gtol``
(``‖∇C‖∞ <= gtol``), and ``max_nfev``; statuses follow ``scipy.optimize.least_squares``.

References:
  Moré, J. J. (1978). The Levenberg–Marquardt algorithm: implementation and theory.
  Lecture Notes in Mathematics 630, 105–116.
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., ch. 4 and §10.3.
  Triggs, B. et al. (2000). Bundle adjustment — a modern synthesis, §4.3 (robust losses).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jopt import _platform as platform
from jopt._checks import check_float_tree
from jopt.implicit import implicit_solution
from jopt.lsq import losses
from jopt.lsq.matrix_free import solve_matrix_free
from jopt.lsq.subproblem import (
    Model,
    decompose,
    dogleg_step,
    gauss_newton_step,
    levenberg_marquardt_step,
    model_decrease,
)
from jopt.solve import checks

PyTree = Any

__all__ = ["LeastSquaresResult", "LeastSquaresStatus", "least_squares"]

METHODS = ("lm", "dogleg", "gauss-newton")
_ALIASES = {"levenberg-marquardt": "lm", "gauss_newton": "gauss-newton", "gn": "gauss-newton"}
_MAX_HALVINGS = 40  # Gauss-Newton backtracking: 2^-40 of the Gauss-Newton step at most
# The first trust radius is this factor times ‖D x0‖ (MINPACK's `factor` for LM: the first
# step is then Gauss-Newton's, and the radius is cut to it).
_FACTOR = {"lm": 100.0, "dogleg": 1.0, "gauss-newton": 1.0}
_ACCEPT = 1e-4  # LM takes a step whose ratio of actual to predicted decrease exceeds this


class LeastSquaresStatus(enum.IntEnum):
    """``LeastSquaresResult.status`` (0-4 as in ``scipy.optimize.least_squares``)."""

    RUNNING = -1
    MAXFEV = 0  # max_nfev evaluations of the residuals
    GTOL = 1  # ‖∇C‖∞ <= gtol
    FTOL = 2  # the cost fell by less than ftol·C
    XTOL = 3  # ‖Δx‖ <= xtol·(xtol + ‖x‖)
    FTOL_XTOL = 4  # both
    NONFINITE = 5  # residuals not finite at x0 (or no finite trial point at all)
    STEP_FAILED = 6  # Gauss-Newton: no decrease along the step (a saddle or rounding)


MESSAGES = {
    -1: "Running.",
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
    5: "Non-finite residuals at x0.",
    6: "The line search found no decrease along the Gauss-Newton step.",
}


class LeastSquaresResult(NamedTuple):
    """Result of :func:`least_squares`, with ``scipy.optimize.least_squares``' fields.

    Attributes:
      x: the solution (a pytree like ``x0``). cost: ``½ Σ c²ρ((r/c)²)`` at ``x``.
      fun: the residuals at ``x`` (like the residual function's output).
      grad: ``∇C(x)`` (like ``x0``). optimality: ``‖∇C(x)‖∞``.
      nfev / njev: residual evaluations / Jacobians formed. nit: iterations (trial steps).
      status: a :class:`LeastSquaresStatus` code; success: ``1 <= status <= 4``.
      jac: the ``(m, n)`` Jacobian at ``x`` in ``ravel_pytree`` order, rescaled for a
        robust loss as scipy's is (``return_jac=True``; else ``None``).
    """

    x: PyTree
    cost: jax.Array
    fun: PyTree
    grad: PyTree
    optimality: jax.Array
    nfev: jax.Array
    njev: jax.Array
    nit: jax.Array
    status: jax.Array
    success: jax.Array
    jac: jax.Array | None = None

    @property
    def message(self) -> Any:
        """Text for ``status`` (a numpy array of texts for a batched result)."""
        status = np.asarray(self.status)
        if status.ndim == 0:
            return MESSAGES.get(int(status), f"Unknown status {int(status)}.")
        return np.vectorize(lambda s: MESSAGES.get(int(s), "?"), otypes=[object])(status)


class _Config(NamedTuple):
    """The static part of a solve (part of the compiled program's key)."""

    residuals: Callable
    method: str
    loss: str
    auto_scale: bool
    max_nfev: int
    return_jac: bool
    x_def: Any  # how the flat x unravels (a pytree of shapes)
    tr_solver: str = "exact"  # "exact" (the Jacobian's SVD) or "cg" (matrix-free)


class _State(NamedTuple):
    x: jax.Array  # flat
    r: jax.Array  # flat residuals at x
    cost: jax.Array
    jac: jax.Array  # rescaled for the loss, unscaled in x
    model: Model  # of the Jacobian scaled in x
    scale: jax.Array  # x = scale · (scaled x)
    delta: jax.Array  # trust radius (scaled variables)
    alpha: jax.Array  # LM multiplier; Gauss-Newton: the line-search factor
    p_gn: jax.Array  # Gauss-Newton: the current step (scaled)
    halvings: jax.Array
    nfev: jax.Array
    njev: jax.Array
    nit: jax.Array
    status: jax.Array


# ----------------------------------------------------------------------- the loop


def _unravel_fn(x_def: tuple) -> Callable[[jax.Array], PyTree]:
    """Flat vector -> pytree, from ``(treedef, shapes, dtypes)`` (a hashable key, where
    ``ravel_pytree``'s function is a new object every call)."""
    treedef, shapes, dtypes = x_def
    like = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d)
                                        for s, d in zip(shapes, dtypes, strict=True)])
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.cumsum([0, *sizes])

    def unravel(x: jax.Array) -> PyTree:
        leaves = [x[offsets[i]:offsets[i + 1]].reshape(s).astype(d)
                  for i, (s, d) in enumerate(zip(shapes, dtypes, strict=True))]
        return jax.tree.unflatten(jax.tree.structure(like), leaves)

    return unravel


def _residual_fn(config: _Config, args: tuple) -> Callable[[jax.Array], jax.Array]:
    unravel = _unravel_fn(config.x_def)

    def flat(x: jax.Array) -> jax.Array:
        out, _ = ravel_pytree(config.residuals(unravel(x), *args))
        return out

    return flat


def _jacobian(fn: Callable, x: jax.Array, m: int) -> jax.Array:
    mode = jax.jacfwd if x.size <= m else jax.jacrev
    return mode(fn)(x)


def _linearize(config: _Config, fn: Callable, x: jax.Array, r: jax.Array, scale: jax.Array,
               f_scale: jax.Array) -> tuple[jax.Array, jax.Array, Model, jax.Array]:
    """``(cost, J̃, model of J̃·diag(scale), scale)`` at ``x`` (scale updated from the
    column norms when automatic)."""
    jac = _jacobian(fn, x, r.size)
    cost, r_tilde, jac = losses.rescale(config.loss, r, jac, f_scale)
    if config.auto_scale:
        norms = jnp.sqrt(jnp.sum(jac ** 2, axis=0))
        inverse = jnp.maximum(1.0 / jnp.where(scale > 0, scale, 1.0), norms)
        scale = 1.0 / jnp.where(inverse > 0, inverse, 1.0)
    return cost, jac, decompose(jac * scale[None, :], r_tilde), scale


def _init(config: _Config, x0: jax.Array, args: tuple, f_scale: jax.Array,
          x_scale: jax.Array, tols: tuple) -> _State:
    fn = _residual_fn(config, args)
    r = fn(x0)
    dtype = x0.dtype
    # (automatic: from +inf, the first column norms set the scale)
    start_scale = jnp.full_like(x0, jnp.inf) if config.auto_scale else x_scale
    cost, jac, model, scale = _linearize(config, fn, x0, r, start_scale, f_scale)
    norm = jnp.linalg.norm(x0 / scale)
    finite = jnp.isfinite(cost) & jnp.all(jnp.isfinite(model.g))
    gtol = tols[2]
    status = jnp.where(~finite, LeastSquaresStatus.NONFINITE,
                       jnp.where(jnp.max(jnp.abs(model.g / scale), initial=0.0) <= gtol,
                                 LeastSquaresStatus.GTOL, LeastSquaresStatus.RUNNING))
    zero = jnp.zeros([], jnp.int32)
    return _State(
        x=x0, r=r, cost=cost, jac=jac, model=model, scale=scale,
        delta=(_FACTOR[config.method] * jnp.where(norm > 0, norm, 1.0)).astype(dtype),
        alpha=jnp.zeros([], dtype),
        p_gn=gauss_newton_step(model), halvings=zero, nfev=zero + 1, njev=zero + 1,
        nit=zero, status=status.astype(jnp.int32))


def _trial_step(config: _Config, s: _State) -> tuple[jax.Array, jax.Array]:
    """``(p, α)``: the scaled trial step of this iteration and the new LM multiplier (or
    the Gauss-Newton line-search factor)."""
    if config.method == "lm":
        return levenberg_marquardt_step(s.model, s.delta, s.alpha)
    if config.method == "dogleg":
        return dogleg_step(s.model, s.delta), s.alpha
    factor = 0.5 ** s.halvings.astype(s.x.dtype)
    return factor * s.p_gn, factor


def _minpack_radius(s: _State, p: jax.Array, p_norm: jax.Array, alpha: jax.Array,
                    ratio: jax.Array, actual: jax.Array, cost_new: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(Δ, α, accept)`` after a Levenberg–Marquardt trial step, by MINPACK's rules
    (Moré 1978, §4–§5; ``lmder``): the first radius is cut to the first step's length; a
    poor step (ratio <= ¼) shrinks ``Δ`` by ``μ ∈ [0.1, 0.5]`` — ½, or the minimizer of
    the cubic-free interpolation ``½ gᵀp / (gᵀp + actual)`` when the cost rose — of
    ``min(Δ, 10‖p‖)`` and raises ``α`` by ``1/μ``; a good one (ratio >= ¾), or a
    Gauss–Newton step inside the region (``α = 0``), sets ``Δ = 2‖p‖`` and halves ``α``.
    A step is taken when its ratio exceeds 10⁻⁴."""
    delta = jnp.where(s.nit == 0, jnp.minimum(s.delta, p_norm), s.delta)
    slope = s.model.g @ p  # gᵀp < 0
    mu = jnp.where(actual >= 0, 0.5,
                   0.5 * slope / jnp.where(slope + actual < 0, slope + actual, -1.0))
    mu = jnp.where((cost_new > 100.0 * s.cost) | ~jnp.isfinite(cost_new) | (mu < 0.1),
                   0.1, jnp.minimum(mu, 0.5))
    poor = ratio <= 0.25
    good = (alpha == 0) | (ratio >= 0.75)
    new_delta = jnp.where(poor, mu * jnp.minimum(delta, 10.0 * p_norm),
                          jnp.where(good, 2.0 * p_norm, delta))
    new_alpha = jnp.where(poor, alpha / mu, jnp.where(good, 0.5 * alpha, alpha))
    return new_delta, new_alpha, ratio > _ACCEPT


def _body(config: _Config, args: tuple, f_scale: jax.Array, tols: tuple) -> Callable:
    ftol, xtol, gtol = tols
    fn = _residual_fn(config, args)
    trust_region = config.method != "gauss-newton"

    def body(s: _State) -> _State:
        p, alpha = _trial_step(config, s)
        predicted = model_decrease(s.model, p)
        x_new = s.x + s.scale * p
        r_new = fn(x_new)
        cost_new = losses.robust_cost(config.loss, r_new, f_scale)
        actual = jnp.where(jnp.isfinite(cost_new), s.cost - cost_new, -jnp.inf)
        nfev = s.nfev + 1
        p_norm = jnp.sqrt(p @ p)
        dx_norm = jnp.linalg.norm(s.scale * p)
        x_norm = jnp.linalg.norm(s.x)
        small_step = dx_norm <= xtol * (xtol + x_norm)
        if trust_region:
            ratio = jnp.where(predicted > 0, actual / jnp.where(predicted > 0, predicted, 1.0),
                              jnp.where(actual > 0, 1.0, -1.0))
            if config.method == "lm":
                delta, alpha, accept = _minpack_radius(s, p, p_norm, alpha, ratio, actual,
                                                       cost_new)
            else:
                delta = jnp.where(ratio < 0.25, 0.25 * p_norm,
                                  jnp.where((ratio > 0.75) & (p_norm >= 0.95 * s.delta),
                                            2.0 * s.delta, s.delta))
                accept = actual > 0
                # α scales with Δ⁻² for a warm start at the new radius.
                alpha = alpha * (s.delta / jnp.where(delta > 0, delta, 1.0))
            predicted_well = ratio > 0.25
            halvings = s.halvings
        else:
            slope = s.model.g @ p
            accept = jnp.isfinite(cost_new) & (cost_new <= s.cost + 1e-4 * slope)
            delta, predicted_well = s.delta, jnp.ones([], bool)
            halvings = jnp.where(accept, 0, s.halvings + 1)
        small_f = accept & predicted_well & (actual < ftol * s.cost)
        # A rejected step below the x tolerance: the region collapsed onto x (MINPACK).
        collapsed = ~accept & small_step

        def take(_):
            cost, jac, model, scale = _linearize(config, fn, x_new, r_new, s.scale, f_scale)
            return x_new, r_new, cost, jac, model, scale, s.njev + 1

        def keep(_):
            return s.x, s.r, s.cost, s.jac, s.model, s.scale, s.njev

        x, r, cost, jac, model, scale, njev = jax.lax.cond(accept, take, keep, None)
        p_gn = gauss_newton_step(model) if not trust_region else s.p_gn
        grad_norm = jnp.max(jnp.abs(model.g / scale), initial=0.0)
        small_x = (accept & small_step) | collapsed
        failed = (~trust_region) & (halvings > _MAX_HALVINGS)
        status = jnp.select(
            [accept & ~jnp.isfinite(cost), small_f & small_x, small_f, small_x,
             accept & (grad_norm <= gtol), failed, nfev >= config.max_nfev],
            [LeastSquaresStatus.NONFINITE, LeastSquaresStatus.FTOL_XTOL,
             LeastSquaresStatus.FTOL, LeastSquaresStatus.XTOL, LeastSquaresStatus.GTOL,
             LeastSquaresStatus.STEP_FAILED, LeastSquaresStatus.MAXFEV],
            LeastSquaresStatus.RUNNING).astype(jnp.int32)
        return _State(x, r, cost, jac, model, scale, delta.astype(s.delta.dtype),
                      jnp.asarray(alpha, s.alpha.dtype), p_gn, halvings.astype(jnp.int32),
                      nfev, njev, s.nit + 1, status)

    return body


class Out(NamedTuple):
    """What a solve returns (flat arrays)."""

    x: jax.Array
    r: jax.Array
    cost: jax.Array
    grad: jax.Array
    nfev: jax.Array
    njev: jax.Array
    nit: jax.Array
    status: jax.Array
    jac: jax.Array | None


PAUSED = -2  # a segment reached its step limit (internal status)


def init_state(config: _Config, x0: jax.Array, args: tuple, f_scale: jax.Array,
               x_scale: jax.Array, tols: tuple) -> _State:
    """The dense loop's state at ``x0`` (one residual evaluation and one Jacobian)."""
    return _init(config, x0, args, f_scale, x_scale, tols)


def continue_state(config: _Config, state: _State, args: tuple, f_scale: jax.Array,
                   tols: tuple, num_steps: jax.Array | None = None) -> _State:
    """Iterate from ``state`` until a stopping test fires, or ``num_steps`` iterations
    (then ``status`` stays running)."""
    body = _body(config, args, f_scale, tols)
    if num_steps is None:
        return jax.lax.while_loop(lambda s: s.status < 0, body, state)
    stop_at = state.nit + num_steps

    def limited(s: _State) -> _State:
        s = body(s)
        return s._replace(status=jnp.where((s.status < 0) & (s.nit >= stop_at), PAUSED,
                                           s.status).astype(jnp.int32))

    final = jax.lax.while_loop(lambda s: s.status == LeastSquaresStatus.RUNNING, limited,
                               state)
    return final._replace(status=jnp.where(final.status == PAUSED, LeastSquaresStatus.RUNNING,
                                           final.status).astype(jnp.int32))


def finish(config: _Config, state: _State, f_scale: jax.Array) -> Out:
    """The flat outputs of a finished dense solve."""
    grad = state.jac.T @ losses.rescaled_residuals(config.loss, state.r, f_scale)
    return Out(state.x, state.r, state.cost, grad, state.nfev, state.njev, state.nit,
               state.status, state.jac if config.return_jac else None)


def _program(config: _Config, x0: jax.Array, args: tuple, f_scale: jax.Array,
             x_scale: jax.Array, ftol: jax.Array, xtol: jax.Array, gtol: jax.Array) -> Out:
    """The whole solve: the dense loop, or the matrix-free one."""
    if config.tr_solver == "cg":
        codes = {status.name: int(status) for status in LeastSquaresStatus}
        out = solve_matrix_free(_residual_fn(config, args), config.loss, config.max_nfev, x0,
                                f_scale, x_scale, ftol, xtol, gtol, codes)
        return Out(out.x, out.r, out.cost, out.grad, out.nfev, out.njev, out.nit,
                   out.status, None)
    tols = (ftol, xtol, gtol)
    state = continue_state(config, init_state(config, x0, args, f_scale, x_scale, tols), args,
                           f_scale, tols)
    return finish(config, state, f_scale)


# ----------------------------------------------------------------------- the entry point


def _check_method(method: Any) -> str:
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a string, one of {list(METHODS)}, got "
                        f"{type(method).__name__}.")
    key = _ALIASES.get(method.lower(), method.lower())
    if key not in METHODS:
        raise ValueError(f"Unknown `method` {method!r}: choose one of {list(METHODS)}.")
    return key


def _check_loss(loss: Any) -> str:
    if not isinstance(loss, str) or loss not in losses.LOSSES:
        raise ValueError(f"Unknown `loss` {loss!r}: choose one of {list(losses.LOSSES)}.")
    return loss


_MATRIX_FREE_ABOVE = 4_000_000  # Jacobian entries (32 MB in float64)


def _check_tr_solver(tr_solver: Any, entries: int, method: str, return_jac: bool) -> str:
    """The step solver: ``"exact"`` or ``"cg"`` (chosen by size when ``None``)."""
    if tr_solver is None:
        tr_solver = "cg" if entries > _MATRIX_FREE_ABOVE and method == "lm" else "exact"
    if tr_solver not in ("exact", "cg"):
        raise ValueError(f"`tr_solver` must be 'exact', 'cg' or None, got {tr_solver!r}.")
    if tr_solver == "cg" and method != "lm":
        raise ValueError(f"`tr_solver='cg'` (matrix-free) runs method 'lm' only, got "
                         f"`method={method!r}`.")
    if tr_solver == "cg" and return_jac:
        raise ValueError("`return_jac=True` needs the Jacobian, which `tr_solver='cg'` never "
                         "forms.")
    return tr_solver


def _check_positive(name: str, value: Any) -> None:
    if not checks.traced(value) and not np.all(np.asarray(value, np.float64) > 0):
        raise ValueError(f"`{name}` must be > 0 (every entry), got {value!r}.")


def _check_residuals(residuals: Callable, x0: PyTree, args: tuple) -> PyTree:
    """The residuals' shapes (``jax.ShapeDtypeStruct`` leaves); a TypeError naming
    ``residuals`` unless it returns float arrays."""
    if not callable(residuals):
        raise TypeError(f"`residuals` must be a function `(x, *args) -> residual array(s)`, "
                        f"got {type(residuals).__name__}.")
    with checks.objective_errors(residuals, x0, args):
        out = jax.eval_shape(residuals, x0, *args)
    leaves = jax.tree.leaves(out)
    if not leaves or not all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in leaves):
        raise TypeError(f"`residuals` must return floating-point array(s), got {out}.")
    return out


def least_squares(
    residuals: Callable[..., PyTree],
    x0: PyTree,
    args: tuple = (),
    *,
    method: str = "lm",
    loss: str = "linear",
    f_scale: float | jax.Array = 1.0,
    x_scale: str | float | jax.Array = "jac",
    ftol: float | jax.Array = 1e-8,
    xtol: float | jax.Array = 1e-8,
    gtol: float | jax.Array = 1e-8,
    max_nfev: int | None = None,
    return_jac: bool = False,
    implicit_diff: bool = True,
    tr_solver: str | None = None,
) -> LeastSquaresResult:
    """Minimize ``½ Σ c²·ρ((rᵢ(x, *args)/c)²)`` over a pytree ``x`` from ``x0``.

    Args:
      residuals: ``(x, *args) -> r``, float array(s) (a pytree of them is flattened).
        Define it once and pass data in ``args``: a new function is a new program.
      x0: starting point, a pytree of float arrays (its dtype is kept).
      args: extra arguments of ``residuals`` (traced: new data does not recompile).
      method: ``"lm"`` (Levenberg–Marquardt, Moré's trust region), ``"dogleg"`` or
        ``"gauss-newton"`` (with a line search). See the module docstring.
      loss: ``"linear"``, ``"soft_l1"``, ``"huber"``, ``"cauchy"`` or ``"arctan"``
        (:mod:`jopt.lsq.losses`); ``f_scale`` is the soft margin ``c`` between inlier
        and outlier residuals.
      x_scale: the characteristic scale of each variable: ``"jac"`` (the inverse column
        norms of the Jacobian, the largest seen so far — MINPACK's choice), or a number
        or array like the flattened ``x``.
      ftol, xtol, gtol: scipy's tolerances (see the module docstring); 0 switches a test
        off. max_nfev: residual evaluations allowed (default ``100·n``).
      return_jac: also return the Jacobian at the solution.
      implicit_diff: make ``x`` differentiable with respect to ``args`` by the implicit
        function theorem (:func:`jopt.implicit_solution` on the cost).
      tr_solver: ``"exact"`` (form the ``m × n`` Jacobian and decompose it) or ``"cg"``
        (never form it: Steihaug CG on Jacobian products, memory ``O(m + n)``, method
        ``"lm"`` only, :mod:`jopt.lsq.matrix_free`); default ``"cg"`` when the Jacobian
        would hold more than 4 million entries, else ``"exact"``.

    Returns:
      A :class:`LeastSquaresResult`.

    Works under ``jit`` and ``vmap`` (over data, starting points and tolerances); the
    whole solve is one ``lax.while_loop``. The Jacobian is formed (``m × n``) and
    decomposed once per accepted step, so this suits problems up to a few thousand
    parameters.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> t = jnp.linspace(0.0, 1.0, 20)
      >>> y = 2.0 * jnp.exp(-1.5 * t)
      >>> res = jopt.least_squares(lambda b, t, y: b[0] * jnp.exp(-b[1] * t) - y,
      ...                          jnp.ones(2), (t, y))
      >>> bool(res.success), [round(float(v), 6) for v in res.x]
      (True, [2.0, 1.5])
    """
    prep = setup(residuals, x0, args, method=method, loss=loss, f_scale=f_scale,
                 x_scale=x_scale, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev,
                 return_jac=return_jac, tr_solver=tr_solver)
    out = _compiled()(prep.config, prep.x0, prep.args, prep.f_scale, prep.x_scale,
                      *prep.tols)
    return assemble(prep, out, residuals, args, implicit_diff)


class Setup(NamedTuple):
    """What :func:`least_squares` derives from its arguments (checked), once per call."""

    config: _Config
    x0: jax.Array  # flat
    unravel: Callable[[jax.Array], PyTree]
    out_shape: PyTree  # the residuals' jax.eval_shape
    f_scale: jax.Array
    x_scale: jax.Array
    tols: tuple  # (ftol, xtol, gtol)
    nested: bool  # inside a caller's trace
    args: tuple  # stop_gradient'ed when traced


def setup(residuals: Callable, x0: PyTree, args: tuple, *, method: Any, loss: Any,
          f_scale: Any, x_scale: Any, ftol: Any, xtol: Any, gtol: Any, max_nfev: Any,
          return_jac: bool, tr_solver: Any) -> Setup:
    """Check :func:`least_squares`' arguments and build its static configuration."""
    method = _check_method(method)
    loss = _check_loss(loss)
    checks.check_args(args)
    check_float_tree("x0", x0)
    for name, value in (("ftol", ftol), ("xtol", xtol), ("gtol", gtol)):
        checks.check_tolerance(name, value, allow_zero=True)
    checks.check_count("max_nfev", max_nfev)
    _check_positive("f_scale", f_scale)
    x0 = jax.tree.map(checks.strong, x0)
    flat, unravel = ravel_pytree(x0)
    dtype = flat.dtype
    out_shape = _check_residuals(residuals, x0, args)
    m = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(out_shape))
    auto = isinstance(x_scale, str)
    if auto and x_scale != "jac":
        raise ValueError(f"`x_scale` must be 'jac', a number or an array, got {x_scale!r}.")
    if not auto:
        _check_positive("x_scale", x_scale)
        x_scale = jnp.broadcast_to(jnp.asarray(x_scale, dtype), flat.shape)
    else:
        x_scale = jnp.ones_like(flat)
    leaves, treedef = jax.tree.flatten(x0)
    x_def = (treedef, tuple(leaf.shape for leaf in leaves),
             tuple(np.dtype(leaf.dtype) for leaf in leaves))
    tr_solver = _check_tr_solver(tr_solver, m * flat.size, method, return_jac)
    config = _Config(platform.weakly(residuals), method, loss, auto,
                     max_nfev or 100 * max(flat.size, 1), bool(return_jac), x_def, tr_solver)
    nested = checks.traced((x0, args, f_scale, ftol, xtol, gtol))
    fixed = jax.lax.stop_gradient(args) if nested else args
    tols = tuple(checks.strong(t, dtype) for t in (ftol, xtol, gtol))
    return Setup(config, flat, unravel, out_shape, checks.strong(f_scale, dtype), x_scale,
                 tols, nested, fixed)


def assemble(prep: Setup, out: Out, residuals: Callable, args: tuple,
             implicit_diff: bool) -> LeastSquaresResult:
    """The :class:`LeastSquaresResult` of one solve's flat outputs."""
    x = prep.unravel(out.x)
    if implicit_diff and prep.nested and jax.tree.leaves(args):
        x = implicit_solution(functools.partial(_cost, residuals, prep.config.loss,
                                                prep.f_scale), x, args)
    fun = residuals(x, *args) if prep.nested else unflatten_residuals(prep.out_shape, out.r)
    success = (out.status >= 1) & (out.status <= 4)
    return LeastSquaresResult(
        x=x, cost=out.cost, fun=fun, grad=prep.unravel(out.grad),
        optimality=jnp.max(jnp.abs(out.grad), initial=0.0), nfev=out.nfev, njev=out.njev,
        nit=out.nit, status=out.status, success=success, jac=out.jac)


def _cost(residuals: Callable, loss: str, f_scale: Any, x: PyTree, *args: Any) -> jax.Array:
    r, _ = ravel_pytree(residuals(x, *args))
    return losses.robust_cost(loss, r, jax.lax.stop_gradient(f_scale))


def unflatten_residuals(shape: PyTree, r: jax.Array) -> PyTree:
    """The flat residuals in the residual function's own structure (``shape``: its
    ``jax.eval_shape``)."""
    leaves, treedef = jax.tree.flatten(shape)
    offsets = np.cumsum([0, *(int(np.prod(leaf.shape)) for leaf in leaves)])
    return jax.tree.unflatten(treedef, [
        r[offsets[i]:offsets[i + 1]].reshape(leaf.shape).astype(leaf.dtype)
        for i, leaf in enumerate(leaves)])


@functools.cache
def _compiled() -> platform.BoundedJit:
    return platform.BoundedJit(_program, 1)
