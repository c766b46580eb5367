"""``jopt.minimize`` with its program as one XLA:CPU function (the default) against the usual
program (``jopt._platform.outline.outline_solver_loops(False)``), interleaved in one process.

For each problem and each mode, a fresh objective function object is built (so each mode
compiles its own program), its first call is timed (compile + one solve), then the two
modes' solves alternate, ``--rounds`` rounds each, order rotated every round. Reported:
iterations, median solve time, µs per iteration and the ratio one-function / usual, and
the first calls. The process is pinned by the caller (``taskset -c 1``) for one-core
figures; run it unpinned to let the usual program's kernels use the other cores.

Problems come from ``benchmarks.problems``: MGH names, or ``NAME-n`` of the large set at any
n (e.g. ``TRIDIA-30000``).

Usage::

    taskset -c 1 python -m benchmarks.outline_ab [--problems ...] [--rounds 9] [--md out.md]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import jopt  # noqa: E402
from benchmarks._timing import emit, machine_line  # noqa: E402
from benchmarks.problems import large_problems, mgh_problems  # noqa: E402
from jopt._platform import outline as xla_cpu  # noqa: E402

DEFAULT = ("ROSENBROCK-2,WATSON-9,TRIDIA-1000,SROSENBR-10000,TRIDIA-10000,EDENSCH-10000,"
           "BROYDN7D-10000,TRIDIA-30000")


def _problem(name: str):
    mgh = {p.name: p for p in mgh_problems()}
    if name in mgh:
        return mgh[name]
    n = name.rpartition("-")[2]
    found = {p.name: p for p in large_problems(int(n))}
    if name not in found:
        raise SystemExit(f"unknown problem {name!r}: an MGH name or NAME-n of the large set")
    return found[name]


def _solver(problem, outline: bool, maxiter: int):
    """``x0 -> result`` compiled in the given mode (a fresh objective object: its own program)."""
    fun = problem.fun
    fresh = lambda x: fun(x)  # noqa: E731
    x0 = jnp.asarray(problem.x0)

    def solve():
        previous = xla_cpu.outline_solver_loops()
        xla_cpu.outline_solver_loops(outline)
        try:
            res = jopt.minimize(fresh, x0, maxiter=maxiter)
            jax.block_until_ready(res.x)
        finally:
            xla_cpu.outline_solver_loops(previous)
        return res

    return solve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--maxiter", type=int, default=10_000)
    ap.add_argument("--md", default=None)
    ap.add_argument("--beyond-limit", action="store_true",
                    help="outline past jopt's size limit too (to measure where it lies)")
    args = ap.parse_args(argv)
    if args.beyond_limit:
        import importlib

        importlib.import_module("jopt.minimize")._OUTLINE_MAX_BYTES = 1 << 40
    lines = [
        f"{machine_line()}; jopt.minimize L-BFGS, median of "
        f"{args.rounds} interleaved solves per mode"
        f"{' (outlined past the size limit too)' if args.beyond_limit else ''}.",
        "",
        "| problem | n | nit (1f / usual) | 1f ms | usual ms | 1f µs/it | usual µs/it "
        "| 1f / usual | first call 1f s | first call usual s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.problems.split(","):
        p = _problem(name)
        solvers = {m: _solver(p, m, args.maxiter) for m in (True, False)}
        first, nit, times = {}, {}, {True: [], False: []}
        for m, solve in solvers.items():
            t0 = time.perf_counter()
            nit[m] = int(solve().nit)
            first[m] = time.perf_counter() - t0
        for r in range(args.rounds):
            for m in ((True, False) if r % 2 == 0 else (False, True)):
                t0 = time.perf_counter()
                solvers[m]()
                times[m].append(time.perf_counter() - t0)
        med = {m: statistics.median(v) for m, v in times.items()}
        lines.append(
            f"| {p.name} | {p.n} | {nit[True]} / {nit[False]} | {med[True] * 1e3:.2f} | "
            f"{med[False] * 1e3:.2f} | {med[True] / nit[True] * 1e6:.1f} | "
            f"{med[False] / nit[False] * 1e6:.1f} | "
            f"{(med[True] / nit[True]) / (med[False] / nit[False]):.2f} | "
            f"{first[True]:.2f} | {first[False]:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", "1f / usual: the ratio of times per iteration (the two programs can take "
              "different paths where rounding differs)."]
    emit(lines, args.md)


if __name__ == "__main__":
    main()
