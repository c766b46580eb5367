"""First-order optimizers: SGD (momentum, Nesterov), AdaGrad, RMSProp, Adam, AdamW.

Each optimizer is an ``optax.GradientTransformation`` — optax's own type — so it composes
with every optax combinator (``chain``, ``masked``, ``inject_hyperparams``, ``MultiSteps``)
and runs under ``jopt.minimize``. The returned updates already carry the step size and
sign (``params + updates`` descends), exactly as optax's ready-made optimizers do.

Design: every optimizer computes all its per-leaf outputs (update and new moments) in one
fused function per leaf (:func:`jopt.transforms._common.map_leaves`), so a model with many
leaves costs one small multi-output kernel per leaf rather than one per formula line. For
cost independent of the leaf count, store the parameters in a :class:`jopt.FlatParams`
(one buffer per dtype): the same optimizers then update everything in one pass.

Learning rates may be Python floats, traced scalars (so ``jax.vmap`` over learning rates
works) or optax schedules ``step -> lr`` evaluated at the 0-based step count.
Half-precision leaves (bfloat16, float16) are updated in float32 arithmetic and stored
back in their own dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jopt._checks import (
    check_float_tree,
    check_in_range,
    check_learning_rate,
    check_nonnegative,
)
from jopt.transforms._common import (
    PyTree,
    ScalarOrSchedule,
    compute_dtype,
    learning_rate_at,
    map_leaves,
    safe_increment,
    zeros_like_tree,
)

__all__ = [
    "AdagradState",
    "AdamState",
    "RMSPropState",
    "SGDState",
    "adagrad",
    "adam",
    "adamw",
    "rmsprop",
    "sgd",
]


def as_dtype(x: Any, dtype: Any) -> Any:
    """A hyperparameter in arithmetic dtype ``dtype``.

    Python numbers stay Python numbers: JAX treats them as weakly typed, so expressions
    such as ``1 - b2`` are formed in double precision before touching the array's dtype
    (casting ``0.999`` to float32 first would put a 1e-5 relative error into ``1 - b2``).
    Arrays (traced hyperparameters) are cast so they never promote a leaf's dtype.
    """
    if isinstance(x, int | float) and not isinstance(x, bool):
        return x
    return jnp.asarray(x, dtype)


def _momentum_step(
    u: jax.Array, trace: jax.Array, momentum: Any, nesterov: bool
) -> tuple[jax.Array, jax.Array]:
    """Heavy-ball trace ``t ← u + μ t``; Nesterov uses ``u + μ t_new`` (Sutskever et al. 2013)."""
    dt = u.dtype
    new_trace = u + as_dtype(momentum, dt) * trace.astype(dt)
    direction = u + as_dtype(momentum, dt) * new_trace if nesterov else new_trace
    return direction, new_trace


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a Python bool (True/False), got {value!r}.")


# ----------------------------------------------------------------------------- SGD


class SGDState(NamedTuple):
    """State of :func:`sgd`: step count and (with momentum) the velocity trace."""

    count: jax.Array
    trace: PyTree


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | jax.Array | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""Stochastic gradient descent, optionally with heavy-ball or Nesterov momentum.

    .. math::
       t_k = g_k + \mu t_{k-1}, \qquad
       u_k = -\eta_k \,t_k \ \text{or (Nesterov)}\ u_k = -\eta_k \,(g_k + \mu t_k)

    Args:
      learning_rate: step size ``η`` (float, traced scalar, or schedule).
      momentum: ``μ`` in ``[0, 1)``, or ``None`` for plain SGD.
      nesterov: use the Nesterov look-ahead form (needs ``momentum``).

    References:
      Robbins & Monro (1951); Polyak (1964); Sutskever, Martens, Dahl & Hinton (2013),
      "On the importance of initialization and momentum in deep learning", ICML, eq. (3)-(4).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.sgd(0.1, momentum=0.9)
      >>> state = opt.init(jnp.ones(3))
      >>> updates, state = opt.update(jnp.ones(3), state)
    """
    check_learning_rate(learning_rate)
    _check_bool("nesterov", nesterov)
    if momentum is not None:
        check_in_range("momentum", momentum, 0.0, 1.0)
    elif nesterov:
        raise ValueError("`nesterov=True` needs a `momentum`; pass e.g. `momentum=0.9`.")

    def init(params: PyTree) -> SGDState:
        check_float_tree("params", params, allow_empty=True)
        trace = None if momentum is None else zeros_like_tree(params)
        return SGDState(count=jnp.zeros([], jnp.int32), trace=trace)

    def update(
        updates: PyTree, state: SGDState, params: PyTree = None
    ) -> tuple[PyTree, SGDState]:
        del params
        lr = learning_rate_at(learning_rate, state.count)

        if momentum is None:
            new_updates = jax.tree.map(lambda g: -as_dtype(lr, g.dtype) * g, updates)
            return new_updates, SGDState(safe_increment(state.count), None)

        def leaf(g: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
            cdt = compute_dtype(g.dtype)
            direction, new_t = _momentum_step(g.astype(cdt), t, momentum, nesterov)
            return (-as_dtype(lr, cdt) * direction).astype(g.dtype), new_t.astype(t.dtype)

        new_updates, trace = map_leaves(leaf, 2, updates, state.trace)
        return new_updates, SGDState(safe_increment(state.count), trace)

    return optax.GradientTransformation(init, update)


# -------------------------------------------------------------------------- AdaGrad


class AdagradState(NamedTuple):
    """State of :func:`adagrad`: step count and the running sum of squared gradients."""

    count: jax.Array
    sum_of_squares: PyTree


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> optax.GradientTransformation:
    r"""AdaGrad: per-coordinate steps scaled by the root of the summed squared gradients.

    .. math::
       G_k = G_{k-1} + g_k^2, \qquad u_k = -\eta_k\, g_k / \sqrt{G_k + \epsilon}

    (coordinates with ``G_k = 0`` get no update).

    Args:
      learning_rate: step size ``η``.
      initial_accumulator_value: ``G_0 >= 0``.
      eps: ``ε >= 0`` inside the square root.

    References:
      Duchi, Hazan & Singer (2011), "Adaptive subgradient methods for online learning and
      stochastic optimization", JMLR 12, Fig. 1 (diagonal version).
    """
    check_learning_rate(learning_rate)
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    check_nonnegative("eps", eps)

    def init(params: PyTree) -> AdagradState:
        check_float_tree("params", params, allow_empty=True)
        acc = jax.tree.map(
            lambda p: jnp.full_like(p, initial_accumulator_value, jnp.result_type(p)),
            params,
        )
        return AdagradState(jnp.zeros([], jnp.int32), acc)

    def update(
        updates: PyTree, state: AdagradState, params: PyTree = None
    ) -> tuple[PyTree, AdagradState]:
        del params
        lr = learning_rate_at(learning_rate, state.count)

        def leaf(g: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
            cdt = compute_dtype(g.dtype)
            gc = g.astype(cdt)
            s_new = s.astype(cdt) + gc * gc
            scale = jnp.where(s_new > 0, jax.lax.rsqrt(s_new + as_dtype(eps, cdt)), 0.0)
            return (-as_dtype(lr, cdt) * scale * gc).astype(g.dtype), s_new.astype(s.dtype)

        new_updates, acc = map_leaves(leaf, 2, updates, state.sum_of_squares)
        return new_updates, AdagradState(safe_increment(state.count), acc)

    return optax.GradientTransformation(init, update)


# -------------------------------------------------------------------------- RMSProp


class RMSPropState(NamedTuple):
    """State of :func:`rmsprop`: count, mean square ``nu``, mean ``mu`` (centered), trace."""

    count: jax.Array
    nu: PyTree
    mu: PyTree
    trace: PyTree


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    centered: bool = False,
    momentum: float | jax.Array | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""RMSProp, plain or centered, with optional momentum.

    .. math::
       \nu_k = \rho\,\nu_{k-1} + (1-\rho) g_k^2, \qquad
       \mu_k = \rho\,\mu_{k-1} + (1-\rho) g_k \ \text{(centered only)},

       d_k = g_k / \sqrt{\nu_k - \mu_k^2 + \epsilon}, \qquad
       u_k = -\eta_k d_k \ \text{or, with momentum,}\ t_k = -\eta_k d_k + \mu t_{k-1}

    Args:
      learning_rate: step size ``η``.
      decay: ``ρ`` in ``[0, 1)``.
      eps: ``ε >= 0`` inside the square root.
      initial_scale: initial value of ``ν``.
      centered: subtract the squared running mean (Graves 2013, eq. 38-40).
      momentum: optional heavy-ball momentum on the scaled steps ``-η_k d_k``.
      nesterov: Nesterov form of that momentum.

    References:
      Tieleman & Hinton (2012), Lecture 6.5, COURSERA: Neural Networks for Machine Learning;
      Graves (2013), "Generating sequences with recurrent neural networks", arXiv:1308.0850.
    """
    check_learning_rate(learning_rate)
    check_in_range("decay", decay, 0.0, 1.0)
    check_nonnegative("eps", eps)
    check_nonnegative("initial_scale", initial_scale)
    _check_bool("centered", centered)
    _check_bool("nesterov", nesterov)
    if momentum is not None:
        check_in_range("momentum", momentum, 0.0, 1.0)
    elif nesterov:
        raise ValueError("`nesterov=True` needs a `momentum`; pass e.g. `momentum=0.9`.")

    def init(params: PyTree) -> RMSPropState:
        check_float_tree("params", params, allow_empty=True)
        nu = jax.tree.map(
            lambda p: jnp.full_like(p, initial_scale, jnp.result_type(p)), params
        )
        mu = zeros_like_tree(params) if centered else None
        trace = zeros_like_tree(params) if momentum is not None else None
        return RMSPropState(jnp.zeros([], jnp.int32), nu, mu, trace)

    def update(
        updates: PyTree, state: RMSPropState, params: PyTree = None
    ) -> tuple[PyTree, RMSPropState]:
        del params
        lr = learning_rate_at(learning_rate, state.count)
        # Absent optional states are passed as the gradient tree and ignored.
        mu_in = state.mu if centered else updates
        trace_in = state.trace if momentum is not None else updates

        def leaf(
            g: jax.Array, nu: jax.Array, mu: jax.Array, t: jax.Array
        ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
            cdt = compute_dtype(g.dtype)
            gc = g.astype(cdt)
            rho = as_dtype(decay, cdt)
            nu_new = (1 - rho) * (gc * gc) + rho * nu.astype(cdt)
            if centered:
                mu_new = (1 - rho) * gc + rho * mu.astype(cdt)
                d = gc * jax.lax.rsqrt(nu_new - mu_new * mu_new + as_dtype(eps, cdt))
            else:
                mu_new = mu
                d = gc * jax.lax.rsqrt(nu_new + as_dtype(eps, cdt))
            step = -as_dtype(lr, cdt) * d
            if momentum is not None:  # the trace accumulates scaled steps (Graves eq. 40)
                step, t_new = _momentum_step(step, t, momentum, nesterov)
            else:
                t_new = t
            u = step.astype(g.dtype)
            return u, nu_new.astype(nu.dtype), mu_new.astype(mu.dtype), t_new.astype(t.dtype)

        new_updates, nu, mu, trace = map_leaves(
            leaf, 4, updates, state.nu, mu_in, trace_in
        )
        new_state = RMSPropState(
            safe_increment(state.count),
            nu,
            mu if centered else None,
            trace if momentum is not None else None,
        )
        return new_updates, new_state

    return optax.GradientTransformation(init, update)


# ----------------------------------------------------------------------- Adam, AdamW


class AdamState(NamedTuple):
    """State of :func:`adam` / :func:`adamw`: count, first moment ``mu``, second ``nu``."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


MaskOrFn = PyTree | Callable[[PyTree], PyTree] | None


def resolve_mask(mask: MaskOrFn, params: PyTree) -> PyTree:
    """The weight-decay mask as a tree like ``params`` (bool or boolean-array leaves)."""
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    tree = mask(params) if callable(mask) else mask
    if jax.tree.structure(tree) != jax.tree.structure(params):
        raise ValueError(
            "`mask` must have the same pytree structure as `params` (one bool per leaf, or "
            "a boolean array per leaf), or be a callable `params -> such a tree`.\n"
            f"  params: {jax.tree.structure(params)}\n  mask:   {jax.tree.structure(tree)}"
        )
    return tree


def _adam_like(
    learning_rate: ScalarOrSchedule,
    b1: Any,
    b2: Any,
    eps: Any,
    eps_root: Any,
    mu_dtype: Any,
    weight_decay: Any,
    mask: MaskOrFn,
) -> optax.GradientTransformation:
    check_learning_rate(learning_rate)
    check_in_range("b1", b1, 0.0, 1.0)
    check_in_range("b2", b2, 0.0, 1.0)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    decoupled = weight_decay is not None
    if decoupled:
        check_nonnegative("weight_decay", weight_decay)

    def init(params: PyTree) -> AdamState:
        check_float_tree("params", params, allow_empty=True)
        return AdamState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros_like_tree(params, mu_dtype),
            nu=zeros_like_tree(params),
        )

    def update(
        updates: PyTree, state: AdamState, params: PyTree = None
    ) -> tuple[PyTree, AdamState]:
        lr = learning_rate_at(learning_rate, state.count)
        count = safe_increment(state.count)
        if decoupled:
            if params is None:
                raise ValueError(
                    "adamw's update needs `params` for the decoupled weight decay: call "
                    "`opt.update(grads, state, params)`."
                )
            p_in, m_in = params, resolve_mask(mask, params)
        else:  # placeholders, ignored by `leaf`
            p_in, m_in = updates, updates

        def leaf(
            g: jax.Array, m: jax.Array, v: jax.Array, p: jax.Array, keep: Any
        ) -> tuple[jax.Array, jax.Array, jax.Array]:
            cdt = compute_dtype(g.dtype)
            gc = g.astype(cdt)
            beta1, beta2 = as_dtype(b1, cdt), as_dtype(b2, cdt)
            m_new = (1 - beta1) * gc + beta1 * m.astype(cdt)
            v_new = (1 - beta2) * (gc * gc) + beta2 * v.astype(cdt)
            m_hat = m_new / (1 - beta1 ** count.astype(cdt))
            v_hat = v_new / (1 - beta2 ** count.astype(cdt))
            u = m_hat / (jnp.sqrt(v_hat + as_dtype(eps_root, cdt)) + as_dtype(eps, cdt))
            if decoupled:
                decay = as_dtype(weight_decay, cdt) * p.astype(cdt)
                u = u + jnp.where(keep, decay, jnp.zeros_like(decay))
            return (-as_dtype(lr, cdt) * u).astype(g.dtype), m_new.astype(m.dtype), v_new.astype(
                v.dtype
            )

        new_updates, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu, p_in, m_in)
        return new_updates, AdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Adam with bias-corrected moment estimates (Kingma & Ba 2015, Algorithm 1).

    .. math::
       m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
       v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,

       \hat m_k = m_k/(1-\beta_1^k),\quad \hat v_k = v_k/(1-\beta_2^k),\quad
       u_k = -\eta_k\, \hat m_k / (\sqrt{\hat v_k + \epsilon_{root}} + \epsilon)

    Args:
      learning_rate: step size ``η`` (float, traced scalar, or schedule).
      b1, b2: moment decay rates in ``[0, 1)``.
      eps: ``ε`` added outside the square root.
      eps_root: ``ε_root`` inside the square root (helps when differentiating through Adam).
      mu_dtype: optional storage dtype of the first moment (default: the parameter's).

    References:
      Kingma, D. P. & Ba, J. (2015). Adam: A method for stochastic optimization. ICLR.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jopt
      >>> params = {"w": jnp.ones(3)}
      >>> opt = jopt.adam(1e-2)
      >>> state = opt.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> params = optax.apply_updates(params, updates)
    """
    return _adam_like(learning_rate, b1, b2, eps, eps_root, mu_dtype, None, None)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 1e-4,
    mask: MaskOrFn = None,
) -> optax.GradientTransformation:
    r"""Adam with decoupled weight decay: ``u_k = -η_k (adam_k + λ·w_k)``.

    The decay is added to the Adam direction, not to the gradient, so it is not rescaled
    by the second moment (Loshchilov & Hutter 2019, Algorithm 2, with the schedule
    multiplier folded into ``η``).

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype: as in :func:`adam`.
      weight_decay: ``λ >= 0``.
      mask: which parameters decay: a pytree like ``params`` with a bool (or a boolean
        array of the leaf's shape) per leaf, or a callable ``params -> such a tree``.
        ``None`` decays every parameter.

    References:
      Loshchilov, I. & Hutter, F. (2019). Decoupled weight decay regularization. ICLR.
    """
    return _adam_like(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask)
