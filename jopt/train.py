"""``jopt.fit``: run a user's jitted training step over minibatches with a progress bar.

The loop is deliberately thin — the user writes the step (any optimizer, any model)::

    @jax.jit
    def step(state, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    state, losses = jopt.fit(step, (params, opt_state), batches, num_steps=1000)

and ``fit`` only feeds batches, keeps the losses (or a pytree of metrics), guards against
NaN/Inf and reports progress. It never waits for the device on every step: the losses
stay on the device and are fetched to the host in one transfer every ``log_every`` steps,
so JAX's asynchronous dispatch keeps the device busy while the host prepares the next
batches. The NaN/Inf guard therefore decides on the device (one small jitted select per
step) and the host learns of it at the next fetch.

It returns a :class:`FitResult`, which still unpacks as ``state, history``. A step (or
the data iterator, or the callback) that raises loses nothing: the exception carries the
state and history so far as ``err.jopt_partial``.
"""

from __future__ import annotations

import dataclasses
import numbers
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jopt._checks import JoptWarning

PyTree = Any
OnNonfinite = Literal["stop", "skip", "continue"]
Callback = Callable[[int, PyTree, PyTree], Any]

__all__ = ["FitResult", "fit"]

_ON_NONFINITE = ("stop", "skip", "continue")


# --------------------------------------------------------------------------- result


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """What :func:`fit` returns. It unpacks like the pair ``fit`` used to return::

        state, history = jopt.fit(...)          # as before
        result = jopt.fit(...)                  # or keep the whole record
        if result.stopped_nonfinite: ...

    Attributes:
      state: the final state. Updates discarded by the NaN/Inf guard are not in it: with
        ``on_nonfinite="stop"`` it is the state the first non-finite step started from
        (the output of the last step whose loss was finite; but see :func:`fit` for a
        step that donates its input), with ``"skip"`` every non-finite step left it
        unchanged.
      history: ``step_fn``'s second output for every step run, in order, including the
        skipped steps and the non-finite step that stopped the run (so ``history[-1]``
        shows what went wrong): a NumPy array ``[steps]`` for a scalar loss, or the
        metrics pytree with every leaf stacked to ``[steps]``. ``np.zeros([0])`` when no
        step ran.
      status: why the run ended: ``"completed"`` (``num_steps`` reached or ``batches``
        exhausted), ``"nonfinite"`` (``on_nonfinite="stop"`` met a NaN/Inf),
        ``"callback"`` (the callback asked to stop) or ``"error"`` (only in the
        ``jopt_partial`` result attached to an exception).
      steps: the number of steps in ``history``.
      num_skipped: steps whose update was discarded for a non-finite loss or metric with
        ``on_nonfinite="skip"`` (0 otherwise).
    """

    state: PyTree
    history: Any
    status: str = "completed"
    steps: int = 0
    num_skipped: int = 0

    @property
    def stopped_nonfinite(self) -> bool:
        """True when ``on_nonfinite="stop"`` ended the run at a NaN/Inf loss or metric."""
        return self.status == "nonfinite"

    def __iter__(self) -> Iterator[Any]:
        """``state, history = result``, the pair :func:`fit` returned before this class."""
        return iter((self.state, self.history))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        return (self.state, self.history)[index]


# ---------------------------------------------------------------------- validation


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


def _scalar_problem(leaf: Any) -> str | None:
    """Why ``leaf`` is not a real scalar (its type, shape and dtype), or ``None`` if it is."""
    if not isinstance(leaf, jax.Array | np.ndarray | np.generic | numbers.Real):
        return type(leaf).__name__
    shape = np.shape(leaf)
    dtype = getattr(leaf, "dtype", np.asarray(leaf).dtype)
    real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if shape != () or not real:
        return f"{type(leaf).__name__} of shape {shape} and dtype {dtype}"
    return None


def _check_step_output(out: Any) -> Any:
    """The metrics of the first step's output ``(state, metrics)``, checked (no sync)."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(
            f"`step_fn` must return a pair `(state, loss)`, got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple) else "")
            + ". Return the new state and the minibatch loss."
        )
    metrics = out[1]
    leaves = jax.tree_util.tree_leaves_with_path(metrics)
    problems = [(path, p) for path, leaf in leaves if (p := _scalar_problem(leaf))]
    if not leaves or problems:
        where = ""
        if problems and problems[0][0]:  # a leaf inside a pytree: say which
            where = f" whose leaf {jax.tree_util.keystr(problems[0][0])} is"
        got = problems[0][1] if problems else f"{type(metrics).__name__} with no leaves"
        if where:
            got = f"{type(metrics).__name__}{where} {got}"
        raise TypeError(
            f"`step_fn` must return a scalar loss as the second element of `(state, loss)` "
            f"(or a pytree of scalar metrics, e.g. a dict), got {got}. Return a real "
            f"scalar, e.g. reduce with `jnp.mean`."
        )
    return metrics


def _check_options(on_nonfinite: Any, callback: Any, callback_every: Any) -> None:
    if on_nonfinite not in _ON_NONFINITE:
        raise ValueError(f"`on_nonfinite` must be 'stop', 'skip' or 'continue', got "
                         f"{on_nonfinite!r}.")
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be None or a callable `(step, state, metrics) -> "
                        f"bool | None`, got {type(callback).__name__}.")
    _check_count("callback_every", callback_every, allow_none=False)


# -------------------------------------------------------------------- NaN/Inf guard


def _all_finite(metrics: PyTree) -> jax.Array:
    """True when every floating leaf of ``metrics`` is finite (integers always are)."""
    flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(metrics)
             if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def _keep_flag(ok: jax.Array, metrics: PyTree, cumulative: bool) -> jax.Array:
    """Whether to keep a step: its metrics are finite (and, for "stop", all before were)."""
    keep = _all_finite(metrics)
    return keep & ok if cumulative else keep


def _select(ok: jax.Array, metrics: PyTree, new: list[jax.Array], old: list[jax.Array],
            cumulative: bool) -> tuple[list[jax.Array], jax.Array]:
    """``(new if keep else old, keep)`` leaf by leaf, on the device."""
    keep = _keep_flag(ok, metrics, cumulative)
    return [jnp.where(keep, n, o) for n, o in zip(new, old, strict=True)], keep


_select_copying = jax.jit(_select, static_argnames="cumulative")
# The step's fresh outputs are donated, so the select writes in place: no extra memory.
_select_in_place = jax.jit(_select, static_argnames="cumulative", donate_argnames="new")
_keep_only = jax.jit(_keep_flag, static_argnames="cumulative")


def _same_layout(new: list[Any], old: list[Any]) -> bool:
    """Whether the leaves are arrays of the same shapes and dtypes, pairwise."""
    return len(new) == len(old) and all(
        isinstance(n, jax.Array) and isinstance(o, jax.Array) and n.shape == o.shape
        and n.dtype == o.dtype for n, o in zip(new, old, strict=True))


def _donatable(new: list[Any], old: list[Any], metrics: PyTree) -> bool:
    """Whether ``new`` are distinct arrays used nowhere else (not in ``old`` or ``metrics``)."""
    ids = [id(n) for n in new]
    elsewhere = {id(x) for x in old} | {id(x) for x in jax.tree.leaves(metrics)}
    return len(set(ids)) == len(ids) and not elsewhere.intersection(ids)


class _Guard:
    """Keeps or discards each step's new state by its metrics' finiteness (``on_nonfinite``)."""

    def __init__(self, mode: str, step_fn: Callable) -> None:
        self.mode = mode
        self.cumulative = mode == "stop"
        # "stop": no non-finite step so far; a device bool, so checking it never syncs.
        self.ok: Any = None if mode == "continue" else jnp.asarray(True)
        self.first = True
        # A jitted step's outputs are fresh buffers (even for an unchanged input or a
        # captured constant) that only `fit` holds, so the select may donate them.
        self.in_place = callable(getattr(step_fn, "lower", None))
        self.donated = False  # step_fn donates its input state: it cannot be kept

    def __call__(self, new: PyTree, old: PyTree, metrics: PyTree) -> tuple[PyTree, Any]:
        """The state to go on with, and whether the step was kept (a bool, or None)."""
        if self.mode == "continue":
            return new, None
        new_leaves, treedef = jax.tree.flatten(new)
        old_leaves, old_def = jax.tree.flatten(old)
        if not self.donated and any(isinstance(o, jax.Array) and o.is_deleted()
                                    for o in old_leaves):
            self._input_was_donated()
        if self.donated:  # only detect ("stop"); the old state is gone
            state, keep = new, _keep_only(self.ok, metrics, cumulative=True)
        elif self.first or treedef != old_def or not _same_layout(new_leaves, old_leaves):
            # The first step decides on the host (one sync): the initial state may live on
            # other devices, or as other types, than the step's outputs.
            keep = bool(_keep_flag(self.ok, metrics, self.cumulative))
            state = new if keep else old
        else:
            select = (_select_in_place if self.in_place
                      and _donatable(new_leaves, old_leaves, metrics) else _select_copying)
            leaves, keep = select(self.ok, metrics, new_leaves, old_leaves,
                                  cumulative=self.cumulative)
            state = jax.tree.unflatten(treedef, leaves)
        self.first = False
        if self.cumulative:
            self.ok = jnp.asarray(keep)
        return state, keep

    def _input_was_donated(self) -> None:
        if self.mode == "skip":
            raise ValueError(
                "`on_nonfinite='skip'` needs the state each step started from, but "
                "`step_fn` donated it (`donate_argnums`), so it is gone. Drop the donation, "
                "or pass `on_nonfinite='stop'` (which then keeps the latest state) or "
                "'continue'.")
        self.donated = True


# ------------------------------------------------------------------------- history


def _metric_labels(metrics: PyTree) -> list[str]:
    """Display names of the metric leaves: ``loss`` for a scalar, else the pytree keys."""

    def name(key: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    return [".".join(name(k) for k in path) or "loss"
            for path, _ in jax.tree_util.tree_leaves_with_path(metrics)]


class _History:
    """Per-step metrics: kept on the device, fetched in one transfer per ``log_every`` window."""

    def __init__(self, stop_at_nonfinite: bool) -> None:
        self.stop_at_nonfinite = stop_at_nonfinite
        self.pending: list[tuple[Any, Any]] = []  # (metrics, kept) of unfetched steps
        self.rows: list[list[np.ndarray]] = []  # the leaves of every fetched step
        self.treedef: Any = None
        self.labels: list[str] = []
        self.num_skipped = 0
        self.stopped = False  # a non-finite step ended the record ("stop")

    def add(self, metrics: Any, kept: Any) -> None:
        self.pending.append((metrics, kept))

    def fetch(self) -> bool:
        """Fetch the pending steps; True when a non-finite one ends the run ("stop")."""
        if not self.pending:
            return False
        values = jax.device_get(self.pending)  # one transfer for the whole window
        self.pending.clear()
        for metrics, kept in values:
            leaves, treedef = jax.tree.flatten(metrics)
            if self.treedef is None:
                self.treedef, self.labels = treedef, _metric_labels(metrics)
            elif treedef != self.treedef or any(np.ndim(leaf) for leaf in leaves):
                raise TypeError(
                    f"`step_fn` returned metrics of another structure or shape at step "
                    f"{len(self.rows) + 1}: shapes {jax.tree.map(np.shape, metrics)} in "
                    f"{treedef}, after {self.treedef}. Return the "
                    f"same pytree of scalars every step.")
            self.rows.append([np.asarray(leaf) for leaf in leaves])
            if kept is not None and not kept:
                if self.stop_at_nonfinite:
                    self.stopped = True  # later steps ran on the kept state: not recorded
                    return True
                self.num_skipped += 1
        return False

    def fetch_what_is_left(self) -> None:
        """After an error: fetch what still can be; drop the rest (the device may be broken)."""
        try:
            self.fetch()
        except Exception:  # the original error is the one to report
            self.pending.clear()

    def latest(self) -> list[tuple[str, float]]:
        return list(zip(self.labels, (float(v) for v in self.rows[-1]), strict=True))

    def stacked(self) -> Any:
        """Every leaf stacked over the steps (an array for a scalar loss); ``[0]`` if none."""
        if not self.rows:
            return np.zeros([0])
        columns = [np.stack(col) for col in zip(*self.rows, strict=True)]
        return jax.tree.unflatten(self.treedef, columns)


# ------------------------------------------------------------------------ progress


class _Progress:
    """A tqdm bar, plain lines on stderr without tqdm, or nothing (``progress=False``)."""

    def __init__(self, enabled: bool, total: int | None, desc: str) -> None:
        self.enabled, self.total, self.desc = enabled, total, desc
        self.bar = _make_bar(total, desc) if enabled else None

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, steps: int, latest: list[tuple[str, float]]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.6g}" for k, v in latest}, refresh=False)
            self.bar.refresh()
        elif self.enabled:
            of = f"/{self.total}" if self.total is not None else ""
            values = "  ".join(f"{k} {v:.6g}" for k, v in latest)
            print(f"{self.desc}: step {steps}{of}  {values}", file=sys.stderr, flush=True)

    def close(self, stopped_at: int | None) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.enabled and stopped_at is not None:
            print(f"{self.desc}: stopped at step {stopped_at}: non-finite loss or metric "
                  f"(on_nonfinite='stop').", file=sys.stderr, flush=True)


def _attach_partial(err: BaseException, make: Callable[[], FitResult]) -> None:
    """Put what was done on the exception (``err.jopt_partial``) and say so in a note."""
    try:
        partial = make()
        err.jopt_partial = partial  # type: ignore[attr-defined]
    except Exception:  # no record, or an exception type without a __dict__: re-raise as is
        return
    if partial.steps:  # a note about nothing would only clutter e.g. a bad-output TypeError
        err.add_note(f"jopt.fit: {partial.steps} steps were recorded before this error; the "
                     f"last good state and the history are in `err.jopt_partial` (a "
                     f"jopt.train.FitResult with status 'error').")


# ------------------------------------------------------------------------------ fit


def fit(
    step_fn: Callable[[PyTree, Any], tuple[PyTree, Any]],
    state: PyTree,
    batches: Iterable[Any],
    *,
    num_steps: int | None = None,
    progress: bool = True,
    log_every: int = 10,
    desc: str = "train",
    on_nonfinite: OnNonfinite = "stop",
    callback: Callback | None = None,
    callback_every: int = 1,
) -> FitResult:
    """Run ``state, metrics = step_fn(state, batch)`` over ``batches`` and record the metrics.

    Args:
      step_fn: the training step ``(state, batch) -> (state, loss)``, usually a
        ``jax.jit``-compiled function (``fit`` compiles nothing of it). ``loss`` is a
        real scalar, or a pytree of real scalars (e.g. ``{"loss": l, "acc": a,
        "grad_norm": g}``) whose leaves the history stacks.
      state: the initial state (any pytree, e.g. ``(params, opt_state)``).
      batches: an iterable or iterator of minibatches (a list, a generator, a data
        loader). Each item is passed to ``step_fn`` as it is.
      num_steps: run at most this many steps (default: until ``batches`` is exhausted). The
        run also ends early when ``batches`` runs out; ``result.steps`` says how many steps
        were taken.
      progress: show progress. With `tqdm <https://tqdm.github.io>`_ installed (the
        ``test`` and ``examples`` extras install it), a progress bar on ``stderr`` whose
        postfix shows the latest loss (or metrics); without tqdm, a plain line
        ``"{desc}: step k/N  loss ..."`` on ``stderr`` every ``log_every`` steps, and a
        last line when a non-finite loss stopped the run. ``False``: silent.
      log_every: fetch the metrics to the host (and refresh the displayed values) every
        this many steps. Larger values sync less often; the history is complete either way.
      desc: label of the progress bar or lines.
      on_nonfinite: what a step whose loss or any floating metric is NaN or ±inf does:

        * ``"stop"`` (default): end the run and keep the state that step started from
          (``result.status == "nonfinite"``, ``result.stopped_nonfinite``). The guard
          decides on the device, and the host learns of it at the next fetch, so up to
          ``log_every - 1`` further steps may run on the kept state (consuming batches,
          and calling ``callback``); they are not recorded. ``log_every=1`` stops at
          once (syncing every step).
        * ``"skip"``: discard that step's update, keep the state it started from and go on
          (as ``optax.apply_if_finite`` does); ``result.num_skipped`` counts them, and they
          count towards ``num_steps``.
        * ``"continue"``: keep every update (``fit``'s behaviour before the guard).

        The guard looks at the loss/metrics only, never at the state (which may hold inf
        by design). To catch a non-finite gradient whose loss was still finite, return its
        norm as a metric (``optax.tree.norm(grads)``). ``"stop"`` and ``"skip"`` cost
        one elementwise select over the state per step, on the device (in place for a
        ``jax.jit`` step; a plain Python step gets a copy); the first step decides on the
        host. A step that donates its input state (``jax.jit(...,
        donate_argnums=0)``) leaves nothing to go back to: ``"skip"`` then raises a
        ``ValueError`` and ``"stop"`` still stops but keeps the latest state, with a
        :class:`JoptWarning`.
      callback: ``callback(step, state, metrics)``, called on the host after every
        ``callback_every``-th step: ``step`` is the number of steps done (1, 2, …),
        ``state`` the state after it (after the guard) and ``metrics`` that step's
        second output, still on the device (reading it, e.g. ``float(metrics)``, waits
        for the device); after a skipped step, ``state`` is the unchanged one. Return
        ``True`` (any true value) to stop the run there (``result.status ==
        "callback"``); ``None`` or ``False`` goes on. Use it to evaluate, save
        checkpoints or stop early.
      callback_every: call ``callback`` every this many steps.

    Returns:
      A :class:`FitResult` ``(state, history, status, steps, num_skipped)``, which unpacks
      as ``state, history``: the final state and the recorded losses, a NumPy array of
      the loss's own dtype (or the metrics pytree with leaves stacked per step).

    Raises:
      Whatever ``step_fn``, ``batches`` or ``callback`` raise, re-raised with the work
      done so far attached: ``err.jopt_partial`` is a :class:`FitResult` with status
      ``"error"``, the last good state (the one the failing step was given) and the
      history up to then (a note on the exception says so when steps were recorded).
      For example::

          try:
              state, losses = jopt.fit(step, state, batches)
          except Exception as err:
              state, losses = err.jopt_partial  # resume or save from here
              ...

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
    _check_options(on_nonfinite, callback, callback_every)
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
    shown = _Progress(progress, total, desc)
    history = _History(stop_at_nonfinite=on_nonfinite == "stop")
    guard = _Guard(on_nonfinite, step_fn)

    def fetch() -> bool:
        """Fetch the window and show its last values; True when a non-finite step stops."""
        if not history.pending:
            return False
        stop = history.fetch()
        shown.show(len(history.rows), history.latest())
        return stop

    def result(status: str) -> FitResult:
        return FitResult(state, history.stacked(), status, len(history.rows),
                         history.num_skipped)

    status, steps = "completed", 0
    try:
        while num_steps is None or steps < num_steps:
            try:
                batch = next(iterator)
            except StopIteration:
                break
            out = step_fn(state, batch)
            metrics = _check_step_output(out) if steps == 0 else out[1]
            state, kept = guard(out[0], state, metrics)
            history.add(metrics, kept)
            steps += 1
            shown.tick()
            if steps % log_every == 0 and fetch():
                break
            if callback is not None and steps % callback_every == 0 \
                    and callback(steps, state, metrics):
                status = "callback"
                break
        fetch()
    except (Exception, KeyboardInterrupt) as err:
        history.fetch_what_is_left()
        _attach_partial(err, lambda: result("error"))
        raise
    finally:
        shown.close(len(history.rows) if history.stopped else None)
    if history.stopped and guard.donated:
        warnings.warn(
            f"`fit` stopped at step {len(history.rows)} on a non-finite loss or metric but "
            f"returns the latest state, not the one from before that step: `step_fn` "
            f"donates its input state (`donate_argnums`), so that one is gone. Drop the "
            f"donation to keep the last finite state.", JoptWarning, stacklevel=2)
    return result("nonfinite" if history.stopped else status)
