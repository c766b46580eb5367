"""``jopt.enable_small_loop_kernels()``: the same solves with XLA:CPU's small-loop setting.

The setting is read once per process, so each side runs in a fresh Python process: one
with XLA's defaults, one that calls ``jopt.enable_small_loop_kernels()`` before its first
JAX computation. Each solves chained Rosenbrock (n = 10 and 100) and a 1,000-variable
tridiagonal quadratic with L-BFGS and prints first-call (compile) and steady times.

Run: ``python examples/small_loops.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIZES = (10, 100, 1000)


def _child(mode: str) -> None:
    import jopt

    if mode == "on":
        jopt.enable_small_loop_kernels()  # before the first JAX computation
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
    for n in SIZES:
        fun, x0 = ((rosenbrock, jnp.asarray(np.tile([-1.2, 1.0], n // 2))) if n < 1000
                   else (tridiagonal, jnp.ones(n)))
        start = time.perf_counter()
        res = jopt.minimize(fun, x0, method="lbfgs", tol=1e-6)
        jax.block_until_ready(res.x)
        first = time.perf_counter() - start
        times = []
        for _ in range(20):
            start = time.perf_counter()
            jax.block_until_ready(jopt.minimize(fun, x0, method="lbfgs", tol=1e-6).x)
            times.append(time.perf_counter() - start)
        steady = float(np.median(times))
        rows.append({"n": n, "problem": "Rosenbrock" if n < 1000 else "TRIDIA",
                     "nit": int(res.nit), "status": int(res.status),
                     "first_s": first, "steady_s": steady})
    print(json.dumps(rows))


def run() -> dict[str, list[dict]]:
    """Both sides, each in a fresh process; returns their rows keyed by "off"/"on"."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = {}
    for mode in ("off", "on"):
        proc = subprocess.run([sys.executable, __file__, "--child", mode], env=env,
                              check=True, capture_output=True, text=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def format_table(results: dict[str, list[dict]]) -> str:
    lines = [f"{'problem':>16} {'nit off/on':>11} {'first call off → on (s)':>24} "
             f"{'solve off → on (ms)':>22} {'speed-up':>9}"]
    for off, on in zip(results["off"], results["on"], strict=True):
        lines.append(
            f"{off['problem'] + ' n=' + str(off['n']):>16} {off['nit']:>5}/{on['nit']:<5} "
            f"{off['first_s']:>11.2f} → {on['first_s']:<10.2f} "
            f"{off['steady_s'] * 1e3:>9.3f} → {on['steady_s'] * 1e3:<9.3f} "
            f"{off['steady_s'] / on['steady_s']:>8.1f}×")
    return "\n".join(lines)


def main(out_dir: Path | None = None) -> None:
    del out_dir
    print("L-BFGS through jopt.minimize, float64, tol 1e-6; two fresh processes: XLA's")
    print("defaults vs jopt.enable_small_loop_kernels() (one kernel per small loop).\n")
    print(format_table(run()))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        main()
