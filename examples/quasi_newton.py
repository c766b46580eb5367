"""jopt.minimize with L-BFGS, BFGS and nonlinear CG against scipy on Rosenbrock problems.

Prints a table of iterations, evaluations, final ‖∇f‖∞ and steady-state time (median of
5 calls of the already-compiled solver) for each method and scipy's counterpart given the
same jitted value-and-gradient.
"""

from __future__ import annotations

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


def _median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(n: int = 100, tol: float = 1e-6) -> list[dict]:
    """Solve chained Rosenbrock of size ``n`` from (−1.2, 1, −1.2, …) with each method."""
    x0 = jnp.asarray(np.tile([-1.2, 1.0], n // 2))
    rows = []
    for method, scipy_method in [("lbfgs", "L-BFGS-B"), ("bfgs", "BFGS"), ("cg", "CG")]:
        res = jopt.minimize(chained_rosenbrock, x0, method=method, tol=tol)
        seconds = _median_time(lambda m=method: jopt.minimize(chained_rosenbrock, x0,
                                                              method=m, tol=tol).x)
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
                         seconds=_median_time(lambda s=solve: s().x), message=ref.message))
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'method':<16}{'iters':>7}{'nfev':>7}{'f':>13}{'‖∇f‖∞':>11}{'time':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<16}{r['nit']:>7}{r['nfev']:>7}{r['fun']:>13.3e}"
                     f"{r['gmax']:>11.1e}{r['seconds'] * 1e3:>8.1f}ms")
    return "\n".join(lines)


def main() -> None:
    print("Chained Rosenbrock, n = 100, ‖∇f‖∞ ≤ 1e-6, float64\n")
    print(format_table(run()))


if __name__ == "__main__":
    main()
