"""Quasi-Newton suite (issue 3): jopt's lbfgs / bfgs / cg against scipy, optax, jaxopt, optimistix.

Every method runs every problem of :func:`benchmarks.problems.suite` in float64 with the same
target ``‖∇f‖∞ <= 1e-6`` (checked by this script with ``jax.grad`` at the returned point,
whatever the method's own stopping rule) and the same iteration limit.

* ``jopt-lbfgs`` / ``jopt-bfgs`` / ``jopt-cg``: ``jopt.minimize(fun, x0, method=..., tol=1e-6)``.
* ``scipy-lbfgsb`` / ``scipy-bfgs`` / ``scipy-cg``: ``scipy.optimize.minimize`` with
  ``jac=True`` on a jitted ``jax.value_and_grad`` (L-BFGS-B: ``gtol=1e-6, ftol=0``,
  ``maxfun=20·maxiter``; BFGS/CG: ``gtol=1e-6`` in the ∞-norm).
* ``optax-lbfgs``: ``optax.lbfgs()`` in the docs' ``while_loop`` (stops on ``‖g‖∞ <= tol``),
  jitted as a whole; nfev = 1 + Σ zoom line-search steps.
* ``jaxopt-lbfgs``: ``jaxopt.LBFGS(fun, tol=1e-6)``: its test is on ``‖g‖₂``, which implies
  ``‖g‖∞ <= 1e-6`` (slightly stricter than the others).
* ``optx-bfgs`` / ``optx-lbfgs``: ``optx.minimise(..., throw=False)`` with
  ``rtol = atol = 1e-10`` (optimistix stops on changes of f and y, not on the gradient).

Dense BFGS methods run only for n <= 1000 (scipy BFGS: n <= 500, its update is O(n³)).

Timing: first call (compile + run), then the median of further calls: at least 3, more (up
to 50) until they take 0.25 s; 1 when the first call took more than ``--long`` seconds.
compile = first - steady. A method whose first call takes more
than ``--guard`` seconds is recorded as unsolved and not repeated.

Usage::

    python -m benchmarks.quasi_newton --quick              # MGH + n = 1000
    python -m benchmarks.quasi_newton --out r.jsonl --shard 0/2   # (resumable: skips done)
    python -m benchmarks.quasi_newton --checks --checks-file checks.json  # float32 + vmap
    python -m benchmarks.quasi_newton --report r.jsonl --checks-file checks.json --md out.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import _suite  # noqa: E402
from benchmarks._suite import fmt, load_records  # noqa: E402

TOL = 1e-6
ALL_METHODS = (
    "jopt-lbfgs", "jopt-bfgs", "jopt-cg",
    "scipy-lbfgsb", "scipy-bfgs", "scipy-cg",
    "optax-lbfgs", "jaxopt-lbfgs", "optx-bfgs", "optx-lbfgs",
)
DENSE = {"jopt-bfgs", "scipy-bfgs", "optx-bfgs"}
# scipy's BFGS update costs two dense n×n matrix products (O(n³)) per iteration: ~0.15 s at
# n = 1000 here, ~100 s for one TRIDIA-1000 solve, so it runs only up to this size.
SCIPY_BFGS_MAX_N = 500
JAX_PEERS = ("optax-lbfgs", "jaxopt-lbfgs", "optx-lbfgs")


# ----------------------------------------------------------------------------- solvers
# Each builder returns ``solve(x0) -> (x, nit, nfev)``; ``nfev`` may be None.


def _jopt(method: str, fun: Callable, maxiter: int) -> Callable:
    import jopt

    def solve(x0):
        r = jopt.minimize(fun, x0, method=method, tol=TOL, maxiter=maxiter)
        r = jax.block_until_ready(r)
        return r.x, int(r.nit), int(r.nfev), int(r.status)

    return solve


def _scipy(method: str, fun: Callable, maxiter: int) -> Callable:
    import scipy.optimize as so

    vg = jax.jit(jax.value_and_grad(fun))

    def fg(x):
        f, g = vg(x)
        return float(f), np.asarray(g, dtype=np.float64)

    if method == "L-BFGS-B":
        options = {"gtol": TOL, "ftol": 0.0, "maxiter": maxiter, "maxfun": 20 * maxiter}
    else:
        options = {"gtol": TOL, "maxiter": maxiter, "norm": np.inf}

    def solve(x0):
        r = so.minimize(fg, np.asarray(x0, np.float64), jac=True, method=method,
                        options=options)
        return r.x, int(r.nit), int(r.nfev), int(r.status)

    return solve


def _optax(fun: Callable, maxiter: int) -> Callable:
    import optax
    import optax.tree_utils as otu

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    @jax.jit
    def run(x0):
        def step(carry):
            x, state, nfev = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
            x = optax.apply_updates(x, updates)
            nfev = nfev + otu.tree_get(state, "num_linesearch_steps")
            return x, state, nfev

        def cond(carry):
            _, state, _ = carry
            k = otu.tree_get(state, "count")
            err = jnp.max(jnp.abs(otu.tree_get(state, "grad")))
            return (k == 0) | ((k < maxiter) & (err > TOL))

        x, state, nfev = jax.lax.while_loop(cond, step, (x0, opt.init(x0), jnp.array(1)))
        return x, otu.tree_get(state, "count"), nfev

    def solve(x0):
        x, k, nfev = jax.block_until_ready(run(jnp.asarray(x0)))
        return x, int(k), int(nfev), None

    return solve


def _jaxopt(fun: Callable, maxiter: int) -> Callable:
    import jaxopt

    solver = jaxopt.LBFGS(fun=fun, tol=TOL, maxiter=maxiter)
    run = jax.jit(solver.run)

    def solve(x0):
        x, st = jax.block_until_ready(run(jnp.asarray(x0)))
        return x, int(st.iter_num), int(st.num_fun_eval), int(st.failed_linesearch)

    return solve


def _optx(kind: str, fun: Callable, maxiter: int) -> Callable:
    import optimistix as optx

    solver = (optx.BFGS if kind == "bfgs" else optx.LBFGS)(rtol=1e-10, atol=1e-10)
    fn = lambda y, args: fun(y)  # noqa: E731

    @jax.jit
    def run(y0):
        sol = optx.minimise(fn, solver, y0, max_steps=maxiter, throw=False)
        return sol.value, sol.stats["num_steps"], sol.result._value

    def solve(x0):
        x, k, res = jax.block_until_ready(run(jnp.asarray(x0)))
        return x, int(k), None, int(res)

    return solve


def build(method: str, fun: Callable, maxiter: int) -> Callable:
    """The solver ``x0 -> (x, nit, nfev, status)`` for one method name."""
    family, _, kind = method.partition("-")
    if family == "jopt":
        return _jopt(kind, fun, maxiter)
    if family == "scipy":
        return _scipy({"lbfgsb": "L-BFGS-B", "bfgs": "BFGS", "cg": "CG"}[kind], fun, maxiter)
    if family == "optax":
        return _optax(fun, maxiter)
    if family == "jaxopt":
        return _jaxopt(fun, maxiter)
    if family == "optx":
        return _optx(kind, fun, maxiter)
    raise ValueError(f"unknown method {method!r}")


# ----------------------------------------------------------------------------- running


def run_one(problem, method: str, maxiter: int, guard: float, long_s: float) -> dict:
    """Solve ``problem`` with ``method``; time it and check the gradient at the result."""
    solve = build(method, problem.fun, maxiter)

    def as_record(x0):
        x, nit, nfev, status = solve(x0)
        return {"x": x, "nit": nit, "nfev": nfev, "status": status}

    return _suite.run_one(problem, method, as_record, maxiter=maxiter, tol=TOL, guard=guard,
                          long_s=long_s)


def _skip(p, m: str) -> bool:
    return (m in DENSE and p.n > 1000) or (m == "scipy-bfgs" and p.n > SCIPY_BFGS_MAX_N)


def run_suite(args) -> None:
    methods = args.methods.split(",") if args.methods else list(ALL_METHODS)
    _suite.run_suite(args, methods,
                     lambda p, m: run_one(p, m, args.maxiter, args.guard, args.long),
                     skip=_skip)


# ----------------------------------------------------------------------------- checks


def run_checks(args) -> dict:
    """float32 Rosenbrock-type runs and the vmap(batch 1) nfev check for jopt lbfgs."""
    import jopt
    from benchmarks.problems import suite

    probs = {p.name: p for p in suite(sizes=(1000, 10000))}
    out: dict[str, Any] = {"float32": [], "vmap": []}
    for name in ("ROSENBROCK-2", "EXT_ROSENBROCK-10", "GENROSE-1000", "SROSENBR-1000",
                 "GENROSE-10000", "SROSENBR-10000"):
        p = probs[name]
        x0 = jnp.asarray(p.x0, jnp.float32)
        r = jopt.minimize(p.fun, x0, method="lbfgs", tol=1e-4, maxiter=args.maxiter)
        g = jax.grad(p.fun)(r.x)
        f = float(p.fun(r.x))
        ginf = float(jnp.max(jnp.abs(g)))
        nan = bool(not np.all(np.isfinite(np.asarray(r.x))) or not math.isfinite(float(r.fun))
                   or not np.all(np.isfinite(np.asarray(r.jac))))
        out["float32"].append({
            "problem": name, "x_dtype": str(r.x.dtype), "f_dtype": str(jnp.asarray(r.fun).dtype),
            "nit": int(r.nit), "nfev": int(r.nfev), "status": int(r.status), "f": f,
            "gnorm": ginf, "solved": bool(ginf <= 1e-4 * max(1.0, abs(f))), "nan": nan})
        print(out["float32"][-1], flush=True)
    for name in ("ROSENBROCK-2", "WOOD-4", "EXT_ROSENBROCK-10", "PENALTY1-10", "TRIDIA-1000"):
        p = probs[name]
        for method in ("lbfgs", "bfgs", "cg"):
            x0 = jnp.asarray(p.x0)
            calls = [0]

            def counted(x, fn=p.fun, calls=calls):
                # Counts the objective evaluations the compiled program executes (under
                # vmap with a batch of one: one call per batched evaluation).
                jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
                return fn(x)

            # Both inside `jax.jit`, so both compile with the same XLA options (an eager
            # call of a small problem uses jopt's faster-compiling options, which round
            # differently and can change a long run's path).
            solve = jax.jit(lambda z, m=method, fn=counted: jopt.minimize(
                fn, z, method=m, tol=TOL, maxiter=args.maxiter))
            r1 = jax.block_until_ready(solve(x0))
            executed = calls[0]
            calls[0] = 0
            rb = jax.block_until_ready(jax.jit(jax.vmap(solve))(x0[None]))
            executed_vmap = calls[0]
            rec = {"problem": name, "method": method, "nfev": int(r1.nfev),
                   "nfev_vmap": int(rb.nfev[0]), "executed": executed,
                   "executed_vmap": executed_vmap, "nit": int(r1.nit), "nit_vmap": int(rb.nit[0]),
                   "status": int(r1.status), "status_vmap": int(rb.status[0]),
                   "x_maxdiff": float(jnp.max(jnp.abs(r1.x - rb.x[0])))}
            rec["equal"] = rec["nfev"] == rec["nfev_vmap"]
            out["vmap"].append(rec)
            print(rec, flush=True)
    path = args.checks_file or args.out
    if path:
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


# ----------------------------------------------------------------------------- report


def report(paths: list[str], checks_path: str | None) -> str:
    """Markdown for RESULTS.md from the JSON-lines result files."""
    recs = load_records(paths)
    problems = sorted({k[0] for k in recs}, key=lambda s: (recs[(s, next(
        m for m in ALL_METHODS if (s, m) in recs))]["n"], s))
    nprob = {p: next(recs[(p, m)]["n"] for m in ALL_METHODS if (p, m) in recs) for p in problems}
    methods = [m for m in ALL_METHODS if any((p, m) in recs for p in problems)]
    ref = "scipy-lbfgsb"
    lines = ["## Quasi-Newton suite (issue 3)", ""]
    maxiters = sorted({r["maxiter"] for r in recs.values()})
    lines += [
        f"float64, target ‖∇f‖∞ ≤ 1e-6 checked by the benchmark with `jax.grad` at each "
        f"returned x (f finite), maxiter {maxiters}. {len(problems)} problems of "
        "`suite(sizes=(1000, 10000))` (dense BFGS only for n ≤ 1000; scipy BFGS, whose "
        "update is O(n³), only for n ≤ 500). OpenBLAS limited to 1 thread. CPU, 2 cores: the "
        "suite ran as 2 shards in parallel, each pinned to one core (`taskset`). Steady time "
        "= median of the calls after the first (at least 3, more up to 50 until they take "
        "0.25 s; 1 call when the first call took > 5 s); compile = "
        "first call − steady. Ratios are method time / scipy L-BFGS-B time (< 1 = faster "
        "than scipy). jaxopt's test is ‖g‖₂ ≤ 1e-6 (stricter than ‖g‖∞); optimistix "
        "stops on rtol = atol = 1e-10 changes in f and y. optax nfev = 1 + Σ zoom "
        "line-search steps. Produced by `python -m benchmarks.quasi_newton`."
        + (" **Run with `--small-loop-kernels`**: `jopt.enable_small_loop_kernels()` was "
           "called first, so XLA:CPU compiled every method's small loops (jopt's and the "
           "JAX peers') into single kernels." if any(r.get("small_loop_kernels")
                                                      for r in recs.values()) else ""),
        "",
        "| method | solved | of | median nit (both) | median nfev (both) | ref nit / nfev "
        "(same problems) | median time / scipy L-BFGS-B (both) | Σ compile (s) | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        rows = [recs[(p, m)] for p in problems if (p, m) in recs]
        solved = [r for r in rows if r.get("solved")]
        both = [r for r in solved if recs.get((r["problem"], ref), {}).get("solved")]
        nit = [r["nit"] for r in both]
        nfev = [r["nfev"] for r in both if r.get("nfev") is not None]
        rnit = [recs[(r["problem"], ref)]["nit"] for r in both]
        rnfev = [recs[(r["problem"], ref)]["nfev"] for r in both]
        ratio = [r["steady_s"] / recs[(r["problem"], ref)]["steady_s"] for r in both
                 if r.get("steady_s") and recs[(r["problem"], ref)].get("steady_s")]
        comp = sum(r.get("compile_s") or 0.0 for r in rows)
        errs = sum(1 for r in rows if r.get("error") or r.get("timeout"))
        lines.append(
            f"| {m} | {len(solved)} | {len(rows)} | {fmt(statistics.median(nit)) if nit else '-'}"
            f" | {fmt(statistics.median(nfev)) if nfev else '-'} | "
            f"{fmt(statistics.median(rnit)) if rnit else '-'} / "
            f"{fmt(statistics.median(rnfev)) if rnfev else '-'} | "
            f"{fmt(statistics.median(ratio)) if ratio else '-'} | {comp:.1f} | {errs} |")
    # n >= 1000: jopt-lbfgs vs JAX peers.
    big = [p for p in problems if nprob[p] >= 1000]
    lines += ["", "### n ≥ 1000: jopt-lbfgs steady time vs the JAX peers", "",
              "Time in ms (✗ = not solved); ratio = peer / jopt-lbfgs (> 1: jopt faster). "
              "scipy L-BFGS-B for reference.", "",
              "| problem | jopt-lbfgs ms | scipy-lbfgsb ms | "
              + " | ".join(f"{m} ms (ratio)" for m in JAX_PEERS) + " |",
              "|---|---|---|" + "---|" * len(JAX_PEERS)]

    def cell(p, m):
        r = recs.get((p, m))
        if r is None:
            return "n/a", None
        t = r.get("steady_s")
        mark = "" if r.get("solved") else " ✗"
        return (f"{t * 1e3:.1f}{mark}" if t else f"-{mark}"), t

    wins = {m: [0, 0] for m in JAX_PEERS}  # [jopt at or below, both solved]
    for p in big:
        jc, jt = cell(p, "jopt-lbfgs")
        sc, _ = cell(p, ref)
        peers = []
        for m in JAX_PEERS:
            c, t = cell(p, m)
            peers.append(f"{c} ({t / jt:.2f})" if (t and jt) else c)
            if t and jt and recs[(p, "jopt-lbfgs")].get("solved") and recs[(p, m)].get("solved"):
                wins[m][1] += 1
                wins[m][0] += t >= jt
        lines.append(f"| {p} | {jc} | {sc} | " + " | ".join(peers) + " |")
    lines += ["", "jopt-lbfgs at or below the peer, on the problems both solve: "
              + ", ".join(f"{m} {w}/{n}" for m, (w, n) in wins.items()) + "."]
    # Problems scipy L-BFGS-B solves and jopt lbfgs does not.
    lines += ["", "### Solved by scipy L-BFGS-B but not by jopt-lbfgs", "",
              "Status codes: 0 converged, 1 maxiter, 2 line search failed, 3 non-finite, "
              "6 precision loss.", "",
              "| problem | n | jopt status | jopt nit | jopt nfev | jopt ‖g‖∞ | jopt f | "
              "scipy nit | scipy nfev | scipy f |", "|---|---|---|---|---|---|---|---|---|---|"]
    missing = 0
    for p in problems:
        s, j = recs.get((p, ref)), recs.get((p, "jopt-lbfgs"))
        if s and j and s.get("solved") and not j.get("solved"):
            missing += 1
            lines.append(
                f"| {p} | {nprob[p]} | {j.get('status', j.get('error', '-'))} | "
                f"{j.get('nit', '-')} | {j.get('nfev', '-')} | {fmt(j.get('gnorm'))} | "
                f"{fmt(j.get('f'), '.6g')} | {s['nit']} | {s['nfev']} | {fmt(s['f'], '.6g')} |")
    if not missing:
        lines.append("| (none) | | | | | | | | | |")
    # Unsolved per method.
    lines += ["", "### Unsolved problems per method", ""]
    for m in methods:
        bad = [p for p in problems if (p, m) in recs and not recs[(p, m)].get("solved")]
        desc = []
        for p in bad:
            r = recs[(p, m)]
            why = ("timeout" if r.get("timeout") else "error" if r.get("error")
                   else f"‖g‖∞={fmt(r.get('gnorm'), '.1e')}")
            desc.append(f"{p} ({why})")
        lines.append(f"- **{m}** ({len(bad)}): " + (", ".join(desc) if desc else "none"))
    if checks_path and os.path.exists(checks_path):
        with open(checks_path) as fh:
            checks = json.load(fh)
        f32 = checks["float32"]
        lines += ["", "### float32 check (jopt lbfgs, tol = 1e-4)", "",
                  f"Criterion ‖∇f‖∞ ≤ 1e-4·max(1, |f|) at the returned x: "
                  f"{sum(r['solved'] for r in f32)} of {len(f32)} solved; NaN/Inf in the "
                  f"result: {sum(r['nan'] for r in f32)}.", "",
                  "| problem | x dtype | f dtype | status | nit | nfev | f | ‖g‖∞ | solved |"
                  " NaN |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in f32:
            lines.append(f"| {r['problem']} | {r['x_dtype']} | {r['f_dtype']} | {r['status']} "
                         f"| {r['nit']} | {r['nfev']} | {r['f']:.3g} | {r['gnorm']:.2e} | "
                         f"{r['solved']} | {r['nan']} |")
        vm = checks["vmap"]
        counted_runs = [r for r in vm if r.get("executed") is not None]
        matches = sum(r["executed"] == r["nfev"] and r["executed_vmap"] == r["nfev_vmap"]
                      for r in counted_runs)
        lines += ["", "### vmap check (batch of 1)", "",
                  "`jax.jit(jax.vmap(solve))` on a batch of one vs "
                  f"`solve = jax.jit(jopt.minimize)`: nfev "
                  f"equal in {sum(r['equal'] for r in vm)} of {len(vm)} runs. "
                  "*executed*: objective evaluations the compiled program ran (counted by a "
                  "callback in the objective); it equals the reported nfev in "
                  f"{matches} of {len(counted_runs)} runs, batched and unbatched, so vmap runs no "
                  "evaluation it does not report. Where the counts differ, the batched "
                  "program's kernels rounded a last bit differently and the two paths "
                  "parted (max |Δx|: the distance between the two solutions).", "",
                  "| problem | method | nfev | nfev (vmap) | executed | executed (vmap) | nit | "
                  "nit (vmap) | status | status (vmap) | max |Δx| |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in vm:
            lines.append(f"| {r['problem']} | {r['method']} | {r['nfev']} | {r['nfev_vmap']} "
                         f"| {r.get('executed', '-')} | {r.get('executed_vmap', '-')} "
                         f"| {r['nit']} | {r['nit_vmap']} | {r['status']} | "
                         f"{r['status_vmap']} | {r['x_maxdiff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _suite.add_suite_arguments(ap, ALL_METHODS, maxiter=10_000)
    ap.add_argument("--checks", action="store_true",
                    help="run the float32 and vmap checks (JSON to --checks-file or --out)")
    ap.add_argument("--checks-file", default=None,
                    help="the checks' JSON: written by --checks, tabulated by --report")
    args = ap.parse_args(argv)
    _suite.apply_process_options(args)
    if args.report is not None:
        text = report(args.report, args.checks_file)
        if args.md:
            with open(args.md, "w") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
    elif args.checks:
        run_checks(args)
    else:
        run_suite(args)


if __name__ == "__main__":
    main()
