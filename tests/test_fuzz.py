"""Fuzzing the public solve API: success means verified.

Hypothesis draws an objective (smooth, curved, flat, unbounded below, NaN off its domain),
a starting point (dtype float16 to float64, shapes from zero-size to pytrees, values from
zeros to 1e30 and NaN), tolerances (tiny, huge, zero, negative, NaN, inf; concrete or
traced), counts (0, 1, 2³¹, negative) and a wrapping (eager, ``jit``, ``vmap``), and calls
``jopt.minimize`` with every registered method or ``jopt.minimize_many``, in a third of the
draws with ``bounds`` (a box cutting through the minimizer, a lower bound only, or an
illegal box: NaN, crossed). Every call must end in one of two ways:

* a ``ValueError`` / ``TypeError`` whose message names the offending argument in
  backquotes, or
* a result whose statuses are known codes, with ``success`` exactly for CONVERGED and
  SMALL_CHANGE, ``nit <= maxiter``, and — where ``success`` is true — a finite ``x`` (in
  the box), ``fun == f(x)`` and the stopping test recomputed here, outside jopt: the
  (projected) gradient's ∞-norm at ``x`` is at most ``tol`` (to rounding), or, for
  SMALL_CHANGE, an ``ftol``/``xtol`` test was switched on.

``make test`` runs a bounded budget (``JOPT_FUZZ_EXAMPLES``, default 12, drawn
deterministically); the long run is ``JOPT_FUZZ_EXAMPLES=20000 python -m pytest
tests/test_fuzz.py``.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import jopt
from jopt._platform import programs
from jopt.solve.registry import BOUNDED

EXAMPLES = int(os.environ.get("JOPT_FUZZ_EXAMPLES", "12"))
ARGUMENTS = {"fun", "x0", "x0s", "args", "args_axes", "method", "tol", "ftol", "xtol",
             "maxiter", "maxfev", "bounds"}
KNOWN_STATUS = {int(s) for s in jopt.Status if s >= 0}


# ----------------------------------------------------------------------- objectives
# (module-level functions: the same objects every example, so programs are reused)


def _flat(x: Any) -> jax.Array:
    leaves = [jnp.ravel(leaf) for leaf in jax.tree.leaves(x)]
    return jnp.concatenate(leaves) if leaves else jnp.zeros(0)


def quadratic(x, c):
    z = _flat(x)
    return jnp.sum((z - c) ** 2) + 7.0


def rosenbrock(x, c):
    z = _flat(x)
    return (jnp.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1.0 - z[:-1]) ** 2)
            + jnp.sum((z - c) ** 2) * 1e-3)


def flat(x, c):
    del c
    return jnp.sum(_flat(x)) * 0.0 + 3.0


def unbounded(x, c):
    return -jnp.sum(_flat(x) * c)


def log_barrier(x, c):
    z = _flat(x)
    return jnp.sum(z - c * jnp.log(z))  # NaN where z <= 0


def vector_valued(x, c):
    return _flat(x) * c  # not a scalar: a TypeError naming `fun` (unless size 1)


class Problem(NamedTuple):
    fun: Any
    gscale: Any  # a bound on the gradient's summands at x: rounding is eps times this


PROBLEMS = {
    "quadratic": Problem(quadratic, lambda z, c: 2 * (np.abs(z) + abs(c)) + 1),
    "rosenbrock": Problem(rosenbrock, lambda z, c: 400 * np.abs(z) ** 3 + 202 * np.abs(z) + 2),
    "flat": Problem(flat, lambda z, c: np.ones_like(z)),
    "unbounded": Problem(unbounded, lambda z, c: np.full_like(z, abs(c) + 1)),
    "log_barrier": Problem(log_barrier, lambda z, c: 1 + abs(c) / np.abs(z)),
    "vector_valued": Problem(vector_valued, lambda z, c: np.ones_like(z)),
}

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]
SHAPES = [(), (0,), (1,), (3,), (2, 2), "tree"]
APIS = [*jopt.method_names(), "many"]
VALID_PROBLEMS = ["quadratic", "rosenbrock", "flat", "unbounded", "log_barrier"]
# Boxes as ``(lower, upper)`` numbers (broadcast over every leaf): none; one through the
# minimizers (c = 1, −2, 0.5); a lower bound only; and two that must be refused.
BOXES = {"none": None, "cut": (-0.5, 0.7), "lower": (0.25, None),
         "nan": (float("nan"), 1.0), "crossed": (1.0, -1.0)}
BOUNDED_APIS = {*BOUNDED, "many"}


class Static(NamedTuple):
    """What selects a compiled program (drawn from a pool in a long run, so that programs
    are reused and the examples go to values)."""

    problem: str
    api: str
    dtype: Any
    shape: Any
    maxiter: int
    maxfev: int | None
    ftol_on: bool
    xtol_on: bool
    wrap: str
    traced_tol: bool
    box: str


_STATIC = dict(problem=VALID_PROBLEMS, api=APIS, dtype=DTYPES, shape=SHAPES,
               maxiter=[1, 7, 200], maxfev=[None, 50], ftol_on=[False, True],
               xtol_on=[False, True], wrap=["eager", "jit", "vmap"], traced_tol=[False, True],
               box=["none", "none", "none", "none", "cut", "lower", "nan", "crossed"])
POOL_SIZE = int(os.environ.get("JOPT_FUZZ_POOL", "0"))  # 0: every combination


def _pool(size: int) -> list[Static]:
    rng = np.random.default_rng(0)
    return [Static(**{k: v[rng.integers(len(v))] for k, v in _STATIC.items()})
            for _ in range(size)]


# Illegal values, one of which replaces a legal one in a quarter of the draws: each must
# be refused by a ValueError/TypeError naming its argument.
CORRUPTIONS = [("maxiter", 0), ("maxiter", -3), ("maxiter", 2**31), ("maxfev", 0),
               ("maxfev", 2**31), ("tol", 0.0), ("tol", -1.0), ("tol", float("nan")),
               ("ftol", -1.0), ("ftol", float("nan")), ("xtol", -1e-9),
               ("problem", "vector_valued"), ("dtype", jnp.int32), ("c_shape", (4,))]


def _start(shape: Any, values: str, dtype: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)

    def leaf(s: tuple) -> jax.Array:
        v = {"zeros": np.zeros(s), "fives": np.full(s, 5.0),
             "normal": rng.standard_normal(s) + 1.5, "huge": np.full(s, 1e30),
             "nan": np.where(rng.random(s) < 0.5, np.nan, 1.0)}[values]
        if not jnp.issubdtype(dtype, jnp.floating):
            v = np.zeros(s)  # (an integer x0 is the corruption, not its values)
        return jnp.asarray(v, dtype)

    if shape == "tree":
        return {"a": leaf((2,)), "b": leaf(())}
    return leaf(shape)


# ----------------------------------------------------------------------- the oracle


def _names_an_argument(err: Exception) -> bool:
    return bool(ARGUMENTS & set(re.findall(r"`([A-Za-z_0-9]+)", str(err))))


def _member(tree: Any, i: int | None) -> Any:
    return tree if i is None else jax.tree.map(lambda a: a[i], tree)


def _verify_member(res: Any, i: int | None, problem: Problem, c: float, c_shape: tuple,
                   tol: float, ftol: float, xtol: float, maxiter: int,
                   box: tuple | None) -> None:
    status, success = int(_member(res.status, i)), bool(_member(res.success, i))
    assert status in KNOWN_STATUS, status
    assert success == (status in (jopt.Status.CONVERGED, jopt.Status.SMALL_CHANGE))
    assert int(_member(res.nit, i)) <= maxiter
    if not success:
        return
    x, fun = _member(res.x, i), _member(res.fun, i)
    z = np.asarray(_flat(x), np.float64)
    assert np.all(np.isfinite(z)) and np.isfinite(float(fun)), (x, fun)
    lo, hi = (-np.inf, np.inf) if box is None else (
        -np.inf if box[0] is None else box[0], np.inf if box[1] is None else box[1])
    dtype = jnp.result_type(*jax.tree.leaves(x)) if jax.tree.leaves(x) else jnp.float32
    lo, hi = (float(jnp.asarray(v, dtype)) for v in (lo, hi))  # (as jopt rounds them)
    assert np.all((lo <= z) & (z <= hi)), (z, box)
    dtype = jnp.result_type(*jax.tree.leaves(x)) if jax.tree.leaves(x) else jnp.float32
    eps = float(jnp.finfo(dtype).eps)
    cs = jnp.full(c_shape, c, dtype)  # (the args the solve was given)
    fx = float(problem.fun(x, cs))  # eagerly, outside jopt
    assert abs(float(fun) - fx) <= 8 * eps * max(1.0, abs(fx)), (float(fun), fx)
    if status == jopt.Status.CONVERGED:
        g = np.asarray(_flat(jax.grad(problem.fun)(x, cs)), np.float64)
        step = np.clip(z - g, lo, hi) - z  # (−g without bounds)
        slack = 16 * eps * cs.size * np.max(problem.gscale(z, c), initial=0.0)
        assert np.max(np.abs(step), initial=0.0) <= tol + slack, (g, step, tol)
    else:  # SMALL_CHANGE: only where an ftol or xtol test was on
        assert ftol > 0 or xtol > 0


def _must_refuse(call: dict) -> bool:
    """Whether the drawn corruption is one jopt can always see: a count, a concrete
    tolerance, an integer ``x0`` or an objective that is not scalar."""
    if call["box"] in ("nan", "crossed"):
        return True
    if call["box"] != "none" and call["api"] not in BOUNDED_APIS:
        return True  # (an unbounded method given bounds)
    name = call.get("corrupted")
    traced = _tolerances_traced(call)
    if name in ("maxiter", "maxfev", "dtype"):
        return True
    if name in ("tol", "ftol", "xtol"):
        return not traced
    if name == "problem":
        return call["shape"] not in ((), (1,), (0,)) or call["api"] == "many"
    return False


# ----------------------------------------------------------------------- the test


@st.composite
def calls(draw: Any) -> dict:
    if POOL_SIZE:
        static = draw(st.sampled_from(_pool(POOL_SIZE)))._asdict()
    else:
        static = {k: draw(st.sampled_from(v)) for k, v in _STATIC.items()}
    call = dict(
        static,
        values=draw(st.sampled_from(["zeros", "fives", "normal", "huge", "nan"])),
        seed=draw(st.integers(0, 3)),
        c=draw(st.sampled_from([1.0, -2.0, 0.5])),
        c_shape=(),
        tol=draw(st.sampled_from([1e-6, 1e-3, 1e-30, 1e30, float("inf")])),
        ftol=draw(st.sampled_from([1e-12, 1e-6])) if static["ftol_on"] else 0.0,
        xtol=draw(st.sampled_from([1e-9, 1e-4])) if static["xtol_on"] else 0.0,
    )
    if static["traced_tol"] and static["wrap"] != "eager" and draw(st.booleans()):
        call["tol"] = float("nan")  # (a traced NaN cannot be refused: it must not succeed)
    if draw(st.integers(0, 3)) == 0:
        name, value = draw(st.sampled_from(CORRUPTIONS))
        call[name] = value
        call["corrupted"] = name
    return call


def _solve(call: dict) -> tuple[Any, bool]:
    """Make the drawn call; returns the result and whether it is batched."""
    problem = PROBLEMS[call["problem"]]
    x0 = _start(call["shape"], call["values"], call["dtype"], call["seed"])
    args = (jnp.full(call["c_shape"], call["c"], call["dtype"]),)
    options = dict(maxiter=call["maxiter"], maxfev=call["maxfev"])
    if call["box"] != "none":
        options["bounds"] = BOXES[call["box"]]
    tols = dict(tol=call["tol"], ftol=call["ftol"], xtol=call["xtol"])
    if call["api"] == "many":
        x0s = jax.tree.map(lambda a: jnp.stack([a, (a * 0.5).astype(a.dtype)]), x0)
        method = {"method": "l-bfgs-b"} if "bounds" in options else {}
        return jopt.minimize_many(problem.fun, x0s, args=args, **tols, **options,
                                  **method), True

    traced = _tolerances_traced(call)
    options = tuple(options.items())
    if call["wrap"] == "jit":
        traced_tols = {k: jnp.asarray(v) for k, v in tols.items()} if traced else {}
        solve = _jitted(call["problem"], call["api"], options,
                        None if traced else tuple(tols.items()))
        return solve(x0, args, traced_tols), False
    solve = _solver(call["problem"], call["api"], options)
    if call["wrap"] == "vmap":
        traced_tols = {k: jnp.asarray(v) for k, v in tols.items()} if traced else tols
        x0s = jax.tree.map(lambda a: jnp.stack([a, jnp.full_like(a, jnp.nan)]), x0)
        return jax.vmap(lambda x: solve(x, args, traced_tols))(x0s), True
    return solve(x0, args, tols), False


def _tolerances_traced(call: dict) -> bool:
    """Tolerances are traced (jit arguments) when drawn so — and always under a wrapping in
    a long run, whose jitted programs must repeat to be reused."""
    return ((call["traced_tol"] or POOL_SIZE > 0) and call["wrap"] != "eager"
            and call["api"] != "many")


def _solver(problem: str, api: str, options: tuple) -> Any:
    fun, opts = PROBLEMS[problem].fun, dict(options)

    def solve(x0: Any, args: tuple, tols: dict) -> Any:
        return jopt.minimize(fun, x0, args, method=api, **tols, **opts)

    return solve


@functools.lru_cache(maxsize=128)  # (each holds compiled programs: memory mappings)
def _jitted(problem: str, api: str, options: tuple, untraced: tuple | None) -> Any:
    """One jitted solve per static configuration (a fresh ``jax.jit`` per draw would
    recompile every time); untraced tolerances are part of the configuration."""
    solve = _solver(problem, api, options)
    if untraced is None:
        return jax.jit(solve)
    return jax.jit(lambda x0, args, _: solve(x0, args, dict(untraced)))


@pytest.fixture(autouse=True, scope="module")
def _roomy_program_store():
    """Keep more of the programs the fuzz draws compiled (the draws repeat). Not all: each
    compiled XLA:CPU program holds memory mappings, and a process has a limited number
    (4,096 kept programs aborted a long run inside the compiler)."""
    saved = programs.MAX_PROGRAMS
    programs.MAX_PROGRAMS = 256
    yield
    programs.MAX_PROGRAMS = saved


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(calls())
def test_public_api_never_claims_an_unverified_success(call: dict) -> None:
    try:
        res, batched = _solve(call)
    except (ValueError, TypeError) as err:
        assert _names_an_argument(err), f"{type(err).__name__} names no argument: {err}"
        event(f"refused: {type(err).__name__}")
        return
    assert not _must_refuse(call), f"accepted an illegal {call.get('corrupted', 'box')}"
    maxiter = call["maxiter"]
    event(f"solved, success={bool(np.any(res.success))}")
    for i in (range(np.shape(res.status)[0]) if batched else (None,)):
        _verify_member(res, i, PROBLEMS[call["problem"]], call["c"], call["c_shape"],
                       call["tol"], call["ftol"], call["xtol"], maxiter, BOXES[call["box"]])
