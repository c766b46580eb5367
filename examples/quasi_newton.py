"""jopt.minimize with L-BFGS, BFGS and nonlinear CG against scipy on Rosenbrock problems.

Prints a table of iterations, evaluations, final ‖∇f‖∞ and steady-state time (median of
5 calls of the already-compiled solver) for each method and scipy's counterpart given the
same jitted value-and-gradient. Every solver must reach ``‖∇f‖∞ <= tol`` (checked).

Run ``python examples/quasi_newton.py`` (``--quick``: n = 20, one timed call each).
"""

from __future__ import annotations

import argparse
import os
import time

# scipy's BLAS (OpenBLAS) spins several threads on tiny vectors; on a small machine shared
# with XLA's own threads that oversubscription made scipy's solvers up to 30× slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

import jopt  # noqa: E402


def chained_rosenbrock(x: jax.Array) -> jax.Array:
    """Σ 100 (x_{i+1} − x_i²)² + (1 − x_i)² (More, Garbow & Hillstrom 1981, #1 chained)."""
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


FULL = dict(n=100, repeats=5)
QUICK = dict(n=20, repeats=1)  # --quick


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(n: int = 100, tol: float = 1e-6, repeats: int = 5) -> list[dict]:
    """Solve chained Rosenbrock of size ``n`` from (−1.2, 1, −1.2, …) with each method.

    Times are medians of ``repeats`` calls after the first (compiling) one.
    """
    x0 = jnp.asarray(np.tile([-1.2, 1.0], n // 2))
    rows = []
    for method, scipy_method in [("lbfgs", "L-BFGS-B"), ("bfgs", "BFGS"), ("cg", "CG")]:
        res = jopt.minimize(chained_rosenbrock, x0, method=method, tol=tol)
        seconds = _median_time(lambda m=method: jopt.minimize(chained_rosenbrock, x0,
                                                              method=m, tol=tol).x, repeats)
        rows.append(dict(method=f"jopt {method}", nit=int(res.nit), nfev=int(res.nfev),
                         fun=float(res.fun), gmax=float(jnp.max(jnp.abs(res.jac))),
                         seconds=seconds, message=res.message))
        fg = jax.jit(jax.value_and_grad(chained_rosenbrock))

        def scipy_fg(x, fg=fg):
            f, g = fg(jnp.asarray(x))
            return float(f), np.asarray(g)

        options = {"gtol": tol, "maxiter": 10_000}
        if scipy_method == "L-BFGS-B":
            options["ftol"] = 0.0
        solve = lambda sm=scipy_method, o=options: scipy.optimize.minimize(  # noqa: E731
            scipy_fg, np.asarray(x0), jac=True, method=sm, options=o)
        ref = solve()
        rows.append(dict(method=f"scipy {scipy_method}", nit=int(ref.nit), nfev=int(ref.nfev),
                         fun=float(ref.fun), gmax=float(np.max(np.abs(ref.jac))),
                         seconds=_median_time(lambda s=solve: s().x, repeats),
                         message=ref.message))
    for r in rows:  # each solver's own stopping test is ‖∇f‖∞ <= tol
        assert r["gmax"] <= tol and r["fun"] < 1e-8, f"{r['method']}: {r['message']}"
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'method':<16}{'iters':>7}{'nfev':>7}{'f':>13}{'‖∇f‖∞':>11}{'time':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<16}{r['nit']:>7}{r['nfev']:>7}{r['fun']:>13.3e}"
                     f"{r['gmax']:>11.1e}{r['seconds'] * 1e3:>8.1f}ms")
    return "\n".join(lines)


def main(quick: bool = False) -> None:
    settings = QUICK if quick else FULL
    print(f"Chained Rosenbrock, n = {settings['n']}, ‖∇f‖∞ ≤ 1e-6, float64\n")
    print(format_table(run(**settings)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    main(quick=parser.parse_args().quick)
