"""Opt-in XLA:CPU setting that compiles a small solver loop into one kernel.

XLA:CPU normally runs a compiled ``while_loop`` as a sequence of separate kernels
("thunks"), dispatched one by one every iteration. For the loops of ``jopt.minimize`` on
small and mid-sized problems that dispatch costs more than the arithmetic: a float64
L-BFGS iteration at n = 10 is ~60 kernels of a few nanoseconds of work each. XLA has a
pass for exactly this case (``SmallWhileLoopHoistingPass``): a loop whose body touches
fewer bytes than ``xla_cpu_small_while_loop_byte_threshold`` is compiled, with its
control flow, into a single function. The threshold's default is 1,024 bytes, below any
solver loop, and it can only be set for the whole process through ``XLA_FLAGS``, read once
when JAX starts its backends. :func:`enable_small_loop_kernels` sets it (merged with any
flags already there) when called before the first JAX computation.

Measured (``benchmarks/small_loops.py``, one core): L-BFGS solves take about half the
time below n = 1,000; other loops of the process, jopt's or not, get the same treatment.
``jopt.minimize`` reads the threshold back (:func:`small_loop_threshold`): with it, problems
up to 4,096 elements compile with the small-problem XLA options, since the outlined loop
does not use the fusion emitters the mid-size options are for (first call at n = 1,000:
~0.6 s, against ~1.5 s without the setting). Loops whose bodies touch more than the
threshold, or that hold a custom call (``jax.debug`` printing), a sort, a scatter or a
YNNPACK fusion (XLA:CPU's choice for large reductions, e.g. at n = 10,000), keep the usual
path.
"""

from __future__ import annotations

import functools
import os
import shlex

__all__ = ["enable_small_loop_kernels", "small_loop_flags"]

_OPTION = "xla_cpu_small_while_loop_byte_threshold"
_EXTRA = "--xla_backend_extra_options="
DEFAULT_MAX_BYTES = 1 << 24  # 16 MiB: every L-BFGS loop of the suite up to n = 1,000


def _check_max_bytes(max_bytes: object) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(
            f"`max_bytes` must be a positive int (bytes a loop body may touch), got "
            f"{max_bytes!r}. The default, {DEFAULT_MAX_BYTES}, covers every L-BFGS loop up to "
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


def _backends_started() -> bool:
    """Whether JAX has created its backends (after which XLA_FLAGS is no longer read)."""
    from jax._src import xla_bridge

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else bool(xla_bridge._backends)


def enable_small_loop_kernels(max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Let XLA:CPU compile each loop touching < ``max_bytes`` per iteration into one kernel.

    Call it once, before the first JAX computation of the process (creating an array
    counts): it adds ``xla_cpu_small_while_loop_byte_threshold=max_bytes`` to the
    ``XLA_FLAGS`` environment variable, which XLA reads when JAX starts its backends. It
    changes how every loop of the process is compiled, not what it computes (results may
    differ in the last bits, as with any change of XLA options). GPU and TPU backends
    ignore it.

    It pays where dispatch dominates: solver loops of small and mid-sized problems
    (L-BFGS ~0.5x the time below n = 1,000, Newton-CG ~0.4x). Loops dominated by matrix
    products can get slower, since the outlined loop's products come from XLA's legacy
    emitter: a 300-step logistic-regression ``lax.scan`` (569 x 31, float32) took 1.4x as
    long. Measure your own program before keeping it.

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
    if _backends_started():
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
