"""First-call compile time against its floor (issue 3's compile target).

Issue 3 asks for a first call that compiles in at most half of ``optimistix.LBFGS``'s time.
A compiled L-BFGS cannot compile faster than the smallest program that does an L-BFGS
iteration, so that program's compile time is measured beside the solvers':

* ``floor-lbfgs``: :func:`benchmarks.loop_floor.bare_lbfgs` — a ``while_loop`` with one
  ``value_and_grad``, the two-loop recursion over m = 10 pairs and the pair write; a
  fixed step (no line search, no stopping test, no counters, no status), compiled with
  the XLA options ``jopt.minimize`` uses for the problem's size;
* ``floor-wolfe``: :func:`benchmarks.loop_floor.bare_lbfgs_wolfe` — the smallest complete
  L-BFGS with a strong-Wolfe search: one ``while_loop``, one ``value_and_grad`` per step,
  bracketing/zoom arithmetic, the pair write and two-loop recursion on acceptance and the
  gradient test; none of ``jopt.minimize``'s statuses, counters, fallbacks or options.
  Issue 3 asks for a strong-Wolfe line search, so this, not ``floor-lbfgs``, is the floor
  of its compile target;
* ``floor-wolfe-1f``: the same program compiled as one XLA:CPU function, as
  ``jopt.minimize`` compiles its own on the CPU up to 256 KiB iterates (the single-function
  emitter compiles faster than the separate kernels), so jopt's outlined program is
  compared with a floor built the same way;
* ``objective``: ``jax.value_and_grad(fun)`` alone, with the same options;
* ``jopt-lbfgs``, ``optx-lbfgs``: the suite's solve calls (``benchmarks.quasi_newton``).

Compile time = first call − second call, for a fresh objective function object each time
(so nothing is reused from a cache), median of ``--repeats`` rounds, the contenders
interleaved in each round. Everything runs in one process, pinned by the caller.

Usage::

    taskset -c 1 python -m benchmarks.compile_floor [--repeats 3] [--md out.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

from benchmarks import quasi_newton as qn  # noqa: E402
from benchmarks._timing import emit  # noqa: E402
from benchmarks.loop_floor import _floor_jit, bare_lbfgs, bare_lbfgs_wolfe  # noqa: E402
from benchmarks.problems import suite  # noqa: E402

PROBLEMS = ("ROSENBROCK-2", "GULF-3", "WATSON-9", "TRIDIA-1000", "LIARWHD-1000",
            "COSINE-1000", "TRIDIA-10000", "LIARWHD-10000")
CONTENDERS = ("objective", "floor-lbfgs", "floor-wolfe", "floor-wolfe-1f", "jopt-lbfgs",
              "optx-lbfgs")


def _fresh(fun):
    """A new function object with ``fun``'s values: every cache keyed on it misses."""
    return lambda x: fun(x)


def _call(kind: str, problem):
    fun = _fresh(problem.fun)
    if kind == "objective":
        run = _floor_jit(problem.n)(jax.value_and_grad(fun))
        return lambda: jax.block_until_ready(run(problem.x0))
    if kind == "floor-lbfgs":
        return bare_lbfgs(fun, problem.x0, 10, 3)
    if kind in ("floor-wolfe", "floor-wolfe-1f"):
        run = bare_lbfgs_wolfe(fun, problem.x0, outline=kind == "floor-wolfe-1f")
        return lambda: jax.block_until_ready(run(problem.x0))
    solve = qn.build(kind, fun, 10_000)
    return lambda: solve(problem.x0)


def compile_seconds(kind: str, problem) -> float:
    call = _call(kind, problem)
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    call()
    return max(first - (time.perf_counter() - t0), 0.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    wanted = args.problems.split(",")
    probs = {p.name: p for p in suite(sizes=(1000, 10000))}
    jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))  # backend start-up, not counted
    lines = [
        f"jax {jax.__version__} ({jax.default_backend()}), 1-min load "
        f"{os.getloadavg()[0]:.1f} at start; compile seconds, median of {args.repeats} "
        f"interleaved rounds.",
        "",
        "| problem | objective | floor-lbfgs | floor-wolfe | floor-wolfe-1f | jopt-lbfgs "
        "| optx-lbfgs | floor-wolfe / optx | floor-wolfe-1f / optx | jopt / optx "
        "| jopt / floor-wolfe-1f |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sums = dict.fromkeys(CONTENDERS, 0.0)

    def row(label: str, t: dict) -> str:
        return (f"| {label} | {t['objective']:.3f} | {t['floor-lbfgs']:.3f} | "
                f"{t['floor-wolfe']:.3f} | {t['floor-wolfe-1f']:.3f} | "
                f"{t['jopt-lbfgs']:.3f} | {t['optx-lbfgs']:.3f} | "
                f"{t['floor-wolfe'] / t['optx-lbfgs']:.2f} | "
                f"{t['floor-wolfe-1f'] / t['optx-lbfgs']:.2f} | "
                f"{t['jopt-lbfgs'] / t['optx-lbfgs']:.2f} | "
                f"{t['jopt-lbfgs'] / t['floor-wolfe-1f']:.2f} |")

    for name in wanted:
        p = probs[name]
        times: dict[str, list[float]] = {k: [] for k in CONTENDERS}
        for r in range(args.repeats):
            k = r % len(CONTENDERS)
            order = CONTENDERS[k:] + CONTENDERS[:k]
            for kind in order:
                times[kind].append(compile_seconds(kind, p))
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in CONTENDERS:
            sums[k] += med[k]
        lines.append(row(name, med))
        print(lines[-1], flush=True)
    lines.append(row("**Σ**", sums))
    emit(lines, args.md)


if __name__ == "__main__":
    main()
