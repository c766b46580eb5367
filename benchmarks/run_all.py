"""`make bench`: run every benchmark in its quick size and print the tables.

The full-size runs that produced ``benchmarks/RESULTS.md`` take hours on a 2-core CPU
(the quasi-Newton and Newton suites run 69 problems × 10 methods); their commands are
listed in RESULTS.md next to each table. This driver runs the cheap configuration of each
script in a fresh process, one after another, so a fresh machine can check that every
benchmark runs and see figures of the same kind within minutes.

Usage::

    python benchmarks/run_all.py [--only sweep,loop_floor]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, module arguments) — each runs as ``python -m benchmarks.<name> ...``.
QUICK: list[tuple[str, list[str]]] = [
    ("quasi_newton", ["--quick", "--problems", "ROSENBROCK-2,WOOD-4,TRIDIA-1000",
                      "--methods", "jopt-lbfgs,scipy-lbfgsb,optax-lbfgs"]),
    ("newton", ["--quick", "--no-wait", "--problems", "ROSENBROCK-2,TRIDIA-1000",
                "--methods", "jopt-newton-cg,scipy-newton-cg"]),
    ("hvp_cost", ["--no-wait", "--repeats", "5"]),
    ("loop_floor", ["--max-wait", "0", "--repeats", "3"]),
    ("compile_floor", ["--repeats", "1", "--problems", "ROSENBROCK-2,TRIDIA-1000"]),
    ("large_interleaved", ["--rounds", "2", "--problems", "TRIDIA-1000,LIARWHD-1000"]),
    ("breadth", ["--quick", "--methods", "jopt-lbfgs,scipy-lbfgsb,optax-lbfgs"]),
    ("gpu", ["--quick", "--no-battery", "--budget", "120", "--md", "/tmp/gpu_quick.md"]),
    ("small_loops", ["--rounds", "1", "--problems", "ROSENBROCK-2,TRIDIA-1000",
                     "--methods", "jopt-lbfgs,optx-lbfgs"]),
    ("adam_layouts", ["--sizes", "1048576", "--layouts", "1", "100", "--repeats", "5",
                      "--skip-slow"]),
    ("sweep", ["--repeats", "5", "--no-wait"]),
    ("minimize_many", ["--repeats", "1", "--segments", "16", "--loop-subset", "64"]),
    ("many_objectives", ["--count", "20", "--every", "10"]),
    ("outline_ab", ["--rounds", "1", "--problems", "ROSENBROCK-2,SROSENBR-10000"]),
    ("split_backward", ["--rounds", "1", "--problems", "GULF-3,BROYDN7D-1000",
                        "--eval-sizes", "1000"]),
    ("linesearch_ab", ["--rounds", "1", "--sizes", "1000", "--spread", "BDQRTIC-1000",
                       "--starts", "2"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    args = ap.parse_args()
    only = {s for s in args.only.split(",") if s}
    failed = []
    for name, extra in QUICK:
        if only and name not in only:
            continue
        print(f"\n===== benchmarks.{name} {' '.join(extra)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *extra], cwd=ROOT)
        print(f"===== {name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
