"""``jopt.sweep``: run a training or solving function over many hyperparameters at once.

A sweep evaluates ``fn(config, key)`` for every configuration in a grid (or any pytree of
stacked values) and every random seed, as ONE compiled program: the runs are batched with
``jax.vmap`` — so 64 learning rates cost one program whose matrix products are 64 times
wider, not 64 programs — and, when ``chunk_size`` is given, cut into chunks of
configurations that a ``lax.scan`` runs one after another, so memory stays bounded by one
chunk. Configurations are the outer batch axis and seeds the inner one, with the keys
shared by all configurations: whatever depends on the seed alone (initial point, minibatch
order) is computed once per seed, not once per run.

Hyperparameter *values* are traced arrays: a second sweep with new values (same shapes
and dtypes) reuses the compiled program. This is what jopt's optimizers are built for —
nothing in them branches in Python on a value that could be traced (``../DESIGN.md``).

    >>> import jax, jax.numpy as jnp, jopt
    >>> def train(config, key):
    ...     w = jax.random.normal(key, (3,))
    ...     opt = jopt.adam(config["lr"])
    ...     ...                                      # a lax.scan over steps
    ...     return {"loss": loss, "w": w}
    >>> res = jopt.sweep(train, jopt.grid(lr=jnp.logspace(-4, -1, 64)), seeds=4,
    ...                  metric="loss")              # doctest: +SKIP
    >>> res.outputs["loss"].shape, res.best_config   # doctest: +SKIP
    ((64, 4), {'lr': Array(0.01, dtype=float32)})

References:
  Bergstra & Bengio (2012), "Random search for hyper-parameter optimization", JMLR 13,
  Sec. 1 (grid search over the Cartesian product of per-axis value lists);
  the batching is JAX's ``vmap`` (Frostig, Johnson & Leary 2018, "Compiling machine
  learning programs via high-level tracing", SysML) and ``lax.map(..., batch_size=)``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt._checks import JoptWarning, check_positive_int
from jopt._platform import BoundedJit, weakly

PyTree = Any
Metric = Callable[[PyTree], jax.Array] | str

__all__ = ["SweepResult", "grid", "sweep"]

_MODES = ("min", "max")


# ---------------------------------------------------------------------------- grids


def _axis_values(name: str, values: Any) -> Any:
    """One grid axis as a non-empty 1-D numeric array (a NumPy array unless given a JAX one)."""
    if isinstance(values, jax.Array):
        arr = values
    else:
        try:
            arr = np.asarray(values)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"`grid` axis `{name}` must be a 1-D list or array of numbers, got "
                f"{type(values).__name__} ({err})."
            ) from None
    if arr.ndim != 1:
        raise ValueError(
            f"`grid` axis `{name}` must be 1-D (a list of values), got shape {arr.shape}. "
            f"For a scalar, close over it in `fn`; for vector-valued configurations pass "
            f"them to `sweep` directly as an array with a leading configuration axis."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"`grid` axis `{name}` is empty; give it at least one value.")
    if not (jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(arr.dtype, jnp.bool_)):
        raise TypeError(
            f"`grid` axis `{name}` must hold numbers (dtype {arr.dtype}). Non-numeric "
            f"choices (e.g. an optimizer name) are static: loop over them in Python and "
            f"call `sweep` once per choice."
        )
    return arr


def _group_values(name: str, group: Mapping[str, Any]) -> dict[str, Any]:
    """A zipped group of axes: equal-length 1-D arrays that vary together."""
    if not group:
        raise ValueError(f"`grid` axis `{name}` is an empty dict; give it at least one axis.")
    arrays = {k: _axis_values(f"{name}.{k}", v) for k, v in group.items()}
    lengths = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"`grid` axis `{name}` zips its entries, so they need equal lengths; got "
            f"{lengths}."
        )
    return arrays


def grid(**axes: Any) -> dict[str, Any]:
    """The Cartesian product of per-axis value lists, as stacked configuration arrays.

    Args:
      **axes: ``name=values`` with ``values`` a non-empty 1-D list or array of numbers.
        A value that is itself a dict of equal-length 1-D arrays is a *zipped* group: its
        entries vary together as one axis of the product (e.g.
        ``betas={"b1": [0.9, 0.95], "b2": [0.999, 0.99]}`` gives 2 combinations, not 4).

    Returns:
      A dict with the same keys (groups stay nested dicts) whose leaves are 1-D arrays of
      length ``∏ len(axis)``: configuration ``i`` is ``{k: v[i]}``. The first axis varies
      slowest (the order of :func:`itertools.product`). Dtypes are the values' own (a
      list of Python floats becomes JAX's default float dtype).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> g = jopt.grid(lr=[0.1, 0.01], momentum=[0.0, 0.5, 0.9])
      >>> g["lr"].shape, g["lr"].dtype == jnp.zeros(()).dtype  # JAX's default float
      ((6,), True)
      >>> [round(v, 6) for v in g["lr"].tolist()]
      [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
      >>> [round(v, 6) for v in g["momentum"].tolist()]
      [0.0, 0.5, 0.9, 0.0, 0.5, 0.9]

    References:
      Bergstra & Bengio (2012), JMLR 13, Sec. 1 (grid search).
    """
    if not axes:
        raise ValueError("`grid` needs at least one axis, e.g. `jopt.grid(lr=[1e-3, 1e-2])`.")
    columns = {
        name: _group_values(name, v) if isinstance(v, Mapping) else _axis_values(name, v)
        for name, v in axes.items()
    }
    sizes = [jax.tree.leaves(col)[0].shape[0] for col in columns.values()]
    index = np.indices(sizes).reshape(len(sizes), -1)  # row k: axis k's index per config
    # Indexing happens on the host for host values (no device op per axis).
    return {
        name: jax.tree.map(lambda a, i=i: jnp.asarray(a[index[i]]), col)
        for i, (name, col) in enumerate(columns.items())
    }


# --------------------------------------------------------------------------- result


class SweepResult(NamedTuple):
    """Result of :func:`sweep` (a pytree).

    Attributes:
      outputs: ``fn``'s outputs stacked with leading axes ``[num_configs, num_seeds]``
        (``[num_configs]`` when ``seeds`` is ``None``).
      configs: the configurations run (leaves ``[num_configs, ...]``).
      seeds: the random keys used, shape ``[num_seeds]`` (``None`` without seeds).
      run_metrics: the metric of every run, ``[num_configs, num_seeds]`` (or
        ``[num_configs]``); ``None`` without a metric.
      metrics: the metric per configuration, ``[num_configs]``: the mean over seeds
        (NaN or ±inf when any seed's run gave NaN or ±inf).
      best_index: index of the best configuration (0-d int array); a non-finite metric
        (NaN, +inf or −inf: a diverged or failed run) never wins, in either ``mode``.
      best_config: ``configs`` at ``best_index``.
      best_metric: ``metrics[best_index]`` (non-finite only when every configuration's
        metric is; then ``best_index`` is 0).
    """

    outputs: PyTree
    configs: PyTree
    seeds: jax.Array | None = None
    run_metrics: jax.Array | None = None
    metrics: jax.Array | None = None
    best_index: jax.Array | None = None
    best_config: PyTree | None = None
    best_metric: jax.Array | None = None


# ---------------------------------------------------------------------- validation


def _as_config_leaf(path: Any, leaf: Any) -> jax.Array:
    """A configuration leaf as a strongly-typed array with a leading configuration axis."""
    where = jax.tree_util.keystr(path) or "<root>"
    if isinstance(leaf, jax.Array):
        arr = leaf
        if getattr(arr, "weak_type", False):  # same compiled program as a strong array
            arr = jax.lax.convert_element_type(arr, arr.dtype)
    else:
        try:
            arr = jnp.asarray(np.asarray(leaf))
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"`configs` leaf {where} must be an array (or list) of numbers with one "
                f"entry per configuration, got {type(leaf).__name__} ({err})."
            ) from None
    if arr.ndim == 0:
        raise ValueError(
            f"`configs` leaf {where} is a scalar; every leaf needs a leading axis with one "
            f"entry per configuration. Build configurations with `jopt.grid(...)`, or close "
            f"over constants in `fn`."
        )
    if not (jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(arr.dtype, jnp.bool_)):
        raise TypeError(
            f"`configs` leaf {where} has dtype {arr.dtype}; configurations must be numbers. "
            f"Static choices (strings, functions) belong in a Python loop around `sweep`."
        )
    return arr


def _is_value_list(node: Any) -> bool:
    """A list or tuple of numbers: one configuration leaf (not a pytree of scalars)."""
    return isinstance(node, list | tuple) and not hasattr(node, "_fields") and bool(node) and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in node)


def _check_configs(configs: PyTree) -> tuple[PyTree, int]:
    """Configurations with array leaves, and their count (all leading axes must agree)."""
    leaves_with_path = jax.tree_util.tree_leaves_with_path(configs, is_leaf=_is_value_list)
    if not leaves_with_path:
        raise ValueError(
            "`configs` has no leaves; pass e.g. `jopt.grid(lr=[1e-3, 1e-2])` or a dict of "
            "equal-length arrays."
        )
    arrays = [_as_config_leaf(p, leaf) for p, leaf in leaves_with_path]
    lengths = {jax.tree_util.keystr(p) or "<root>": a.shape[0]
               for (p, _), a in zip(leaves_with_path, arrays, strict=True)}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"`configs` leaves must all have the same leading length (one entry per "
            f"configuration, zipped together); got {lengths}. For every combination of "
            f"values use `jopt.grid(...)`."
        )
    num = next(iter(lengths.values()))
    if num == 0:
        raise ValueError("`configs` is empty (leading length 0); give at least one "
                         "configuration.")
    treedef = jax.tree.structure(configs, is_leaf=_is_value_list)
    return jax.tree.unflatten(treedef, arrays), num


def _check_seeds(seeds: Any) -> jax.Array | None:
    """``None``, or the seeds as a 1-D integer array or a 1-D array of typed keys."""
    if seeds is None:
        return None
    if isinstance(seeds, bool):
        raise TypeError("`seeds` must be None, an int (number of seeds), or a 1-D array of "
                        "integer seeds or of keys, got a bool.")
    if isinstance(seeds, int | np.integer):
        check_positive_int("seeds", int(seeds))
        return jnp.arange(int(seeds), dtype=jnp.uint32)
    arr = seeds if isinstance(seeds, jax.Array) else np.asarray(seeds)
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise ValueError(f"`seeds` as typed keys must be a non-empty 1-D key array, got "
                             f"shape {arr.shape}.")
        return arr
    if not jnp.issubdtype(arr.dtype, jnp.integer) or arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(
            f"`seeds` must be None, an int, a non-empty 1-D array of integer seeds, or a 1-D "
            f"array of typed keys (`jax.random.key`); got dtype {arr.dtype}, shape "
            f"{arr.shape}. Wrap raw uint32 keys with `jax.random.wrap_key_data`."
        )
    if not isinstance(arr, jax.core.Tracer):
        values = np.asarray(arr)
        if np.any(values < 0) or np.any(values > np.iinfo(np.uint32).max):
            raise ValueError("`seeds` must be integers in [0, 2**32) (each seeds "
                             "`jax.random.key`); for other keys pass typed keys.")
    return jnp.asarray(arr, jnp.uint32)  # one dtype: every way of giving seeds shares a program


def _check_metric(metric: Any) -> None:
    if metric is None or isinstance(metric, str) or callable(metric):
        return
    raise TypeError(
        f"`metric` must be None, a callable `outputs -> scalar`, or the key of a scalar "
        f"output (a str), got {type(metric).__name__}."
    )


# -------------------------------------------------------------------------- program


def _metric_value(metric: Metric, out: PyTree) -> jax.Array:
    """The metric of one run's outputs, checked to be a real scalar at trace time."""
    if isinstance(metric, str):
        if isinstance(out, Mapping) and metric in out:
            value = out[metric]
        elif metric in getattr(out, "_fields", ()):  # a NamedTuple, e.g. MinimizeResult
            value = getattr(out, metric)
        else:
            names = list(out) if isinstance(out, Mapping) else list(getattr(
                out, "_fields", [type(out).__name__]))
            raise ValueError(f"`metric` {metric!r} is not a key of `fn`'s outputs ({names}). "
                             f"Pass one of the keys, or a callable `outputs -> scalar`.")
    else:
        value = metric(out)
    shape, dtype = jnp.shape(value), jnp.result_type(value)
    if shape != ():
        raise ValueError(
            f"`metric` must give one scalar per run, got shape {shape} (for one run's "
            f"outputs). Reduce it, e.g. `lambda out: out['losses'][-1]`."
        )
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"`metric` must give a real number per run, got dtype {dtype}.")
    return value


def _split_even(num: int, chunk_size: int | None) -> tuple[int, int]:
    """(number of chunks, items per chunk): equal chunks of at most ``chunk_size`` items."""
    if chunk_size is None or chunk_size >= num:
        return 1, num
    chunks = math.ceil(num / chunk_size)
    return chunks, math.ceil(num / chunks)


def _program(
    fn: Callable, metric: Metric | None, mode: str, chunk_size: int | None,
    configs: PyTree, seeds: jax.Array | None,
) -> SweepResult:
    """The whole sweep: every (config, seed) run, its metric, and the best configuration."""
    num_configs = jax.tree.leaves(configs)[0].shape[0]
    keys = None
    if seeds is not None:
        keys = seeds if jnp.issubdtype(seeds.dtype, jax.dtypes.prng_key) else jax.vmap(
            jax.random.key)(seeds)

    def one_run(config: PyTree, *key: jax.Array) -> tuple[PyTree, jax.Array | None]:
        out = fn(config, *key)
        return out, (None if metric is None else _metric_value(metric, out))

    # Nested batching: the configuration axis outside, the seed axis inside, with the keys
    # NOT batched along the configurations. Work that depends on the seed alone (the
    # initial point, a minibatch order, a data gather) is then computed once per seed and
    # shared by every configuration — and a gathered minibatch meets the configurations'
    # parameters as one matrix product per seed rather than a batched matrix-vector one.
    if keys is None:
        per_config = one_run
    else:
        def per_config(config: PyTree) -> tuple[PyTree, jax.Array | None]:
            return jax.vmap(one_run, in_axes=(None, 0))(config, keys)

    chunks, per_chunk = _split_even(num_configs, chunk_size)  # normalised by `sweep`
    if chunks == 1:
        outputs, run_metrics = jax.vmap(per_config)(configs)
    else:
        # Pad with copies of the last configuration to `chunks` equal chunks (their
        # results are dropped), so `fn` is traced once (`lax.map`'s remainder would trace
        # it a second time).
        pad = chunks * per_chunk - num_configs
        padded = jax.tree.map(
            lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a,
            configs)
        outputs, run_metrics = jax.lax.map(per_config, padded, batch_size=per_chunk)
        outputs, run_metrics = jax.tree.map(lambda a: a[:num_configs], (outputs, run_metrics))

    result = SweepResult(outputs=outputs, configs=configs, seeds=keys)
    if metric is None:
        return result
    metrics = run_metrics if keys is None else jnp.mean(run_metrics, axis=1)
    # A non-finite metric is a diverged run: -inf under "min" (+inf under "max") must not
    # win either. With every metric non-finite the result is index 0 and its metric.
    worst = jnp.inf if mode == "min" else -jnp.inf
    ranked = jnp.where(jnp.isfinite(metrics), metrics, worst)
    best = jnp.argmin(ranked) if mode == "min" else jnp.argmax(ranked)
    return result._replace(
        run_metrics=run_metrics,
        metrics=metrics,
        best_index=best,
        best_config=jax.tree.map(lambda a: a[best], configs),
        best_metric=metrics[best],
    )


@functools.cache
def _compiled() -> Callable:
    """The jitted sweep, cached per (fn, metric, mode, chunk_size) and input shapes."""
    return BoundedJit(_program, 4)


def sweep(
    fn: Callable[..., PyTree],
    configs: PyTree,
    *,
    seeds: int | jax.Array | None = None,
    chunk_size: int | None = None,
    metric: Metric | None = None,
    mode: str = "min",
) -> SweepResult:
    """Run ``fn`` for every configuration (and seed) in one compiled, batched program.

    Every run ``fn(config, key)`` (or ``fn(config)`` without seeds) is batched with
    ``jax.vmap`` — configurations outside, seeds inside, the keys shared by all
    configurations, so work that depends on the seed alone is done once per seed. With
    ``chunk_size`` the configurations are cut into equal chunks of at most ``chunk_size``
    that a ``lax.scan`` runs in turn (``lax.map(..., batch_size=)``), so the working
    memory of the runs (parameters, optimizer states, activations) is that of one chunk,
    ``chunk_size × num_seeds`` runs; the stacked outputs of all runs are kept.

    The program is compiled once per ``fn``, ``metric``, ``mode``, ``chunk_size`` and input
    shapes/dtypes: a sweep over new *values* reuses it. Pass the same ``fn`` object each
    time (a new ``lambda`` is a new ``fn``).

    Args:
      fn: ``fn(config, key) -> outputs`` (any pytree of arrays), or ``fn(config)`` when
        ``seeds`` is ``None``. ``config`` has the structure of ``configs`` with scalar
        leaves (traced). Train or solve inside it with any jopt/optax transform in a
        ``lax.scan``/``lax.fori_loop``, or with :func:`jopt.minimize`.
      configs: a pytree whose leaves have a common leading axis, one entry per
        configuration: :func:`grid`'s product, or a dict of equal-length arrays (zipped
        configurations; a list of numbers counts as a 1-D array), or a single array.
      seeds: ``None`` (no random key); an int ``S`` (seeds ``0 … S-1``); a 1-D array of
        integer seeds; or a 1-D array of typed keys. Seed ``s`` gives ``fn`` the key
        ``jax.random.key(s)``, so a run is reproduced by ``fn(config, jax.random.key(s))``.
      chunk_size: at most this many configurations at once, each with all its seeds
        (``None``: all). Results equal the unchunked ones up to rounding. A size that
        does not divide the count is evened out (e.g. 10 configurations with
        ``chunk_size=4``: 3 chunks of 4, the last padded with a dropped copy).
      metric: ``None``, a callable ``outputs -> scalar`` applied to each run's outputs,
        or the name of a scalar entry of the outputs (a dict key or a NamedTuple field,
        e.g. ``"fun"`` for a :class:`jopt.MinimizeResult`). It is averaged over seeds; a
        configuration whose mean is not finite (NaN, +inf or −inf: some seed's run
        diverged or failed) is never chosen as best, whatever the ``mode``. When no
        configuration's is finite, ``best_index`` is 0 and a :class:`JoptWarning` says so
        (eager calls only).
      mode: ``"min"`` or ``"max"``: which metric value is best.

    Returns:
      A :class:`SweepResult`: stacked ``outputs`` ``[num_configs, num_seeds, ...]``
      (``[num_configs, ...]`` without seeds), the configurations, and with a metric the
      per-run and per-configuration metrics and the best configuration.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> def solve(config):
      ...     f = lambda x, c: jnp.sum((x - c) ** 2)
      ...     return jopt.minimize(f, jnp.zeros(2), args=(config["c"],)).fun
      >>> res = jopt.sweep(solve, {"c": jnp.array([0.0, 1.0])})
      >>> res.outputs.shape
      (2,)

    References:
      Bergstra & Bengio (2012), "Random search for hyper-parameter optimization", JMLR 13
      (grid search); batching by ``jax.vmap`` and ``jax.lax.map(..., batch_size=)``.
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable (`fn(config, key) -> outputs`), got "
                        f"{type(fn).__name__}.")
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    if mode not in _MODES:
        raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}.")
    _check_metric(metric)
    configs, num_configs = _check_configs(configs)
    keys = _check_seeds(seeds)
    # Equal chunks of at most `chunk_size` configurations; chunk sizes that split them
    # alike share one compiled program (`chunk_size >= num_configs`: the unchunked one).
    chunks, per_chunk = _split_even(num_configs, chunk_size)
    chunk_size = None if chunks == 1 else per_chunk
    try:
        hash((fn, metric))
    except TypeError:
        raise TypeError("`fn` and `metric` must be hashable (they key the compiled-program "
                        "cache); pass a function or a `functools.partial`.") from None
    # (held weakly by the program store: a dropped fn frees what it captured)
    result = _compiled()(weakly(fn), weakly(metric), mode, chunk_size, configs, keys)
    best = result.best_metric
    if metric is not None and not isinstance(best, jax.core.Tracer) and not np.isfinite(best):
        warnings.warn("Every configuration's `metric` is NaN or inf (all runs diverged or "
                      "failed); `best_index` is 0 by convention.", JoptWarning, stacklevel=2)
    return result
