"""Probes of what the installed jax/jaxlib accepts, each made once per process and cached
(failure included): compile options, the experimental XLA metadata API, the backends'
start. A probe that fails turns its feature off with at most one ``JoptWarning``."""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jopt._checks import JoptWarning

_lock = threading.Lock()
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Issue ``message`` as a ``JoptWarning`` the first time ``key`` is seen."""
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, JoptWarning, stacklevel=3)


def _compiles(options: dict) -> bool:
    """Whether a one-operation program compiles with ``options``."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(
            jax.ShapeDtypeStruct((), jnp.float32)).compile()
    except Exception:  # any refusal: unknown option, bad value, parse error
        return False
    return True


@functools.lru_cache(maxsize=32)
def _accepted(items: tuple) -> tuple:
    if _compiles(dict(items)):
        return items
    kept = tuple(item for item in items if _compiles(dict([item])))
    dropped = sorted(k for k, _ in items if (k, dict(items)[k]) not in kept)
    warn_once("options",
              f"jopt: this jaxlib refuses the XLA compile options {dropped}; jopt compiles "
              "without them (same results, possibly slower).")
    return kept


def accepted_options(options: dict | None) -> dict | None:
    """``options`` less those the installed XLA refuses (probed once per option set)."""
    if not options:
        return None
    kept = dict(_accepted(tuple(options.items())))
    return {k: v for k, v in options.items() if k in kept} or None


@functools.cache
def xla_metadata() -> Callable[..., Any] | None:
    """``jax.experimental.xla_metadata.set_xla_metadata``, or ``None`` where this jax
    lacks it (then nothing is outlined)."""
    try:
        from jax.experimental.xla_metadata import set_xla_metadata
    except Exception:
        warn_once("xla_metadata",
                  "jopt: jax.experimental.xla_metadata is unavailable; solver loops are "
                  "compiled the usual way (same results, possibly slower).")
        return None
    return set_xla_metadata


def backends_started() -> bool | None:
    """Whether JAX has created its backends (``None``: this jax does not say)."""
    try:
        from jax._src import xla_bridge
    except Exception:
        return None
    started = getattr(xla_bridge, "backends_are_initialized", None)
    if started is not None:
        return bool(started())
    backends = getattr(xla_bridge, "_backends", None)
    return None if backends is None else bool(backends)
