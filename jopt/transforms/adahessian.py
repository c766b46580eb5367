"""AdaHessian: Adam whose second moment is built from a Hutchinson Hessian diagonal.

References:
  Yao, Z., Gholami, A., Shen, S., Mustafa, M., Keutzer, K. & Mahoney, M. W. (2021).
  ADAHESSIAN: An adaptive second order optimizer for machine learning. AAAI 35(12),
  §3 (Hutchinson diagonal, eq. 6-7; spatial averaging, eq. 8; Hessian momentum and
  power, eq. 9; Algorithm 1).
  Bekas, C., Kokiopoulou, E. & Saad, Y. (2007). An estimator for the diagonal of a
  matrix. Appl. Numer. Math. 57(11-12).
  Loshchilov, I. & Hutter, F. (2019). Decoupled weight decay regularization. ICLR.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jopt._checks import (
    check_float_tree,
    check_in_range,
    check_learning_rate,
    check_nonnegative,
    check_scalar_output,
    is_concrete_number,
)
from jopt.step import Work
from jopt.transforms._common import (
    PyTree,
    ScalarOrSchedule,
    compute_dtype,
    learning_rate_at,
    safe_increment,
    zeros_like_tree,
)
from jopt.transforms.first_order import MaskOrFn, as_dtype, resolve_mask

__all__ = ["AdaHessianState", "adahessian"]

BlockSizes = int | None | PyTree


class AdaHessianState(NamedTuple):
    """State of :func:`adahessian`.

    Attributes:
      count: steps taken (int32).
      key: PRNG key (``uint32[2]``) of the next Rademacher probe.
      mu: first moment (EMA of gradients).
      nu: second moment (EMA of the squared, spatially averaged Hessian diagonal).
      work: the :class:`jopt.Work` done (``nhvp``: one Hessian-vector product per step).
    """

    count: jax.Array
    key: jax.Array
    mu: PyTree
    nu: PyTree
    work: Work


def _check_block_size(name: str, b: Any) -> None:
    if b is None:
        return
    if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
        raise ValueError(f"`{name}` must be None or a Python int >= 1 (entries averaged per "
                         f"block), got {b!r}. Under `optax.inject_hyperparams` pass "
                         f"`static_args=(\"seed\", \"spatial_average_size\")`.")


def _leaf_block_sizes(spatial_average_size: BlockSizes, params: PyTree) -> list[int | None]:
    """One block size (or None) per leaf of ``params``."""
    treedef = jax.tree.structure(params)
    if spatial_average_size is None or isinstance(spatial_average_size, numbers.Integral):
        return [spatial_average_size] * treedef.num_leaves
    try:
        sizes = treedef.flatten_up_to(spatial_average_size)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "`spatial_average_size` must be None, an int, or a pytree like `params` with "
            f"an int or None per leaf.\n  params: {treedef}") from err
    for s in sizes:
        _check_block_size("spatial_average_size", s)
    return sizes


def spatial_average(d: jax.Array, block_size: int | None) -> jax.Array:
    """Replace each block of ``block_size`` consecutive entries by the block's mean.

    Blocks run over the leaf flattened in row-major order (Yao et al. 2021, eq. 8); a
    trailing partial block is averaged over its own entries. ``None`` or 1: unchanged.
    For a convolution kernel stored with its spatial dimensions last (``(out, in, kh,
    kw)``) use ``kh·kw``, which averages over each filter's spatial window, as the paper.
    """
    n = math.prod(d.shape)
    if block_size is None or block_size == 1 or n == 0:
        return d
    b = min(block_size, n)
    num_blocks = -(-n // b)
    flat = jnp.pad(d.reshape(-1), (0, num_blocks * b - n)).reshape(num_blocks, b)
    counts = np.full(num_blocks, b, np.float64)
    counts[-1] = n - (num_blocks - 1) * b
    means = jnp.sum(flat, axis=1) / jnp.asarray(counts, d.dtype)
    return jnp.repeat(means, b)[:n].reshape(d.shape)


def adahessian(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-4,
    hessian_power: float = 1.0,
    weight_decay: float = 0.0,
    mask: MaskOrFn = None,
    spatial_average_size: BlockSizes = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaHessian (Yao et al. 2021, Algorithm 1): Adam with Hessian-diagonal scaling.

    Each step draws a Rademacher probe ``z`` and makes one Hessian-vector product
    ``Hz`` of ``value_fn`` at ``params`` (forward-over-reverse, :func:`jopt.hvp`), giving
    the Hutchinson diagonal ``D = z ⊙ Hz`` (``E[D] = diag H``, eq. 7). ``D`` is averaged
    over blocks of ``spatial_average_size`` entries per leaf (eq. 8) and then

    .. math::
       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) D_t^{(s)} \odot D_t^{(s)},

       u_t = -\eta_t \Big( \frac{m_t / (1-\beta_1^t)}
             {\big(\sqrt{v_t/(1-\beta_2^t)}\big)^{k} + \epsilon} + \lambda\, w_t \Big)

    with Hessian power ``k`` (eq. 9) and decoupled weight decay ``λ`` (Loshchilov &
    Hutter 2019; ``λ = 0`` by default). A zero denominator (``ε = 0`` and no curvature
    seen on that entry) gives a zero step there rather than a NaN. ``g_t`` is the
    gradient passed in (so it may be clipped or otherwise pre-processed in an
    ``optax.chain``).

    ``update(grads, state, params, *, value_fn)`` needs ``value_fn: params -> scalar``
    (close over the minibatch). The probe of a step is
    ``unravel(jax.random.rademacher(sub, flat.shape, flat.dtype))`` with
    ``flat, unravel = jax.flatten_util.ravel_pytree(params)`` and
    ``key, sub = jax.random.split(state.key)``.

    Args:
      learning_rate: ``η`` (float, traced scalar, or optax schedule of the step).
      b1, b2: moment decay rates in ``[0, 1)``.
      eps: ``ε >= 0`` added to the denominator (the paper's code uses 1e-4).
      hessian_power: ``k`` in ``(0, 1]``; ``k = 1`` is the full Newton-like scaling.
      weight_decay: decoupled decay ``λ >= 0``.
      mask: which parameters decay (as in :func:`jopt.adamw`); ``None``: all.
      spatial_average_size: ``None`` (no averaging), an int block size for every leaf,
        or a pytree like ``params`` with an int or ``None`` per leaf (see
        :func:`spatial_average`).
      seed: Python int seed of the probe stream (the key lives in the state).

    Under ``optax.inject_hyperparams`` pass ``static_args=("seed",
    "spatial_average_size")`` (they fix the probe stream and array shapes).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`AdaHessianState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jopt
      >>> loss = lambda w: jnp.sum(jnp.array([1.0, 10.0]) * (w - 1.0) ** 2)
      >>> opt = jopt.adahessian(0.5)
      >>> w = jnp.zeros(2); state = opt.init(w)
      >>> for _ in range(50):
      ...     u, state = opt.update(jax.grad(loss)(w), state, w, value_fn=loss)
      ...     w = optax.apply_updates(w, u)
    """
    check_learning_rate(learning_rate)
    check_in_range("b1", b1, 0.0, 1.0)
    check_in_range("b2", b2, 0.0, 1.0)
    check_nonnegative("eps", eps)
    check_nonnegative("weight_decay", weight_decay)
    if is_concrete_number(hessian_power) and not 0.0 < float(hessian_power) <= 1.0:
        raise ValueError(f"`hessian_power` must lie in (0, 1], got {hessian_power!r}.")
    if spatial_average_size is None or isinstance(spatial_average_size, numbers.Integral):
        _check_block_size("spatial_average_size", spatial_average_size)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be a Python int, got {type(seed).__name__}. Under "
                        f"`optax.inject_hyperparams` pass "
                        f"`static_args=(\"seed\", \"spatial_average_size\")`.")

    def init(params: PyTree) -> AdaHessianState:
        check_float_tree("params", params)
        _leaf_block_sizes(spatial_average_size, params)
        zero = jnp.zeros([], jnp.int32)
        return AdaHessianState(count=zero, key=jax.random.PRNGKey(seed),
                               mu=zeros_like_tree(params), nu=zeros_like_tree(params),
                               work=Work.zeros("nhvp"))

    def update(
        updates: PyTree,
        state: AdaHessianState,
        params: PyTree = None,
        *,
        value_fn: Callable[[PyTree], jax.Array] | None = None,
        **extra: Any,
    ) -> tuple[PyTree, AdaHessianState]:
        del extra
        if params is None or value_fn is None:
            raise ValueError(
                "adahessian needs `params` and the objective for its Hessian-vector "
                "product: call `opt.update(grads, state, params, value_fn=loss)` with "
                "`loss: params -> scalar` (closing over the minibatch).")
        if not callable(value_fn):
            raise TypeError(f"`value_fn` must be a function `params -> scalar`, got "
                            f"{type(value_fn).__name__}.")
        check_scalar_output("value_fn", value_fn, params)
        sizes = _leaf_block_sizes(spatial_average_size, params)
        key, sub = jax.random.split(state.key)
        # One draw for the whole tree: random-number code compiles once, not per leaf.
        flat, unravel = ravel_pytree(params)
        z = unravel(jax.random.rademacher(sub, flat.shape, flat.dtype))
        hz = jax.jvp(jax.grad(value_fn), (params,), (z,))[1]

        count = safe_increment(state.count)
        lr = learning_rate_at(learning_rate, state.count)
        keep_tree = resolve_mask(mask, params)
        treedef = jax.tree.structure(params)
        leaves = zip(
            treedef.flatten_up_to(updates), jax.tree.leaves(state.mu), jax.tree.leaves(state.nu),
            jax.tree.leaves(params), jax.tree.leaves(z), jax.tree.leaves(hz),
            treedef.flatten_up_to(keep_tree), sizes, strict=True)

        outs = []
        for g, m, v, p, zi, hzi, keep, size in leaves:
            cdt = compute_dtype(g.dtype)
            beta1, beta2 = as_dtype(b1, cdt), as_dtype(b2, cdt)
            d = spatial_average(zi.astype(cdt) * hzi.astype(cdt), size)
            m_new = (1 - beta1) * g.astype(cdt) + beta1 * m.astype(cdt)
            v_new = (1 - beta2) * (d * d) + beta2 * v.astype(cdt)
            t = count.astype(cdt)
            m_hat = m_new / (1 - beta1**t)
            v_hat = v_new / (1 - beta2**t)
            denom = jnp.sqrt(v_hat) ** as_dtype(hessian_power, cdt) + as_dtype(eps, cdt)
            u = jnp.where(denom > 0, m_hat / jnp.where(denom > 0, denom, 1), 0)
            decay = as_dtype(weight_decay, cdt) * p.astype(cdt)
            u = u + jnp.where(keep, decay, jnp.zeros_like(decay))
            outs.append(((-as_dtype(lr, cdt) * u).astype(g.dtype), m_new.astype(m.dtype),
                         v_new.astype(v.dtype)))
        new_updates, mu, nu = (jax.tree.unflatten(treedef, [o[i] for o in outs])
                               for i in range(3))
        return new_updates, AdaHessianState(count=count, key=key, mu=mu, nu=nu,
                                            work=state.work._replace(
                                                nhvp=safe_increment(state.work.nhvp)))

    return optax.GradientTransformationExtraArgs(init, update)
