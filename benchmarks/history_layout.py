"""Small-problem state layouts: chunks of at most 512 bytes (inline loop) vs one array.

XLA:CPU runs a compiled program's kernels inline only when every buffer they touch is at
most 512 bytes; otherwise it schedules them on its thread pool. An L-BFGS history of
m = 10 float64 pairs passes 512 bytes at n = 7, so ``jopt.scale_by_lbfgs`` keeps a small
problem's history as column chunks of at most 512 bytes (``chunked_history=True``, the
default; see ``jopt.transforms.quasi_newton.ColumnChunks``). This script times whole
``jopt.minimize`` solves with the two layouts, interleaved in one process:

* ``rows``: ``jopt.lbfgs(chunked_history=False)``, one ``(m, n)`` array per history;
* ``chunks``: ``jopt.lbfgs()``, the default.

``jopt.minimize(method="lbfgs")`` chunks only where the objective's own values are at most
512 bytes too (otherwise the program runs on the pool anyway); the column "by name" says
which layout it picks, and the summary gives the by-name time over ``rows``.

``--method bfgs`` compares ``jopt.bfgs(chunked_hessian=False)`` with ``jopt.bfgs()``,
whose ``(n, n)`` matrix is kept as row blocks of at most 512 bytes for 9 <= n <= 16.

Problems: the suite's problems with 7 <= n <= 64 (``benchmarks.problems``), and
extended Rosenbrock at n = 8 ... 48, where ``--force`` also times chunks past the
default's limit of 5 chunks (by raising ``_MAX_CHUNKS``), to show where the limit comes
from. Each solve's time is the median over ``--rounds`` rounds of a 40 ms block of calls
(the contenders interleaved, the order rotated each round). Also reported: whether both
layouts end at the same x, bit for bit, with the same iteration and evaluation counts.

Usage::

    taskset -c 1 python -m benchmarks.history_layout [--method lbfgs|bfgs] [--rounds 7]
        [--no-force] [--md out.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jopt  # noqa: E402
import jopt.transforms.quasi_newton as qn  # noqa: E402
from benchmarks import problems as P  # noqa: E402
from benchmarks._timing import emit  # noqa: E402
from jopt.minimize import _resolve_method  # noqa: E402

BLOCK_S = 0.04


def extended_rosenbrock(x):
    return jnp.sum(100.0 * (x[1::2] - x[::2] ** 2) ** 2 + (1.0 - x[::2]) ** 2)


def forced_chunks(memory: int = 10) -> optax.GradientTransformationExtraArgs:
    """L-BFGS whose history is chunked at any size (``_MAX_CHUNKS`` raised at init)."""
    base = qn.scale_by_lbfgs(memory)

    def init(params):
        old, qn._MAX_CHUNKS = qn._MAX_CHUNKS, 10**6
        try:
            return base.init(params)
        finally:
            qn._MAX_CHUNKS = old

    return optax.chain(optax.GradientTransformationExtraArgs(init, base.update),
                       jopt.scale_by_strong_wolfe())


def per_call(call) -> float:
    """Mean seconds per call over one block of calls lasting at least BLOCK_S."""
    n, t0 = 0, time.perf_counter()
    while True:
        call()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= BLOCK_S:
            return elapsed / n


def solver(fun, x0, tx):
    def call():
        res = jopt.minimize(fun, x0, method=tx, tol=1e-6, maxiter=10_000)
        jax.block_until_ready(res.x)
        return res

    return call


def cases(method: str, force: bool) -> list[tuple[str, object, jax.Array, dict]]:
    """(name, objective, x0, {layout: transform}) for every timed problem."""
    if method == "bfgs":
        rows, chunks, chunked = jopt.bfgs(chunked_hessian=False), jopt.bfgs(), jopt.bfgs()
        sizes = (10, 12, 16, 18)
    else:
        rows, chunks = jopt.lbfgs(chunked_history=False), jopt.lbfgs()
        chunked = forced_chunks() if force else chunks
        sizes = (8, 16, 24, 30, 36, 42, 48)
    out = []
    for p in P.suite(sizes=(1000,)):
        if (9 if method == "bfgs" else 7) <= p.n <= 64:
            out.append((p.name, jax.jit(p.fun), jnp.asarray(p.x0),
                        {"rows": rows, "chunks": chunks}))
    for n in sizes:
        out.append((f"ext-rosenbrock n={n}", jax.jit(extended_rosenbrock),
                    jnp.asarray(np.tile([-1.2, 1.0], n // 2)),
                    {"rows": rows, "chunks": chunked}))
    return out


def num_chunks(tx, x0: jax.Array) -> int:
    """Chunks per history leaf (L-BFGS) or row blocks (BFGS) in ``tx``'s state for ``x0``."""
    state = tx.init(x0)[0]
    if isinstance(state, qn.BFGSState):
        return len(state.inv_hessian)
    hist = state.s_history
    return len(hist.chunks) if isinstance(hist, qn.ColumnChunks) else 1


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=("lbfgs", "bfgs"), default="lbfgs")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-force", action="store_true",
                    help="time the default layout only (no chunks past _MAX_CHUNKS)")
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))
    todo = cases(args.method, force=not args.no_force)
    calls, info = {}, {}
    for name, fun, x0, layouts in todo:
        for layout, tx in layouts.items():
            call = solver(fun, x0, tx)
            res = call()
            calls[(name, layout)] = call
            info[(name, layout)] = (int(res.nit), int(res.nfev), np.asarray(res.x))
    keys = list(calls)
    times: dict = {k: [] for k in keys}
    for r in range(args.rounds):
        shift = (r * 7) % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(per_call(calls[key]))
    lines = [
        f"jax {jax.__version__} ({jax.default_backend()}), 1-min load "
        f"{os.getloadavg()[0]:.1f} at the end; whole `jopt.minimize` {args.method} solves "
        f"(float64, tol 1e-6), µs per call, median of {args.rounds} interleaved rounds; "
        f"rows: one array, chunks: blocks of at most 512 bytes.",
        "",
        "| problem | n | chunks | nit | nfev | same x (bits) | rows µs | chunks µs "
        "| chunks / rows | by name |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    ratios, by_name = [], []
    for name, fun, x0, layouts in todo:
        a, b = info[(name, "rows")], info[(name, "chunks")]
        ta = statistics.median(times[(name, "rows")]) * 1e6
        tb = statistics.median(times[(name, "chunks")]) * 1e6
        same = a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2])
        picks = num_chunks(_resolve_method(args.method, fun=fun, x=x0), x0) > 1
        if not name.startswith("ext-"):
            ratios.append(tb / ta)
            by_name.append(tb / ta if picks else 1.0)
        k = num_chunks(layouts["chunks"], x0)
        lines.append(f"| {name} | {x0.size} | {k} | {b[0]} | {b[1]} | "
                     f"{'yes' if same else 'no'} | {ta:.1f} | {tb:.1f} | {tb / ta:.2f} | "
                     f"{'chunks' if picks else 'rows'} |")
    if ratios:
        lines += ["", f"Suite problems: median chunks / rows {statistics.median(ratios):.2f} "
                  f"over {len(ratios)} problems ({sum(r < 1 for r in ratios)} faster); "
                  f"`method=\"{args.method}\"` (by name) / rows: median "
                  f"{statistics.median(by_name):.2f}, worst {max(by_name):.2f}."]
    emit(lines, args.md)


if __name__ == "__main__":
    main()
