"""``jopt.minimize``: run any transform to convergence in one compiled ``lax.while_loop``.

The loop is the data flow of the house plan::

    value_and_grad ─► transform.update(g, state, x, value=f, grad=g, value_fn=fun)
          ▲                                   │
          └────────── apply_updates ◄─────────┘

When the transform ends with a jopt line search, the value and gradient at the new point
come from the search's state (no evaluation is repeated); otherwise the loop evaluates
them once per iteration. Counters are the evaluations actually made.

The compiled loop is cached per objective, method and shapes: calling ``minimize`` again
with a new ``x0``, ``args`` or tolerance reuses it (tolerances are traced values). It works
inside a user's ``jit`` and under ``vmap`` over ``x0``, ``args`` and tolerances.

The loop can also be run in segments: :func:`minimize_init` builds the loop's carry, a
:class:`SolverState` (a pytree of arrays: checkpointable and vmappable), :func:`minimize_run`
continues it for ``num_steps`` iterations or to the end, and :func:`minimize_result` reads
the answer. ``minimize`` compiles the same two pieces as one program, built so that a
segmented solve reproduces it bit for bit.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.core import jaxprs_in_params

from jopt._checks import (
    JoptWarning,
    check_float_tree,
    check_scalar_output,
    is_concrete_number,
)
from jopt._programs import BoundedJit
from jopt.implicit import implicit_solution, implicit_value
from jopt.linesearch import LineSearchState, LineSearchStatus
from jopt.transforms.newton import newton, newton_cg, trust_ncg
from jopt.transforms.quasi_newton import (
    _CHUNK_BYTES,
    DEFAULT_MEMORY,
    BFGSState,
    LBFGSState,
    NonlinearCGState,
    _bfgs_block_rows,
    _use_chunks,
    bfgs,
    lbfgs,
    nonlinear_cg,
)
from jopt.tree import set_row, tree_inf_norm
from jopt.xla_cpu import (
    LIBRARY_FUSIONS_OFF,
    library_fusions_can_be_turned_off,
    nbytes,
    outlinable,
    outline_solver_loops,
    outlined_call,
    small_loop_threshold,
)

PyTree = Any

__all__ = [
    "METHODS",
    "MinimizeResult",
    "SolverState",
    "Status",
    "minimize",
    "minimize_init",
    "minimize_result",
    "minimize_run",
]


class Status:
    """``MinimizeResult.status`` codes (``message`` gives the text)."""

    CONVERGED = 0  # ‖∇f‖∞ <= tol
    MAXITER = 1
    LINESEARCH_FAILED = 2
    NONFINITE = 3
    SMALL_CHANGE = 4  # relative f change <= ftol or step <= xtol
    MAXFEV = 5
    PRECISION = 6  # no decrease possible at this precision (or no progress: see _STALL_LIMIT)

    MESSAGES: ClassVar[dict[int, str]] = {
        0: "Optimization terminated successfully: gradient norm below tol.",
        1: "Maximum number of iterations reached.",
        2: "Line search failed to find a lower value.",
        3: "Non-finite value or gradient (NaN/Inf) encountered; returning the last finite point.",
        4: "Converged: change in f or x below ftol/xtol.",
        5: "Maximum number of function evaluations reached.",
        6: "Desired gradient tolerance not reached due to precision loss: no lower value "
           "exists at the precision of the dtype (or f and the gradient stopped improving).",
        -1: "Running.",
    }


def _message(status: Any) -> Any:
    arr = np.asarray(status)
    if arr.ndim == 0:
        return Status.MESSAGES.get(int(arr), f"Unknown status {int(arr)}.")
    return np.vectorize(lambda s: Status.MESSAGES.get(int(s), "?"), otypes=[object])(arr)


class MinimizeResult(NamedTuple):
    """Result of :func:`minimize`, with scipy's field names (a pytree of arrays).

    Attributes:
      x: solution. fun: objective at ``x``. jac: gradient at ``x``.
      nit: iterations. nfev / njev: objective / gradient evaluations (line-search trials
      included; jopt evaluates both together, and ``njev`` adds the gradient each Newton
      linearization recomputes). nhev: Hessian-vector products (dense Hessians for
      ``"newton"``). success: ``status`` is CONVERGED or SMALL_CHANGE. status: a
      :class:`Status` code; ``message`` (host only) explains it.
      f_history / gnorm_history: per-iteration ``f`` and ``‖∇f‖∞`` (``history=True``;
      entry 0 is ``x0``, unused entries are NaN).

    From an eager :func:`minimize` call on the CPU, the six counters (``nit`` … ``status``)
    are numpy scalars, read back from the device in one transfer; under ``jit`` or ``vmap``,
    and on other backends, every field is a ``jax.Array``.
    """

    x: PyTree
    fun: jax.Array
    jac: PyTree
    nit: jax.Array
    nfev: jax.Array
    njev: jax.Array
    nhev: jax.Array
    success: jax.Array
    status: jax.Array
    f_history: jax.Array | None = None
    gnorm_history: jax.Array | None = None

    @property
    def message(self) -> Any:
        """Text for ``status`` (a numpy array of texts for a batched result)."""
        return _message(self.status)


METHODS: dict[str, Callable[[], optax.GradientTransformationExtraArgs]] = {
    "lbfgs": lbfgs,
    "l-bfgs": lbfgs,
    "bfgs": bfgs,
    "cg": nonlinear_cg,
    "newton-cg": newton_cg,
    "trust-ncg": trust_ncg,
    "newton": newton,
}


@functools.cache
def _named_transform(name: str, chunked: bool) -> optax.GradientTransformationExtraArgs:
    """One transform object per method name, so the compiled loop is reused across calls.

    ``chunked``: L-BFGS's history and BFGS's matrix in blocks of at most 512 bytes (see
    ``jopt.scale_by_lbfgs``, ``jopt.scale_by_bfgs``).
    """
    if METHODS[name] is lbfgs:
        return lbfgs(chunked_history=chunked)
    if METHODS[name] is bfgs:
        return bfgs(chunked_hessian=chunked)
    return METHODS[name]()


def _resolve_method(method: Any, *, batched: bool = False, fun: Callable | None = None,
                    x: PyTree = None, args: tuple = ()) -> optax.GradientTransformationExtraArgs:
    """The transform for ``method`` (a name or a transform).

    For ``"lbfgs"`` and ``"bfgs"`` by name, the L-BFGS history or the BFGS matrix is kept
    in blocks of at most 512 bytes (see ``jopt.scale_by_lbfgs``, ``jopt.scale_by_bfgs``)
    only when that lets XLA:CPU run the program inline: not in ``minimize_many``'s
    vmapped programs (``batched``), nor when the objective ``fun(x, *args)`` has values
    of its own over 512 bytes (the program runs on the thread pool anyway, and the blocks
    only add kernels: WATSON-9, OSBORNE2-11, BROYDEN_BANDED-10 in
    ``benchmarks/results/history_layout.md``). The objective is traced once per
    objective, shapes and dtypes for this (:func:`_fits_inline`).
    """
    if isinstance(method, str):
        key = method.lower()
        if key not in METHODS:
            raise ValueError(
                f"Unknown `method` {method!r}. Valid names: {sorted(set(METHODS))}; or pass "
                f"any optax/jopt GradientTransformation."
            )
        chunked = (not batched and fun is not None and _chunks_apply(METHODS[key], x)
                   and _fits_inline(fun, x, args))
        return _named_transform(key, chunked)
    if isinstance(method, optax.GradientTransformationExtraArgs):
        return method
    if isinstance(method, optax.GradientTransformation):
        return optax.with_extra_args_support(method)
    raise TypeError(
        f"`method` must be a method name ({sorted(set(METHODS))}) or an optax "
        f"GradientTransformation, got {type(method).__name__}."
    )


def _chunks_apply(method: Callable, x: PyTree) -> bool:
    """Whether ``method`` (lbfgs, bfgs) would chunk its state for ``x`` (by shape)."""
    try:
        if method is lbfgs:
            return _use_chunks(x, DEFAULT_MEMORY)
        if method is bfgs:
            leaves = jax.tree.leaves(x)
            n = sum(math.prod(np.shape(leaf)) for leaf in leaves)
            dtype = jnp.result_type(*leaves) if leaves else jnp.float32
            return len(_bfgs_block_rows(n, dtype, True)) > 1
    except (TypeError, ValueError):  # not an array tree: the argument checks report it
        pass
    return False


def _fits_inline(fun: Callable, x: PyTree, args: tuple) -> bool:
    """Whether every value of ``value_and_grad(fun)(x, *args)`` is at most 512 bytes
    (XLA:CPU's limit for running a program's kernels inline; see ``ColumnChunks``)."""
    return _objective_facts(fun, x, args)[0]


def _objective_outlinable(fun: Callable, x: PyTree, args: tuple) -> bool:
    """Whether ``value_and_grad(fun)`` passes :func:`jopt.xla_cpu.outlinable`."""
    return _objective_facts(fun, x, args)[1]


def _objective_facts(fun: Callable, x: PyTree, args: tuple) -> tuple[bool, bool]:
    """``(fits inline, outlinable)`` for ``value_and_grad(fun)(x, *args)``, from one trace.

    Cached per objective and the shapes and dtypes of ``x`` and ``args``: the trace costs
    ~4 ms, and an eager call that cannot take the cached path (e.g. array tolerances)
    would otherwise pay it every time. An objective that does not trace gets
    ``(False, False)``; the checked path reports it with its own message.
    """
    shapes = _shapes_key(x, args)
    facts = _OBJECTIVE_FACTS.get(fun, shapes)
    if facts is not None:
        return facts
    try:
        closed = jax.make_jaxpr(jax.value_and_grad(fun))(x, *args)
        facts = (_max_bytes(closed.jaxpr) <= _INLINE_BYTES,
                 outlinable(closed, library_fusions=_library_fusions()))
    except Exception:
        facts = (False, False)
    _OBJECTIVE_FACTS.set(fun, shapes, facts)
    return facts


def _shapes_key(x: PyTree, args: tuple) -> tuple | None:
    """The structures, shapes and dtypes of ``x`` and ``args`` (``None``: leaves without
    a dtype)."""
    try:
        return (*(jax.tree.structure(t) for t in (x, args)),
                tuple((np.shape(leaf), np.dtype(jnp.result_type(leaf)))
                      for leaf in jax.tree.leaves((x, args))))
    except TypeError:
        return None


class _PerObjective:
    """Values per objective and shapes, kept only while the objective is alive (a cache
    that held objectives would keep every closure a caller made alive)."""

    _PER_FUN = 8  # shapes remembered per objective (least recently added dropped)

    def __init__(self) -> None:
        self._by_fun: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, fun: Callable, shapes: tuple | None) -> Any:
        try:
            return self._by_fun.get(fun, {}).get(shapes)
        except TypeError:  # an objective that is not hashable or weak-referenceable
            return None

    def set(self, fun: Callable, shapes: tuple | None, value: Any) -> None:
        if shapes is None:
            return
        try:
            entry = self._by_fun.setdefault(fun, {})
        except TypeError:
            return
        if len(entry) >= self._PER_FUN:
            entry.pop(next(iter(entry)))
        entry[shapes] = value


_INLINE_BYTES = _CHUNK_BYTES  # the same limit as the transforms' blocks
_OBJECTIVE_FACTS = _PerObjective()
_OUTLINE_REFUSED = _PerObjective()  # objectives whose outlined loop XLA:CPU refused


def _max_bytes(jaxpr: Any) -> int:
    """The largest value (input, constant, intermediate) in ``jaxpr`` and its sub-jaxprs."""
    largest = max((nbytes(v) for v in (*jaxpr.invars, *jaxpr.constvars, *jaxpr.outvars)),
                  default=0)
    for eqn in jaxpr.eqns:
        largest = max([largest, *(nbytes(v) for v in (*eqn.invars, *eqn.outvars))])
        for sub in jaxprs_in_params(eqn.params):
            largest = max(largest, _max_bytes(sub))
    return largest


def _find_linesearch_state(state: PyTree) -> LineSearchState | None:
    """The (static) position of a jopt line-search state inside a transform's state."""
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, LineSearchState))
        if isinstance(node, LineSearchState)
    ]
    return found[-1] if found else None


# Direction states that restart themselves after a zero step (see
# jopt.transforms.quasi_newton): a failed search needs no state swap.
_SELF_RESTARTING = (LBFGSState, BFGSState, NonlinearCGState)


def _restarts_itself(state: PyTree) -> bool:
    """Whether every part of ``state`` restarts itself (or needs no restart) after a
    failed line search: self-restarting directions, line-search states, empty states."""
    kinds = (*_SELF_RESTARTING, LineSearchState)
    nodes = jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, kinds))
    return (any(isinstance(n, _SELF_RESTARTING) for n in nodes)
            and all(isinstance(n, kinds) for n in nodes))


def _count_field(state: PyTree, field: str) -> jax.Array:
    """Sum of the integer counter ``field`` over every NamedTuple in ``state`` that has it."""
    nodes = jax.tree.leaves(state, is_leaf=lambda n: hasattr(n, "_fields") and field in n._fields)
    counts = [getattr(n, field) for n in nodes if hasattr(n, "_fields") and field in n._fields]
    return sum(counts[1:], counts[0]) if counts else jnp.zeros([], jnp.int32)


class SolverState(NamedTuple):
    """The state of :func:`minimize`'s loop between two iterations (a pytree of arrays).

    It is the ``lax.while_loop`` carry itself, so a run can be stopped after any number of
    iterations, saved (every leaf is an array: ``jax.tree.leaves`` + ``numpy.savez``),
    restored, moved between devices, batched with ``jax.vmap``, and continued with
    :func:`minimize_run` exactly as if it had never stopped.

    Attributes:
      x: current point. f / g: objective and gradient at ``x``.
      opt_state: the transform's state (curvature memory, line-search state, counters).
      nit: iterations made so far. nfev: objective evaluations so far.
      status: ``-1`` while running, else a :class:`Status` code.
      base: ``int32[3]``: (evaluations, extra gradients, HVPs) counted by transform states
        discarded at restarts.
      fresh: the transform state was just reset after a failed line search (a second
        failure before progress ends the run).
      f_hist / g_hist: per-iteration ``f`` and ``‖∇f‖∞`` buffers (length 0 without history).
      stall: iterations since the last progress (a decrease of ``f`` above rounding, or
        ``‖∇f‖∞`` at most half its value at the last progress); ``_STALL_LIMIT`` of them
        end the run with ``PRECISION``. Counted only for transforms with a line search or
        trust region (a jopt ``LineSearchState`` in their state).
      ref_gnorm: ``‖∇f‖∞`` at the last progress.
    """

    x: PyTree
    f: jax.Array
    g: PyTree
    opt_state: PyTree
    nit: jax.Array
    nfev: jax.Array
    status: jax.Array
    base: jax.Array
    fresh: jax.Array
    f_hist: jax.Array
    g_hist: jax.Array
    stall: jax.Array
    ref_gnorm: jax.Array


# Iterations without progress (f decreasing by more than rounding, or ‖∇f‖∞ halving) after
# which a run ends with PRECISION: at the rounding floor a line search can keep "succeeding"
# on noise forever (tested: an unreachable `tol` would otherwise run to `maxiter`).
_STALL_LIMIT = 200


def _transform_counts(opt_state: PyTree) -> jax.Array:
    """(line-search evaluations, extra gradient evaluations, HVPs) recorded in a state."""
    ls = _find_linesearch_state(opt_state)
    evals = ls.num_evals if ls is not None else jnp.zeros([], jnp.int32)
    return jnp.stack([
        evals,
        _count_field(opt_state, "num_grad_evals"),
        _count_field(opt_state, "num_hvp") + _count_field(opt_state, "num_hessians"),
    ]).astype(jnp.int32)


def _check_tolerance(name: str, value: Any, allow_zero: bool) -> None:
    real = isinstance(value, numbers.Real | np.floating | np.integer) and not isinstance(
        value, bool | np.bool_)
    array = isinstance(value, jax.Array | np.ndarray) and (
        jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer))
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


def _check_count(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be a Python int >= 1, got {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")


def _check_args(args: Any) -> None:
    if not isinstance(args, tuple):
        raise TypeError(f"`args` must be a tuple of extra arguments of `fun`, got {type(args)}.")


def _check_verbose(verbose: Any) -> None:
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise ValueError(f"`verbose` must be an int >= 0 (print every k iterations), got "
                         f"{verbose!r}.")


def _check_run_options(args: Any, tol: Any, ftol: Any, xtol: Any, maxiter: Any,
                       maxfev: Any) -> None:
    """The checks :func:`minimize` and :func:`minimize_run` share (trace-time, static)."""
    _check_args(args)
    _check_tolerance("tol", tol, allow_zero=False)
    _check_tolerance("ftol", ftol, allow_zero=True)
    _check_tolerance("xtol", xtol, allow_zero=True)
    _check_count("maxiter", maxiter)
    _check_count("maxfev", maxfev)


def _history_size(history: bool, history_size: int | None, maxiter: int) -> int:
    return (history_size or maxiter + 1) if history else 0


def _traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a tracer (we run inside a caller's transformation)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _call(factory: Callable[[str | None], Callable], static: tuple, dynamic: tuple,
          nested: bool, x: PyTree, outline: bool = False) -> Any:
    """Call the jitted piece ``factory(profile)(*static, *dynamic)``.

    ``nested``: inside a caller's trace, where only the top-level ``jit`` takes compiler
    options. The options' profile depends on the size of the iterate ``x`` and on whether
    the loop is compiled as one function (``outline``).
    """
    run = factory(_profile(nested, x, outline=outline))
    try:
        return run(*static, *dynamic)
    except ValueError as err:  # inside a caller's jit with only constant inputs
        if "compiler_options" not in str(err):
            raise
        return factory(None)(*static, *dynamic)


def _call_loop(factory: Callable, config: Any, tx, dynamic: tuple, nested: bool,
               x: PyTree, args: tuple) -> tuple[Any, Any]:
    """``(config, _call(...))`` for a solver loop; when XLA:CPU refuses the outlined loop
    (an operation its single-function emitter does not implement, which
    :func:`jopt.xla_cpu.outlinable` did not foresee), again without outlining, and the
    objective is not outlined again (:func:`_outline`)."""
    try:
        return config, _call(factory, (config, tx), dynamic, nested, x, config.outline)
    except jax.errors.JaxRuntimeError as err:
        if not config.outline or "not implemented" not in str(err).lower():
            raise
    _OUTLINE_REFUSED.set(config.fun, _shapes_key(x, args), True)
    config = config._replace(outline=False)
    return config, _call(factory, (config, tx), dynamic, nested, x, False)


def minimize(
    fun: Callable[..., jax.Array],
    x0: PyTree,
    *,
    method: str | optax.GradientTransformation = "lbfgs",
    args: tuple = (),
    tol: float | jax.Array = 1e-6,
    ftol: float | jax.Array = 0.0,
    xtol: float | jax.Array = 0.0,
    maxiter: int = 10_000,
    maxfev: int | None = None,
    history: bool = False,
    history_size: int | None = None,
    verbose: int = 0,
    implicit_diff: bool = True,
) -> MinimizeResult:
    """Minimize ``fun(x, *args)`` over a pytree ``x`` starting from ``x0``.

    Args:
      fun: objective ``(x, *args) -> scalar``.
      x0: starting point (pytree of float arrays; its dtype is kept).
      method: ``"lbfgs"`` (default), ``"bfgs"``, ``"cg"``, ``"newton-cg"``, ``"trust-ncg"``,
        ``"newton"``, or any optax/jopt transform
        (transforms needing the objective receive ``value``, ``grad`` and ``value_fn``).
      args: extra arguments of ``fun`` (traced: new values do not recompile).
      tol: stop when ``‖∇f‖∞ <= tol``.
      ftol: stop when ``|f_k - f_{k+1}| <= ftol·max(|f_k|, |f_{k+1}|, 1)`` (0: off).
      xtol: stop when ``‖x_{k+1} - x_k‖∞ <= xtol·(xtol + ‖x_k‖∞)`` (0: off). A concrete
        0 compiles the test out; any other value (or a traced one) shares one program.
      maxiter: iteration limit. maxfev: evaluation limit (checked after each iteration).
      history: record ``f`` and ``‖∇f‖∞`` per iteration in fixed-size buffers.
      history_size: buffer length (default ``maxiter + 1``; past the end, the last entry
        is overwritten). On the CPU, buffers over 512 bytes make XLA:CPU run a small
        problem's loop on its thread pool (see ``jopt.scale_by_lbfgs``): EXT_ROSENBROCK-10
        took 298 µs with the default length, 184 µs with ``history_size=64`` and 158 µs
        without history (one core).
      verbose: print iteration, ``f`` and ``‖∇f‖∞`` every ``verbose`` iterations from
        inside the compiled loop (0: silent).
      implicit_diff: make ``x`` and ``fun`` of the result differentiable with respect to
        ``args`` (forward and reverse mode) by the implicit function theorem — see
        :mod:`jopt.implicit`. Costs nothing unless differentiated.

    Returns:
      A :class:`MinimizeResult` (scipy's field names).

    ``minimize`` is :func:`minimize_init`, :func:`minimize_run` to the end and
    :func:`minimize_result` compiled as one program, and its result is bitwise identical to
    running those pieces in any number of segments (e.g. to checkpoint a long solve).

    On the CPU, called eagerly on iterates up to 256 KiB (32,768 float64 elements) and
    without ``verbose``, the program is compiled as one XLA:CPU function (one kernel launch
    per call instead of one per operation and iteration; ~0.5x the time of small solves,
    0.7-0.9x at n = 10,000) when XLA's single-function emitter can take it; see
    :mod:`jopt.xla_cpu` and ``jopt.xla_cpu.outline_solver_loops`` to turn it off.

    References:
      The stopping tests and status texts follow ``scipy.optimize.minimize``; the
      solvers' references are in :mod:`jopt.transforms.quasi_newton`.
    """
    key = _fast_key(fun, x0, method, args, (tol, ftol, xtol),
                    (maxiter, maxfev, history, history_size, verbose))
    hit = _FAST_CALLS.get(key) if key is not None else None
    if hit is not None:  # checked before with the same static inputs: call directly
        run, config, tx, dtype = hit
        try:
            # (the key admits only Python-number tolerances: one cached lookup for the three)
            return _unpack(config, *run(x0, args, *_device_tolerances(
                tol, ftol, xtol, dtype), _no_limit()))
        except ValueError as err:  # in a caller's jit, closing over concrete inputs only:
            if "compiler_options" not in str(err):  # the checked path below handles it
                raise
    tx = _resolve_method(method, fun=fun, x=x0, args=args)
    check_float_tree("x0", x0)
    _check_run_options(args, tol, ftol, xtol, maxiter, maxfev)
    _check_count("history_size", history_size)
    _check_verbose(verbose)
    nested = _traced((x0, args))
    if not nested:
        _note_closure(fun, x0)
    config = _RunConfig(fun=fun, maxiter=maxiter, maxfev=maxfev,
                        history_size=_history_size(history, history_size, maxiter),
                        verbose=verbose, ftol_on=_test_on(ftol), xtol_on=_test_on(xtol),
                        packed=not nested and jax.default_backend() == "cpu",
                        outline=_outline(nested, x0, fun, args, verbose))
    # Strongly-typed inputs: a weakly-typed x0 (e.g. from jnp.full(n, 0.0)) or a Python
    # tolerance must hit the same compiled loop as an ordinary array.
    # (Host-side numpy conversions: an eager JAX op per argument would cost more than a
    # small solve.)
    x0 = jax.tree.map(_strong, x0)
    dtype = np.result_type(*(leaf.dtype for leaf in jax.tree.leaves(x0)))
    tol, ftol, xtol = (_tolerance(t, dtype, nested) for t in (tol, ftol, xtol))
    # Concrete args carry no derivative: stop_gradient and the implicit-derivative rule
    # (eager custom_jvp calls that cost more than a small solve) only matter when traced.
    fixed_args = jax.lax.stop_gradient(args) if nested else args
    # (A device-array constant inside a caller's trace would become a hoisted constant
    # input, which AOT-compiled callers do not pass: there the numpy scalar is used.)
    no_limit = _NO_LIMIT if nested else _no_limit()
    config, out = _call_loop(_compiled_loop, config, tx,
                             (x0, fixed_args, tol, ftol, xtol, no_limit), nested, x0, args)
    res = _unpack(config, *out)
    if key is not None:
        program = _compiled_loop(_profile(False, x0, outline=config.outline))
        _remember(key, (program.program(config, tx), config, tx, np.dtype(dtype)))
    if implicit_diff and nested and jax.tree.leaves(args):
        # d x*/d args by the implicit function theorem (CG on HVPs), d f*/d args by the
        # envelope theorem; nothing is differentiated through the while_loop.
        res = res._replace(x=implicit_solution(fun, res.x, args),
                           fun=implicit_value(fun, res.fun, res.x, args))
    return res


def minimize_init(
    fun: Callable[..., jax.Array],
    x0: PyTree,
    *,
    method: str | optax.GradientTransformation = "lbfgs",
    args: tuple = (),
    tol: float | jax.Array = 1e-6,
    history: bool = False,
    history_size: int | None = None,
    maxiter: int = 10_000,
) -> SolverState:
    """The :class:`SolverState` of :func:`minimize` before its first iteration.

    Evaluates ``fun`` and its gradient at ``x0`` (``nfev = 1``) and initialises the
    transform. ``status`` is ``CONVERGED`` if ``‖∇f(x0)‖∞ <= tol``, ``NONFINITE`` if
    ``f(x0)`` or its gradient is not finite, else ``-1`` (running). Continue with
    :func:`minimize_run`; read the answer with :func:`minimize_result`.

    Args:
      fun, x0, method, args, tol: as in :func:`minimize`.
      history, history_size: as in :func:`minimize`; ``maxiter`` is used only for the
        default buffer length ``maxiter + 1``.

    Example::

        state = jopt.minimize_init(fun, x0, method="bfgs")
        while state.status < 0:                      # e.g. checkpoint every 100 iterations
            state = jopt.minimize_run(fun, state, method="bfgs", num_steps=100)
            save(state)
        res = jopt.minimize_result(state)            # == jopt.minimize(fun, x0, method="bfgs")

    The compiled program is cached per objective, method, shapes and history length.
    """
    tx = _resolve_method(method, fun=fun, x=x0, args=args)
    check_float_tree("x0", x0)
    _check_args(args)
    _check_tolerance("tol", tol, allow_zero=False)
    _check_count("maxiter", maxiter)
    _check_count("history_size", history_size)
    config = _InitConfig(fun=fun, history_size=_history_size(history, history_size, maxiter))
    x0 = jax.tree.map(_strong, x0)
    dtype = np.result_type(*(leaf.dtype for leaf in jax.tree.leaves(x0)))
    nested = _traced((x0, args))
    # (no loop here; the same options as minimize's program, for the same bits)
    outline = _outline(nested, x0, fun, args)
    args = jax.lax.stop_gradient(args) if nested else args
    return _call(_compiled_init, (config, tx), (x0, args, _strong(tol, dtype)), nested, x0,
                 outline)


def minimize_run(
    fun: Callable[..., jax.Array],
    state: SolverState,
    *,
    method: str | optax.GradientTransformation = "lbfgs",
    args: tuple = (),
    tol: float | jax.Array = 1e-6,
    ftol: float | jax.Array = 0.0,
    xtol: float | jax.Array = 0.0,
    maxiter: int = 10_000,
    maxfev: int | None = None,
    num_steps: int | None = None,
    verbose: int = 0,
) -> SolverState:
    """Continue :func:`minimize`'s loop from ``state`` for at most ``num_steps`` iterations.

    Running ``minimize_init`` and then ``minimize_run`` in any number of segments gives
    the same iterates, counters and status, bit for bit, as one :func:`minimize` call with
    the same arguments: the state is the loop's whole carry.

    Args:
      fun, method, args, tol, ftol, xtol, maxfev, verbose: as in :func:`minimize`
        (``method`` and ``fun`` must be those that made ``state``; tolerances may change
        between segments and act from the next iteration on).
      state: a :class:`SolverState` from :func:`minimize_init` or :func:`minimize_run`.
      maxiter: limit on the *total* iteration count ``state.nit`` (a state already at the
        limit ends with ``MAXITER`` without iterating).
      num_steps: at most this many further iterations (``None``: until a stopping test
        fires). A run cut short by ``num_steps`` returns ``status = -1``.

    Returns:
      The new :class:`SolverState`. A finished state (``status >= 0``) is returned
      unchanged. ``num_steps`` and the tolerances are traced: new values do not
      recompile (except that an ``ftol``/``xtol`` of exactly 0 compiles its test out).
    """
    if not isinstance(state, SolverState):
        raise TypeError(f"`state` must be a jopt.SolverState (from `minimize_init`), got "
                        f"{type(state).__name__}.")
    tx = _resolve_method(method, fun=fun, x=state.x, args=args)
    _check_run_options(args, tol, ftol, xtol, maxiter, maxfev)
    _check_count("num_steps", num_steps)
    _check_verbose(verbose)
    state = jax.tree.map(_strong, state)
    check_float_tree("state.x", state.x)
    dtype = np.result_type(*(leaf.dtype for leaf in jax.tree.leaves(state.x)))
    tol, ftol, xtol = (_strong(t, dtype) for t in (tol, ftol, xtol))
    steps = np.asarray(_NO_LIMIT if num_steps is None else num_steps, np.int32)
    nested = _traced((state, args))
    config = _Config(fun=fun, maxiter=maxiter, maxfev=maxfev, verbose=verbose,
                     ftol_on=_test_on(ftol), xtol_on=_test_on(xtol),
                     outline=_outline(nested, state.x, fun, args, verbose))
    fixed_args = jax.lax.stop_gradient(args) if nested else args
    _, (state, _) = _call_loop(_compiled_segment, config, tx,
                               (state, fixed_args, tol, ftol, xtol, steps), nested, state.x,
                               args)
    return state


def minimize_result(state: SolverState) -> MinimizeResult:
    """The :class:`MinimizeResult` for ``state`` (batched states give a batched result).

    The counters ``njev`` and ``nhev`` are read from the transform's state. Unlike
    :func:`minimize`, the result carries no implicit derivative with respect to ``args``
    (wrap ``x`` with :func:`jopt.implicit_solution` for that).
    """
    if not isinstance(state, SolverState):
        raise TypeError(f"`state` must be a jopt.SolverState, got {type(state).__name__}.")
    return _result_fn(np.ndim(state.nit))(state)


@functools.cache
def _result_fn(batch_dims: int) -> Callable[[SolverState], MinimizeResult]:
    def fn(state: SolverState) -> MinimizeResult:
        return _result(state, *_summary(state))

    for _ in range(batch_dims):
        fn = jax.vmap(fn)
    return jax.jit(fn)


# Eager calls already checked, keyed by their static inputs and the avals of x0 and args:
# a repeat call skips the argument checks and conversions (~50-100 µs of Python, as much
# as a small solve) and calls the compiled program directly. Bounded (a new `fun` object
# per call would otherwise grow it). Its entries hold their programs, so with the bounded
# store of `jopt._programs` at most 64 + 64 compiled programs stay alive.
_FAST_CALLS: dict = {}
_FAST_CALLS_MAX = 64


def _fast_key(fun: Callable, x0: PyTree, method: Any, args: tuple, tolerances: tuple,
              options: tuple) -> tuple | None:
    """The cache key of an eager call, or ``None`` when it must take the checked path."""
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in tolerances):
        return None
    tol, ftol, xtol = tolerances
    if not (tol > 0 and ftol >= 0 and xtol >= 0):  # the checked path raises the error
        return None
    x_leaves, x_def = jax.tree.flatten(x0)
    a_leaves, a_def = jax.tree.flatten(args)
    avals = []
    for leaf in (*x_leaves, *a_leaves):
        if isinstance(leaf, np.ndarray) and leaf.dtype.kind in "fiub":
            avals.append((leaf.shape, leaf.dtype, False))
        elif isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
            avals.append((leaf.shape, leaf.dtype, leaf.weak_type))
        else:
            return None
    if not x_leaves or any(weak for _, _, weak in avals[:len(x_leaves)]):
        return None  # a weakly-typed x0 is converted on the checked path
    try:
        key = (fun, method, options, x_def, a_def, tuple(avals),
               tuple(type(t) for t in tolerances), tuple(t != 0 for t in tolerances))
        hash(key)
    except TypeError:  # an unhashable method or fun: no fast path
        return None
    return key


def _remember(key: tuple, value: tuple) -> None:
    if len(_FAST_CALLS) >= _FAST_CALLS_MAX:
        _FAST_CALLS.pop(next(iter(_FAST_CALLS)))
    _FAST_CALLS[key] = value



class _SeenObjective:
    """The latest objective of one function body seen by eager ``minimize`` calls."""

    __slots__ = ("ref", "repeats", "shapes", "warned")

    def __init__(self, ref: weakref.ref, shapes: tuple) -> None:
        self.ref, self.shapes, self.repeats, self.warned = ref, shapes, 1, False


# Code object -> _SeenObjective (bounded: oldest dropped).
_CLOSURES: dict = {}
_CLOSURES_MAX = 256
_CLOSURE_WARN_AT = 5


def _closure_shapes(fun: Callable) -> tuple[Any, tuple | None]:
    """``(code object, shapes of the arrays it carries)`` of a plain function or a partial,
    or shapes ``None`` when a new object of it could not be replaced by ``args``: it
    carries values other than arrays (sizes, a model: they may change the program's
    structure). A function that carries nothing (made anew for each call, reading
    globals) has shapes ``()``."""
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


def _note_closure(fun: Callable, x0: PyTree) -> None:
    """Warn once per function body when eager calls keep passing new objects of it, with
    the same shapes: each is a new program to compile (~0.3-1 s on a CPU), where one
    function and ``args=`` would compile once. (The pattern
    ``minimize(lambda w: loss(w, data_i), w0)`` in a loop.)"""
    code, shapes = _closure_shapes(fun)
    if code is None:
        return
    seen = _CLOSURES.get(code)
    if seen is not None and seen.ref() is fun:
        return
    try:
        ref = weakref.ref(fun)
    except TypeError:
        return
    shapes = (shapes, tuple((np.shape(leaf), str(getattr(leaf, "dtype", type(leaf))))
                            for leaf in jax.tree.leaves(x0)), jax.tree.structure(x0))
    if seen is None:
        if len(_CLOSURES) >= _CLOSURES_MAX:
            _CLOSURES.pop(next(iter(_CLOSURES)))
        _CLOSURES[code] = _SeenObjective(ref, shapes)
        return
    seen.repeats = seen.repeats + 1 if seen.shapes == shapes else 1
    seen.ref, seen.shapes = ref, shapes
    if seen.repeats >= _CLOSURE_WARN_AT and not seen.warned:
        seen.warned = True
        warnings.warn(
            f"jopt.minimize was given {seen.repeats} different objectives of the function "
            f"at {code.co_filename}:{code.co_firstlineno} (a new function object each time, "
            "same shapes): every one is a new program to compile. Define it once and pass "
            "what changes as arguments, `minimize(fun, x0, args=(data,))` with "
            "`fun(x, data)`, to compile once.",
            JoptWarning, stacklevel=3)


def _tolerance(value: Any, dtype: Any, nested: bool) -> Any:
    """A tolerance as a strongly-typed array; Python numbers become cached device scalars
    outside a trace (a numpy argument is copied to the device on every call)."""
    if not nested and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _device_scalar(float(value), np.dtype(dtype))
    return _strong(value, dtype)


@functools.lru_cache(maxsize=256)
def _device_scalar(value: float, dtype: np.dtype) -> jax.Array:
    return jnp.asarray(value, dtype)


@functools.lru_cache(maxsize=256)
def _device_tolerances(tol: float, ftol: float, xtol: float, dtype: np.dtype) -> tuple:
    """``(tol, ftol, xtol)`` as cached device scalars (the cached eager path's lookup)."""
    return tuple(_device_scalar(float(t), dtype) for t in (tol, ftol, xtol))


def _strong(a: Any, dtype: Any = None) -> Any:
    """``a`` as a strongly-typed array (of ``dtype``), converting only when needed."""
    if dtype is not None and is_concrete_number(a) and not isinstance(a, jax.Array):
        return np.asarray(a, dtype)
    current = getattr(a, "dtype", None)
    if current is None or getattr(a, "weak_type", False) or (
            dtype is not None and current != dtype):
        return jax.lax.convert_element_type(a, dtype or jnp.result_type(a))
    return a


class _Config(NamedTuple):
    fun: Callable
    maxiter: int
    maxfev: int | None
    verbose: int
    # Whether the ftol / xtol tests are compiled in: False only for a concrete 0 (off),
    # so the default program skips their reductions (‖x‖∞ every iteration).
    ftol_on: bool = True
    xtol_on: bool = True
    # Compile the loop as one XLA:CPU function when it allows (see _outline).
    outline: bool = False


class _InitConfig(NamedTuple):
    fun: Callable
    history_size: int


class _RunConfig(NamedTuple):  # minimize's: both of the above in one static argument
    fun: Callable
    maxiter: int
    maxfev: int | None
    history_size: int
    verbose: int
    ftol_on: bool = True
    xtol_on: bool = True
    packed: bool = False  # the counters come back as one vector (see _unpack)
    outline: bool = False


def _test_on(value: Any) -> bool:
    """Whether an ``ftol``/``xtol`` test must be compiled in (anything but a concrete 0)."""
    return not (is_concrete_number(value) and float(value) == 0.0)


# Compiler options by problem size (measured on the problem suite, 2-core CPU, L-BFGS):
# on small problems (``x`` of at most ``_SMALL`` elements) a solve costs what its kernel
# launches cost, and XLA:CPU without its MLIR fusion emitters, at optimization level 1 and
# without LLVM's expensive passes, compiles the loop in half the time (WATSON-9: 1.1 vs
# 2.4 s) with the same run time (11.0 vs 11.2 µs per iteration). From a few hundred
# elements on, the emitters' vector kernels win: at n = 1,000 (TRIDIA) an iteration took
# 49 µs with these options, 41 µs with level 1 alone and 35 µs with XLA's defaults; at
# n = 10,000, 373 vs 270 µs. Level 1 and the cheaper LLVM passes did not shorten the
# compile once the emitters are on (3.2 s either way at n = 1,000), so larger problems
# compile with XLA's defaults.
#
# Both CPU profiles use region-based copy insertion: the loop swaps x and ∇f into the
# transform's previous point every iteration, and the default analysis leaves more copies
# for that (TRIDIA-1000's program: 11 vector copies and 43 in all, against 7 and 30).
# With it (best of 3 alternating runs, one core) an iteration took 15.1 instead of
# 15.4 µs on TRIDIA-1000, 14.9 instead of 15.6 on GENROSE-1000, 3.2 instead of 3.6 on
# PENALTY1-10 and 3.4 instead of 3.8 on WATSON-9, with the same compile times and the
# same iterates.
#
# Above _SMALL elements LLVM may also use 512-bit vectors (XLA prefers 256; a CPU without
# AVX-512 keeps its widest): on this AVX-512 machine, best of 2 alternating runs,
# TRIDIA-1000 14.9 -> 13.8 µs per iteration, GENROSE-1000 15.1 -> 13.8, LIARWHD-1000
# 18.0 -> 16.6, QUARTC-10000 126 -> 121, TRIDIA-10000 122 -> 118, same compile times.
# Reductions then add in another order, so iterates can differ in the last bits.
#
# Between _SMALL and _MID elements, optimization level 1 (with the emitters) gives the
# faster loop: L-BFGS, median of 9 alternating runs on one core, µs per iteration at level
# 2 -> 1, n = 1,000: TRIDIA 21.9 -> 17.6, GENROSE 22.0 -> 17.4, VARDIM 16.0 -> 13.0,
# QUARTC 16.9 -> 14.6, FLETCHCR 20.4 -> 16.3, faster on 14 of the 16 problems (BROYDN7D
# 133 -> 136 and FREUROTH 18.8 -> 20.0 the exceptions); n = 3,000: GENROSE 56.5 -> 43.0,
# NONDIA 52.1 -> 39.9, TRIDIA 56.2 -> 44.1. At n = 5,000 the two levels are even and at
# 10,000 level 2 is ahead on some (FREUROTH 199 vs 241, NONDIA 141 vs 149), so larger
# problems keep it. Compile times are the same within noise at both levels.
_CPU_VECTOR_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True,
                       "xla_cpu_prefer_vector_width": 512}
_SMALL_OPTIONS = {"xla_backend_optimization_level": 1,
                  "xla_llvm_disable_expensive_passes": True,
                  "xla_cpu_use_fusion_emitters": False,
                  "xla_cpu_copy_insertion_use_region_analysis": True}
_COMPILER_OPTIONS = {
    "cpu-small": _SMALL_OPTIONS,
    # A program compiled as one function (`_outline`) is emitted by XLA's legacy emitter
    # whatever the options, so the small-problem options serve it at every size; without
    # YNNPACK fusions its large reductions stay emittable (see jopt.xla_cpu.outlinable;
    # `_compiler_options` drops that option where this XLA does not know it).
    "cpu-outlined": {**_SMALL_OPTIONS, **LIBRARY_FUSIONS_OFF},
    "cpu-mid": {**_CPU_VECTOR_OPTIONS, "xla_backend_optimization_level": 1},
    "cpu": _CPU_VECTOR_OPTIONS,
}
_SMALL = 256
_MID = 4096
# The largest iterate (bytes) whose program `_outline` compiles as one function. L-BFGS,
# one function / usual, per iteration: pinned to one core, n = 10,000 0.72-0.81x (SROSENBR,
# TRIDIA, EDENSCH, FREUROTH, VARDIM; BDQRTIC 0.88x), n = 30,000 0.78-0.82x, n = 100,000
# 1.00-1.04x; on both cores, n = 30,000 0.68-0.75x, n = 50,000 0.48-0.73x, n = 100,000
# 1.13-1.27x, where the usual program's large kernels use the second core. First calls
# ~0.55x at n = 10,000. Hence 32,768 float64 elements, below the crossover.
_OUTLINE_MAX_BYTES = 256 << 10
# An L-BFGS loop body at _MID float64 elements touches ~2 MB (TRIDIA-1000's is outlined
# from a 1e6-byte threshold on, not at 1e5).
_OUTLINED_MIN_BYTES = 4 << 20


def _profile(nested: bool, x: PyTree, batched: bool = False,
             outline: bool = False) -> str | None:
    """The key of the compiled program's options (``None`` inside a caller's trace).

    ``batched``: the program runs a batch of problems of ``x``'s size (``minimize_many``),
    whose loop touches too many bytes to be outlined, so it keeps the size's profile.
    ``outline``: the program is compiled as one function (:func:`_outline`): the
    ``"cpu-outlined"`` options at every size (the small-problem options, which compile
    faster with no loss there, as for ``_loops_outlined``, and no YNNPACK fusions).
    """
    if nested:
        return None
    backend = jax.default_backend()
    if backend != "cpu":
        return backend
    if outline:
        return "cpu-outlined"
    size = sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(x))
    if size <= _SMALL or (size <= _MID and not batched and _loops_outlined()):
        return "cpu-small"
    return "cpu-mid" if size <= _MID else "cpu"


def _loops_outlined() -> bool:
    """Whether ``jopt.enable_small_loop_kernels`` (or the same ``XLA_FLAGS``) is in effect
    with a threshold that outlines the solver loop up to ``_MID`` elements.

    An outlined loop is emitted by XLA's legacy emitter as one function, so the fusion
    emitters that make the ``cpu-mid`` profile's separate kernels faster no longer apply
    to it; the ``cpu-small`` options then compile faster for the same loop. Measured with
    the setting on (one core, median of 3, L-BFGS µs per iteration / compile s, cpu-mid →
    cpu-small): GENROSE-1000 10.9 / 0.81 → 10.8 / 0.59, QUARTC-1000 12.7 / 0.72 →
    12.4 / 0.60, SROSENBR-1000 13.3 / 0.81 → 13.2 / 0.60, TRIDIA-1000 13.6 / 0.79 →
    10.9 / 0.56.
    """
    threshold = small_loop_threshold()
    return threshold is not None and threshold >= _OUTLINED_MIN_BYTES


def _outline(nested: bool, x: PyTree, fun: Callable, args: tuple, verbose: int = 0) -> bool:
    """Whether to compile the solver loop as one XLA:CPU function
    (:func:`jopt.xla_cpu.outlined_call`): what ``jopt.enable_small_loop_kernels`` does for
    every loop of a process, asked for by this program alone.

    Only for programs jopt compiles itself (not inside a caller's ``jit``/``vmap``, whose
    batch sizes or backend are not known here), on the CPU, without the process-wide
    setting (which outlines the loop already), without ``verbose`` printing (a callback),
    for iterates up to ``_OUTLINE_MAX_BYTES`` (256 KiB: 32,768 float64 elements; beyond,
    the usual program's kernels can use more cores), and for an objective that passes
    :func:`jopt.xla_cpu.outlinable`. The program compiles without YNNPACK fusions
    (``"cpu-outlined"`` options), so reductions of any size pass the check. The loop
    itself is checked when traced (:func:`_loop`), transform included; this host-side
    answer, the same for every entry point, picks the compiler options.

    Measured (one core, median of 41 alternating solves, L-BFGS, minimize's whole program
    as one function / usual): ROSENBROCK-2 0.52x the time, BEALE-2 0.71x, GULF-3 0.53x,
    PENALTY1-10 0.53x, WATSON-9 0.24x; LIARWHD-1000 0.64x, TRIDIA-1000 0.55x,
    GENROSE-1000 0.59x; first calls 0.72-0.91x below n = 1,000 and ~0.5x at n = 1,000.
    At n = 10,000, per iteration, 0.72-0.88x (see ``_OUTLINE_MAX_BYTES``).
    (The loop alone as one function: ROSENBROCK-2 0.65x, and first calls ~1.3x below
    n = 1,000.) Results may differ from the usual code in the last bits.
    """
    if nested or verbose or jax.default_backend() != "cpu" or _loops_outlined():
        return False  # (printing is a callback, which the emitter cannot take)
    if not outline_solver_loops():
        return False
    leaves = jax.tree.leaves(x)
    if sum(nbytes(leaf) for leaf in leaves) > _OUTLINE_MAX_BYTES:
        return False
    if any(len(getattr(getattr(leaf, "sharding", None), "device_set", ())) > 1
           for leaf in leaves):
        return False  # a sharded solve: left to XLA's partitioner
    if _OUTLINE_REFUSED.get(fun, _shapes_key(x, args)):
        return False
    return _objective_outlinable(fun, x, args)


def _compiler_options(profile: str | None) -> dict | None:
    """The XLA options of ``profile`` (``None``: XLA's defaults)."""
    options = _COMPILER_OPTIONS.get(profile)
    if profile == "cpu-outlined" and not library_fusions_can_be_turned_off():
        options = {k: v for k, v in options.items() if k not in LIBRARY_FUSIONS_OFF}
    return options


def _library_fusions() -> bool:
    """Whether programs compiled with the "cpu-outlined" options may hold YNNPACK fusions
    (the ``library_fusions`` argument of :func:`jopt.xla_cpu.outlinable` for them)."""
    return not library_fusions_can_be_turned_off()


def _jit(fn: Callable, profile: str | None) -> Callable:
    return BoundedJit(fn, 2, compiler_options=_compiler_options(profile))


@functools.cache
def _compiled_init(backend: str | None) -> Callable:
    """The jitted :func:`minimize_init` program for ``backend`` (an options profile).

    Compiled per objective, method, shapes and history length. ``None``: inside a
    caller's trace, where only the top-level jit takes compiler options.
    """
    return _jit(_init_state, backend)


@functools.cache
def _compiled_segment(backend: str | None) -> Callable:
    """The jitted :func:`minimize_run` program for ``backend``.

    Compiled per objective, method, shapes, ``maxiter``, ``maxfev`` and ``verbose``;
    ``num_steps`` and the tolerances are traced.
    """
    return _jit(_segment, backend)


@functools.cache
def _compiled_loop(backend: str | None) -> Callable:
    """The jitted :func:`minimize` program for ``backend`` (see :func:`_run`)."""
    return _jit(_run, backend)


def _run(config: _RunConfig, tx, x0, args, tol, ftol, xtol,
         num_steps) -> tuple[MinimizeResult, jax.Array]:
    """:func:`minimize`'s program: :func:`_init_state` and :func:`_continue` in one.

    One program (one dispatch, only the result's buffers returned) costs much less per
    call than the two pieces (the state's ~20-30 buffers handed out and back in cost about
    as much as a small solve). It computes the same bits as the pieces because XLA sees the
    same loop: the initial state passes an optimization barrier (materialised exactly as
    ``minimize_init`` returns it), the step limit is a runtime value, and every field of the
    final state stays live (one element of each is returned), as when ``minimize_run``
    returns the whole state — XLA drops dead loop-carried fields, and the loop body
    compiled without them can round differently (seen: ``f_history`` of ``trust-ncg``).
    Tested bit for bit in ``tests/test_solver_state.py``.
    """
    if config.outline:
        # The whole program as one XLA:CPU function (evaluation at x0, loop, result), not
        # only the loop: a small solve's fixed cost is its kernel launches too
        # (ROSENBROCK-2: 0.52x the time of the usual program, against ~0.65x with the loop
        # alone; first call 0.43 s, against 0.60 usual and ~0.7 with the loop alone). When
        # the program does not pass the check, the loop alone may still (:func:`_loop`).
        whole = functools.partial(_run_program, config._replace(outline=False), tx)
        out = _one_function(whole, tol, x0, args, tol, ftol, xtol, num_steps)
        if out is not None:
            return out
    return _run_program(config, tx, x0, args, tol, ftol, xtol, num_steps)


def _run_program(config: _RunConfig, tx, x0, args, tol, ftol, xtol,
                 num_steps) -> tuple[MinimizeResult, jax.Array]:
    """:func:`_run`'s computation."""
    init_config = _InitConfig(config.fun, config.history_size)
    loop_config = _Config(config.fun, config.maxiter, config.maxfev, config.verbose,
                          config.ftol_on, config.xtol_on, config.outline)
    state = jax.lax.optimization_barrier(_init_state(init_config, tx, x0, args, tol))
    final, summary = _continue(loop_config, tx, state, args, tol, ftol, xtol, num_steps)
    rest = jax.tree.leaves((final.opt_state, final.base, final.fresh))
    # One scalar (a sum XLA fuses into a single kernel; a concatenation took one per leaf).
    alive = functools.reduce(jnp.add, [jnp.sum(jnp.ravel(leaf)[:1].astype(jnp.float32))
                                       for leaf in rest])
    res = _result(final, *summary)
    if not config.packed:
        return res, alive
    # The six counters and `alive` as one int32 vector: every output buffer costs an eager
    # call ~1.7 µs on XLA:CPU, as much as an iteration of a small problem (see _unpack).
    counts = jnp.stack([res.nit, res.nfev, res.njev, res.nhev, res.status,
                        res.success.astype(jnp.int32),
                        jax.lax.bitcast_convert_type(alive, jnp.int32)])
    return res._replace(**dict.fromkeys(_COUNTERS)), counts


_COUNTERS = ("nit", "nfev", "njev", "nhev", "status", "success")


def _unpack(config: _RunConfig, res: MinimizeResult, extra: jax.Array) -> MinimizeResult:
    """:func:`minimize`'s result from :func:`_run`'s outputs.

    Unpacked, ``extra`` is the liveness scalar and ``res`` is complete. Packed (eager calls
    on the CPU), ``extra`` holds the counters: they are read on the host once, as numpy
    scalars, instead of coming back as six device buffers. A solve that returns after one
    iteration of a 2-variable problem took 34 µs with ten outputs and 25 µs with five
    (median of 7 × 1,000 calls, one core), and reading ``int(res.nit)`` from a numpy scalar
    skips a device transfer. Inside a caller's trace the counters are sliced instead.
    """
    if not config.packed:
        return res
    # (built directly: `_replace` costs a few µs, as much as an iteration of a small solve)
    if isinstance(extra, jax.core.Tracer):  # a caller's jit with only constant inputs
        nit, nfev, njev, nhev, status, success = (extra[i] for i in range(6))
        success = success.astype(bool)
    else:
        nit, nfev, njev, nhev, status, success = np.asarray(extra)[:6]
        success = np.bool_(success)
    return MinimizeResult(res.x, res.fun, res.jac, nit, nfev, njev, nhev, success, status,
                          res.f_history, res.gnorm_history)


_NO_LIMIT = np.asarray(np.iinfo(np.int32).max, np.int32)


@functools.cache
def _no_limit() -> jax.Array:
    """``_NO_LIMIT`` on the device, made once (a numpy argument is copied every call)."""
    return jnp.asarray(_NO_LIMIT)


def _init_state(config: _InitConfig, tx, x0, args, tol) -> SolverState:
    value_fn = lambda x: config.fun(x, *args)  # noqa: E731
    check_scalar_output("fun", value_fn, x0)  # at trace time: once per compilation
    dtype = jnp.result_type(*jax.tree.leaves(x0))
    tol = jnp.asarray(tol, dtype)
    f0, g0 = jax.value_and_grad(value_fn)(x0)
    opt_state = tx.init(x0)
    gnorm0 = tree_inf_norm(g0)
    finite0 = jnp.isfinite(f0) & jnp.isfinite(gnorm0)
    status0 = jnp.where(~finite0, Status.NONFINITE,
                        jnp.where(gnorm0 <= tol, Status.CONVERGED, -1)).astype(jnp.int32)
    hsize = config.history_size
    if hsize:
        f_hist = set_row(jnp.full([hsize], jnp.nan, dtype), 0, f0)
        g_hist = set_row(jnp.full([hsize], jnp.nan, dtype), 0, gnorm0)
    else:
        f_hist = g_hist = jnp.zeros([0], dtype)
    return SolverState(x0, f0, g0, opt_state, jnp.zeros([], jnp.int32),
                       jnp.ones([], jnp.int32), status0, jnp.zeros([3], jnp.int32),
                       jnp.zeros([], bool), f_hist, g_hist, jnp.zeros([], jnp.int32),
                       gnorm0.astype(dtype))


def _check_state(tx, state: SolverState) -> None:
    """``state`` must have the structure ``minimize_init`` gives for ``tx`` (trace time)."""
    expected = jax.eval_shape(tx.init, state.x)
    got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                       state.opt_state)
    same = jax.tree.structure(expected) == jax.tree.structure(got) and all(
        (a.shape, a.dtype) == (b.shape, b.dtype)
        for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True))
    if not same:
        raise ValueError(
            "`state.opt_state` does not match `method`: pass the `method` (and an `x` of "
            "the same shapes) that `minimize_init` made the state with."
        )
    if jax.tree.structure(state.g) != jax.tree.structure(state.x):
        raise ValueError("`state.g` must have the structure of `state.x`.")


def _segment(config: _Config, tx, state: SolverState, args, tol, ftol, xtol,
             num_steps) -> tuple[SolverState, tuple[jax.Array, jax.Array, jax.Array]]:
    """:func:`minimize_run`'s program: checks, then :func:`_continue`."""
    check_scalar_output("fun", lambda x: config.fun(x, *args), state.x)
    _check_state(tx, state)
    return _continue(config, tx, state, args, tol, ftol, xtol, num_steps)


def _continue(config: _Config, tx, state: SolverState, args, tol, ftol, xtol,
              num_steps) -> tuple[SolverState, tuple[jax.Array, jax.Array, jax.Array]]:
    """At most ``num_steps`` iterations from ``state``; also the final :func:`_summary`."""
    # maxiter counts total iterations: a running state already at the limit stops here.
    at_limit = (state.status < 0) & (state.nit >= config.maxiter)
    state = state._replace(status=jnp.where(at_limit, Status.MAXITER, state.status)
                           .astype(jnp.int32))
    final = _iterate(config, tx, state, args, tol, ftol, xtol, num_steps)
    return final, _summary(final)


def _iterate(config: _Config, tx, state: SolverState, args, tol, ftol, xtol,
             num_steps: jax.Array | None) -> SolverState:
    """Iterate from ``state`` until a stop (or ``num_steps`` iterations, if given)."""
    value_fn = lambda x: config.fun(x, *args)  # noqa: E731
    value_and_grad = jax.value_and_grad(value_fn)
    dtype = jnp.result_type(*jax.tree.leaves(state.x))
    tol, ftol, xtol = (jnp.asarray(t, dtype) for t in (tol, ftol, xtol))
    has_ls = _find_linesearch_state(state.opt_state) is not None
    # Without a jopt line search nothing fails, so there is nothing to restart from.
    self_restart = has_ls and _restarts_itself(state.opt_state)
    hsize = state.f_hist.shape[0]

    def body(s: SolverState) -> SolverState:
        updates, opt_state = tx.update(s.g, s.opt_state, s.x, value=s.f, grad=s.g,
                                       value_fn=value_fn)
        x_new = optax.apply_updates(s.x, updates)
        if has_ls:
            ls = _find_linesearch_state(opt_state)
            f_new, g_new = ls.value, ls.grad
            nfev = 1 + s.base[0] + ls.num_evals
            ls_failed = ls.status == LineSearchStatus.FAILED
            # A failed search where the first-order decrease predicted for the full step is
            # at rounding level of f is a precision limit, not a failure of the method.
            at_precision = jnp.abs(ls.slope) <= 100 * jnp.finfo(dtype).eps * jnp.abs(s.f)
        else:
            f_new, g_new = value_and_grad(x_new)
            nfev = s.nfev + 1
            ls_failed = at_precision = jnp.zeros([], bool)
        nit = s.nit + 1
        gnorm = tree_inf_norm(g_new)
        finite = jnp.isfinite(f_new) & jnp.isfinite(gnorm)
        # A rejected trust-region step (or a failed search) is not convergence. After a
        # jopt line search on a quasi-Newton/CG direction (finite, nonzero unless ∇f = 0)
        # the step length tells, with no reduction over the updates.
        if self_restart and not config.xtol_on:
            moved = ls.step > 0
        else:
            step = tree_inf_norm(updates)
            moved = step > 0
        no = jnp.zeros([], bool)
        small_f = small_x = no
        if config.ftol_on:
            small_f = (ftol > 0) & moved & (jnp.abs(s.f - f_new) <= ftol * jnp.maximum(
                jnp.maximum(jnp.abs(s.f), jnp.abs(f_new)), 1.0))
        if config.xtol_on:
            small_x = (xtol > 0) & moved & (step <= xtol * (xtol + tree_inf_norm(s.x)))
        # A failed search first restarts the method from its initial state (for
        # quasi-Newton methods: memory cleared, steepest descent); only a failure right
        # after a restart ends the run (scipy's L-BFGS-B rule).
        restart = ls_failed & ~s.fresh
        ls_failed = ls_failed & s.fresh
        # Progress: f decreased by more than rounding, or ‖∇f‖∞ halved since the last
        # progress. Moves without either (at the rounding floor) are counted — for methods
        # with a line search or trust region, which can "succeed" on rounding noise; a plain
        # first-order method's tiny steps are progress the test could not see.
        stall, ref_gnorm = s.stall, s.ref_gnorm
        if has_ls:
            noise = 10 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(s.f), jnp.abs(f_new))
            progress = finite & ((f_new < s.f - noise) | (gnorm <= 0.5 * s.ref_gnorm))
            stall = jnp.where(progress, 0, s.stall + moved.astype(jnp.int32))
            ref_gnorm = jnp.where(progress, gnorm, s.ref_gnorm).astype(s.ref_gnorm.dtype)
        status = jnp.select(
            [~finite, ls_failed & at_precision, ls_failed, gnorm <= tol,
             small_f, small_x, stall >= _STALL_LIMIT,
             nit >= config.maxiter],
            [Status.NONFINITE, Status.PRECISION, Status.LINESEARCH_FAILED, Status.CONVERGED,
             Status.SMALL_CHANGE, Status.SMALL_CHANGE, Status.PRECISION, Status.MAXITER],
            -1,
        ).astype(jnp.int32)
        if config.maxfev is not None:
            status = jnp.where((status < 0) & (nfev >= config.maxfev), Status.MAXFEV, status)
        keep = finite  # on NaN/Inf, stay at the last finite point
        x_out = jax.tree.map(lambda a, b: jnp.where(keep, a, b), x_new, s.x)
        f_out = jnp.where(keep, f_new, s.f)
        g_out = jax.tree.map(lambda a, b: jnp.where(keep, a, b), g_new, s.g)
        f_hist, g_hist = s.f_hist, s.g_hist
        if hsize:
            idx = jnp.minimum(nit, hsize - 1)
            f_hist = set_row(f_hist, idx, f_out)
            g_hist = set_row(g_hist, idx, tree_inf_norm(g_out))
        if config.verbose:
            jax.lax.cond(
                (nit % config.verbose == 0) | (status >= 0),
                lambda: jax.debug.print("iter {i:6d}  f = {f:.6e}  |g|inf = {g:.3e}",
                                        i=nit, f=f_out, g=gnorm),
                lambda: None,
            )
        base = s.base
        if has_ls and not self_restart:
            # (A `cond` whose result is the whole state copies it every iteration: for
            # L-BFGS that was 2·m·n numbers, ~30 % of an iteration at n = 1,000. The
            # quasi-Newton and CG states restart themselves after the zero step instead.)
            base = jnp.where(restart, s.base + _transform_counts(opt_state), s.base)
            opt_state = jax.lax.cond(restart, lambda: tx.init(s.x), lambda: opt_state)
        fresh = restart | (s.fresh & ~moved)  # until the restarted method makes progress
        return SolverState(x_out, f_out, g_out, opt_state, nit, nfev, status, base, fresh,
                           f_hist, g_hist, stall, ref_gnorm)

    if num_steps is None:
        return _loop(config, lambda s: jax.lax.while_loop(lambda s: s.status < 0, body, s),
                     state, tol)

    # The step limit is checked in the body (a pause code), not in the loop condition: an
    # extra condition or carried counter costs ~10% of a small solve's run time on XLA:CPU.
    stop_at = jnp.where(num_steps > _NO_LIMIT - state.nit, _NO_LIMIT, state.nit + num_steps)

    def limited(s: SolverState) -> SolverState:
        s = body(s)
        return s._replace(status=jnp.where((s.status < 0) & (s.nit >= stop_at), _PAUSED,
                                           s.status))

    final = _loop(config, lambda s: jax.lax.while_loop(lambda s: s.status == -1, limited, s),
                  state, tol)
    return final._replace(status=jnp.where(final.status == _PAUSED, -1, final.status))


def _loop(config: _Config, loop: Callable[[SolverState], SolverState],
          state: SolverState, tol: jax.Array) -> SolverState:
    """``loop(state)``, compiled as one XLA:CPU function when ``config.outline`` asks and
    the traced loop (objective, transform, line search, printing) passes
    :func:`jopt.xla_cpu.outlinable`; else as usual."""
    out = _one_function(loop, tol, state) if config.outline else None
    return loop(state) if out is None else out


def _one_function(fn: Callable, tol: jax.Array, *args: Any) -> Any:
    """``fn(*args)`` as one XLA:CPU function (:func:`jopt.xla_cpu.outlined_call`) if its
    traced computation passes :func:`jopt.xla_cpu.outlinable`; ``None`` if it does not."""
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    if not outlinable(closed, library_fusions=_library_fusions()):  # "cpu-outlined"
        return None
    # (tol == tol: true, since a tolerance is never NaN, and XLA does not fold the
    # comparison of a floating-point input with itself)
    return outlined_call(closed, jax.tree.structure(shapes), tol == tol, *args)


_PAUSED = -2  # internal: the step limit of a segment was reached


def _summary(state: SolverState) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(njev, nhev, success) of ``state`` (counters read from the transform's state)."""
    counts = state.base + _transform_counts(state.opt_state)
    success = (state.status == Status.CONVERGED) | (state.status == Status.SMALL_CHANGE)
    return state.nfev + counts[1], counts[2], success


def _result(state: SolverState, njev: jax.Array, nhev: jax.Array,
            success: jax.Array) -> MinimizeResult:
    with_history = state.f_hist.shape[0] > 0
    return MinimizeResult(
        x=state.x,
        fun=state.f,
        jac=state.g,
        nit=state.nit,
        nfev=state.nfev,
        njev=njev,
        nhev=nhev,
        success=success,
        status=state.status,
        f_history=state.f_hist if with_history else None,
        gnorm_history=state.g_hist if with_history else None,
    )
