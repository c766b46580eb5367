"""A bounded store of compiled programs: ``jax.jit`` with static arguments, minus the leak.

``jax.jit(fn, static_argnums=...)`` keeps every program it compiled for as long as the
jitted function lives, and the static arguments with it. jopt's drivers take the user's
objective as a static argument, so without a bound every objective ever solved would stay
compiled for the life of the process; on XLA:CPU each program holds memory mappings of its
own, of which Linux allows a process a limited number (``vm.max_map_count``).

:class:`BoundedJit` keeps one ``jax.jit`` of ``functools.partial(fn, *static)`` per distinct
static value, in one least-recently-used store shared by all of jopt's drivers, holding at
most :data:`MAX_PROGRAMS` of them. Dropping the jitted partial frees its programs (JAX's own
caches hold a jitted function only weakly), so memory stays bounded however many objectives
a process solves; a dropped program is compiled again if its objective comes back.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax

# Keeps jopt's share of a process's memory mappings small, and is more than any working
# set of problems in the benchmarks.
MAX_PROGRAMS = 64

_PROGRAMS: dict[Hashable, Callable] = {}
_LOCK = threading.Lock()


class BoundedJit:
    """``jax.jit(fn, static_argnums=range(num_static), static_argnames=...)`` whose compiled
    programs live in the shared bounded store (see the module docstring).

    Args:
      fn: the function to compile.
      num_static: its leading positional arguments that are static (hashable).
      static_argnames: keyword-only arguments that are static too.
      **jit_kwargs: passed to ``jax.jit`` (``donate_argnums`` counts ``fn``'s positions,
        static ones included, as with ``jax.jit``).
    """

    def __init__(self, fn: Callable, num_static: int, static_argnames: Sequence[str] = (),
                 **jit_kwargs: Any) -> None:
        self._fn = fn
        self._num_static = num_static
        self._static_names = tuple(static_argnames)
        donate = jit_kwargs.pop("donate_argnums", ())
        donate = (donate,) if isinstance(donate, int) else tuple(donate)
        if any(i < num_static for i in donate):
            raise ValueError("`donate_argnums` may not name a static argument.")
        if donate:
            jit_kwargs["donate_argnums"] = tuple(i - num_static for i in donate)
        self._jit_kwargs = jit_kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        n = self._num_static
        if self._static_names:
            named = tuple((k, kwargs.pop(k)) for k in self._static_names if k in kwargs)
            key = (self, args[:n], named)
        else:
            key = (self, args[:n])
        return self._lookup(key)(*args[n:], **kwargs)

    def program(self, *static: Any) -> Callable:
        """The jitted ``partial(fn, *static)`` (positional static arguments only), for a
        caller that calls it many times: it stays alive while the caller holds it."""
        return self._lookup((self, static))

    def _lookup(self, key: tuple) -> Callable:
        with _LOCK:  # threads may solve at once: keep the multi-step update whole
            program = _PROGRAMS.pop(key, None)
            if program is None:
                named = dict(key[2]) if len(key) > 2 else {}
                # (creating the jitted function is cheap: it compiles on its first call,
                # outside the lock)
                program = jax.jit(functools.partial(self._fn, *key[1], **named),
                                  **self._jit_kwargs)
                while len(_PROGRAMS) >= MAX_PROGRAMS:
                    del _PROGRAMS[next(iter(_PROGRAMS))]  # the least recently used
            _PROGRAMS[key] = program  # (re)inserted last: the most recently used
        return program

    def _cache_size(self) -> int:
        """Programs compiled and still held for this function (all static values)."""
        with _LOCK:
            programs = [program for key, program in _PROGRAMS.items() if key[0] is self]
        return sum(program._cache_size() for program in programs)


def held_programs() -> int:
    """How many jitted partials the store holds (for tests)."""
    return len(_PROGRAMS)


class FastCalls:
    """A bounded, thread-safe map from an eager call's static inputs to its compiled
    program: a repeat call skips the argument checks and conversions (as much Python as a
    small solve) and calls the program directly. Oldest entries are dropped first."""

    def __init__(self, max_size: int = 64) -> None:
        self._max = max_size
        self._items: dict = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            return self._items.get(key)

    def set(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items.pop(key, None)
            while len(self._items) >= self._max:
                del self._items[next(iter(self._items))]
            self._items[key] = value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class PerObjective:
    """Values per objective and shapes, kept only while the objective is alive (a cache
    that held objectives would keep every closure a caller made alive); thread-safe."""

    _PER_FUN = 8  # shapes remembered per objective (oldest dropped)

    def __init__(self) -> None:
        self._by_fun: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, fun: Callable | None, shapes: tuple | None) -> Any:
        try:
            with self._lock:
                return self._by_fun.get(fun, {}).get(shapes)
        except TypeError:  # an objective that is not hashable or weak-referenceable
            return None

    def set(self, fun: Callable | None, shapes: tuple | None, value: Any) -> None:
        if shapes is None or fun is None:
            return
        try:
            with self._lock:
                entry = self._by_fun.setdefault(fun, {})
                while len(entry) >= self._PER_FUN:
                    del entry[next(iter(entry))]
                entry[shapes] = value
        except TypeError:
            return
