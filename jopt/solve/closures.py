"""A warning for eager callers who pass a new closure of the same function on every call
(``minimize(lambda w: loss(w, data_i), w0)`` in a loop): every one is a new program to
compile, where one function and ``args=`` would compile once."""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jopt._checks import JoptWarning

__all__ = ["note_closure"]

_MAX = 256  # function bodies remembered (oldest dropped)
_WARN_AT = 5
_lock = threading.Lock()
_seen: dict = {}  # code object -> [weakref to the latest objective, shapes, repeats, warned]


def _closure_shapes(fun: Callable) -> tuple[Any, tuple | None]:
    """``(code object, shapes of the arrays it carries)``, or shapes ``None`` when a new
    object of it could not be replaced by ``args`` (it carries values other than arrays,
    which may change the program's structure)."""
    if isinstance(fun, functools.partial):
        values = (*fun.args, *fun.keywords.values())
        fun = fun.func
    else:
        try:
            values = tuple(cell.cell_contents for cell in getattr(fun, "__closure__", None) or ())
        except ValueError:  # an empty cell
            return None, None
    arrays = [v for v in values if isinstance(v, (jax.Array, np.ndarray))]
    if len(arrays) < len(values):
        return None, None
    return getattr(fun, "__code__", None), tuple((v.shape, str(v.dtype)) for v in arrays)


def note_closure(fun: Callable, x0: Any, stacklevel: int = 3) -> None:
    """Warn once per function body when eager calls keep passing new objects of it with
    the same shapes."""
    code, shapes = _closure_shapes(fun)
    if code is None:
        return
    try:
        ref = weakref.ref(fun)
    except TypeError:
        return
    shapes = (shapes, tuple((np.shape(leaf), str(getattr(leaf, "dtype", type(leaf))))
                            for leaf in jax.tree.leaves(x0)), jax.tree.structure(x0))
    with _lock:
        seen = _seen.get(code)
        if seen is not None and seen[0]() is fun:
            return
        if seen is None:
            while len(_seen) >= _MAX:
                del _seen[next(iter(_seen))]
            _seen[code] = [ref, shapes, 1, False]
            return
        seen[2] = seen[2] + 1 if seen[1] == shapes else 1
        seen[0], seen[1] = ref, shapes
        warn = seen[2] >= _WARN_AT and not seen[3]
        seen[3] = seen[3] or warn
        repeats = seen[2]
    if warn:
        warnings.warn(
            f"jopt.minimize was given {repeats} different objectives of the function "
            f"at {code.co_filename}:{code.co_firstlineno} (a new function object each time, "
            "same shapes): every one is a new program to compile. Define it once and pass "
            "what changes as arguments, `minimize(fun, x0, args=(data,))` with "
            "`fun(x, data)`, to compile once.",
            JoptWarning, stacklevel=stacklevel)
