"""Knowledge distillation: the temperature-scaled loss and a train step for any transform.

.. math::
   \\mathcal L = \\alpha\\,T^2\\,\\mathrm{KL}\\bigl(\\mathrm{softmax}(t/T)\\,\\|\\,
   \\mathrm{softmax}(s/T)\\bigr) + (1-\\alpha)\\,\\mathrm{CE}(y, \\mathrm{softmax}(s))

averaged over the batch, with student logits ``s``, teacher logits ``t`` and temperature
``T``. The soft-target gradients scale as ``1/T²``; the ``T²`` factor keeps their size
independent of ``T`` so ``α`` means the same at every temperature (Hinton, Vinyals & Dean
2015, §2). Both terms are computed from ``log_softmax`` (no ``exp`` overflow, no
``log 0``), and the teacher receives no gradient.

References
----------
* Hinton, G., Vinyals, O. & Dean, J. (2015). Distilling the knowledge in a neural network.
  arXiv:1503.02531, §2 (soft targets at temperature T, the T² factor), §2.1.
* Buciluǎ, C., Caruana, R. & Niculescu-Mizil, A. (2006). Model compression. KDD.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jopt._checks import check_in_range, is_concrete_number

PyTree = Any

__all__ = ["distillation_loss", "distillation_step"]


def _check_temperature(temperature: Any) -> None:
    if callable(temperature):
        raise TypeError("`temperature` must be a positive number, not a callable.")
    if is_concrete_number(temperature) and not 0.0 < float(temperature) < float("inf"):
        raise ValueError(
            f"`temperature` must be finite and > 0, got {temperature!r}. Use 1.0 for plain softmax "
            f"targets; Hinton et al. use values such as 2-20."
        )


def _check_alpha(alpha: Any) -> None:
    if callable(alpha):
        raise TypeError("`alpha` must be a number in [0, 1], not a callable.")
    check_in_range("alpha", alpha, 0.0, 1.0, hi_open=False)


def _cross_entropy(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example ``−log p[label]`` (integer labels) or ``−Σ y log p`` (soft labels)."""
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != log_probs.shape[:-1]:
            raise ValueError(
                f"Integer `labels` must have the logits' shape without the class axis, "
                f"{log_probs.shape[:-1]}, got {labels.shape}."
            )
        return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    if labels.shape != log_probs.shape:
        raise ValueError(
            f"Probability `labels` must have the logits' shape {log_probs.shape}, got "
            f"{labels.shape}; integer class labels have the shape without the class axis."
        )
    labels = labels.astype(log_probs.dtype)
    return -jnp.sum(jnp.where(labels > 0, labels * log_probs, 0), axis=-1)


def distillation_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    labels: jax.Array | None = None,
    *,
    temperature: float | jax.Array = 2.0,
    alpha: float | jax.Array = 0.5,
) -> jax.Array:
    r"""Temperature-scaled distillation loss (Hinton, Vinyals & Dean 2015, §2).

    ``mean_batch[ α T² KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) CE(labels, softmax(s)) ]``

    Args:
      student_logits: ``(..., C)`` float logits ``s``.
      teacher_logits: ``(..., C)`` logits ``t`` (no gradient flows into them).
      labels: integer classes of shape ``(...)``, or class probabilities ``(..., C)``;
        ``None`` for pure distillation (needs ``alpha=1``).
      temperature: ``T > 0`` (may be traced).
      alpha: weight of the soft-target term, in ``[0, 1]`` (may be traced).

    Returns:
      The scalar loss, in the student's dtype.
    """
    _check_temperature(temperature)
    _check_alpha(alpha)
    s = jnp.asarray(student_logits)
    if not jnp.issubdtype(s.dtype, jnp.floating):
        raise TypeError(f"`student_logits` must be floating point, got dtype {s.dtype}.")
    if s.ndim < 1:
        raise ValueError("`student_logits` must have a class axis (shape (..., C)).")
    t = jnp.asarray(teacher_logits)
    if t.shape != s.shape:
        raise ValueError(
            f"`teacher_logits` must have the shape of `student_logits`, {s.shape}, got "
            f"{t.shape}."
        )
    dt = s.dtype
    temp = jnp.asarray(temperature, dt)
    t = jax.lax.stop_gradient(t.astype(dt))
    log_pt = jax.nn.log_softmax(t / temp, axis=-1)
    log_ps_t = jax.nn.log_softmax(s / temp, axis=-1)
    pt = jnp.exp(log_pt)
    kl = jnp.sum(jnp.where(pt > 0, pt * (log_pt - log_ps_t), 0), axis=-1)
    soft = temp * temp * kl
    if labels is None:
        if not (is_concrete_number(alpha) and float(alpha) == 1.0):
            raise ValueError(
                "`labels=None` (pure distillation) needs `alpha=1.0`; pass labels to mix in "
                "the hard-label cross-entropy."
            )
        return jnp.mean(soft)
    hard = _cross_entropy(jax.nn.log_softmax(s, axis=-1), jnp.asarray(labels))
    a = jnp.asarray(alpha, dt)
    return jnp.mean(a * soft + (1 - a) * hard)


def distillation_step(
    student_fn: Callable[[PyTree, Any], jax.Array],
    teacher_fn: Callable[[Any], jax.Array],
    optimizer: optax.GradientTransformation,
    *,
    temperature: float | jax.Array = 2.0,
    alpha: float | jax.Array = 0.5,
) -> Callable[[PyTree, Any, tuple[Any, Any]], tuple[PyTree, Any, jax.Array]]:
    """A distillation train step for any optax or jopt transform.

    Returns ``step(params, opt_state, batch) -> (params, opt_state, loss)`` with
    ``batch = (inputs, labels)``: the loss is :func:`distillation_loss` of
    ``student_fn(params, inputs)`` against ``teacher_fn(inputs)``. The step is pure
    (``jax.jit`` it, or run it inside ``lax.scan``); initialise with
    ``optimizer.init(params)``. The transform's ``update`` receives ``params`` and the
    extra arguments ``value`` (the loss) and ``value_fn`` (``params -> loss`` on this
    batch), so line searches and second-order jopt transforms work; plain optax transforms
    are wrapped with ``optax.with_extra_args_support`` and ignore them.

    To reuse precomputed teacher logits, pass ``inputs = (x, logits)`` with
    ``student_fn = lambda p, inp: f(p, inp[0])`` and ``teacher_fn = lambda inp: inp[1]``.

    Args:
      student_fn: ``(params, inputs) -> logits``.
      teacher_fn: ``inputs -> logits`` (close over the teacher's parameters).
      optimizer: any ``optax.GradientTransformation``.
      temperature, alpha: as in :func:`distillation_loss` (checked here).
    """
    _check_temperature(temperature)
    _check_alpha(alpha)
    for name, fn in (("student_fn", student_fn), ("teacher_fn", teacher_fn)):
        if not callable(fn):
            raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"`optimizer` must be an optax.GradientTransformation (e.g. jopt.adam(1e-3)), "
            f"got {type(optimizer).__name__}."
        )
    tx = optax.with_extra_args_support(optimizer)

    def step(params: PyTree, opt_state: Any, batch: tuple[Any, Any]
             ) -> tuple[PyTree, Any, jax.Array]:
        inputs, labels = batch
        teacher_logits = jax.lax.stop_gradient(teacher_fn(inputs))

        def loss(p: PyTree) -> jax.Array:
            return distillation_loss(student_fn(p, inputs), teacher_logits, labels,
                                     temperature=temperature, alpha=alpha)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params, value=value, value_fn=loss)
        return optax.apply_updates(params, updates), opt_state, value

    return step
