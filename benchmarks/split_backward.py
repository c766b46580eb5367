"""The line search's gradient with its backward pass split off (a ``lax.cond``) against the
fused ``jax.value_and_grad``, in ``jopt.minimize``'s L-BFGS, interleaved in one process.

``jopt.minimize`` splits the backward pass where ``jopt._platform.split.split_backward_pays``
says so (transcendental elementwise functions, no matrix products). This script forces each
form on every problem, so it shows both what the rule picks and what it leaves: per problem,
iterations, median solve time, µs per iteration in each form, their ratio, and the rule's
choice. A second table times one evaluation of each form alone (``jax.jit``, median of
repeated calls), for every problem of the large set.

For each problem and form a fresh objective object is built (each form compiles its own
program); the two forms' solves alternate, ``--rounds`` rounds, order rotated each round.
Pin the process (``taskset -c 1``) for one-core figures.

Usage::

    taskset -c 1 python -m benchmarks.split_backward [--problems ...] [--method lbfgs]
        [--rounds 9] [--md out.md]
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
from benchmarks.outline_ab import _problem  # noqa: E402
from benchmarks.problems import large_problems, logistic_problems  # noqa: E402
from jopt import _platform as platform  # noqa: E402
from jopt._platform.split import split_backward_pays as _split_pays  # noqa: E402
from jopt.calculus import value_and_grad_fn  # noqa: E402


def split_backward_pays(fun, x) -> bool:
    """The platform's rule for ``fun`` at ``x``."""
    return _split_pays(jax.make_jaxpr(jax.value_and_grad(fun))(x).jaxpr)

DEFAULT = ("GULF-3,MEYER-3,BIGGS_EXP6-6,OSBORNE2-11,ROSENBROCK-2,BROYDN7D-1000,COSINE-1000,"
           "BDQRTIC-1000,TRIDIA-1000,BROYDN7D-10000,COSINE-10000,BDQRTIC-10000,FREUROTH-10000,"
           "EDENSCH-10000,LOGREG-2000x100")


def _find(name: str):
    if name.startswith("LOGREG"):
        return {p.name: p for p in logistic_problems()}[name]
    return _problem(name)


def _solver(problem, split: bool, maxiter: int, method: str = "lbfgs"):
    """``() -> result`` whose program was compiled with the given form of the gradient."""
    fun = problem.fun
    fresh = lambda x: fun(x)  # noqa: E731
    x0 = jnp.asarray(problem.x0)

    real_facts = platform._objective_facts

    def forced(f, x, args):
        return real_facts(f, x, args)[0], split

    def solve():
        # The line searches are where jopt evaluates through the rule (trust-ncg's one
        # evaluation per iteration, measured split too at 0.96-1.07x, stays fused).
        platform._objective_facts = forced
        try:
            res = jopt.minimize(fresh, x0, method=method, maxiter=maxiter)
            jax.block_until_ready(res.x)
        finally:
            platform._objective_facts = real_facts
        return res

    return solve


def _solves(names: list[str], rounds: int, maxiter: int, method: str) -> list[str]:
    lines = [
        "| problem | n | rule picks | nit (split / fused) | split ms | fused ms "
        "| split µs/it | fused µs/it | split / fused | first call split s | fused s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        p = _find(name)
        picks = "split" if split_backward_pays(p.fun, jnp.asarray(p.x0)) else "fused"
        solvers = {m: _solver(p, m, maxiter, method) for m in (True, False)}
        first, nit, times = {}, {}, {True: [], False: []}
        for m, solve in solvers.items():
            t0 = time.perf_counter()
            nit[m] = int(solve().nit)
            first[m] = time.perf_counter() - t0
        for r in range(rounds):
            for m in ((True, False) if r % 2 == 0 else (False, True)):
                t0 = time.perf_counter()
                solvers[m]()
                times[m].append(time.perf_counter() - t0)
        med = {m: statistics.median(v) for m, v in times.items()}
        per = {m: med[m] / nit[m] * 1e6 for m in med}
        lines.append(
            f"| {p.name} | {p.n} | {picks} | {nit[True]} / {nit[False]} | "
            f"{med[True] * 1e3:.2f} | {med[False] * 1e3:.2f} | {per[True]:.1f} | "
            f"{per[False]:.1f} | {per[True] / per[False]:.2f} | {first[True]:.2f} | "
            f"{first[False]:.2f} |")
        print(lines[-1], flush=True)
    return lines


def _evaluations(sizes: tuple[int, ...], reps: int = 100, rounds: int = 9) -> list[str]:
    lines = [
        "| problem | rule picks | split µs | fused µs | split / fused |",
        "|---|---|---:|---:|---:|",
    ]
    for n in sizes:
        for p in large_problems(n):
            x = jnp.asarray(p.x0) + 0.1
            forms = {m: jax.jit(value_and_grad_fn(p.fun, x, split=m)) for m in (True, False)}
            for f in forms.values():
                jax.block_until_ready(f(x))
            times = {True: [], False: []}
            for r in range(rounds):
                for m in ((True, False) if r % 2 == 0 else (False, True)):
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        out = forms[m](x)
                    jax.block_until_ready(out)
                    times[m].append((time.perf_counter() - t0) / reps)
            med = {m: statistics.median(v) * 1e6 for m, v in times.items()}
            picks = "split" if split_backward_pays(p.fun, x) else "fused"
            lines.append(f"| {p.name} | {picks} | {med[True]:.1f} | {med[False]:.1f} | "
                         f"{med[True] / med[False]:.2f} |")
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--maxiter", type=int, default=10_000)
    ap.add_argument("--method", default="lbfgs",
                    help="minimize's method (any with a jopt line search: lbfgs, bfgs, cg, "
                         "newton-cg, ...)")
    ap.add_argument("--eval-sizes", default="1000,10000",
                    help="sizes of the large set for the evaluation table ('' for none)")
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    lines = [
        f"{machine_line()}; jopt.minimize({args.method!r}), median of "
        f"{args.rounds} interleaved solves per form.",
        "",
    ]
    lines += _solves(args.problems.split(","), args.rounds, args.maxiter, args.method)
    lines += ["", "split / fused: the ratio of times per iteration (the two programs can "
              "take different paths where rounding differs).", ""]
    sizes = tuple(int(s) for s in args.eval_sizes.split(",") if s)
    if sizes:
        lines += ["One evaluation of f and ∇f alone (`jax.jit`, x = x0 + 0.1), median of "
                  f"{9} rounds of 100 calls:", ""]
        lines += _evaluations(sizes)
    emit(lines, args.md)


if __name__ == "__main__":
    main()
