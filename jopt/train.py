"""``jopt.fit``: run a user's jitted training step over minibatches with a progress bar.

The loop is deliberately thin — the user writes the step (any optimizer, any model)::

    @jax.jit
    def step(state, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    state, losses = jopt.fit(step, (params, opt_state), batches, num_steps=1000)

and ``fit`` only feeds batches, keeps the losses and reports progress. It never waits for
the device on every step: the losses stay on the device and are fetched to the host in one
transfer every ``log_every`` steps, so JAX's asynchronous dispatch keeps the device busy
while the host prepares the next batches.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

__all__ = ["fit"]


def _make_bar(total: int | None, desc: str) -> Any:
    """A tqdm bar, or ``None`` when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


def _check_count(name: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a Python int >= 1, got {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")


def _check_step_output(out: Any) -> Any:
    """The loss of the first step's output ``(state, loss)``, checked (shapes only, no sync)."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(
            f"`step_fn` must return a pair `(state, loss)`, got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple) else "")
            + ". Return the new state and the minibatch loss."
        )
    loss = out[1]
    if not isinstance(loss, jax.Array | np.ndarray | np.generic | numbers.Real):
        raise TypeError(
            f"`step_fn` must return a scalar loss as the second element of `(state, loss)`, "
            f"got {type(loss).__name__}."
        )
    shape = np.shape(loss)
    dtype = getattr(loss, "dtype", np.asarray(loss).dtype)
    real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if shape != () or not real:
        raise TypeError(
            f"`step_fn` must return a scalar loss as the second element, got "
            f"{type(loss).__name__} of shape {shape} and dtype {dtype}. Return a real "
            f"scalar, e.g. reduce with `jnp.mean`."
        )
    return loss


def fit(
    step_fn: Callable[[PyTree, Any], tuple[PyTree, Any]],
    state: PyTree,
    batches: Iterable[Any],
    *,
    num_steps: int | None = None,
    progress: bool = True,
    log_every: int = 10,
    desc: str = "train",
) -> tuple[PyTree, np.ndarray]:
    """Run ``state, loss = step_fn(state, batch)`` over ``batches`` and record the losses.

    Args:
      step_fn: the training step ``(state, batch) -> (state, loss)``, usually a
        ``jax.jit``-compiled function (``fit`` compiles nothing itself); ``loss`` is a
        scalar.
      state: the initial state (any pytree, e.g. ``(params, opt_state)``).
      batches: an iterable or iterator of minibatches (a list, a generator, a data
        loader). Each item is passed to ``step_fn`` as it is.
      num_steps: run at most this many steps (default: until ``batches`` is exhausted). The
        run also ends early when ``batches`` runs out; ``len(losses)`` says how many steps
        were taken.
      progress: show progress. With `tqdm <https://tqdm.github.io>`_ installed (the
        ``test`` and ``examples`` extras install it), a progress bar on ``stderr`` whose
        postfix shows the latest loss; without tqdm, a plain line
        ``"{desc}: step k/N  loss ..."`` on ``stderr`` every ``log_every`` steps.
        ``False``: silent.
      log_every: fetch the losses to the host (and refresh the displayed loss) every this
        many steps. Larger values sync less often; the history is complete either way.
      desc: label of the progress bar or lines.

    Returns:
      ``(state, losses)``: the final state and a NumPy array with the loss of every step
      taken, in order (the loss's own dtype).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> step = jax.jit(lambda w, b: (w - 0.1 * (w - b), jnp.sum((w - b) ** 2)))
      >>> w, losses = jopt.fit(step, jnp.zeros(2), [jnp.ones(2)] * 5, progress=False)
      >>> losses.shape
      (5,)
    """
    if not callable(step_fn):
        raise TypeError(
            f"`step_fn` must be a callable `(state, batch) -> (state, loss)`, got "
            f"{type(step_fn).__name__}.")
    _check_count("num_steps", num_steps, allow_none=True)
    _check_count("log_every", log_every, allow_none=False)
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be a bool, got {progress!r}.")
    if not isinstance(desc, str):
        raise TypeError(f"`desc` must be a str, got {type(desc).__name__}.")
    try:
        iterator = iter(batches)
    except TypeError:
        raise TypeError(
            f"`batches` must be an iterable of minibatches (a list, generator or data "
            f"loader), got {type(batches).__name__}. For a single batch repeated, pass "
            f"`itertools.repeat(batch)` with `num_steps`."
        ) from None

    total = num_steps
    if hasattr(batches, "__len__"):
        n = len(batches)  # type: ignore[arg-type]
        total = n if num_steps is None else min(n, num_steps)
    bar = _make_bar(total, desc) if progress else None
    history: list[np.ndarray] = []
    pending: list[Any] = []

    def flush() -> None:
        if not pending:
            return
        values = jax.device_get(pending)  # one transfer for the whole window
        history.extend(np.asarray(v) for v in values)
        pending.clear()
        latest = float(history[-1])
        if bar is not None:
            bar.set_postfix(loss=f"{latest:.6g}", refresh=False)
            bar.refresh()
        elif progress:
            of = f"/{total}" if total is not None else ""
            print(f"{desc}: step {len(history)}{of}  loss {latest:.6g}", file=sys.stderr,
                  flush=True)

    steps = 0
    try:
        while num_steps is None or steps < num_steps:
            try:
                batch = next(iterator)
            except StopIteration:
                break
            out = step_fn(state, batch)
            loss = _check_step_output(out) if steps == 0 else out[1]
            state = out[0]
            pending.append(loss)
            steps += 1
            if bar is not None:
                bar.update(1)
            if steps % log_every == 0:
                flush()
        flush()
    finally:
        if bar is not None:
            bar.close()
    if history:
        losses = np.stack(history)
    else:
        losses = np.zeros([0])
    return state, losses
