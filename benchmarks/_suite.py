"""The problem-suite harness shared by ``benchmarks.quasi_newton`` and ``benchmarks.newton``.

One record per (problem, method): solve once (compile + run), check ``‖∇f‖∞ <= tol`` with
``jax.grad`` at the returned point, then time steady-state calls. Records are JSON lines,
appended as they finish, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp


class Timeout(Exception):
    """Raised by a solver (e.g. a scipy callback) that ran past its guard time."""


# Steady-time sampling: at least 3 calls, more until they take BUDGET_S (at most MAX_REPS).
BUDGET_S = 0.25
MAX_REPS = 50


def run_one(problem, method: str, solve: Callable[[Any], dict], *, maxiter: int, tol: float,
            guard: float, long_s: float) -> dict:
    """Time ``solve(x0) -> {"x": ..., counters...}`` on ``problem``; check the gradient.

    Steady time is the median of the calls after the first: at least 3, and more (up to
    ``MAX_REPS``) until they add up to ``BUDGET_S``, so that sub-millisecond solves are not
    judged on three samples of a noisy machine; 1 call when the first took more than
    ``long_s`` seconds. compile = first − steady. A first call longer than ``guard``
    (or a :class:`Timeout`) is recorded as unsolved and not repeated.
    """
    rec: dict[str, Any] = {"problem": problem.name, "n": problem.n, "source": problem.source,
                           "method": method, "maxiter": maxiter}
    grad = jax.jit(jax.grad(problem.fun))
    fun = jax.jit(problem.fun)
    try:
        t0 = time.perf_counter()
        out = dict(solve(problem.x0))
        first = time.perf_counter() - t0
        x = jnp.asarray(out.pop("x"), jnp.float64)
        rec.update(out, first_s=first)
        if first > guard:
            raise Timeout
        times = []
        while len(times) < (MAX_REPS if first < long_s else 1):
            t0 = time.perf_counter()
            solve(problem.x0)
            times.append(time.perf_counter() - t0)
            if len(times) >= 3 and sum(times) >= BUDGET_S:
                break
        reps = len(times)
        steady = statistics.median(times)
        f = float(fun(x))
        ginf = float(jnp.max(jnp.abs(grad(x))))
        rec.update(steady_s=steady, reps=reps, compile_s=max(first - steady, 0.0), f=f,
                   gnorm=ginf, solved=bool(math.isfinite(f) and ginf <= tol))
    except Timeout:
        rec.update(solved=False, timeout=True, steady_s=None, compile_s=None)
    except Exception as e:  # a crash is a result too
        rec.update(solved=False, error=f"{type(e).__name__}: {e}"[:300])
        traceback.print_exc()
    return rec


def add_suite_arguments(ap, methods, maxiter: int) -> None:
    """The command-line options both suite scripts share (selection, limits, output)."""
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--quick", action="store_true", help="MGH + n = 1000 problems only")
    ap.add_argument("--problems", default="", help="comma-separated problem names")
    ap.add_argument("--methods", default="", help=f"comma-separated, from {tuple(methods)}")
    ap.add_argument("--maxiter", type=int, default=maxiter)
    ap.add_argument("--guard", type=float, default=60.0,
                    help="first call longer than this (s): unsolved, not repeated")
    ap.add_argument("--long", type=float, default=5.0,
                    help="a first call longer than this (s) is repeated once, not 3 times")
    ap.add_argument("--shard", default="0/1", help="i/k: run problems i, i+k, ...")
    ap.add_argument("--out", default="", help="JSON-lines output (appended; resumable)")
    ap.add_argument("--report", nargs="*", default=None, help="JSON-lines files to tabulate")
    ap.add_argument("--md", default="", help="write the report here (default: stdout)")
    ap.add_argument("--small-loop-kernels", action="store_true",
                    help="call jopt.enable_small_loop_kernels() first (XLA:CPU compiles each "
                         "small loop, every method's, into one kernel)")


def apply_process_options(args) -> None:
    """Process-wide settings that must precede the first JAX computation."""
    if getattr(args, "small_loop_kernels", False):
        import jopt

        jopt.enable_small_loop_kernels()


def select_problems(args) -> list:
    """The suite filtered by ``--sizes``, ``--quick``, ``--problems`` and ``--shard i/k``."""
    from benchmarks.problems import suite

    probs = suite(sizes=tuple(args.sizes))
    if args.quick:
        probs = [p for p in probs if p.n <= 1000]
    if args.problems:
        wanted = set(args.problems.split(","))
        probs = [p for p in probs if p.name in wanted]
    i, k = (int(v) for v in args.shard.split("/"))
    return probs[i::k]


def run_suite(args, methods: Iterable[str], run: Callable[[Any, str], dict],
              skip: Callable[[Any, str], bool] = lambda p, m: False) -> None:
    """Run ``run(problem, method)`` for every selected pair not yet in ``args.out``."""
    probs = select_problems(args)
    done = set()
    if args.out and os.path.exists(args.out):
        with open(args.out) as fh:
            done = {(r["problem"], r["method"]) for r in map(json.loads, fh)}
    for p in probs:
        for m in methods:
            if skip(p, m) or (p.name, m) in done:
                continue
            rec = run(p, m)
            rec["load1"] = os.getloadavg()[0]
            if getattr(args, "small_loop_kernels", False):
                rec["small_loop_kernels"] = True
            line = json.dumps(rec)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(line + "\n")
        jax.clear_caches()


def load_records(paths: Iterable[str]) -> dict[tuple[str, str], dict]:
    """``{(problem, method): record}`` from JSON-lines files (later lines win)."""
    recs: dict[tuple[str, str], dict] = {}
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            for line in fh:
                r = json.loads(line)
                recs[(r["problem"], r["method"])] = r
    return recs


def fmt(v, spec: str = ".3g") -> str:
    """``v`` formatted, or ``-`` for a missing or non-finite value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def med(xs, spec: str = ".3g") -> str:
    """The median of ``xs`` formatted, or ``-`` when empty."""
    return fmt(statistics.median(xs), spec) if xs else "-"
