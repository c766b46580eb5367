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

The store never keeps a caller's objective alive: drivers pass it through :func:`weakly`,
whose proxy holds it by a weak reference, and when the objective is collected every
program and fast-call entry made for it is dropped at once (or at the store's next use,
when another thread holds its lock) — with the constants its closure baked into them.
``jax.jit`` itself holds a dropped function weakly; without this the store would keep up to
:data:`MAX_PROGRAMS` closures and all the arrays they capture.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax

# Keeps jopt's share of a process's memory mappings small, and is more than any working
# set of problems in the benchmarks.
MAX_PROGRAMS = 64

_PROGRAMS: dict[Hashable, Callable] = {}
_PROXIES: dict[Hashable, tuple] = {}  # key -> the WeakCallables its static values hold
_LOCK = threading.Lock()
_deaths = 0  # objectives collected so far (a store purges when it has seen fewer)
_programs_seen_deaths = 0
_FAST_STORES: weakref.WeakSet = weakref.WeakSet()


class WeakCallable:
    """A callable that calls ``fn`` through a weak reference: hashes and compares as ``fn``
    does while ``fn`` lives (so it keys a cache as ``fn`` would); a dead one equals only
    itself. Bound methods are held by :class:`weakref.WeakMethod`."""

    __slots__ = ("__weakref__", "_hash", "_ref")

    def __init__(self, fn: Callable) -> None:
        ref_type = weakref.WeakMethod if inspect.ismethod(fn) else weakref.ref
        self._ref = ref_type(fn, _objective_died)
        self._hash = hash(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self._ref()
        if fn is None:  # (a program is only traced while its caller holds the objective)
            raise RuntimeError("jopt: the objective of this program was garbage-collected.")
        return fn(*args, **kwargs)

    @property
    def alive(self) -> bool:
        return self._ref() is not None

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, WeakCallable) or self._hash != other._hash:
            return False
        mine, theirs = self._ref(), other._ref()
        return mine is not None and theirs is not None and (mine is theirs or mine == theirs)

    def __repr__(self) -> str:
        return f"weakly({self._ref()!r})"


def weakly(fn: Any) -> Any:
    """``fn`` held weakly (a :class:`WeakCallable`) for a key of the program store;
    ``fn`` itself when it cannot be weakly referenced or hashed (it then lives as long as
    its programs, as before)."""
    if isinstance(fn, WeakCallable) or not callable(fn):
        return fn
    try:
        return WeakCallable(fn)
    except TypeError:
        return fn


def _proxies_in(value: Any, depth: int = 3) -> tuple:
    """The WeakCallables in a key: at its top level and inside tuples (NamedTuples such as
    the loop's config), a few levels deep."""
    if isinstance(value, WeakCallable):
        return (value,)
    if depth and isinstance(value, tuple):
        return tuple(p for item in value for p in _proxies_in(item, depth - 1))
    return ()


def _objective_died(_ref: Any) -> None:
    """Weak-reference callback: count the death and purge the stores whose lock is free
    now (never blocks: it may run inside the garbage collector, in any thread, even one
    holding a lock); the others purge on their next use."""
    global _deaths
    _deaths += 1
    if _LOCK.acquire(blocking=False):
        try:
            _purge_programs()
        finally:
            _LOCK.release()
    for store in list(_FAST_STORES):
        store.purge_if_free()


def _purge_programs() -> None:
    """(with ``_LOCK`` held) Drop the programs made for a collected objective."""
    global _programs_seen_deaths
    _programs_seen_deaths = _deaths
    dead = [key for key, proxies in _PROXIES.items()
            if any(not p.alive for p in proxies)]
    for key in dead:
        _PROGRAMS.pop(key, None)
        _PROXIES.pop(key, None)


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
            if _programs_seen_deaths != _deaths:
                _purge_programs()
            program = _PROGRAMS.pop(key, None)
            if program is None:
                named = dict(key[2]) if len(key) > 2 else {}
                # (creating the jitted function is cheap: it compiles on its first call,
                # outside the lock)
                program = jax.jit(functools.partial(self._fn, *key[1], **named),
                                  **self._jit_kwargs)
                while len(_PROGRAMS) >= MAX_PROGRAMS:
                    oldest = next(iter(_PROGRAMS))  # the least recently used
                    del _PROGRAMS[oldest]
                    _PROXIES.pop(oldest, None)
                proxies = _proxies_in(key[1:])
                if proxies:
                    _PROXIES[key] = proxies
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
    small solve) and calls the program directly. Oldest entries are dropped first, and
    entries whose key holds a collected objective (see :func:`weakly`) as soon as it is."""

    def __init__(self, max_size: int = 64) -> None:
        self._max = max_size
        self._items: dict = {}
        self._lock = threading.Lock()
        self._seen_deaths = 0
        _FAST_STORES.add(self)

    def purge_if_free(self) -> None:
        """Drop entries of collected objectives, unless another thread holds the lock."""
        if self._lock.acquire(blocking=False):
            try:
                self._purge()
            finally:
                self._lock.release()

    def _purge(self) -> None:
        self._seen_deaths = _deaths
        dead = [key for key in self._items
                if any(not p.alive for p in _proxies_in(key, depth=1))]
        for key in dead:
            del self._items[key]

    def get(self, key: Hashable) -> Any:
        with self._lock:
            return self._items.get(key)

    def set(self, key: Hashable, value: Any) -> None:
        with self._lock:
            if self._seen_deaths != _deaths:
                self._purge()
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
