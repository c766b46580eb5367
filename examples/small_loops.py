"""Small solver loops as one XLA:CPU kernel: the usual code, jopt's per-program default,
and the process-wide ``jopt.enable_small_loop_kernels()``.

Each side runs in a fresh Python process (the process-wide setting is read once, before
the first JAX computation): "usual" turns jopt's per-program outlining off
(``jopt._platform.outline.outline_solver_loops(False)``), "jopt" is the default, "process" calls
``jopt.enable_small_loop_kernels()``. Each solves chained Rosenbrock (n = 10 and 100) and a
1,000-variable tridiagonal quadratic with L-BFGS and prints first-call (compile) and
steady times (``--quick``: n = 10 and 1,000 only, 3 timed calls instead of 20).

Run: ``python examples/small_loops.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIZES = (10, 100, 1000)
QUICK_SIZES = (10, 1000)


def _child(mode: str, sizes: tuple[int, ...] = SIZES, repeats: int = 20) -> None:
    import jopt

    if mode == "process":
        jopt.enable_small_loop_kernels()  # before the first JAX computation
    elif mode == "usual":
        jopt._platform.outline.outline_solver_loops(False)
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)

    def rosenbrock(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    def tridiagonal(x):  # TRIDIA (Buckley): an ill-conditioned quadratic, f* = 0
        i = jnp.arange(2, x.shape[0] + 1, dtype=x.dtype)
        return (x[0] - 1.0) ** 2 + jnp.sum(i * (2.0 * x[1:] - x[:-1]) ** 2)

    rows = []
    for n in sizes:
        fun, x0 = ((rosenbrock, jnp.asarray(np.tile([-1.2, 1.0], n // 2))) if n < 1000
                   else (tridiagonal, jnp.ones(n)))
        start = time.perf_counter()
        res = jopt.minimize(fun, x0, method="lbfgs", tol=1e-6)
        jax.block_until_ready(res.x)
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(jopt.minimize(fun, x0, method="lbfgs", tol=1e-6).x)
            times.append(time.perf_counter() - start)
        steady = float(np.median(times))
        rows.append({"n": n, "problem": "Rosenbrock" if n < 1000 else "TRIDIA",
                     "nit": int(res.nit), "status": int(res.status),
                     "success": bool(res.success),
                     "first_s": first, "steady_s": steady})
    print(json.dumps(rows))


MODES = ("usual", "jopt", "process")


def run(quick: bool = False) -> dict[str, list[dict]]:
    """Each mode in a fresh process; returns their rows keyed by mode."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JOPT_OUTLINE_LOOPS")}
    out = {}
    for mode in MODES:
        proc = subprocess.run([sys.executable, __file__, "--child", mode,
                               *(["--quick"] if quick else [])], env=env,
                              check=True, capture_output=True, text=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert all(row["success"] for row in out[mode]), f"{mode}: a solve failed"
    return out


def format_table(results: dict[str, list[dict]]) -> str:
    lines = [f"{'problem':>16} {'nit':>15} {'first call (s)':>20} "
             f"{'solve (ms)':>28} {'usual / jopt':>13}",
             f"{'':>16} {'usual/jopt/process':>15} {'usual/jopt/process':>20} "
             f"{'usual / jopt / process':>28}"]
    for usual, own, proc in zip(*(results[m] for m in MODES), strict=True):
        lines.append(
            f"{usual['problem'] + ' n=' + str(usual['n']):>16} "
            f"{usual['nit']:>5}/{own['nit']}/{proc['nit']:<5} "
            f"{usual['first_s']:>8.2f}/{own['first_s']:.2f}/{proc['first_s']:<5.2f} "
            f"{usual['steady_s'] * 1e3:>10.3f} / {own['steady_s'] * 1e3:.3f} / "
            f"{proc['steady_s'] * 1e3:<8.3f} {usual['steady_s'] / own['steady_s']:>8.1f}×")
    return "\n".join(lines)


def main(out_dir: Path | None = None, quick: bool = False) -> None:
    del out_dir
    print("L-BFGS through jopt.minimize, float64, tol 1e-6; three fresh processes: jopt's")
    print("per-program outlining off (usual kernels), on (the default), and the process-wide")
    print("jopt.enable_small_loop_kernels().\n")
    print(format_table(run(quick)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, *((QUICK_SIZES, 3) if args.quick else (SIZES, 20)))
    else:
        main(quick=args.quick)
