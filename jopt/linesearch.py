"""Line searches as gradient transformations: strong Wolfe (zoom) and backtracking Armijo.

A line search receives a search direction ``d`` as its ``updates`` and returns ``α·d``.
It needs the objective: pass ``value_fn`` (params -> scalar) as an extra argument, and
preferably ``value`` and ``grad`` at ``params`` (else they are evaluated and counted);
a :class:`jopt.calculus.Objective` ``value_fn`` brings its own value-and-gradient form.
The accepted point's value and gradient are kept in the state's :class:`jopt.StepRecord`
(the step protocol, :mod:`jopt.step`), so a driver reuses them and no evaluation is
repeated.

Loops that stay fast under ``vmap``: every loop step makes exactly one evaluation of
``value_and_grad`` and the bracketing logic is arithmetic (``jnp.where``) on its result,
so a batched search costs what its slowest member costs. Failures never raise inside a
compiled loop: a search that finds no decrease takes a zero step and reports
``status = FAILED``; a non-finite trial value (NaN/Inf) is treated as "too large" and the
interval shrinks away from it.

References:
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., Springer:
  Algorithm 3.5 (line search for the strong Wolfe conditions), Algorithm 3.6 (zoom),
  §3.5 (cubic interpolation, eq. 3.59; initial step, eq. 3.60).
  Hager, W. W. & Zhang, H. (2005). A new conjugate gradient method with guaranteed
  descent and an efficient line search. SIAM J. Optim. 16(1), §4 (approximate Wolfe
  conditions for steps where f changes below rounding; initial step ψ0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jopt._checks import check_in_range, check_positive_int
from jopt.calculus import value_and_grad_of
from jopt.step import StepRecord, step_status
from jopt.tree import tree_inf_norm, tree_scale, tree_select, tree_vdot

PyTree = Any

__all__ = [
    "LineSearchState",
    "LineSearchStatus",
    "scale_by_backtracking",
    "scale_by_strong_wolfe",
]


class LineSearchStatus:
    """Codes in :attr:`LineSearchState.status` (outcome of the most recent search)."""

    WOLFE = 0  # strong Wolfe (or Armijo, for backtracking) conditions hold
    APPROX_WOLFE = 1  # Hager-Zhang approximate Wolfe conditions hold, f did not increase
    DECREASE_ONLY = 2  # budget exhausted; best point with sufficient decrease taken
    FAILED = 3  # no decrease found: zero step taken
    NOT_DESCENT = 4  # direction was not a descent direction; steepest descent used instead


class LineSearchState(NamedTuple):
    """State of a line search transform.

    Attributes:
      record: the :class:`jopt.StepRecord` of the last search (value and gradient at the
        accepted point, step size ``α``, slope ``∇f(params)ᵀd``, cumulative evaluations).
      num_trials: evaluations made by the most recent search.
      status: :class:`LineSearchStatus` code of the most recent search.
    """

    record: StepRecord
    num_trials: jax.Array
    status: jax.Array

    @property
    def value(self) -> jax.Array:
        """Objective at the accepted point (``params + α·d``)."""
        return self.record.value

    @property
    def grad(self) -> PyTree:
        """Gradient at the accepted point."""
        return self.record.grad

    @property
    def step(self) -> jax.Array:
        """Accepted step size ``α`` (0 after a failed search)."""
        return self.record.step

    @property
    def num_evals(self) -> jax.Array:
        """Cumulative ``value_and_grad`` evaluations made by this transform."""
        return self.record.work.nfev


def _init_state(params: PyTree) -> LineSearchState:
    return LineSearchState(record=StepRecord.initial(params),
                           num_trials=jnp.zeros([], jnp.int32),
                           status=jnp.zeros([], jnp.int32))


# ----------------------------------------------------------------- 1-D interpolation


def _cubic_minimizer(a, fa, da, b, fb, db):
    """Minimizer of the cubic matching (f, f') at ``a`` and ``b`` (N&W eq. 3.59); NaN if none."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
    return b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)


# A zoom trial keeps this fraction of the bracket's width from either end: 1 % on the
# first trial after bracketing (so the cubic's own step, exact on a quadratic, is taken
# when a unit step overshot far), 10 % on later ones (so the bracket shrinks by at least
# that each time and a kink is closed in on by factors of ten). The evaluation counts
# behind the choice are on the performance page (benchmarks/RESULTS.md).
_FIRST_MARGIN = 0.01
_LATER_MARGIN = 0.1


def _zoom_trial(a_lo, d_lo, a_hi, d_hi, cubic, secant, first=False):
    """Safeguarded ``cubic`` step (the cubic through the bracket's ends) inside the bracket;
    bisection when it is unusable.

    With ``secant`` (f values are rounding noise) the derivative secant is used instead.
    """
    left, right = jnp.minimum(a_lo, a_hi), jnp.maximum(a_lo, a_hi)
    width = right - left
    cubic = jnp.where(secant, (a_lo * d_hi - a_hi * d_lo) / (d_hi - d_lo), cubic)
    # Too close to an end: move to 10 % inside the bracket (not to its middle), so a
    # minimizer near one end is approached by factors of 10, not halvings; on the first
    # zoom trial only 1 %, so a unit step that overshot a minimizer at 0.02 by far is
    # followed by the cubic's own (exact, on a quadratic) step, not by 0.1.
    margin = jnp.where(first, _FIRST_MARGIN, _LATER_MARGIN) * width
    clipped = jnp.clip(cubic, left + margin, right - margin)
    return jnp.where(jnp.isfinite(cubic), clipped, 0.5 * (a_lo + a_hi))


def _extrapolation_trial(a, a_prev, cubic, grow_from_last: bool):
    """Next trial while bracketing: the minimizer of the ``cubic`` through the last two
    trials, clamped to ``[1.1α, α + 4(α − α₋)]`` (α₋: the previous trial) with
    ``grow_from_last``, else to ``[1.1α, 4α]``.

    The upper bound ``α + 4(α − α₋)`` is Moré & Thuente's (1994, §4; ``xtrapu`` in
    MINPACK-2's dcsrch): along a nearly linear φ the trials grow 1, 5, 21, 85, … instead
    of 1, 4, 16, 64. It pays after a unit first trial (quasi-Newton directions, whose unit
    step falls short on a badly scaled model); nonlinear CG, whose first trial already
    estimates the minimizer (N&W eq. 3.60), keeps ``4α``. MT's lower bound
    ``α + 1.1(α − α₋)`` is not used: it overrides a cubic that is exact on a quadratic.
    """
    hi = a + 4.0 * (a - a_prev) if grow_from_last else 4.0 * a
    guess = jnp.where(jnp.isfinite(cubic) & (cubic > a), cubic, hi)
    return jnp.clip(guess, 1.1 * a, hi)


# ----------------------------------------------------------------------- the search


class _Search(NamedTuple):
    i: jax.Array
    done: jax.Array
    zooming: jax.Array
    trial: jax.Array  # step to evaluate next
    prev: jax.Array  # previous trial while bracketing: (α, f, f')
    lo: jax.Array  # zoom bracket end with the lower value: (α, f, f')
    hi: jax.Array  # other end: (α, f, f')
    best: jax.Array  # (α, f) of the lowest sufficient-decrease trial so far
    best_grad: PyTree
    # The latest trial's (α, f) and gradient. An accepted trial is always the latest (the
    # search stops there), so these need no select to keep it.
    last: jax.Array
    last_grad: PyTree
    status: jax.Array


# Differences of f within this many eps·|f(x)| are treated as rounding noise when
# bracketing (see :func:`strong_wolfe_search`).
_NOISE_BAND = 32


def _wolfe_tests(a, f, d, f0, slope0, *, c1, c2, noise, band, approx_wolfe):
    """``(armijo, ok, approx, noisy)`` for the trial ``(α, φ(α), φ'(α)) = (a, f, d)``:
    sufficient decrease (read as ``φ' <= 0`` where ``f`` is within the noise band of
    ``f0``), the strong Wolfe conditions, Hager-Zhang's approximate Wolfe conditions
    (HZ 2005 eq. 4.1-4.2), and whether ``f``'s comparisons carry no information."""
    armijo = f <= f0 + c1 * a * slope0
    ok = armijo & (jnp.abs(d) <= -c2 * slope0)
    if approx_wolfe:
        # Judged by the derivative where f changes below rounding; f may exceed f0 only
        # by rounding noise (a few ulps), never more.
        approx = (f <= f0 + noise) & (d >= c2 * slope0) & (d <= (2 * c1 - 1) * slope0)
        # Where f is within the band of f0 its comparisons carry no information: bracket
        # on the sign of the derivative instead (still descending: move right). The band
        # is wider than what may be accepted, since an f summed from cancelling terms
        # carries more rounding than a few ulps of |f|; acceptance keeps the 8-ulp limit.
        noisy = jnp.abs(f - f0) <= band
    else:
        approx = noisy = jnp.zeros([], bool)
    return armijo | (noisy & (d <= 0)), ok, approx, noisy


def _update_bracket(s, cur, armijo, ok, approx, noisy):
    """One step of the bracketing phase (N&W Alg. 3.5) or the zoom (Alg. 3.6) with the
    trial ``cur = (α, φ, φ')``: ``(zooming, accept, lo, hi, prev)``, both phases computed
    and selected by arithmetic (one evaluation per loop step under ``vmap``)."""
    f, d = cur[1], cur[2]
    b_hi = ~armijo | (~noisy & (s.i > 0) & (f >= s.prev[1]))
    b_accept = (~b_hi & ok) | approx
    b_flip = ~b_hi & ~b_accept & (d >= 0)
    b_zoom = b_hi | b_flip
    b_lo = jnp.where(b_hi, s.prev, cur)
    b_hi_t = jnp.where(b_hi, cur, s.prev)
    z_hi = ~armijo | (~noisy & (f >= s.lo[1]))
    z_accept = (~z_hi & ok) | approx
    z_swap = ~z_hi & ~z_accept & (d * (s.hi[0] - s.lo[0]) >= 0)
    z_lo = jnp.where(z_hi, s.lo, cur)
    z_hi_t = jnp.where(z_hi, cur, jnp.where(z_swap, s.lo, s.hi))
    zooming = s.zooming | b_zoom
    accept = jnp.where(s.zooming, z_accept, b_accept)
    lo = jnp.where(s.zooming, z_lo, b_lo)
    hi = jnp.where(s.zooming, z_hi_t, b_hi_t)
    prev = jnp.where(s.zooming, s.prev, cur)
    return zooming, accept, lo, hi, prev


def strong_wolfe_search(
    evaluate: Callable[[jax.Array], tuple[jax.Array, jax.Array, PyTree]],
    f0: jax.Array,
    slope0: jax.Array,
    grad0: PyTree,
    alpha0: jax.Array,
    *,
    c1: float,
    c2: float,
    max_steps: int,
    approx_wolfe: bool,
    grow_from_last: bool = True,
    max_step: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, PyTree, jax.Array, jax.Array]:
    """Find ``α`` meeting the strong Wolfe conditions along a descent direction.

    ``evaluate(α) -> (φ(α), φ'(α), ∇f(x + α d))`` is called exactly once per loop step.
    Returns ``(α, φ(α), ∇f, status, num_trials)``.

    With ``max_step`` (``α_max``, e.g. the largest step that stays in a box) no trial
    exceeds it: the first trial and every extrapolation are capped at ``α_max``, and a
    trial at ``α_max`` that decreases ``f`` sufficiently while ``φ'`` is still negative
    ends the search there (``DECREASE_ONLY``: the curvature condition cannot be met
    inside ``[0, α_max]``; Moré & Thuente's ``stp = stpmax`` exit, which L-BFGS-B
    accepts). ``None`` (or ``inf``) leaves the search unbounded.
    """
    dtype = f0.dtype
    if max_step is not None:
        max_step = jnp.asarray(max_step, dtype)
    eps = jnp.finfo(dtype).eps
    noise = 8 * eps * jnp.abs(f0)  # the most f may rise at an approximate-Wolfe point
    band = _NOISE_BAND * eps * jnp.abs(f0)  # f differences below this steer by f' alone
    zero = jnp.zeros([], dtype)
    triple0 = jnp.stack([zero, f0, slope0])

    def body(s: _Search) -> _Search:
        a = s.trial
        f, d, g = evaluate(a)
        finite = jnp.isfinite(f) & jnp.isfinite(d)
        f = jnp.where(finite, f, jnp.inf)
        d = jnp.where(finite, d, jnp.inf)
        armijo, ok, approx, noisy = _wolfe_tests(a, f, d, f0, slope0, c1=c1, c2=c2,
                                                 noise=noise, band=band,
                                                 approx_wolfe=approx_wolfe)
        ok_status = jnp.where(ok, LineSearchStatus.WOLFE, LineSearchStatus.APPROX_WOLFE)
        cur = jnp.stack([a, f, d])
        zooming, accept, lo, hi, prev = _update_bracket(s, cur, armijo, ok, approx, noisy)

        improves = armijo & (f < s.best[1])  # strict decrease: noise never counts
        best = jnp.where(improves, jnp.stack([a, f]), s.best)
        best_grad = tree_select(improves, g, s.best_grad)

        # One cubic serves both phases: through the bracket's ends while zooming, through
        # the last two trials while bracketing (a smaller program than two cubics).
        end0 = jnp.where(zooming, lo, s.prev)
        end1 = jnp.where(zooming, hi, cur)
        cubic = _cubic_minimizer(end0[0], end0[1], end0[2], end1[0], end1[1], end1[2])
        next_trial = jnp.where(
            zooming,
            _zoom_trial(lo[0], lo[2], hi[0], hi[2], cubic,
                        secant=noisy & (jnp.abs(lo[1] - f0) <= band), first=~s.zooming),
            _extrapolation_trial(a, s.prev[0], cubic, grow_from_last),
        )
        collapsed = zooming & (jnp.abs(hi[0] - lo[0]) <= eps * jnp.maximum(lo[0], hi[0]))
        i = s.i + 1
        done = accept | collapsed | (i >= max_steps)
        if max_step is not None:
            # Bracketing at the cap with f still falling: no further trial is allowed.
            next_trial = jnp.where(zooming, next_trial, jnp.minimum(next_trial, max_step))
            done = done | (~zooming & (a >= max_step))
        return _Search(
            i=i,
            done=done,
            zooming=zooming,
            trial=next_trial,
            prev=prev,
            lo=lo,
            hi=hi,
            best=best,
            best_grad=best_grad,
            last=jnp.stack([a, f]),
            last_grad=g,
            status=jnp.where(accept, ok_status, s.status),
        )

    init = _Search(
        i=jnp.zeros([], jnp.int32),
        done=jnp.zeros([], bool),
        zooming=jnp.zeros([], bool),
        trial=(alpha0 if max_step is None else jnp.minimum(alpha0, max_step)).astype(dtype),
        prev=triple0,
        lo=triple0,
        hi=triple0,
        best=jnp.stack([zero, f0]),
        best_grad=grad0,
        last=jnp.stack([zero, f0]),
        last_grad=grad0,
        status=jnp.asarray(-1, jnp.int32),
    )
    s = jax.lax.while_loop(lambda s: ~s.done, body, init)
    found = s.status >= 0
    has_best = s.best[1] < f0
    status = jnp.where(
        found, s.status,
        jnp.where(has_best, LineSearchStatus.DECREASE_ONLY, LineSearchStatus.FAILED),
    ).astype(jnp.int32)
    step = jnp.where(found, s.last[0], s.best[0])
    value = jnp.where(found, s.last[1], s.best[1])
    grad = tree_select(found, s.last_grad, s.best_grad)
    return step, value, grad, status, s.i


def backtracking_search(
    evaluate: Callable[[jax.Array], tuple[jax.Array, jax.Array, PyTree]],
    f0: jax.Array,
    slope0: jax.Array,
    grad0: PyTree,
    alpha0: jax.Array,
    *,
    c1: float,
    shrink: float,
    max_steps: int,
) -> tuple[jax.Array, jax.Array, PyTree, jax.Array, jax.Array]:
    """Armijo backtracking ``α ← shrink·α`` (N&W Alg. 3.1); same contract as the Wolfe search."""
    dtype = f0.dtype

    def body(carry):
        i, _, a, _, out_a, out_f, out_g = carry
        f, _, g = evaluate(a)
        ok = jnp.isfinite(f) & (f <= f0 + c1 * a * slope0)
        return (
            i + 1, ok, jnp.where(ok, a, shrink * a), ok,
            jnp.where(ok, a, out_a), jnp.where(ok, f, out_f), tree_select(ok, g, out_g),
        )

    def cond(carry):
        i, found = carry[0], carry[1]
        return ~found & (i < max_steps)

    zero = jnp.zeros([], dtype)
    init = (jnp.zeros([], jnp.int32), jnp.zeros([], bool), alpha0.astype(dtype),
            jnp.zeros([], bool), zero, f0, grad0)
    i, found, _, _, step, value, grad = jax.lax.while_loop(cond, body, init)
    status = jnp.where(found, LineSearchStatus.WOLFE, LineSearchStatus.FAILED)
    return step, value, grad, status.astype(jnp.int32), i


# ------------------------------------------------------------------- the transforms


def _initial_step(mode: str, state: LineSearchState, params, direction, value, slope):
    """First trial step: 1 (quasi-Newton), or N&W eq. 3.60 with HZ's ψ0 start (CG, GD)."""
    dtype = slope.dtype
    if mode == "unit":
        return jnp.ones([], dtype)
    # HZ (2005) initial step for the first search: ψ0·‖x‖∞/‖d‖∞, else ψ0·|f|/|slope|.
    x_norm, d_norm = tree_inf_norm(params), tree_inf_norm(direction)
    tiny = jnp.finfo(dtype).tiny
    first = jnp.where(
        x_norm > 0,
        0.01 * x_norm / jnp.maximum(d_norm, tiny),
        jnp.where(value != 0, 0.01 * jnp.abs(value) / jnp.maximum(-slope, tiny), 1.0),
    )
    # Later searches: assume the first-order change equals the last one (N&W 3.60).
    later = state.record.step * state.record.slope / jnp.where(slope != 0, slope, -tiny)
    guess = jnp.where(state.record.step > 0, jnp.minimum(1.0, 1.01 * later), first)
    guess = jnp.where(jnp.isfinite(guess) & (guess > 0), guess, 1.0)
    return guess.astype(dtype)


def _make_line_search(search: Callable, initial_step: str) -> optax.GradientTransformationExtraArgs:
    if initial_step not in ("unit", "adaptive"):
        raise ValueError(
            f"`initial_step` must be 'unit' (quasi-Newton directions) or 'adaptive' "
            f"(gradient/CG directions), got {initial_step!r}."
        )

    def update(
        updates: PyTree,
        state: LineSearchState,
        params: PyTree = None,
        *,
        value: jax.Array | None = None,
        grad: PyTree = None,
        value_fn: Callable[[PyTree], jax.Array] | None = None,
        **extra: Any,
    ) -> tuple[PyTree, LineSearchState]:
        del extra
        if value_fn is None or params is None:
            raise ValueError(
                "A line search needs the objective: call `update(updates, state, params, "
                "value=f, grad=g, value_fn=fun)` (value and grad at `params` are optional "
                "but save one evaluation)."
            )
        value_and_grad = value_and_grad_of(value_fn, params)
        given = value is not None and grad is not None
        if not given:
            value, grad = value_and_grad(params)
        value = jnp.asarray(value)
        slope = tree_vdot(grad, updates)
        descent = jnp.isfinite(slope) & (slope < 0)
        direction = tree_select(descent, updates, tree_scale(-1.0, grad))
        slope = jnp.where(descent, slope, -tree_vdot(grad, grad))
        alpha0 = _initial_step(initial_step, state, params, direction, value, slope)

        def evaluate(alpha):
            f, g = value_and_grad(optax.apply_updates(params, _step(alpha, direction)))
            return f, tree_vdot(g, direction), g

        step, new_value, new_grad, status, trials = search(evaluate, value, slope, grad, alpha0)
        status = jnp.where(descent | (status == LineSearchStatus.FAILED), status,
                           LineSearchStatus.NOT_DESCENT).astype(jnp.int32)
        failed = status == LineSearchStatus.FAILED
        record = StepRecord(
            value=new_value, grad=new_grad, step=step, slope=slope,
            status=step_status(failed),
            reset=~descent,
            work=state.record.work.add(nfev=trials + (0 if given else 1)))
        new_state = LineSearchState(record=record, num_trials=trials, status=status)
        return _step(step, direction), new_state

    return optax.GradientTransformationExtraArgs(_init_state, update)


def _step(alpha: jax.Array, direction: PyTree) -> PyTree:
    """``α·d`` rounded to its dtype before anything adds it to ``x``.

    The search evaluates ``f`` at ``x + α·d`` and the loop moves to
    ``optax.apply_updates(x, α·d)``; a compiler may contract the search's multiply and add
    into one fused multiply-add (XLA:CPU does, even across an optimization barrier), which
    rounds once instead of twice, and the reported ``f`` would not be ``f`` at the returned
    ``x`` — by far where ``x + α·d`` cancels. The select (the identity, NaN kept) stands
    between the multiply and the add, so both sides add the same rounded product.
    """
    return jax.tree.map(lambda u: jnp.where(u == u, u, jnp.nan).astype(u.dtype),
                        tree_scale(alpha, direction))



def scale_by_strong_wolfe(
    c1: float = 1e-4,
    c2: float = 0.9,
    max_steps: int = 30,
    initial_step: str = "unit",
    approx_wolfe: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Strong-Wolfe line search (bracketing + zoom, cubic interpolation) as a transform.

    Finds ``α`` with ``f(x+αd) ≤ f(x) + c1·α·∇fᵀd`` and ``|∇f(x+αd)ᵀd| ≤ c2·|∇fᵀd|``
    (N&W Alg. 3.5/3.6). With ``approx_wolfe`` it also accepts Hager-Zhang's approximate
    Wolfe conditions (judged by the directional derivative; ``f`` may exceed ``f(x)`` by
    rounding noise only, ``8·eps·|f|``), which keeps searches working where ``f`` changes
    below rounding — near a float64 optimum and throughout float32; there (``|Δf|`` within
    ``32·eps·|f|``) the bracket follows the sign of the directional derivative. While
    bracketing, trials grow to at most ``α + 4(α − α₋)`` (Moré & Thuente 1994) after a
    unit first trial, ``4α`` after an adaptive one (see :func:`_extrapolation_trial`).
    While zooming, the cubic's minimizer is kept 10 % of the bracket from its ends (1 % on
    the first zoom trial, see :func:`_zoom_trial`). A direction that is not a descent
    direction is replaced by ``-∇f`` (reported in the
    state). Returns ``α·d``.

    Args:
      c1: sufficient-decrease constant, ``0 < c1 < c2``.
      c2: curvature constant, ``c1 < c2 < 1`` (0.9 for quasi-Newton, 0.1 for CG).
      max_steps: evaluations allowed per search.
      initial_step: ``"unit"`` (try ``α = 1`` first: quasi-Newton/Newton directions) or
        ``"adaptive"`` (N&W eq. 3.60 from the previous search; HZ ψ0 rule the first time).
      approx_wolfe: also accept approximate Wolfe points.
    """
    check_in_range("c1", c1, 0.0, 0.5)
    check_in_range("c2", c2, float(c1), 1.0)
    if not c1 > 0:
        raise ValueError(f"`c1` must be > 0, got {c1}.")
    check_positive_int("max_steps", max_steps)

    def search(evaluate, f0, slope0, grad0, alpha0):
        return strong_wolfe_search(evaluate, f0, slope0, grad0, alpha0, c1=c1, c2=c2,
                                   max_steps=max_steps, approx_wolfe=approx_wolfe,
                                   grow_from_last=initial_step == "unit")

    return _make_line_search(search, initial_step)


def scale_by_backtracking(
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_steps: int = 40,
    initial_step: str = "unit",
) -> optax.GradientTransformationExtraArgs:
    """Backtracking Armijo line search as a transform (N&W Alg. 3.1). Returns ``α·d``.

    Tries ``α0, shrink·α0, shrink²·α0, …`` until ``f(x+αd) ≤ f(x) + c1·α·∇fᵀd``; takes a
    zero step with ``status = FAILED`` when none of ``max_steps`` trials decreases ``f``.
    """
    check_in_range("c1", c1, 0.0, 1.0)
    check_in_range("shrink", shrink, 0.0, 1.0)
    if not (c1 > 0 and shrink > 0):
        raise ValueError("`c1` and `shrink` must be > 0.")
    check_positive_int("max_steps", max_steps)

    def search(evaluate, f0, slope0, grad0, alpha0):
        return backtracking_search(evaluate, f0, slope0, grad0, alpha0, c1=c1, shrink=shrink,
                                   max_steps=max_steps)

    return _make_line_search(search, initial_step)
