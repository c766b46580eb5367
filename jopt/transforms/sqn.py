"""Stochastic quasi-Newton (SQN) of Byrd, Hansen, Nocedal & Singer (2016).

Gradient steps ``x_{k+1} = x_k − α_k H_t ∇F_S(x_k)`` where ``H_t`` is the L-BFGS inverse
Hessian built from curvature pairs that are decoupled from the noisy gradients: every
``L`` iterations the iterates of the last ``L`` steps are averaged, ``x̄_t``, and

    s_t = x̄_t − x̄_{t−1},        y_t = ∇²F_{S_H}(x̄_t) s_t,

a sub-sampled Hessian-vector product at the averaged point (one HVP per ``L`` steps).
Until the first pair exists (the first ``2L`` iterations) the steps are plain SGD.

References:
  Byrd, R. H., Hansen, S. L., Nocedal, J. & Singer, Y. (2016). A stochastic quasi-Newton
  method for large-scale optimization. SIAM J. Optim. 26(2), 1008-1031: Algorithm 1
  (SQN), Algorithm 2 (Hessian updating: L-BFGS with ``H⁰ = (sᵀy/yᵀy) I``).
  Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed., Alg. 7.4
  (two-loop recursion).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jopt._checks import check_float_tree, check_learning_rate, check_positive_int
from jopt.calculus import hvp
from jopt.step import Work
from jopt.transforms._common import ScalarOrSchedule, learning_rate_at, safe_increment
from jopt.transforms.quasi_newton import LBFGSState, lbfgs_direction, pair_is_usable
from jopt.tree import set_row, tree_scale

PyTree = Any
HessianBatchFn = Callable[[PyTree, jax.Array], jax.Array]

__all__ = ["SQNState", "sqn"]


class SQNState(NamedTuple):
    """State of :func:`sqn`.

    Attributes:
      count: iterations made (``k`` of Algorithm 1, 0-based before the update).
      iterate_sum: sum of the iterates of the current window of ``L`` steps.
      prev_average: ``x̄_{t−1}``, the average of the previous window.
      num_averages: windows completed (``t + 1``).
      s_history, y_history: ring buffers of the accepted pairs (leading axis ``M``).
      rho: ``1/sᵀy`` per slot (0 for empty slots). head: slot written next.
      gamma: ``sᵀy/yᵀy`` of the newest pair (``H⁰`` scale; 0 before the first pair).
      num_pairs: pairs accepted. num_skipped: pairs rejected by the curvature test.
      work: the :class:`jopt.Work` done (``nhvp``: one Hessian-vector product per formed
        pair), which ``jopt.minimize`` reports as ``nhev``.
    """

    count: jax.Array
    iterate_sum: PyTree
    prev_average: PyTree
    num_averages: jax.Array
    s_history: PyTree
    y_history: PyTree
    rho: jax.Array
    head: jax.Array
    gamma: jax.Array
    num_pairs: jax.Array
    num_skipped: jax.Array
    work: Work


def sqn_direction(grads: PyTree, state: SQNState, memory_size: int) -> PyTree:
    """``−H_t g`` by the two-loop recursion; ``−g`` while no pair is stored (SGD phase)."""
    view = LBFGSState(
        count=state.count, s_history=state.s_history, y_history=state.y_history,
        rho=state.rho, head=state.head,
        gamma=jnp.where(state.num_pairs > 0, state.gamma, 1).astype(state.gamma.dtype),
        prev_params=None, prev_grad=None)
    return lbfgs_direction(grads, view, memory_size)


def curvature_pair(
    hessian_fn: Callable[[PyTree], jax.Array], average: PyTree, prev_average: PyTree,
    form: jax.Array,
) -> tuple[PyTree, PyTree]:
    """``(s, y) = (x̄_t − x̄_{t−1}, ∇²F(x̄_t) s)``; the HVP runs only where ``form`` holds.

    ``lax.cond`` skips the HVP on the ``L − 1`` steps of a window that form no pair. Under
    ``jax.vmap`` with a batched ``form`` the cond becomes a select and the HVP runs every
    step (the steps stay correct; only the saving is lost) — SQN batched over runs that
    share the step counter keeps ``form`` unbatched and the saving.
    """
    s = jax.tree.map(jnp.subtract, average, prev_average)

    def product(s):
        y = hvp(hessian_fn, average, s)
        return jax.tree.map(lambda a, b: a.astype(b.dtype), y, s)

    y = jax.lax.cond(form, product, lambda s: jax.tree.map(jnp.zeros_like, s), s)
    return s, y


def _store_pair(state: SQNState, s: PyTree, y: PyTree, ok: jax.Array, sy: jax.Array,
                yy: jax.Array) -> dict[str, Any]:
    """Ring-buffer write of an accepted pair (Algorithm 2 keeps the newest ``M``)."""
    head = state.head

    def write(history, new):
        return jax.tree.map(lambda h, v: set_row(h, head, jnp.where(ok, v, h[head])), history,
                            new)

    dtype = state.rho.dtype
    rho_new = jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0).astype(dtype)
    return dict(
        s_history=write(state.s_history, s),
        y_history=write(state.y_history, y),
        rho=set_row(state.rho, head, jnp.where(ok, rho_new, state.rho[head])),
        head=jnp.where(ok, (head + 1) % state.rho.shape[0], head),
        gamma=jnp.where(ok, sy / jnp.where(ok, yy, 1.0), state.gamma).astype(dtype),
    )


def sqn(
    learning_rate: ScalarOrSchedule,
    *,
    memory_size: int = 10,
    update_every: int = 10,
    hessian_batch_fn: HessianBatchFn | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Stochastic quasi-Newton method (Byrd, Hansen, Nocedal & Singer 2016, Algorithm 1).

    ``update(grads, state, params, value_fn=...)`` returns ``−α_k H_t g_k`` where ``g_k`` is
    the (minibatch) gradient passed in and ``H_t`` the L-BFGS matrix of the newest
    ``memory_size`` curvature pairs. Every ``update_every = L`` steps the average ``x̄_t``
    of the last ``L`` iterates is formed; from the second window on a pair
    ``s_t = x̄_t − x̄_{t−1}``, ``y_t = ∇²F_{S_H}(x̄_t) s_t`` is computed with one
    Hessian-vector product (:func:`jopt.hvp`) and stored unless it fails the relative
    curvature test ``sᵀy > ε‖s‖‖y‖`` (``ε`` from the dtype, as in L-BFGS); a skipped pair
    never produces NaN. ``H⁰ = (sᵀy/yᵀy) I`` of the newest pair (Algorithm 2). Before the
    first accepted pair the step is plain SGD, ``−α_k g_k`` (the first ``2L`` iterations).

    The Hessian sample ``F_{S_H}`` is, in order of precedence: the extra argument
    ``hessian_value_fn`` (``params -> scalar``, closing over a Hessian minibatch),
    ``lambda w: hessian_batch_fn(w, t)`` with the pair index ``t`` (build the batch from
    ``t``, e.g. ``jax.random.fold_in(key, t)``), or the extra argument ``value_fn`` (the
    gradient minibatch reused). Pass it on *every* call: the step is one traced function
    and the HVP branch is traced even when it does not run (``lax.cond``; see
    :func:`curvature_pair` for the ``vmap`` trade-off).

    Under ``optax.inject_hyperparams`` pass ``static_args=("memory_size", "update_every")``
    (they fix array shapes and the pair schedule).

    Args:
      learning_rate: ``α_k >= 0``: a float, traced scalar, or optax schedule of the step.
      memory_size: ``M``, the number of pairs kept (Python int >= 1).
      update_every: ``L``, iterations per averaging window (Python int >= 1).
      hessian_batch_fn: optional ``(params, t) -> scalar`` Hessian sample (see above).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`SQNState`
      (``work.nhvp`` counts the HVPs).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> tx = jopt.sqn(0.1, memory_size=5, update_every=5)
      >>> loss = lambda w: jnp.sum((w - 1.0) ** 2)
      >>> w = jnp.zeros(3); state = tx.init(w)
      >>> for _ in range(30):
      ...     u, state = tx.update(jax.grad(loss)(w), state, w, value_fn=loss)
      ...     w = w + u
    """
    check_learning_rate(learning_rate)
    check_positive_int("memory_size", memory_size)
    check_positive_int("update_every", update_every)
    if hessian_batch_fn is not None and not callable(hessian_batch_fn):
        raise TypeError(f"`hessian_batch_fn` must be a function `(params, t) -> scalar`, got "
                        f"{type(hessian_batch_fn).__name__}.")

    def init(params: PyTree) -> SQNState:
        check_float_tree("params", params)
        dtype = jnp.result_type(*jax.tree.leaves(params))
        zeros = jax.tree.map(jnp.zeros_like, params)
        hist = jax.tree.map(lambda p: jnp.zeros((memory_size, *jnp.shape(p)), p.dtype), params)
        zero = jnp.zeros([], jnp.int32)
        return SQNState(
            count=zero, iterate_sum=zeros, prev_average=zeros, num_averages=zero,
            s_history=hist, y_history=hist, rho=jnp.zeros([memory_size], dtype), head=zero,
            gamma=jnp.zeros([], dtype), num_pairs=zero, num_skipped=zero, work=Work.zeros("nhvp"))

    def hessian_objective(value_fn, hessian_value_fn, t):
        if hessian_value_fn is not None:
            return hessian_value_fn
        if hessian_batch_fn is not None:
            return lambda w: hessian_batch_fn(w, t)
        if value_fn is not None:
            return value_fn
        raise ValueError(
            "sqn needs an objective for its curvature pairs: pass `value_fn=fun` (or "
            "`hessian_value_fn=fun` for a separate Hessian sample) to `update` on every "
            "call, or build it with `sqn(..., hessian_batch_fn=(params, t) -> loss)`.")

    def update(
        grads: PyTree,
        state: SQNState,
        params: PyTree = None,
        *,
        value_fn: Callable[[PyTree], jax.Array] | None = None,
        hessian_value_fn: Callable[[PyTree], jax.Array] | None = None,
        **extra: Any,
    ) -> tuple[PyTree, SQNState]:
        del extra
        if params is None:
            raise ValueError("sqn needs `params`: call update(grads, state, params, "
                             "value_fn=...).")
        t = state.num_averages  # Algorithm 1's t of the pair formed at this window's end
        hessian_fn = hessian_objective(value_fn, hessian_value_fn, t)
        direction = sqn_direction(grads, state, memory_size)
        lr = learning_rate_at(learning_rate, state.count)
        updates = tree_scale(lr, direction)

        iterate_sum = jax.tree.map(jnp.add, state.iterate_sum, params)
        window_end = (state.count + 1) % update_every == 0
        average = tree_scale(1.0 / update_every, iterate_sum)
        form = window_end & (state.num_averages > 0)
        s, y = curvature_pair(hessian_fn, average, state.prev_average, form)
        ok, sy, yy, _ = pair_is_usable(s, y, form)
        stored = _store_pair(state, s, y, ok, sy, yy)

        def at_end(new, old):
            return jax.tree.map(lambda a, b: jnp.where(window_end, a, b), new, old)

        new_state = SQNState(
            count=safe_increment(state.count),
            iterate_sum=at_end(jax.tree.map(jnp.zeros_like, iterate_sum), iterate_sum),
            prev_average=at_end(average, state.prev_average),
            num_averages=state.num_averages + window_end.astype(jnp.int32),
            num_pairs=state.num_pairs + ok.astype(jnp.int32),
            num_skipped=state.num_skipped + (form & ~ok).astype(jnp.int32),
            work=state.work.add(nhvp=form.astype(jnp.int32)),
            **stored,
        )
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init, update)
