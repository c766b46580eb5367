"""Argument checks and conversions shared by the solve layer's entry points (host side,
trace time): each error names the argument, what was wrong, and the fix."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jopt._checks import is_concrete_number

__all__ = ["box", "check_args", "check_callback", "check_count", "check_run_options",
           "check_tolerance", "check_verbose", "history_length", "objective_errors", "strong",
           "test_on", "traced"]


def check_tolerance(name: str, value: Any, allow_zero: bool) -> None:
    """A tolerance: a real number or a 0-d real array; concrete ones ``> 0`` (``>= 0``)."""
    real = isinstance(value, numbers.Real | np.floating | np.integer) and not isinstance(
        value, bool | np.bool_)
    array = isinstance(value, jax.Array | np.ndarray) and (
        np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer))
    if not (real or (array and np.ndim(value) == 0)):
        kind = (f"an array of shape {np.shape(value)}" if array
                else f"{type(value).__name__} {value!r}")
        raise TypeError(f"`{name}` must be a real number or a 0-d real array (vmap "
                        f"`minimize` to use one per problem), got {kind}.")
    if is_concrete_number(value):
        v = float(value)
        if not (v > 0 or (allow_zero and v == 0)):
            need = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"`{name}` must be {need}, got {value!r}.")


_INT32_MAX = 2**31 - 1  # counts are int32 inside the compiled loop


def check_count(name: str, value: Any) -> None:
    """A count: ``None`` or a Python int in ``[1, 2³¹ − 1]`` (int32 inside the loop)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be a Python int >= 1, got {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    if value > _INT32_MAX:
        raise ValueError(f"`{name}` must be at most 2**31 - 1 = {_INT32_MAX} (an int32 "
                         f"inside the compiled loop), got {value}; pass None or a smaller "
                         f"limit.")


def check_callback(callback: Any, every: Any) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be a function of one argument (or None), got "
                        f"{type(callback).__name__}.")
    check_count("callback_every", every)


def check_args(args: Any) -> None:
    if not isinstance(args, tuple):
        raise TypeError(f"`args` must be a tuple of extra arguments of `fun`, got {type(args)}.")


def check_verbose(verbose: Any) -> None:
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise ValueError(f"`verbose` must be an int >= 0 (print every k iterations), got "
                         f"{verbose!r}.")


def check_run_options(args: Any, tol: Any, ftol: Any, xtol: Any, maxiter: Any,
                      maxfev: Any) -> None:
    """The checks of every loop entry point."""
    check_args(args)
    check_tolerance("tol", tol, allow_zero=False)
    check_tolerance("ftol", ftol, allow_zero=True)
    check_tolerance("xtol", xtol, allow_zero=True)
    check_count("maxiter", maxiter)
    check_count("maxfev", maxfev)


def history_length(history: bool, history_size: int | None, maxiter: int) -> int:
    """Length of the history buffers (0 without history)."""
    return (history_size or maxiter + 1) if history else 0


def traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a tracer (we run inside a caller's transformation)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def test_on(value: Any) -> bool:
    """Whether an ``ftol``/``xtol`` test is compiled in (anything but a concrete 0)."""
    return not (is_concrete_number(value) and float(value) == 0.0)


def strong(a: Any, dtype: Any = None) -> Any:
    """``a`` as a strongly-typed array (of ``dtype``), converting only when needed (a
    weakly-typed ``x0`` must hit the same compiled program as an ordinary array)."""
    if dtype is not None and is_concrete_number(a) and not isinstance(a, jax.Array):
        with np.errstate(over="ignore"):  # (a tolerance beyond the dtype's range is inf)
            return np.asarray(a, dtype)
    current = getattr(a, "dtype", None)
    if current is None or getattr(a, "weak_type", False) or (
            dtype is not None and current != dtype):
        return jax.lax.convert_element_type(a, dtype or jax.numpy.result_type(a))
    return a


def _shapes(tree: Any) -> str:
    leaves = jax.tree.leaves(tree)
    return "[" + ", ".join(f"{getattr(v, 'dtype', type(v).__name__)}{list(np.shape(v))}"
                           for v in leaves) + "]"


@contextlib.contextmanager
def objective_errors(fun: Callable, x: Any, args: tuple, name: str = "x0") -> Iterator[None]:
    """Re-raise an error that calling ``fun(x, *args)`` itself raises (a broadcasting
    error deep in the objective, say) as one that names ``x0`` and ``args`` and their
    shapes; errors from elsewhere pass unchanged. Costs nothing unless something raised."""
    try:
        yield
    except (TypeError, ValueError) as err:
        if "custom_vjp" in str(err):
            raise TypeError(
                "`fun` is (or calls) a jax.custom_vjp function, which has no forward-mode "
                "derivative, and this `method` needs one (Hessian-vector products are "
                "forward-over-reverse). Define the rule with jax.custom_jvp instead, or use "
                "a quasi-Newton method (lbfgs, bfgs, cg).") from err
        try:
            jax.eval_shape(fun, x, *args)
        except (TypeError, ValueError) as own:
            arg = name.split("[")[0]  # (x0s[0]: the first member of x0s)
            raise type(err)(
                f"calling `fun({name}, *args)` raised {type(own).__name__}: {own}\n"
                f"Check that `{arg}` and `args` are what `fun` expects: `{name}` has "
                f"leaves {_shapes(x)}, `args` has {len(args)} argument(s) with leaves "
                f"{_shapes(args)}.") from err
        raise


def _bound_leaves(name: str, side: Any, x: Any, fill: float) -> list:
    """One side of the box as leaves typed like ``x``'s that broadcast to their shapes
    (NumPy arrays where concrete: a ``jnp`` op under ``jit`` would trace them, and the
    checks of :func:`box` could not see their values)."""
    x_leaves, x_def = jax.tree.flatten(x)
    if side is None or is_concrete_number(side) or (
            isinstance(side, jax.Array | np.ndarray) and np.ndim(side) == 0
            and len(x_leaves) != 1):
        side = jax.tree.unflatten(x_def, [fill if side is None else side] * len(x_leaves))
    if len(x_leaves) == 1 and x_def == jax.tree.structure(0) and isinstance(side, list | tuple):
        side = np.asarray([fill if v is None else v for v in side], np.float64)  # (a list)
    side_leaves, side_def = jax.tree.flatten(side, is_leaf=lambda v: v is None)
    if side_def != x_def:
        raise ValueError(f"`bounds`: the {name} bound must be None, a number, or a pytree "
                         f"with the structure of `x0` ({x_def}), got {side_def}.")
    out = []
    for leaf, bound in zip(x_leaves, side_leaves, strict=True):
        bound = fill if bound is None else bound
        if not isinstance(bound, jax.Array | np.ndarray | numbers.Real):
            raise TypeError(f"`bounds`: the {name} bound has a leaf of type "
                            f"{type(bound).__name__}; use numbers or float arrays.")
        if not traced(bound) and np.asarray(bound).dtype.kind not in "fiu":
            raise TypeError(f"`bounds`: the {name} bound must be real numbers, got dtype "
                            f"{np.asarray(bound).dtype}.")
        shape = np.shape(leaf)
        try:
            np.broadcast_shapes(np.shape(bound), shape)
            if np.broadcast_shapes(np.shape(bound), shape) != tuple(shape):
                raise ValueError
        except ValueError:
            raise ValueError(f"`bounds`: the {name} bound has shape {np.shape(bound)}, which "
                             f"does not broadcast to `x0`'s leaf shape {tuple(shape)}.") from None
        with np.errstate(over="ignore"):
            value = (jax.numpy.asarray(bound, leaf.dtype) if traced(bound)
                     else np.asarray(bound, leaf.dtype))
        out.append(value)  # (broadcast by the caller, after the concrete checks)
    return out


def _pairs(bounds: Any, x: Any) -> tuple[Any, Any]:
    """scipy's forms: a ``Bounds`` object (``lb``, ``ub``), or a list of ``(min, max)``
    pairs (``None`` for no bound), one per entry of a 1-D ``x0``."""
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        return bounds.lb, bounds.ub
    leaves = jax.tree.leaves(x)
    if len(leaves) != 1 or np.ndim(leaves[0]) != 1 or len(bounds) != np.size(leaves[0]):
        raise ValueError(f"`bounds` as a list is scipy's list of (min, max) pairs, one per "
                         f"entry of a 1-D `x0` (size {sum(np.size(v) for v in leaves)}), got "
                         f"{len(bounds)} entries; for pytrees or arrays pass a tuple "
                         f"`(lower, upper)`.")
    if not all(isinstance(p, tuple | list) and len(p) == 2 for p in bounds):
        raise ValueError("`bounds` as a list must hold (min, max) pairs, e.g. "
                         "[(0, None), (-1, 1)].")
    lower = np.array([-np.inf if p[0] is None else p[0] for p in bounds], np.float64)
    upper = np.array([np.inf if p[1] is None else p[1] for p in bounds], np.float64)
    return lower, upper


def box(bounds: Any, x: Any) -> tuple[Any, Any] | None:
    """``bounds`` as ``(lower, upper)`` pytrees shaped and typed like ``x`` (``None``:
    unbounded; concrete sides as NumPy arrays, so a call costs no device dispatch).
    Accepts ``(lower, upper)`` (each ``None``, a number, an array or a pytree like ``x``),
    scipy's ``Bounds`` and scipy's list of ``(min, max)`` pairs. Concrete bounds are
    checked: no NaN, ``lower <= upper`` everywhere."""
    if bounds is None:
        return None
    if isinstance(bounds, list) or (hasattr(bounds, "lb") and hasattr(bounds, "ub")):
        lower, upper = _pairs(bounds, x)
    elif isinstance(bounds, tuple) and len(bounds) == 2:
        lower, upper = bounds
    else:
        raise TypeError(f"`bounds` must be a tuple `(lower, upper)` (each None, a number, an "
                        f"array or a pytree like `x0`), a scipy `Bounds`, or a list of "
                        f"(min, max) pairs; got {type(bounds).__name__}.")
    x_def = jax.tree.structure(x)
    lo = _bound_leaves("lower", lower, x, -np.inf)
    hi = _bound_leaves("upper", upper, x, np.inf)
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        if traced((a, b)):
            continue
        a, b = np.asarray(a), np.asarray(b)
        where = f" (leaf {i})" if len(lo) > 1 else ""
        if np.isnan(a).any() or np.isnan(b).any():
            raise ValueError(f"`bounds` contain NaN{where}: use -inf/inf (or None) for a "
                             f"missing bound.")
        if (a > b).any():
            k = int(np.flatnonzero((a > b).ravel())[0])
            raise ValueError(f"`bounds`: lower > upper{where} at flat index {k} "
                             f"({a.ravel()[k]} > {b.ravel()[k]}); every lower bound must be "
                             f"<= its upper bound.")
    shapes = [np.shape(leaf) for leaf in jax.tree.leaves(x)]
    lo, hi = ([jax.numpy.broadcast_to(v, s) if traced(v) else np.broadcast_to(v, s)
               for v, s in zip(side, shapes, strict=True)] for side in (lo, hi))
    return jax.tree.unflatten(x_def, lo), jax.tree.unflatten(x_def, hi)
