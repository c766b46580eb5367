"""``jopt.minimize`` and its resumable pieces, ``minimize_init`` / ``minimize_run`` /
``minimize_result``: argument checks, one preparation step, and the compiled programs.

The compiled program is cached per objective, method and shapes: calling ``minimize``
again with a new ``x0``, ``args`` or tolerance reuses it (tolerances are traced values).
It works inside a user's ``jit`` and under ``vmap`` over ``x0``, ``args`` and tolerances.
``minimize`` compiles :func:`minimize_init` and :func:`minimize_run` as one program, built
so that a segmented solve reproduces it bit for bit. How each program is compiled (options,
outlining) is the platform layer's choice (:mod:`jopt._platform`), made once per call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt import _platform as platform
from jopt._checks import check_float_tree
from jopt.box import active_set, clip
from jopt.implicit import implicit_solution, implicit_value
from jopt.solve import checks
from jopt.solve.closures import note_closure
from jopt.solve.loop import (
    NO_LIMIT,
    IntermediateResult,
    LoopConfig,
    SolverState,
    check_state,
    continue_state,
    init_state,
    result,
)
from jopt.solve.registry import check_bounded_method, resolve_method
from jopt.solve.status import MinimizeResult

PyTree = Any
Method = str | optax.GradientTransformation

__all__ = ["minimize", "minimize_init", "minimize_result", "minimize_run"]


# ----------------------------------------------------------------------- preparation


class Prepared(NamedTuple):
    """What every entry point derives from its arguments, once per call."""

    tx: optax.GradientTransformationExtraArgs
    plan: platform.Plan
    x: PyTree  # strongly typed
    dtype: np.dtype
    nested: bool  # inside a caller's trace
    args: tuple  # stop_gradient'ed when traced (the implicit rule carries derivatives)
    box: tuple | None = None  # (lower, upper) like x, or None

    @property
    def loop_args(self) -> tuple:
        """The loop's arguments: the box first when bounded (see ``split_bounds``)."""
        return self.args if self.box is None else (self.box, *self.args)


def _prepare(fun: Callable, x: PyTree, method: Method, args: tuple, *, name: str = "x0",
             verbose: int = 0, batched: bool = False, tolerances: tuple = (),
             options: dict[str, Any] | None = None, bounds: Any = None) -> Prepared:
    tx = resolve_method(method, options)
    check_float_tree(name, x)
    # (a traced tolerance counts too: its value is unknown here, so nothing is outlined)
    nested = checks.traced((x, args, tolerances, bounds))
    x = jax.tree.map(checks.strong, x)
    dtype = np.result_type(*(leaf.dtype for leaf in jax.tree.leaves(x)))
    box = checks.box(bounds, x)
    if box is not None:
        check_bounded_method(method)
        box = jax.lax.stop_gradient(box) if nested else box
        x = clip(x, *box)  # (scipy projects x0 onto the box too)
    the_plan = platform.plan(fun, x, args, nested=nested, batched=batched, verbose=verbose,
                             loop=_loop_probe(tx, x, box))
    # Concrete args carry no derivative: stop_gradient (an eager op per call) only matters
    # when traced.
    fixed = jax.lax.stop_gradient(args) if nested else args
    return Prepared(tx, the_plan, x, np.dtype(dtype), nested, fixed, box)


def _standin(x: PyTree, *args: Any) -> jax.Array:
    """A stand-in objective: tracing a loop with it shows the loop's own operations."""
    del args
    return sum((jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(x)), jnp.zeros([], "float32"))


def _loop_probe(tx: Any, x: PyTree, box: tuple | None) -> tuple[Any, Callable] | None:
    """``(key, trace)`` for :func:`jopt._platform.plan`: the minimize loop of ``tx`` at
    ``x``'s shapes, traced with :func:`_standin` (the objective is checked on its own)."""
    leaves = jax.tree.leaves(x)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return None
    key = (tx, jax.tree.structure(x), tuple((leaf.shape, leaf.dtype) for leaf in leaves),
           box is not None)
    try:
        hash(key)
    except TypeError:  # (a transform holding unhashable parts: one_function decides)
        return None

    def trace() -> Any:
        config = LoopConfig(_standin, maxiter=1, bounded=box is not None)
        tol = jnp.zeros([], np.result_type(*(leaf.dtype for leaf in leaves)))
        program = functools.partial(_minimize_program, config, platform.GENERIC, tx)
        return jax.make_jaxpr(program)(x, () if box is None else (box,), tol, tol, tol,
                                       jnp.zeros([], jnp.int32))

    return key, trace


def _frozen(options: dict[str, Any] | None) -> Any:
    """``options`` as a hashable key part (a dict is not hashable)."""
    if not options:
        return None
    try:
        return tuple(sorted(options.items()))
    except (AttributeError, TypeError):  # (not a dict, or unsortable: the checked path
        return object()  # explains; a fresh object never hits the cache)


@functools.lru_cache(maxsize=256)
def _device_scalar(value: float, dtype: np.dtype) -> jax.Array:
    with np.errstate(over="ignore"):  # (a tolerance beyond the dtype's range is inf)
        return jnp.asarray(np.asarray(value, dtype))


def _tolerance(value: Any, dtype: Any, nested: bool) -> Any:
    """A tolerance as a strongly-typed array; Python numbers become cached device scalars
    outside a trace (a numpy argument is copied to the device on every call)."""
    if not nested and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _device_scalar(float(value), np.dtype(dtype))
    return checks.strong(value, dtype)


@functools.cache
def _no_limit() -> jax.Array:
    return jnp.asarray(NO_LIMIT, jnp.int32)


# --------------------------------------------------------------------------- programs


def _outlined(the_plan: platform.Plan, program: Callable, live: jax.Array, *args: Any) -> Any:
    """``program(*args)``, as one XLA:CPU function where the plan asks and it passes."""
    out = platform.one_function(program, live, *args) if the_plan.outline else None
    return program(*args) if out is None else out


def _init_program(config: LoopConfig, the_plan: platform.Plan, tx, x0, args,
                  tol) -> SolverState:
    del the_plan  # (the same compile options as minimize's program, for the same bits)
    return init_state(config, tx, x0, args, tol)


def _segment_program(config: LoopConfig, the_plan: platform.Plan, tx, state, args, tol,
                     ftol, xtol, num_steps) -> SolverState:
    check_state(tx, state)

    def program(state, args, tol, ftol, xtol, num_steps):
        return continue_state(config, tx, state, args, tol, ftol, xtol, num_steps)

    return _outlined(the_plan, program, tol, state, args, tol, ftol, xtol, num_steps)


_COUNTERS = ("nit", "nfev", "njev", "nhev", "status", "success")


def _minimize_program(config: LoopConfig, the_plan: platform.Plan, tx, x0, args, tol, ftol,
                      xtol, num_steps) -> tuple[MinimizeResult, jax.Array]:
    """:func:`minimize`'s program: :func:`init_state` and :func:`continue_state` in one.

    It computes the same bits as the pieces because XLA sees the same loop: the initial
    state passes an optimization barrier (materialised as ``minimize_init`` returns it),
    the step limit is a runtime value, and every field of the final state stays live (one
    element of each feeds an extra output), as when ``minimize_run`` returns the whole
    state — XLA drops dead loop-carried fields, and a body compiled without them can
    round differently.
    """

    def program(x0, args, tol, ftol, xtol, num_steps):
        state = jax.lax.optimization_barrier(init_state(config, tx, x0, args, tol))
        final = continue_state(config, tx, state, args, tol, ftol, xtol, num_steps)
        rest = jax.tree.leaves((final.opt_state, final.fresh))
        alive = functools.reduce(jnp.add, [jnp.sum(jnp.ravel(leaf)[:1].astype(jnp.float32))
                                           for leaf in rest], jnp.zeros([], jnp.float32))
        res = result(final)
        if not the_plan.packed:
            return res, alive
        # The six counters and `alive` as one int32 vector: one output buffer, not seven.
        counts = jnp.stack([res.nit, res.nfev, res.njev, res.nhev, res.status,
                            res.success.astype(jnp.int32),
                            jax.lax.bitcast_convert_type(alive, jnp.int32)])
        return res._replace(**dict.fromkeys(_COUNTERS)), counts

    return _outlined(the_plan, program, tol, x0, args, tol, ftol, xtol, num_steps)


def _unpack(the_plan: platform.Plan, res: MinimizeResult, extra: jax.Array) -> MinimizeResult:
    """The result from :func:`_minimize_program`'s outputs: packed counters are read on the
    host once, as numpy scalars (sliced instead inside a caller's trace)."""
    if not the_plan.packed:
        return res
    if isinstance(extra, jax.core.Tracer):  # a caller's jit with only constant inputs
        nit, nfev, njev, nhev, status, success = (extra[i] for i in range(6))
        success = success.astype(bool)
    else:
        nit, nfev, njev, nhev, status, success = np.asarray(extra)[:6]
        success = np.bool_(success)
    return MinimizeResult(res.x, res.fun, res.jac, nit, nfev, njev, nhev, success, status,
                          res.f_history, res.gnorm_history)


def _run(*run_args: Any, fun: Callable, x: PyTree, args: tuple,
         name: str = "x0") -> tuple[platform.Plan, Any]:
    """:func:`jopt._platform.run`, an error raised by the objective itself re-raised
    naming ``x0``/``args`` (see :func:`checks.objective_errors`)."""
    with checks.objective_errors(fun, x, args, name):
        return platform.run(*run_args, fun=fun, x=x, args=args)


# ------------------------------------------------------------------ the fast eager path

_FAST = platform.FastCalls(64)


@jax.jit
def _project(x: PyTree, box: tuple) -> PyTree:
    """``x`` projected onto ``box`` in one dispatch (the fast path's eager call)."""
    return clip(x, *box)


@jax.jit
def _active(x: PyTree, box: tuple) -> PyTree:
    """:func:`jopt.box.active_set` in one dispatch."""
    return active_set(x, *box)


def _bounds_signature(bounds: Any) -> Any:
    """What of ``bounds`` selects a program on the fast path: ``()`` for none; each side's
    kind, shape and dtype for ``(lower, upper)`` of ``None``, numbers or concrete arrays;
    else an object that never hits (other forms take the checked path)."""
    if bounds is None:
        return ()
    if not (isinstance(bounds, tuple) and len(bounds) == 2):
        return object()
    out = []
    for side in bounds:
        if side is None or (isinstance(side, (int, float)) and not isinstance(side, bool)):
            out.append(type(side))
        elif isinstance(side, np.ndarray | jax.Array) and not isinstance(side, jax.core.Tracer):
            out.append((np.shape(side), np.dtype(side.dtype)))
        else:
            return object()
    return tuple(out)


def _fast_key(fun: Callable, x0: PyTree, method: Any, args: tuple, tolerances: tuple,
              options: tuple) -> tuple | None:
    """The cache key of an eager call with concrete arrays and Python-number tolerances,
    or ``None`` when it must take the checked path."""
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
    key = (platform.weakly(fun), method, options, x_def, a_def, tuple(avals),
           tuple(type(t) for t in tolerances), tuple(t != 0 for t in tolerances),
           platform.platform_policy())
    try:
        hash(key)
    except TypeError:  # an unhashable method or fun: no fast path
        return None
    return key


# ----------------------------------------------------------------------- entry points


def minimize(
    fun: Callable[..., jax.Array],
    x0: PyTree,
    args: tuple = (),
    *,
    method: Method = "lbfgs",
    bounds: Any = None,
    tol: float | jax.Array = 1e-6,
    ftol: float | jax.Array = 0.0,
    xtol: float | jax.Array = 0.0,
    maxiter: int = 10_000,
    maxfev: int | None = None,
    history: bool = False,
    history_size: int | None = None,
    verbose: int = 0,
    implicit_diff: bool = True,
    options: dict[str, Any] | None = None,
    callback: Callable[[IntermediateResult], Any] | None = None,
    callback_every: int = 1,
) -> MinimizeResult:
    """Minimize ``fun(x, *args)`` over a pytree ``x`` starting from ``x0``.

    Args:
      fun: objective ``(x, *args) -> scalar``. Define it once and pass what changes in
        ``args``: a new function object is a new program to compile.
      x0: starting point (pytree of float arrays; its dtype is kept).
      args: extra arguments of ``fun`` (traced: new values do not recompile).
      method: a registered name — ``"lbfgs"`` (default), ``"bfgs"``, ``"cg"``,
        ``"newton-cg"``, ``"trust-ncg"``, ``"newton"`` — or any optax/jopt transform (it
        receives ``value``, ``grad``, ``value_fn`` and ``value_and_grad_fn``; see the step
        protocol, :mod:`jopt.step`). With ``bounds``: ``"l-bfgs-b"`` (scipy's
        ``"L-BFGS-B"``), ``"trust-region-newton"``, or a transform without a step record
        (any optax one: each step is projected onto the box).
      bounds: the box ``lower <= x <= upper``: a tuple ``(lower, upper)``, each ``None``,
        a number, an array or a pytree like ``x0`` (``±inf`` for a missing bound); or
        scipy's ``Bounds`` / list of ``(min, max)`` pairs for a 1-D ``x0``. ``x0`` is
        projected onto the box. Bounds are traced (``jit``/``vmap`` over them do not
        recompile) and the result's ``active_mask`` marks the entries on a bound.
      tol: stop when ``‖∇f‖∞ <= tol`` (with bounds, the projected gradient's
        ``‖P(x − ∇f) − x‖∞ <= tol``, scipy's L-BFGS-B test).
      ftol: stop when ``|f_k - f_{k+1}| <= ftol·max(|f_k|, |f_{k+1}|, 1)`` (0: off).
      xtol: stop when ``‖x_{k+1} - x_k‖∞ <= xtol·(xtol + ‖x_k‖∞)`` (0: off). A concrete
        0 compiles the test out; any other value (or a traced one) shares one program.
      maxiter: iteration limit.
      maxfev: evaluation limit (checked after each iteration).
      history: record ``f`` and ``‖∇f‖∞`` per iteration in fixed-size buffers.
      history_size: buffer length (default ``maxiter + 1``; past the end, the last entry
        is overwritten). Long buffers cost small problems time: ask for what you read.
      verbose: print iteration, ``f`` and ``‖∇f‖∞`` every ``verbose`` iterations from
        inside the compiled loop (0: silent).
      implicit_diff: make ``x`` and ``fun`` of the result differentiable with respect to
        ``args`` (forward and reverse mode) by the implicit function theorem — see
        :mod:`jopt.implicit`. Costs nothing unless differentiated.
      options: the named method's own settings, as keywords of its factory (scipy's
        ``options=``): ``{"memory_size": 20}`` (or scipy's ``"maxcor"``) for ``"lbfgs"``,
        ``{"maxiter": 50}`` (inner CG iterations) for ``"newton-cg"``,
        ``{"initial_radius": 0.1}`` for ``"trust-ncg"``, ``{"beta": "pr"}`` for ``"cg"``.
        scipy's ``gtol``/``disp``/``maxfun`` are ``tol``/``verbose``/``maxfev`` here.
      callback: called on the host as ``callback(r)`` with an
        :class:`~jopt.IntermediateResult` ``r`` (``r.x``, ``r.fun``,
        ``r.jac``, ``r.nit``, ``r.status``; NumPy arrays) every ``callback_every``
        iterations and after the last one, from inside the compiled loop through
        ``jax.debug.callback`` — so also under ``jit`` (under ``vmap``, once per
        member). It cannot stop the solve (use ``maxiter``, or :func:`minimize_run` in
        segments). Like ``fun``, define it once: a new function is a new program.
      callback_every: the callback's period in iterations.

    Returns:
      A :class:`MinimizeResult` (scipy's field names).

    Define ``fun`` once and pass data through ``args``: ``minimize(lambda x: loss(x, d),
    x0)`` in a loop compiles a new program for every new lambda, while
    ``minimize(loss, x0, (d,))`` compiles once.

    ``minimize`` is :func:`minimize_init`, :func:`minimize_run` to the end and
    :func:`minimize_result` compiled as one program; its result is bitwise identical to
    running those pieces in any number of segments (e.g. to checkpoint a long solve).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> f = lambda x, c: jnp.sum((x - c) ** 2)
      >>> res = jopt.minimize(f, jnp.zeros(3), (2.0,), method="newton-cg")
      >>> bool(res.success), [round(float(v), 6) for v in res.x]
      (True, [2.0, 2.0, 2.0])

    References:
      The stopping tests and status texts follow ``scipy.optimize.minimize``; the
      solvers' references are in their transforms' modules.
    """
    settings = (maxiter, maxfev, history, history_size, verbose,
                platform.weakly(callback), callback_every)
    key = _fast_key(fun, x0, (method, _frozen(options)), args, (tol, ftol, xtol),
                    (*settings, _bounds_signature(bounds)))
    hit = _FAST.get(key) if key is not None else None
    if hit is not None:  # checked before with the same static inputs: call directly
        program, the_plan, dtype = hit
        box = checks.box(bounds, x0)  # (NumPy: checks the values, no device dispatch)
        x = x0 if box is None else _project(x0, box)
        try:
            res = _unpack(the_plan, *program(
                x, args if box is None else (box, *args),
                *(_device_scalar(float(t), dtype) for t in (tol, ftol, xtol)), _no_limit()))
            return res if box is None else res._replace(active_mask=_active(res.x, box))
        except ValueError as err:  # a caller's jit closing over concrete inputs only:
            if "compiler_options" not in str(err):  # the checked path handles it
                raise
    checks.check_run_options(args, tol, ftol, xtol, maxiter, maxfev)
    checks.check_count("history_size", history_size)
    checks.check_verbose(verbose)
    checks.check_callback(callback, callback_every)
    prep = _prepare(fun, x0, method, args, verbose=verbose or callback is not None,
                    tolerances=(tol, ftol, xtol), options=options, bounds=bounds)
    if not prep.nested:
        note_closure(fun, x0)
    config = LoopConfig(platform.weakly(fun), maxiter, maxfev, verbose, checks.test_on(ftol),
                        checks.test_on(xtol), history_size=checks.history_length(
                            history, history_size, maxiter),
                        callback=platform.weakly(callback), callback_every=callback_every,
                        bounded=prep.box is not None)
    tol, ftol, xtol = (_tolerance(t, prep.dtype, prep.nested) for t in (tol, ftol, xtol))
    no_limit = np.asarray(NO_LIMIT, np.int32) if prep.nested else _no_limit()
    ran, out = _run(
        _minimize_program, 3, lambda p: (config._replace(split=p.split), p, prep.tx),
        prep.plan, (prep.x, prep.loop_args, tol, ftol, xtol, no_limit), fun=fun, x=prep.x,
        args=args)
    res = _unpack(ran, *out)
    if prep.box is not None:
        res = res._replace(active_mask=_active(res.x, prep.box))
    if key is not None and ran == prep.plan:  # (not a fallback, e.g. inside a caller's jit)
        program = platform.compiled(_minimize_program, 3, ran.profile).program(
            config._replace(split=ran.split), ran, prep.tx)
        _FAST.set(key, (program, ran, prep.dtype))
    if implicit_diff and prep.nested and jax.tree.leaves(args):
        # d x*/d args by the implicit function theorem (CG on HVPs), d f*/d args by the
        # envelope theorem; nothing is differentiated through the while_loop.
        x = (implicit_solution(fun, res.x, args) if prep.box is None
             else _implicit_on_free(fun, res.x, args, res.active_mask))
        res = res._replace(x=x, fun=implicit_value(fun, res.fun, res.x, args))
    return res


def _held(fun: Callable, z: PyTree, x_star: PyTree, active: PyTree, *args: Any) -> jax.Array:
    """``fun`` with the active entries held at ``x_star``, plus ``½‖z − x*‖²`` on them: its
    minimizer is ``x*``, its Hessian is ``fun``'s on the free entries and ``I`` on the
    active ones."""
    x = jax.tree.map(lambda a, zi, xi: jnp.where(a, xi, zi), active, z, x_star)
    pin = sum(jnp.sum(jnp.where(a, (zi - xi) ** 2, 0.0))
              for a, zi, xi in zip(jax.tree.leaves(active), jax.tree.leaves(z),
                                   jax.tree.leaves(x_star), strict=True))
    return fun(x, *args) + 0.5 * pin


def _implicit_on_free(fun: Callable, x: PyTree, args: tuple, active: PyTree) -> PyTree:
    """``x`` carrying ``d x*/d args`` with the active set held fixed: the free entries move
    by the implicit function theorem on the free variables' stationarity, the active ones
    stay on their bounds (valid where the active set does not change, i.e. under strict
    complementarity)."""
    fixed = jax.lax.stop_gradient((x, active))
    return implicit_solution(functools.partial(_held, fun), x, (*fixed, *args))


def minimize_init(
    fun: Callable[..., jax.Array],
    x0: PyTree,
    args: tuple = (),
    *,
    method: Method = "lbfgs",
    bounds: Any = None,
    tol: float | jax.Array = 1e-6,
    history: bool = False,
    history_size: int | None = None,
    maxiter: int = 10_000,
    options: dict[str, Any] | None = None,
) -> SolverState:
    """The :class:`SolverState` of :func:`minimize` before its first iteration.

    Evaluates ``fun`` and its gradient at ``x0`` (``nfev = 1``) and initialises the
    transform. ``status`` is ``CONVERGED`` if ``‖∇f(x0)‖∞ <= tol``, ``NONFINITE`` if
    ``f(x0)`` or its gradient is not finite, else ``-1`` (running). Continue with
    :func:`minimize_run`; read the answer with :func:`minimize_result`.

    Args:
      fun, x0, args, method, bounds, tol, options: as in :func:`minimize` (pass the same
        ``bounds`` to every :func:`minimize_run`).
      history, history_size: as in :func:`minimize`; ``maxiter`` is used only for the
        default buffer length ``maxiter + 1``.

    Example::

        state = jopt.minimize_init(fun, x0, method="bfgs")
        while state.status < 0:                      # e.g. checkpoint every 100 iterations
            state = jopt.minimize_run(fun, state, method="bfgs", num_steps=100)
            save(state)
        res = jopt.minimize_result(state)            # == jopt.minimize(fun, x0, method="bfgs")
    """
    checks.check_args(args)
    checks.check_tolerance("tol", tol, allow_zero=False)
    checks.check_count("maxiter", maxiter)
    checks.check_count("history_size", history_size)
    prep = _prepare(fun, x0, method, args, tolerances=(tol,), options=options, bounds=bounds)
    config = LoopConfig(platform.weakly(fun), maxiter=1, history_size=checks.history_length(
        history, history_size, maxiter), bounded=prep.box is not None)
    _, state = _run(
        _init_program, 3, lambda p: (config._replace(split=p.split), p, prep.tx), prep.plan,
        (prep.x, prep.loop_args, checks.strong(tol, prep.dtype)), fun=fun, x=prep.x,
        args=args)
    return state


def minimize_run(
    fun: Callable[..., jax.Array],
    state: SolverState,
    args: tuple = (),
    *,
    method: Method = "lbfgs",
    bounds: Any = None,
    tol: float | jax.Array = 1e-6,
    ftol: float | jax.Array = 0.0,
    xtol: float | jax.Array = 0.0,
    maxiter: int = 10_000,
    maxfev: int | None = None,
    num_steps: int | None = None,
    verbose: int = 0,
    options: dict[str, Any] | None = None,
    callback: Callable[[IntermediateResult], Any] | None = None,
    callback_every: int = 1,
) -> SolverState:
    """Continue :func:`minimize`'s loop from ``state`` for at most ``num_steps`` iterations.

    Running ``minimize_init`` and then ``minimize_run`` in any number of segments gives
    the same iterates, counters and status, bit for bit, as one :func:`minimize` call with
    the same arguments: the state is the loop's whole carry.

    Args:
      fun, args, method, options, bounds: as in :func:`minimize`; they must be those that
        made ``state``.
      tol, ftol, xtol, maxfev, verbose, callback, callback_every: as in :func:`minimize`
        (tolerances may change between segments and act from the next iteration on).
      state: a :class:`SolverState` from :func:`minimize_init` or :func:`minimize_run`.
      maxiter: limit on the *total* iteration count ``state.nit`` (a state already at the
        limit ends with ``MAXITER`` without iterating).
      num_steps: at most this many further iterations (``None``: until a stopping test
        fires). A run cut short by ``num_steps`` returns ``status = -1``.

    Returns:
      The new :class:`SolverState`; a finished state is returned unchanged. ``num_steps``
      and the tolerances are traced: new values do not recompile.
    """
    if not isinstance(state, SolverState):
        raise TypeError(f"`state` must be a jopt.SolverState (from `minimize_init`), got "
                        f"{type(state).__name__}.")
    checks.check_run_options(args, tol, ftol, xtol, maxiter, maxfev)
    checks.check_count("num_steps", num_steps)
    checks.check_verbose(verbose)
    checks.check_callback(callback, callback_every)
    state = jax.tree.map(checks.strong, state)
    prep = _prepare(fun, state.x, method, args, name="state.x",
                    verbose=verbose or callback is not None,
                    tolerances=(tol, ftol, xtol, state), options=options, bounds=bounds)
    tol, ftol, xtol = (checks.strong(t, prep.dtype) for t in (tol, ftol, xtol))
    steps = np.asarray(NO_LIMIT if num_steps is None else num_steps, np.int32)
    config = LoopConfig(platform.weakly(fun), maxiter, maxfev, verbose, checks.test_on(ftol),
                        checks.test_on(xtol), callback=platform.weakly(callback),
                        callback_every=callback_every, bounded=prep.box is not None)
    _, state = _run(
        _segment_program, 3, lambda p: (config._replace(split=p.split), p, prep.tx),
        prep.plan, (state, prep.loop_args, tol, ftol, xtol, steps), fun=fun, x=prep.x,
        args=args, name="state.x")
    return state


def minimize_result(state: SolverState, bounds: Any = None) -> MinimizeResult:
    """The :class:`MinimizeResult` for ``state`` (batched states give a batched result);
    with the ``bounds`` of the solve, its ``active_mask`` too.

    Unlike :func:`minimize`, the result carries no implicit derivative with respect to
    ``args`` (wrap ``x`` with :func:`jopt.implicit_solution` for that).
    """
    if not isinstance(state, SolverState):
        raise TypeError(f"`state` must be a jopt.SolverState, got {type(state).__name__}.")
    res = _result_fn(np.ndim(state.nit))(state)
    if bounds is None:
        return res
    x = jax.tree.map(lambda leaf: leaf[(0,) * np.ndim(state.nit)], state.x)
    box = checks.box(bounds, x)
    return res._replace(active_mask=active_set(res.x, *box))


@functools.cache
def _result_fn(batch_dims: int) -> Callable[[SolverState], MinimizeResult]:
    fn = result
    for _ in range(batch_dims):
        fn = jax.vmap(fn)
    return jax.jit(fn)
