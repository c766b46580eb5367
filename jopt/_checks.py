"""Trace-time argument checks shared by every layer.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument,
says what was wrong and how to fix it. Checks only ever look at *static* information
(shapes, dtypes, tree structures, Python numbers); a traced value is never inspected, so
every check is safe under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class JoptWarning(UserWarning):
    """Category of every warning jopt emits (the test-suite turns them into errors)."""


def is_concrete_number(x: Any) -> bool:
    """True when ``x`` is a Python/NumPy number or a concrete 0-d array (not a tracer)."""
    if isinstance(x, numbers.Number | np.generic):
        return True
    if isinstance(x, np.ndarray):
        return x.ndim == 0
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        return x.ndim == 0
    return False


def check_nonnegative(name: str, value: Any) -> None:
    """Reject a concrete negative (or NaN) hyperparameter; traced values pass unchecked."""
    if callable(value) or not is_concrete_number(value):
        return
    v = float(value)
    if not v >= 0.0:  # also catches NaN
        raise ValueError(
            f"`{name}` must be a non-negative number, got {value!r}. "
            f"Pass a value >= 0 (optimizers subtract the step themselves)."
        )


def check_in_range(name: str, value: Any, lo: float, hi: float, *, hi_open: bool = True) -> None:
    """Reject a concrete hyperparameter outside ``[lo, hi)`` (or ``[lo, hi]``)."""
    if callable(value) or not is_concrete_number(value):
        return
    v = float(value)
    ok = lo <= v < hi if hi_open else lo <= v <= hi
    if not ok:
        bracket = ")" if hi_open else "]"
        raise ValueError(f"`{name}` must lie in [{lo}, {hi}{bracket}, got {value!r}.")


def check_learning_rate(value: Any) -> None:
    """A learning rate is a non-negative number, a traced scalar, or an optax schedule."""
    if callable(value):
        return
    if is_concrete_number(value):
        check_nonnegative("learning_rate", value)
        return
    shape = jnp.shape(value)
    if shape != ():
        raise ValueError(
            f"`learning_rate` must be a scalar (or a schedule `step -> scalar`), got an "
            f"array of shape {shape}. To sweep learning rates, `jax.vmap` over a function "
            f"that builds the optimizer from one scalar."
        )


def check_positive_int(name: str, value: Any) -> None:
    """Reject anything but a Python int >= 1 (used for sample and iteration counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a Python int >= 1, got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")


def check_float_tree(name: str, tree: Any, *, allow_empty: bool = False) -> None:
    """Every leaf of ``tree`` must be a real floating-point array."""
    leaves = jax.tree.leaves(tree)
    if not leaves and not allow_empty:
        raise ValueError(f"`{name}` has no array leaves; pass a pytree of float arrays.")
    dtypes = [getattr(leaf, "dtype", None) for leaf in leaves]
    if all(dt is not None and jnp.issubdtype(dt, jnp.floating) for dt in dtypes):
        return  # the common case, checked without the slower path walk below
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"`{name}` leaf {jax.tree_util.keystr(path) or '<root>'} is complex ({dtype}); "
                f"jopt works on real parameters. Split it into real and imaginary parts."
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"`{name}` leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; "
                f"derivatives need floating-point leaves. Cast it, e.g. `x.astype(jnp.float32)`."
            )


def check_same_structure(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """``a`` and ``b`` must have the same tree structure and leaf shapes."""
    ta, tb = jax.tree.structure(a), jax.tree.structure(b)
    if ta != tb:
        raise ValueError(
            f"`{name_b}` must have the same pytree structure as `{name_a}`.\n"
            f"  {name_a}: {ta}\n  {name_b}: {tb}\n"
            f"Build it with e.g. `jax.tree.map(jnp.ones_like, {name_a})`."
        )
    for (path, la), lb in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b),
                              strict=True):
        if jnp.shape(la) != jnp.shape(lb):
            raise ValueError(
                f"`{name_b}` leaf {jax.tree_util.keystr(path) or '<root>'} has shape "
                f"{jnp.shape(lb)} but the matching leaf of `{name_a}` has shape {jnp.shape(la)}."
            )


def check_scalar_output(name: str, f: Callable, *args: Any) -> None:
    """``f(*args)`` must return a real floating scalar (checked with ``jax.eval_shape``)."""
    check_scalar_shape(name, jax.eval_shape(f, *args))


def check_scalar_shape(name: str, out: Any) -> None:
    """``out`` (the shapes ``name`` returned, e.g. from ``jax.eval_shape``) must be one real
    floating scalar."""
    leaves = jax.tree.leaves(out)
    if len(leaves) != 1 or not hasattr(leaves[0], "shape"):
        raise ValueError(
            f"`{name}` must return a single scalar, got {jax.tree.structure(out)}. "
            f"If it returns auxiliary data, wrap it: `lambda x: {name}(x)[0]`."
        )
    leaf = leaves[0]
    if leaf.shape != ():
        raise ValueError(
            f"`{name}` must return a scalar, got shape {leaf.shape}. "
            f"Reduce it first, e.g. with `jnp.sum` or `jnp.mean`."
        )
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must return a real floating-point scalar, got dtype {leaf.dtype}."
        )
