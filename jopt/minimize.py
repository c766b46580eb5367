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
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._checks import check_float_tree, check_scalar_output, is_concrete_number
from jopt.implicit import implicit_solution, implicit_value
from jopt.linesearch import LineSearchState, LineSearchStatus
from jopt.transforms.newton import newton, newton_cg, trust_ncg
from jopt.transforms.quasi_newton import bfgs, lbfgs, nonlinear_cg
from jopt.tree import tree_inf_norm

PyTree = Any

__all__ = ["METHODS", "MinimizeResult", "Status", "minimize"]


class Status:
    """``MinimizeResult.status`` codes (``message`` gives the text)."""

    CONVERGED = 0  # ‖∇f‖∞ <= tol
    MAXITER = 1
    LINESEARCH_FAILED = 2
    NONFINITE = 3
    SMALL_CHANGE = 4  # relative f change <= ftol or step <= xtol
    MAXFEV = 5
    PRECISION = 6  # no decrease possible at this precision

    MESSAGES: ClassVar[dict[int, str]] = {
        0: "Optimization terminated successfully: gradient norm below tol.",
        1: "Maximum number of iterations reached.",
        2: "Line search failed to find a lower value.",
        3: "Non-finite value or gradient (NaN/Inf) encountered; returning the last finite point.",
        4: "Converged: change in f or x below ftol/xtol.",
        5: "Maximum number of function evaluations reached.",
        6: "Desired gradient tolerance not reached due to precision loss: no lower value "
           "exists at the precision of the dtype.",
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
def _named_transform(name: str) -> optax.GradientTransformationExtraArgs:
    """One transform object per method name, so the compiled loop is reused across calls."""
    return METHODS[name]()


def _resolve_method(method: Any) -> optax.GradientTransformationExtraArgs:
    if isinstance(method, str):
        key = method.lower()
        if key not in METHODS:
            raise ValueError(
                f"Unknown `method` {method!r}. Valid names: {sorted(set(METHODS))}; or pass "
                f"any optax/jopt GradientTransformation."
            )
        return _named_transform(key)
    if isinstance(method, optax.GradientTransformationExtraArgs):
        return method
    if isinstance(method, optax.GradientTransformation):
        return optax.with_extra_args_support(method)
    raise TypeError(
        f"`method` must be a method name ({sorted(set(METHODS))}) or an optax "
        f"GradientTransformation, got {type(method).__name__}."
    )


def _find_linesearch_state(state: PyTree) -> LineSearchState | None:
    """The (static) position of a jopt line-search state inside a transform's state."""
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, LineSearchState))
        if isinstance(node, LineSearchState)
    ]
    return found[-1] if found else None


def _count_field(state: PyTree, field: str) -> jax.Array:
    """Sum of the integer counter ``field`` over every NamedTuple in ``state`` that has it."""
    nodes = jax.tree.leaves(state, is_leaf=lambda n: hasattr(n, "_fields") and field in n._fields)
    counts = [getattr(n, field) for n in nodes if hasattr(n, "_fields") and field in n._fields]
    return sum(counts[1:], counts[0]) if counts else jnp.zeros([], jnp.int32)


class _Loop(NamedTuple):
    x: PyTree
    f: jax.Array
    g: PyTree
    opt_state: PyTree
    nit: jax.Array
    nfev: jax.Array
    status: jax.Array
    base: jax.Array  # (evals, extra gradients, HVPs) counted before the last restart
    fresh: jax.Array  # the transform state was just reset after a failed search
    f_hist: jax.Array | None
    g_hist: jax.Array | None


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
      xtol: stop when ``‖x_{k+1} - x_k‖∞ <= xtol·(xtol + ‖x_k‖∞)`` (0: off).
      maxiter: iteration limit. maxfev: evaluation limit (checked after each iteration).
      history: record ``f`` and ``‖∇f‖∞`` per iteration in fixed-size buffers.
      history_size: buffer length (default ``maxiter + 1``).
      verbose: print iteration, ``f`` and ``‖∇f‖∞`` every ``verbose`` iterations from
        inside the compiled loop (0: silent).
      implicit_diff: make ``x`` and ``fun`` of the result differentiable with respect to
        ``args`` (forward and reverse mode) by the implicit function theorem — see
        :mod:`jopt.implicit`. Costs nothing unless differentiated.

    Returns:
      A :class:`MinimizeResult` (scipy's field names).

    References:
      The stopping tests and status texts follow ``scipy.optimize.minimize``; the
      solvers' references are in :mod:`jopt.transforms.quasi_newton`.
    """
    tx = _resolve_method(method)
    check_float_tree("x0", x0)
    if not isinstance(args, tuple):
        raise TypeError(f"`args` must be a tuple of extra arguments of `fun`, got {type(args)}.")
    _check_tolerance("tol", tol, allow_zero=False)
    _check_tolerance("ftol", ftol, allow_zero=True)
    _check_tolerance("xtol", xtol, allow_zero=True)
    _check_count("maxiter", maxiter)
    _check_count("maxfev", maxfev)
    _check_count("history_size", history_size)
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise ValueError(f"`verbose` must be an int >= 0 (print every k iterations), got "
                         f"{verbose!r}.")
    config = _Config(
        fun=fun,
        maxiter=maxiter,
        maxfev=maxfev,
        history_size=(history_size or maxiter + 1) if history else 0,
        verbose=verbose,
    )
    # Strongly-typed inputs: a weakly-typed x0 (e.g. from jnp.full(n, 0.0)) or a Python
    # tolerance must hit the same compiled loop as an ordinary array.
    # (Host-side numpy conversions: an eager JAX op per argument would cost more than a
    # small solve.)
    x0 = jax.tree.map(_strong, x0)
    dtype = np.result_type(*(leaf.dtype for leaf in jax.tree.leaves(x0)))
    tol, ftol, xtol = (_strong(t, dtype) for t in (tol, ftol, xtol))
    nested = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((x0, args)))
    run = _compiled_loop(None if nested else jax.default_backend())
    try:
        res = run(config, tx, x0, jax.lax.stop_gradient(args), tol, ftol, xtol)
    except ValueError as err:  # inside a caller's jit with only constant inputs
        if "compiler_options" not in str(err):
            raise
        res = _compiled_loop(None)(config, tx, x0, jax.lax.stop_gradient(args), tol, ftol, xtol)
    if implicit_diff and jax.tree.leaves(args):
        # d x*/d args by the implicit function theorem (CG on HVPs), d f*/d args by the
        # envelope theorem; nothing is differentiated through the while_loop.
        res = res._replace(x=implicit_solution(fun, res.x, args),
                           fun=implicit_value(fun, res.fun, res.x, args))
    return res


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
    history_size: int
    verbose: int


# XLA:CPU spends most of a solver's compile time in LLVM on the loop's many small scalar
# kernels. Measured on the problem suite (2-core CPU): these options halve compile time
# and leave run time unchanged or better (the vector kernels are simple either way).
_COMPILER_OPTIONS = {
    "cpu": {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True},
}


@functools.cache
def _compiled_loop(backend: str | None) -> Callable:
    """The jitted solver loop for ``backend`` (compiled per objective, method and shapes).

    ``None``: inside a caller's trace, where only the top-level jit takes compiler options.
    """
    return jax.jit(_run, static_argnums=(0, 1), compiler_options=_COMPILER_OPTIONS.get(backend))


def _run(config: _Config, tx, x0, args, tol, ftol, xtol) -> MinimizeResult:
    value_fn = lambda x: config.fun(x, *args)  # noqa: E731
    check_scalar_output("fun", value_fn, x0)  # at trace time: once per compilation
    value_and_grad = jax.value_and_grad(value_fn)
    dtype = jnp.result_type(*jax.tree.leaves(x0))
    tol, ftol, xtol = (jnp.asarray(t, dtype) for t in (tol, ftol, xtol))

    f0, g0 = value_and_grad(x0)
    opt_state = tx.init(x0)
    has_ls = _find_linesearch_state(opt_state) is not None
    gnorm0 = tree_inf_norm(g0)
    finite0 = jnp.isfinite(f0) & jnp.isfinite(gnorm0)
    status0 = jnp.where(~finite0, Status.NONFINITE,
                        jnp.where(gnorm0 <= tol, Status.CONVERGED, -1)).astype(jnp.int32)
    hsize = config.history_size
    f_hist = g_hist = None
    if hsize:
        f_hist = jnp.full([hsize], jnp.nan, dtype).at[0].set(f0)
        g_hist = jnp.full([hsize], jnp.nan, dtype).at[0].set(gnorm0)
    init = _Loop(x0, f0, g0, opt_state, jnp.zeros([], jnp.int32), jnp.ones([], jnp.int32),
                 status0, jnp.zeros([3], jnp.int32), jnp.zeros([], bool), f_hist, g_hist)

    def body(s: _Loop) -> _Loop:
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
        step = tree_inf_norm(updates)
        moved = step > 0  # a rejected trust-region step is not convergence
        small_f = moved & (jnp.abs(s.f - f_new) <= ftol * jnp.maximum(
            jnp.maximum(jnp.abs(s.f), jnp.abs(f_new)), 1.0))
        small_x = moved & (step <= xtol * (xtol + tree_inf_norm(s.x)))
        # A failed search first restarts the method from its initial state (for
        # quasi-Newton methods: memory cleared, steepest descent); only a failure right
        # after a restart ends the run (scipy's L-BFGS-B rule).
        restart = ls_failed & ~s.fresh
        ls_failed = ls_failed & s.fresh
        status = jnp.select(
            [~finite, ls_failed & at_precision, ls_failed, gnorm <= tol,
             (ftol > 0) & small_f, (xtol > 0) & small_x, nit >= config.maxiter],
            [Status.NONFINITE, Status.PRECISION, Status.LINESEARCH_FAILED, Status.CONVERGED,
             Status.SMALL_CHANGE, Status.SMALL_CHANGE, Status.MAXITER],
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
            f_hist = f_hist.at[idx].set(f_out)
            g_hist = g_hist.at[idx].set(tree_inf_norm(g_out))
        if config.verbose:
            jax.lax.cond(
                (nit % config.verbose == 0) | (status >= 0),
                lambda: jax.debug.print("iter {i:6d}  f = {f:.6e}  |g|inf = {g:.3e}",
                                        i=nit, f=f_out, g=gnorm),
                lambda: None,
            )
        base = jnp.where(restart, s.base + _transform_counts(opt_state), s.base)
        opt_state = jax.lax.cond(restart, lambda: tx.init(s.x), lambda: opt_state)
        fresh = restart | (s.fresh & ~moved)  # until the restarted method makes progress
        return _Loop(x_out, f_out, g_out, opt_state, nit, nfev, status, base, fresh,
                     f_hist, g_hist)

    final = jax.lax.while_loop(lambda s: s.status < 0, body, init)
    counts = final.base + _transform_counts(final.opt_state)
    extra_grads, nhev = counts[1], counts[2]
    success = (final.status == Status.CONVERGED) | (final.status == Status.SMALL_CHANGE)
    return MinimizeResult(
        x=final.x,
        fun=final.f,
        jac=final.g,
        nit=final.nit,
        nfev=final.nfev,
        njev=final.nfev + extra_grads,
        nhev=nhev,
        success=success,
        status=final.status,
        f_history=final.f_hist,
        gnorm_history=final.g_hist,
    )
