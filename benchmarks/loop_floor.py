"""Solver loops against the launch floor (issue 8, part 2): per-iteration cost at n = 10,000.

(``--n 1000`` runs the same comparison at n = 1,000, where issue 3's per-problem timings
are decided by fixed per-kernel costs more than by bandwidth.)

A compiled solver iteration cannot cost less than a bare ``lax.while_loop`` doing the same
kind of vector work. The floor here is issue 8's: a ``while_loop`` whose body makes 40
vector updates (axpy) and 10 dot products on float64 vectors of length n, with the dot
products feeding the next updates so nothing is hoisted or dead-code eliminated.

Contenders, timed interleaved in the same run (float64, ‖∇f‖∞ <= 1e-6):

* ``jopt-lbfgs`` / ``jopt-newton-cg``: ``jopt.minimize`` — per iteration = time / nit;
* ``optax-lbfgs``: ``optax.lbfgs`` in its documented ``while_loop`` — time / iterations;
* ``jaxopt-lbfgs``: ``jaxopt.LBFGS.run`` — time / iterations;
* ``floor``: the bare loop above, for 1,000 iterations — time / 1,000;
* ``floor-lbfgs``: the problem's own irreducible L-BFGS work in a bare loop (one
  ``value_and_grad``, the two-loop recursion with m = 10, the pair write; fixed step, no
  line search or tests), for 1,000 iterations — time / 1,000.

Problems: TRIDIA-n (issue 8's example) and ARWHEAD-n from
:mod:`benchmarks.problems`. The ratio to the floor is what the issue targets (≤ 2× on the
GPU); on the CPU the same ratio is reported.

Usage::

    python -m benchmarks.loop_floor [--n 10000] [--repeats 7] [--md out.md]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import jopt  # noqa: E402
from benchmarks import problems as P  # noqa: E402
from benchmarks._timing import emit, median, wait_for_load  # noqa: E402
from benchmarks.quasi_newton import _jaxopt, _optax  # noqa: E402

FLOOR_ITERS = 1000


def _floor_jit(n: int):
    """``jax.jit`` with the XLA options ``jopt.minimize`` compiles an n-vector problem with,
    so the floors are built as well as jopt's own loop (level 1 alone made the bare L-BFGS
    iteration at n = 1,000 a third cheaper)."""
    from jopt.minimize import _COMPILER_OPTIONS, _profile

    options = _COMPILER_OPTIONS.get(_profile(False, jax.ShapeDtypeStruct((n,), jnp.float64)))
    return functools.partial(jax.jit, compiler_options=options)


def bare_loop(n: int, iters: int):
    """``while_loop`` with 40 axpys and 10 dot products per iteration (issue 8's floor)."""

    @_floor_jit(n)
    def run(x, y):
        def body(c):
            i, x, y, s = c
            for k in range(10):
                d = jnp.vdot(x, y) * 1e-12  # a scalar the updates depend on
                x = x + (d + 1e-3 * k) * y
                y = y - (d + 2e-3) * x
                x = x * (1.0 - 1e-9)
                y = y + 1e-9 * x
                s = s + d
            return i + 1, x, y, s

        return jax.lax.while_loop(lambda c: c[0] < iters, body,
                                  (jnp.zeros([], jnp.int32), x, y, jnp.zeros([], x.dtype)))

    def call():
        x = jnp.linspace(0.0, 1.0, n)
        out = jax.block_until_ready(run(x, x[::-1]))
        return int(out[0])

    return call


def bare_lbfgs(fun, x0, memory: int, iters: int):
    """The work no L-BFGS iteration avoids, in a bare ``while_loop``: one evaluation of
    ``value_and_grad``, the two-loop recursion over ``memory`` pairs and the ring-buffer
    write of the new pair; a fixed step instead of a line search, no stopping tests."""
    vg = jax.value_and_grad(fun)

    @_floor_jit(int(jnp.size(x0)))
    def run(x):
        n = x.size
        def body(c):
            i, x, g_prev, x_prev, s_h, y_h, rho, acc = c
            f, g = vg(x)
            s, y = x - x_prev, g - g_prev
            head = i % memory
            s_h, y_h = s_h.at[head].set(s), y_h.at[head].set(y)
            rho = rho.at[head].set(1.0 / jnp.maximum(jnp.vdot(s, y), 1e-30))

            def first(j, carry):
                q, alphas = carry
                k = (head - j) % memory
                a = rho[k] * jnp.vdot(s_h[k], q)
                return q - a * y_h[k], alphas.at[j].set(a)

            q, alphas = jax.lax.fori_loop(0, memory, first, (g, jnp.zeros(memory, x.dtype)))

            def second(j, r):
                k = (head - (memory - 1 - j)) % memory
                b = rho[k] * jnp.vdot(y_h[k], r)
                return r + (alphas[memory - 1 - j] - b) * s_h[k]

            d = jax.lax.fori_loop(0, memory, second, 1e-3 * q)
            return i + 1, x - 1e-9 * d, g, x, s_h, y_h, rho, acc + f

        zeros = jnp.zeros((memory, n), x.dtype)
        init = (jnp.zeros([], jnp.int32), x, jnp.zeros_like(x), x - 1e-3, zeros, zeros,
                jnp.zeros(memory, x.dtype), jnp.zeros([], x.dtype))
        return jax.lax.while_loop(lambda c: c[0] < iters, body, init)

    x0 = jnp.asarray(x0)

    def call():
        out = jax.block_until_ready(run(x0))
        return int(out[0])

    return call


def _jopt(fun, method: str):
    def call():
        res = jopt.minimize(fun, jnp.asarray(x0_of[fun]), method=method, tol=1e-6,
                            maxiter=20_000)
        jax.block_until_ready(res.x)
        return int(res.nit)

    return call


x0_of: dict = {}


def contenders(problem, n: int) -> dict:
    fun = jax.jit(problem.fun)
    x0_of[fun] = problem.x0
    optax_solve = _optax(problem.fun, 20_000)
    jaxopt_solve = _jaxopt(problem.fun, 20_000)
    return {
        "jopt-lbfgs": _jopt(fun, "lbfgs"),
        "jopt-newton-cg": _jopt(fun, "newton-cg"),
        "optax-lbfgs": lambda: optax_solve(problem.x0)[1],
        "jaxopt-lbfgs": lambda: jaxopt_solve(problem.x0)[1],
        "floor": bare_loop(n, FLOOR_ITERS),
        "floor-lbfgs": bare_lbfgs(problem.fun, problem.x0, 10, FLOOR_ITERS),
    }


def measure(problem, repeats: int, n: int) -> list[dict]:
    calls = contenders(problem, n)
    iters = {}
    for name, call in calls.items():  # compile + warm up
        iters[name] = call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    floor_us = median(times["floor"]) / FLOOR_ITERS * 1e6
    rows = []
    for name in names:
        per_it = median(times[name]) / max(iters[name], 1) * 1e6
        rows.append({"problem": problem.name, "method": name, "iters": iters[name],
                     "total_ms": median(times[name]) * 1e3, "per_iter_us": per_it,
                     "ratio_floor": per_it / floor_us})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000, help="problem dimension (even)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--md", default=None)
    ap.add_argument("--max-wait", type=float, default=900.0,
                    help="seconds to wait for a quiet machine before timing")
    args = ap.parse_args()
    wait_for_load(max_wait=args.max_wait)
    load = os.getloadavg()[0]
    n = args.n
    chosen = [p for p in P.large_problems(n) if p.name in (f"TRIDIA-{n}", f"ARWHEAD-{n}")]
    rows = [row for p in chosen for row in measure(p, args.repeats, n)]
    lines = [
        f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"jax {jax.__version__}, 1-min load {load:.1f} at start, "
        f"median of {args.repeats} interleaved runs.",
        "",
        "| problem | method | iterations | total ms | µs / iteration | × floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['problem']} | {r['method']} | {r['iters']} | {r['total_ms']:.1f} | "
                     f"{r['per_iter_us']:.1f} | {r['ratio_floor']:.2f} |")
    emit(lines, args.md)


if __name__ == "__main__":
    main()
