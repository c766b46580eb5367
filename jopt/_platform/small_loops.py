"""XLA:CPU's process-wide small-loop setting: each ``while_loop`` whose body touches fewer
bytes than a threshold is compiled, with its control flow, into one kernel.

XLA:CPU normally runs a compiled loop as a sequence of separate kernels dispatched one by
one every iteration; for small solver loops the dispatch costs more than the arithmetic.
XLA's ``SmallWhileLoopHoistingPass`` outlines loops below
``xla_cpu_small_while_loop_byte_threshold`` (default 1,024 bytes), which can only be set
through ``XLA_FLAGS`` before JAX starts its backends. Other backends ignore it.
"""

from __future__ import annotations

import functools
import os
import shlex

from jopt._platform.probe import backends_started

__all__ = ["enable_small_loop_kernels", "small_loop_flags", "small_loop_threshold"]

_OPTION = "xla_cpu_small_while_loop_byte_threshold"
_EXTRA = "--xla_backend_extra_options="
DEFAULT_MAX_BYTES = 1 << 24  # 16 MiB: an L-BFGS loop body up to n = 1,000


def _check_max_bytes(max_bytes: object) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(
            f"`max_bytes` must be a positive int (bytes a loop body may touch), got "
            f"{max_bytes!r}. The default, {DEFAULT_MAX_BYTES}, covers an L-BFGS loop up to "
            f"n = 1,000."
        )
    return max_bytes


def small_loop_flags(max_bytes: int = DEFAULT_MAX_BYTES, flags: str = "") -> str:
    """``flags`` (an ``XLA_FLAGS`` string) with the small-loop threshold set to ``max_bytes``.

    Other flags, and other entries of ``--xla_backend_extra_options``, are kept; an earlier
    value of the threshold is replaced. Use it for the shell, e.g.
    ``XLA_FLAGS="$(python -c 'import jopt; print(jopt.small_loop_flags())')" python run.py``.
    """
    max_bytes = _check_max_bytes(max_bytes)
    if not isinstance(flags, str):
        raise TypeError(f"`flags` must be an XLA_FLAGS string, got {type(flags).__name__}.")
    tokens = shlex.split(flags)
    entry = f"{_OPTION}={max_bytes}"
    for i, token in enumerate(tokens):
        if token.startswith(_EXTRA):
            kept = [e for e in token[len(_EXTRA):].split(",")
                    if e and e.split("=", 1)[0] != _OPTION]
            tokens[i] = _EXTRA + ",".join([*kept, entry])
            break
    else:
        tokens.append(_EXTRA + entry)
    return shlex.join(tokens)


def small_loop_threshold(flags: str | None = None) -> int | None:
    """The small-loop threshold set in ``flags`` (default: ``$XLA_FLAGS``), or ``None``."""
    flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
    return _threshold_in(flags)


@functools.lru_cache(maxsize=16)
def _threshold_in(flags: str) -> int | None:
    try:
        tokens = shlex.split(flags)
    except ValueError:
        return None
    for token in tokens:
        if token.startswith(_EXTRA):
            for entry in token[len(_EXTRA):].split(","):
                key, _, value = entry.partition("=")
                if key == _OPTION:
                    try:
                        return int(value)
                    except ValueError:
                        return None
    return None


def enable_small_loop_kernels(max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Let XLA:CPU compile each loop touching < ``max_bytes`` per iteration into one kernel.

    Call it once, before the first JAX computation of the process (creating an array
    counts): it adds ``xla_cpu_small_while_loop_byte_threshold=max_bytes`` to the
    ``XLA_FLAGS`` environment variable, which XLA reads when JAX starts its backends. It
    changes how every loop of the process is compiled, not what it computes (results may
    differ in the last bits, as with any change of XLA options). GPU and TPU backends
    ignore it.

    It pays where dispatch dominates: solver loops of small and mid-sized problems
    (the performance page has the figures). Loops dominated by matrix products can get
    slower, since the outlined loop's products come from XLA's legacy emitter. Measure your
    own program before keeping it.

    Returns the new ``XLA_FLAGS``. Called after the backends started, it returns quietly
    if the setting is already in ``XLA_FLAGS`` (set before the start, e.g. from the shell)
    and raises ``RuntimeError`` otherwise.

    Example:
      >>> import jopt
      >>> jopt.enable_small_loop_kernels()  # doctest: +SKIP
      >>> import jax.numpy as jnp  # first computation after this line

    Reference: XLA's ``SmallWhileLoopHoistingPass`` (xla/service/cpu), which outlines a
    small while loop into a call that ``ComputationKernelEmitter`` emits as one function.
    """
    current = os.environ.get("XLA_FLAGS", "")
    wanted = small_loop_flags(max_bytes, current)
    if backends_started() is not False:  # started, or this jax cannot say
        if shlex.split(wanted) == shlex.split(current):
            return current
        raise RuntimeError(
            "jopt.enable_small_loop_kernels() must run before the first JAX computation: "
            "JAX has already started its backends and read XLA_FLAGS. Call it right after "
            "the imports, before creating any array, or start Python with "
            f"XLA_FLAGS={shlex.quote(wanted)}."
        )
    os.environ["XLA_FLAGS"] = wanted
    return wanted
