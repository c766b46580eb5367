"""Which platform policy is in force: ``"auto"`` (the backend's tuned path, probed) or
``"generic"`` (the plain path every backend gets: XLA's default options, no outlining,
plain value-and-gradient). Read once per call of the solve layer, so a change applies to
programs compiled from then on."""

from __future__ import annotations

import os
import threading

import jax

_ENV = "JOPT_PLATFORM"
_POLICIES = ("auto", "generic")
_lock = threading.Lock()
_forced: str | None = None  # None: from the environment


def platform_policy(policy: str | None = None) -> str:
    """Set (``"auto"`` or ``"generic"``) or read the platform policy; returns it.

    ``"generic"`` gives every backend the path GPUs and TPUs take: no XLA:CPU compile
    options, no one-function outlining, no backend-specific heuristics. The default comes
    from the environment variable ``JOPT_PLATFORM`` (``auto`` when unset). Results are the
    same under both policies up to rounding.

    Example:
      >>> import jopt
      >>> jopt.platform_policy()
      'auto'
    """
    global _forced
    if policy is not None:
        if policy not in _POLICIES:
            raise ValueError(f"`policy` must be one of {_POLICIES}, got {policy!r}.")
        with _lock:
            _forced = policy
    if _forced is not None:
        return _forced
    value = os.environ.get(_ENV, "auto").strip().lower()
    return value if value in _POLICIES else "auto"


def tuned_cpu() -> bool:
    """Whether the XLA:CPU tuning applies: policy ``"auto"`` on the CPU backend."""
    return platform_policy() == "auto" and jax.default_backend() == "cpu"
