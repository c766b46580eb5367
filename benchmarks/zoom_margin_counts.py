"""Iteration and evaluation counts of one jopt method on the problem suite (no timing).

Used for ``results/zoom_margin.md``: run at two commits (before and after a change to the
line search) and compare the counts, which are deterministic. Solved means
‖∇f‖∞ ≤ 1e-6 by ``jax.grad`` at the returned x, as in ``benchmarks.quasi_newton``.

Usage::

    python -m benchmarks.zoom_margin_counts --method lbfgs > counts.txt
"""

from __future__ import annotations

import argparse
import statistics

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jopt  # noqa: E402
from benchmarks.problems import large_problems, mgh_problems  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="lbfgs")
    ap.add_argument("--maxiter", type=int, default=10_000)
    args = ap.parse_args(argv)
    rows = []
    for p in mgh_problems() + large_problems(1000) + large_problems(10000):
        if args.method == "bfgs" and p.n > 1000:
            continue
        r = jopt.minimize(p.fun, jnp.asarray(p.x0), method=args.method, maxiter=args.maxiter)
        g = float(jnp.max(jnp.abs(jax.grad(p.fun)(r.x))))
        ok = bool(np.isfinite(float(r.fun)) and g <= 1e-6)
        rows.append((p.name, int(r.nit), int(r.nfev), ok))
        print(f"{p.name:24s} nit {int(r.nit):6d} nfev {int(r.nfev):6d} {'ok' if ok else 'FAIL'}",
              flush=True)
    print(f"{args.method}: solved {sum(r[3] for r in rows)} of {len(rows)}, median nfev "
          f"{statistics.median(r[2] for r in rows)}")


if __name__ == "__main__":
    main()
