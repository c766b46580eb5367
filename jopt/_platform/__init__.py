"""The platform layer: the only part of jopt that knows a backend or an XLA option.

The solve layer asks it for a :class:`Plan` once per call (compile options, one-function
outlining, packed outputs, the split backward pass), compiles through it, and calls
through it; everything it does is a speed choice, never a different answer. Each
experimental feature is probed once per process (:mod:`jopt._platform.probe`) and falls
back to the plain path with at most one ``JoptWarning``; ``platform_policy("generic")``
(or ``JOPT_PLATFORM=generic``) forces the plain path every accelerator gets.

Modules: ``policy`` (auto or generic), ``probe`` (what this jaxlib accepts), ``options``
(compile-option profiles), ``outline`` (one XLA:CPU function per program),
``small_loops`` (the process-wide XLA flag), ``split`` (the split backward pass),
``programs`` (the bounded program store and the fast-call cache).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import numpy as np

from jopt._platform import options as _options
from jopt._platform import outline as _outline
from jopt._platform.policy import platform_policy, tuned_cpu
from jopt._platform.probe import warn_once, xla_metadata
from jopt._platform.programs import (
    BoundedJit,
    FastCalls,
    PerObjective,
    WeakCallable,
    held_programs,
    weakly,
)
from jopt._platform.small_loops import (
    enable_small_loop_kernels,
    small_loop_flags,
    small_loop_threshold,
)
from jopt._platform.split import split_backward_pays

__all__ = [
    "BoundedJit",
    "FastCalls",
    "Plan",
    "WeakCallable",
    "compiled",
    "enable_small_loop_kernels",
    "held_programs",
    "loop_program",
    "one_function",
    "plan",
    "platform_policy",
    "run",
    "small_loop_flags",
    "small_loop_threshold",
    "weakly",
]


class Plan(NamedTuple):
    """The platform's choices for one program (static: part of the compile key).

    Attributes:
      profile: key of the compile options (``None``: XLA's defaults).
      outline: compile the whole program as one XLA:CPU function when it passes the check.
      packed: return a solve's integer counters as one vector (eager calls on XLA:CPU,
        where every output buffer costs as much as a small solve's iteration).
      split: evaluate value and gradient with the backward pass split off.
    """

    profile: str | None = None
    outline: bool = False
    packed: bool = False
    split: bool = False


GENERIC = Plan()


def _size(x: Any) -> int:
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(x))


def _shapes_key(x: Any, args: tuple) -> tuple | None:
    try:
        return (jax.tree.structure(x), jax.tree.structure(args),
                tuple((np.shape(leaf), np.dtype(jax.numpy.result_type(leaf)))
                      for leaf in jax.tree.leaves((x, args))))
    except TypeError:
        return None


_FACTS = PerObjective()  # (outlinable, split pays) per objective and shapes
_REFUSED = PerObjective()  # objectives whose outlined program XLA:CPU refused
_LOOPS: dict = {}  # loop key -> whether the solver's own loop is outlinable
_LOOPS_MAX = 64
_LOOPS_LOCK = threading.Lock()


def _objective_facts(fun: Callable, x: Any, args: tuple) -> tuple[bool, bool]:
    """``(outlinable, split backward pays)`` for ``value_and_grad(fun)(x, *args)``, from one
    trace, cached per objective and shapes; an objective that does not trace gets
    ``(False, False)`` (the checked path reports it)."""
    key = _shapes_key(x, args)
    facts = _FACTS.get(fun, key)
    if facts is not None:
        return facts
    try:
        closed = jax.make_jaxpr(jax.value_and_grad(fun))(x, *args)
        facts = (_outline.outlinable(closed, library_fusions=not _options.fusions_off()),
                 split_backward_pays(closed.jaxpr))
    except Exception:
        facts = (False, False)
    _FACTS.set(fun, key, facts)
    return facts


def _loop_outlinable(loop: tuple[Hashable, Callable[[], Any]] | None) -> bool:
    """Whether the solver's own loop (``loop = (key, trace)``: ``trace()`` gives its
    closed jaxpr with a stand-in objective) passes :func:`jopt._platform.outline.
    outlinable`, cached per key; ``None`` (not known): yes, and :func:`one_function`
    checks the program itself."""
    if loop is None:
        return True
    key, trace = loop
    with _LOOPS_LOCK:
        known = _LOOPS.get(key)
    if known is None:
        try:
            known = _outline.outlinable(trace(), library_fusions=not _options.fusions_off())
        except Exception:  # (the checked call reports the error)
            known = False
        with _LOOPS_LOCK:
            while len(_LOOPS) >= _LOOPS_MAX:
                del _LOOPS[next(iter(_LOOPS))]
            _LOOPS[key] = known
    return known


def plan(fun: Callable, x: Any, args: tuple, *, nested: bool, batched: bool = False,
         verbose: int = 0, loop: tuple[Hashable, Callable[[], Any]] | None = None) -> Plan:
    """The platform's choices for a program solving ``fun(x, *args)``.

    ``nested``: inside a caller's trace (only a top-level ``jit`` takes compile options,
    and the caller's batch sizes are unknown here). ``batched``: a vmapped batch of such
    problems (``minimize_many``). ``loop``: ``(key, trace)``, the solver's loop traced
    with a stand-in objective (cached per hashable ``key``). A program is outlined only
    when both the objective and the loop pass the emitter's check: the outlined profile's
    options (XLA's older emitters) cost a loop that is compiled as usual after all up to
    3x (L-BFGS-B's sort, top-k and Cholesky factorization never pass). Under the generic
    policy, or off the CPU, the plan is the plain one.
    """
    if nested or not tuned_cpu():
        return GENERIC
    outlinable, split = _objective_facts(fun, x, args)
    outline = (not batched and not verbose and outlinable and xla_metadata() is not None
               and _outline.outline_solver_loops()
               and not _options.loops_outlined(small_loop_threshold())
               and sum(_outline.nbytes(leaf) for leaf in jax.tree.leaves(x))
               <= _options.OUTLINE_MAX_BYTES
               and not _sharded(x) and not _REFUSED.get(fun, _shapes_key(x, args))
               and _loop_outlinable(loop))
    profile = _options.profile_for(_size(x), batched=batched, outline=outline,
                                   small_loops=small_loop_threshold())
    return Plan(profile=profile, outline=outline, packed=not batched, split=split)


def _sharded(x: Any) -> bool:
    return any(len(getattr(getattr(leaf, "sharding", None), "device_set", ())) > 1
               for leaf in jax.tree.leaves(x))


def compiled(fn: Callable, num_static: int, profile: str | None,
             donate_argnums: tuple = ()) -> BoundedJit:
    """``fn`` jitted with ``num_static`` static leading arguments and the compile options of
    ``profile`` (those this XLA accepts), its programs in the bounded store; one object per
    arguments, so its compiled programs are reused."""
    return _compiled(fn, num_static, profile, tuple(donate_argnums))


@functools.cache
def _compiled(fn: Callable, num_static: int, profile: str | None,
              donate_argnums: tuple) -> BoundedJit:
    return BoundedJit(fn, num_static, donate_argnums=donate_argnums,
                      compiler_options=_options.compiler_options(profile))


def _is_option_error(err: Exception) -> bool:
    text = str(err).lower()
    return "compile option" in text or "setting option" in text or "enum value" in text


def run(fn: Callable, num_static: int, make_static: Callable[[Plan], tuple], the_plan: Plan,
        dynamic: tuple, *, fun: Callable | None = None, x: Any = None, args: tuple = (),
        donate_argnums: tuple = ()) -> tuple[Plan, Any]:
    """Call ``fn(*make_static(plan), *dynamic)`` compiled under ``the_plan``; returns the
    plan that ran and the result.

    Falls back, never breaks: inside a caller's ``jit`` (where options are refused), with
    no options; when XLA:CPU refuses the outlined program, without outlining (and the
    objective is not outlined again); when it refuses an option at compile time, with
    XLA's defaults (one ``JoptWarning``).
    """
    current = the_plan
    for _ in range(3):
        program = compiled(fn, num_static, current.profile, donate_argnums)
        try:
            return current, program(*make_static(current), *dynamic)
        except ValueError as err:  # a caller's jit with only constant inputs
            if "compiler_options" not in str(err) or current.profile is None:
                raise
            current = current._replace(profile=None)
        except jax.errors.JaxRuntimeError as err:
            if current.outline:
                _REFUSED.set(fun, _shapes_key(x, args), True)
                current = current._replace(outline=False, profile=_options.profile_for(
                    _size(x), batched=False, outline=False,
                    small_loops=small_loop_threshold()))
            elif current.profile is not None and _is_option_error(err):
                warn_once("refused:" + str(current.profile),
                          f"jopt: XLA refused the compile options of profile "
                          f"{current.profile!r} ({err}); compiling with XLA's defaults.")
                _options.refuse(current.profile)
                current = current._replace(profile=None)
            else:
                raise
    program = compiled(fn, num_static, current.profile, donate_argnums)
    return current, program(*make_static(current), *dynamic)


def loop_program(static_argnames: tuple[str, ...]) -> Callable[[Callable], Callable]:
    """Decorator: jit ``fn`` (its first argument and ``static_argnames`` static) with the
    ``cpu-loops`` options on a tuned CPU; plain nested ``jit`` inside a caller's trace."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            nested = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args))
            profile = "cpu-loops" if not nested and tuned_cpu() else None
            args = (weakly(args[0]), *args[1:])  # (the store must not keep it alive)
            try:
                return _loop_jit(fn, static_argnames, profile)(*args, **kwargs)
            except ValueError as err:  # inside a caller's jit with only constant inputs
                if "compiler_options" not in str(err) or profile is None:
                    raise
                return _loop_jit(fn, static_argnames, None)(*args, **kwargs)

        return call

    return wrap


@functools.cache
def _loop_jit(fn: Callable, static_argnames: tuple, profile: str | None) -> BoundedJit:
    return BoundedJit(fn, 1, static_argnames=static_argnames,
                      compiler_options=_options.compiler_options(profile))


def one_function(fn: Callable, live_source: jax.Array, *args: Any) -> Any:
    """``fn(*args)`` traced as one XLA:CPU function if it passes the emitter's check;
    ``None`` if it does not (the caller then runs ``fn`` as usual).

    ``live_source``: a traced floating scalar that is never NaN (a checked, concrete
    tolerance: outlined programs are compiled for eager calls only), from which the
    always-true flag ``t == t`` is made, which XLA cannot fold and duplicates into its
    readers (a separate flag kernel would make the call wait on it).
    """
    if xla_metadata() is None:
        return None
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    if not _outline.outlinable(closed, library_fusions=not _options.fusions_off()):
        return None
    live = live_source == live_source
    return _outline.outlined_call(closed, jax.tree.structure(shapes), live, *args)
