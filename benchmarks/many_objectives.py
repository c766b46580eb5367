"""Many distinct objectives in one process: does memory stay bounded?

A common pattern compiles a new program per solve: a new closure over each dataset,
``minimize(lambda w: loss(w, data_i), w0)`` (``args=`` would reuse one program, but not
every user knows, and a changing model structure needs a new program anyway). Each library
is run in a fresh child process that solves ``--count`` such least-squares problems
eagerly, in its own documented call:

* ``jopt``: ``jopt.minimize(fun, w0)``;
* ``optx``: ``optimistix.minimise(fn, optimistix.LBFGS(rtol=1e-10, atol=1e-10), w0)``;
* ``jaxopt``: ``jaxopt.LBFGS(fun=fun, tol=1e-6).run(w0)``.

Every ``--every`` solves the child reports its memory mappings (``/proc/self/maps``; Linux
allows 65,530 by default, ``vm.max_map_count``), resident memory, the mean seconds per solve
since the last report, and the largest error against the closed-form solution. A child that
dies is reported with its exit code (139: segmentation fault).

Usage::

    python -m benchmarks.many_objectives [--libraries jopt,optx,jaxopt] [--count 500]
        [--every 50] [--md out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

LIBRARIES = ("jopt", "optx", "jaxopt")


def _mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _solver(library: str):
    if library == "jopt":
        import jopt

        return lambda fun, w0: jopt.minimize(fun, w0).x
    if library == "optx":
        import optimistix as optx

        solver = optx.LBFGS(rtol=1e-10, atol=1e-10)
        return lambda fun, w0: optx.minimise(lambda w, _: fun(w), solver, w0, max_steps=10_000,
                                             throw=False).value
    if library == "jaxopt":
        import jaxopt

        return lambda fun, w0: jaxopt.LBFGS(fun=fun, tol=1e-6, maxiter=10_000).run(w0).params
    raise ValueError(f"unknown library {library!r}")


def child(library: str, count: int, every: int) -> None:
    """Solve ``count`` distinct ridge least-squares problems; print a JSON line per report."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    solve = _solver(library)
    rng = np.random.default_rng(0)
    lam = 0.1
    start, worst = time.perf_counter(), 0.0
    for i in range(1, count + 1):
        a = rng.normal(size=(20, 5))
        b = rng.normal(size=20)
        a_j, b_j = jnp.asarray(a), jnp.asarray(b)
        fun = lambda w, a_j=a_j, b_j=b_j: (  # noqa: E731  (a new closure per dataset)
            0.5 * jnp.sum((a_j @ w - b_j) ** 2) + 0.5 * lam * jnp.sum(w**2))
        w = np.asarray(solve(fun, jnp.zeros(5)))
        exact = np.linalg.solve(a.T @ a + lam * np.eye(5), a.T @ b)
        worst = max(worst, float(np.max(np.abs(w - exact))))
        if i % every == 0:
            now = time.perf_counter()
            print(json.dumps({"library": library, "solves": i, "mappings": _mappings(),
                              "rss_mb": round(_rss_mb(), 1),
                              "s_per_solve": (now - start) / every, "max_err": worst}),
                  flush=True)
            start, worst = now, 0.0


def run(library: str, count: int, every: int) -> dict:
    """Run one library's child; its reports and exit code."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.many_objectives", "--child",
                           library, "--count", str(count), "--every", str(every)],
                          capture_output=True, text=True, env=env, check=False)
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {"library": library, "returncode": proc.returncode, "reports": reports}


def markdown(results: list[dict], count: int) -> str:
    lines = [f"{count} distinct ridge least-squares objectives (20 × 5, a new closure each), "
             "solved eagerly one after another in one fresh process per library; float64. "
             "Mappings: lines of /proc/self/maps (the kernel's limit: 65,530). "
             "Produced by `python -m benchmarks.many_objectives`.", "",
             "| library | solves done | exit code | mappings at 100 / 200 / last | RSS at last "
             "(MB) | s per solve (last block) | max error vs closed form |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for r in results:
        reps = r["reports"]
        by = {rep["solves"]: rep for rep in reps}
        last = reps[-1] if reps else {}
        maps = " / ".join(str(by[k]["mappings"]) if k in by else "—" for k in (100, 200))
        lines.append(
            f"| {r['library']} | {last.get('solves', 0)} | {r['returncode']} | {maps} / "
            f"{last.get('mappings', '—')} | {last.get('rss_mb', '—')} | "
            f"{last.get('s_per_solve', float('nan')):.3f} | "
            f"{max((rep['max_err'] for rep in reps), default=float('nan')):.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--md", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.count, args.every)
        return
    results = [run(lib, args.count, args.every) for lib in args.libraries.split(",")]
    text = markdown(results, args.count)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
