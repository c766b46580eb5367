"""jopt's strong-Wolfe line search against optax's zoom line search, under the same L-BFGS.

Issue 3's one remaining loss to optax at n ≥ 1,000 is BDQRTIC-10000, where optax's L-BFGS
needs fewer iterations than jopt's. This script finds out which part makes the
difference. Both contenders run ``jopt.scale_by_lbfgs(10)`` (the same two-loop direction,
γ = sᵀy/yᵀy, the same pair test) in ``jopt.minimize``. Only the line search differs:

* ``jopt``: ``jopt.lbfgs()``, i.e. ``scale_by_strong_wolfe(c1=1e-4, c2=0.9)``;
* ``optax-zoom``: ``optax.scale_by_zoom_linesearch(20, initial_guess_strategy="one")``,
  the search inside ``optax.lbfgs()``, with the same c1 and c2.

Table 1 gives, per problem of the large set: iterations, median solve time over
``--rounds`` interleaved rounds (order rotated each round), and the ratio. nfev is not
shown, because ``minimize`` cannot count the evaluations a foreign line search makes
inside its own state. Table 2 gives iteration counts from perturbed starts
``x0·(1 + k·1e-13)``, k = 0…``--starts``−1, on the problems named by ``--spread``. It
also runs ``optax.lbfgs()`` itself (optax's direction too), which shows whether the search
alone accounts for optax's count.

Usage::

    taskset -c 1 python -m benchmarks.linesearch_ab [--sizes 1000,10000] [--rounds 5]
        [--spread BDQRTIC-10000] [--starts 8] [--md out.md]
"""

from __future__ import annotations

import argparse
import statistics

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import jopt  # noqa: E402
from benchmarks._timing import emit, machine_line, time_calls_interleaved  # noqa: E402
from benchmarks.outline_ab import _problem  # noqa: E402
from benchmarks.problems import large_problems  # noqa: E402
from jopt.transforms.quasi_newton import scale_by_lbfgs  # noqa: E402

CONTENDERS = {
    "jopt": lambda: jopt.lbfgs(),
    "optax-zoom": lambda: optax.chain(
        scale_by_lbfgs(10), optax.scale_by_zoom_linesearch(20, initial_guess_strategy="one")),
}


def _solver(problem, make, maxiter: int):
    """``() -> result`` for a fresh objective object (its own compiled program)."""
    fun = problem.fun
    fresh = lambda x: fun(x)  # noqa: E731
    tx = make()
    x0 = jnp.asarray(problem.x0)

    def solve(x=x0):
        res = jopt.minimize(fresh, x, method=tx, maxiter=maxiter)
        jax.block_until_ready(res.x)
        return res

    return solve


def _solves(sizes: tuple[int, ...], rounds: int, maxiter: int) -> list[str]:
    lines = [
        "| problem | nit jopt | nit optax-zoom | status jopt / optax-zoom | jopt ms "
        "| optax-zoom ms | optax-zoom / jopt |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for n in sizes:
        for p in large_problems(n):
            solvers = {k: _solver(p, make, maxiter) for k, make in CONTENDERS.items()}
            first = {k: s() for k, s in solvers.items()}
            times = time_calls_interleaved(solvers, rounds)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            a, b = first["jopt"], first["optax-zoom"]
            lines.append(
                f"| {p.name} | {int(a.nit)} | {int(b.nit)} | {int(a.status)} / "
                f"{int(b.status)} | {med['jopt']:.2f} | {med['optax-zoom']:.2f} | "
                f"{med['optax-zoom'] / med['jopt']:.2f} |")
            print(lines[-1], flush=True)
    return lines


def _spread(names: list[str], starts: int, maxiter: int) -> list[str]:
    lines = ["| problem | contender | iterations from x0·(1 + k·1e-13), k = 0, 1, … | median |",
             "|---|---|---|---:|"]
    for name in names:
        p = _problem(name)
        makers = {**CONTENDERS, "optax.lbfgs()": optax.lbfgs}
        for k, make in makers.items():
            solve = _solver(p, make, maxiter)
            x0 = jnp.asarray(p.x0)
            its = [int(solve(x0 * (1 + j * 1e-13)).nit) for j in range(starts)]
            lines.append(f"| {p.name} | {k} | {', '.join(map(str, its))} | "
                         f"{statistics.median(its):.1f} |")
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000", help="sizes of the large set ('' for none)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--maxiter", type=int, default=10_000)
    ap.add_argument("--spread", default="BDQRTIC-10000",
                    help="problems for the perturbed-start table ('' for none)")
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    lines = [
        f"{machine_line()}, optax {optax.__version__}; "
        f"jopt.minimize with jopt.scale_by_lbfgs(10) and either line search, median of "
        f"{args.rounds} interleaved solves.",
        "",
    ]
    sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    if sizes:
        lines += _solves(sizes, args.rounds, args.maxiter)
        lines.append("")
    names = [s for s in args.spread.split(",") if s]
    if names:
        lines += ["Iterations from perturbed starts:", ""]
        lines += _spread(names, args.starts, args.maxiter)
    emit(lines, args.md)


if __name__ == "__main__":
    main()
