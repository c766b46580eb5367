"""Newton methods suite (issue 4): jopt's newton-cg / trust-ncg against scipy's Newton-CG,
trust-ncg and trust-krylov.

Every method runs every problem of :func:`benchmarks.problems.suite` in float64 with the same
target ``‖∇f‖∞ <= 1e-6``, checked by this script with ``jax.grad`` at the returned point
whatever the method's own stopping rule.

* ``jopt-newton-cg`` / ``jopt-trust-ncg``: ``jopt.minimize(fun, x0, method=..., tol=1e-6)``.
* ``scipy-newton-cg`` / ``scipy-trust-ncg`` / ``scipy-trust-krylov``:
  ``scipy.optimize.minimize`` given the SAME jitted gradient (``jax.jit(jax.grad(fun))``),
  a jitted objective and a jitted HVP ``jax.jit(lambda x, v: jopt.hvp(fun, x, v))`` as
  ``hessp``. Newton-CG stops on the step's l1 norm (``xtol·n``), so it gets ``xtol=1e-12``;
  the trust-region methods get ``gtol=1e-6`` (their test is on ‖g‖₂, stricter than ‖g‖∞).
  ``scipy_ok`` records whether scipy itself reported success.
* ``jopt-lbfgs`` (n >= 1000 only, for the "fewer iterations → less time?" question).

A scipy run is aborted (recorded as a timeout, unsolved) once it has run ``--guard`` seconds
(the abort is raised from inside the objective/gradient/HVP callbacks).

Timing: first call (compile + run), then the median of further calls: at least 3, more (up
to 50) until they take 0.25 s; 1 when the first call took more than ``--long`` seconds.
compile = first - steady.

Usage::

    python -m benchmarks.newton --quick --out r.jsonl        # MGH + n = 1000 (resumable)
    python -m benchmarks.newton --out r.jsonl --shard 0/2
    python -m benchmarks.newton --report r.jsonl --md out.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from benchmarks import _suite  # noqa: E402
from benchmarks._suite import Timeout, fmt, load_records, med  # noqa: E402
from benchmarks._timing import wait_for_load  # noqa: E402

TOL = 1e-6
ALL_METHODS = ("jopt-newton-cg", "jopt-trust-ncg", "scipy-newton-cg", "scipy-trust-ncg",
               "scipy-trust-krylov", "jopt-lbfgs")
COUNTERPART = {"jopt-newton-cg": "scipy-newton-cg", "jopt-trust-ncg": "scipy-trust-ncg",
               "scipy-trust-krylov": "scipy-trust-ncg"}
SCIPY_NAMES = {"newton-cg": "Newton-CG", "trust-ncg": "trust-ncg", "trust-krylov": "trust-krylov"}


# ----------------------------------------------------------------------------- solvers
# Each builder returns ``solve(x0) -> dict`` with x, nit, nfev, nhev, status (+ scipy_ok).


def _jopt(method: str, fun: Callable, maxiter: int) -> Callable:
    import jopt

    def solve(x0):
        r = jax.block_until_ready(jopt.minimize(fun, x0, method=method, tol=TOL,
                                                maxiter=maxiter))
        return {"x": r.x, "nit": int(r.nit), "nfev": int(r.nfev), "njev": int(r.njev),
                "nhev": int(r.nhev), "status": int(r.status)}

    return solve


def _scipy(method: str, fun: Callable, maxiter: int, guard: float) -> Callable:
    import scipy.optimize as so

    import jopt

    f_j = jax.jit(fun)
    g_j = jax.jit(jax.grad(fun))
    h_j = jax.jit(lambda x, v: jopt.hvp(fun, x, v))
    deadline = [math.inf]

    def check():
        if time.perf_counter() > deadline[0]:
            raise Timeout

    def f(x):
        check()
        return float(f_j(x))

    def g(x):
        check()
        return np.asarray(g_j(x), np.float64)

    def hp(x, p):
        check()
        return np.asarray(h_j(x, p), np.float64)

    if method == "Newton-CG":
        options = {"xtol": 1e-12, "maxiter": maxiter}
    else:
        options = {"gtol": TOL, "maxiter": maxiter}

    def solve(x0):
        deadline[0] = time.perf_counter() + guard
        r = so.minimize(f, np.asarray(x0, np.float64), jac=g, hessp=hp, method=method,
                        options=options)
        return {"x": r.x, "nit": int(r.nit), "nfev": int(r.nfev), "njev": int(r.njev),
                "nhev": int(r.nhev), "status": int(r.status), "scipy_ok": bool(r.success)}

    return solve


def build(method: str, fun: Callable, maxiter: int, guard: float) -> Callable:
    """The solver ``x0 -> dict`` for one method name."""
    family, _, kind = method.partition("-")
    if family == "jopt":
        # lbfgs gets the issue-3 iteration limit: it needs thousands of steps on some.
        return _jopt(kind, fun, max(maxiter, 10_000) if kind == "lbfgs" else maxiter)
    if family == "scipy":
        return _scipy(SCIPY_NAMES[kind], fun, maxiter, guard)
    raise ValueError(f"unknown method {method!r}")


# ----------------------------------------------------------------------------- running


def run_one(problem, method: str, maxiter: int, guard: float, long_s: float) -> dict:
    """Solve ``problem`` with ``method``; time it and check the gradient at the result."""
    return _suite.run_one(problem, method, build(method, problem.fun, maxiter, guard),
                          maxiter=maxiter, tol=TOL, guard=guard, long_s=long_s)


def run_suite(args) -> None:
    if not args.no_wait:
        wait_for_load()
    methods = args.methods.split(",") if args.methods else list(ALL_METHODS)
    _suite.run_suite(args, methods,
                     lambda p, m: run_one(p, m, args.maxiter, args.guard, args.long),
                     skip=lambda p, m: m == "jopt-lbfgs" and p.n < 1000)


# ----------------------------------------------------------------------------- report


def report(paths: list[str], qn_paths: list[str]) -> str:
    """Markdown for RESULTS.md from the JSON-lines result files."""
    recs = load_records(paths)
    nprob = {k[0]: r["n"] for k, r in recs.items()}
    problems = sorted(nprob, key=lambda s: (nprob[s], s))
    methods = [m for m in ALL_METHODS if any((p, m) in recs for p in problems)]
    loads = [r["load1"] for r in recs.values() if "load1" in r]
    lines = ["## Newton methods suite (issue 4)", ""]
    lines += [
        f"float64, target ‖∇f‖∞ ≤ 1e-6 checked by the benchmark with `jax.grad` at each "
        f"returned x (f finite), maxiter {sorted({r['maxiter'] for r in recs.values()})}. "
        f"{len(problems)} problems of `suite(sizes=(1000, 10000))` ran (of 69). scipy gets "
        "the same jitted gradient and a jitted `jopt.hvp` as `hessp`; Newton-CG with "
        "xtol = 1e-12 (its only stop), trust-ncg / trust-krylov with gtol = 1e-6 (on ‖g‖₂). "
        "A scipy run longer than the guard is aborted and counted unsolved. Steady time = "
        "median of the calls after the first (at least 3, more up to 50 until they take "
        "0.25 s; 1 call when the first took > 5 s); compile = "
        "first − steady. Before the timed runs each process waited (polling every 30 s, "
        "≤ 15 min) for the 1-minute load average to drop below 1.5; the load recorded after "
        f"each problem/method had median {med(loads, '.2f')} and max "
        f"{fmt(max(loads) if loads else None, '.2f')} — the machine is shared, so "
        "timings carry noise. Produced by `python -m benchmarks.newton`.",
        "",
        "Counterpart: jopt newton-cg ↔ scipy Newton-CG, jopt trust-ncg ↔ scipy trust-ncg, "
        "scipy trust-krylov ↔ scipy trust-ncg. \"both\" = problems solved by the method and "
        "its counterpart; time ratio = method / counterpart on n ≥ 1000 problems both "
        "solved (< 1: faster). scipy ok = scipy's own `success`.",
        "",
        "| method | solved | of | scipy ok | median nit (both) | median nhev (both) | "
        "counterpart nit / nhev (same) | median time ratio n≥1000 (both, #) | Σ compile (s) "
        "| timeouts/errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        rows = [recs[(p, m)] for p in problems if (p, m) in recs]
        solved = [r for r in rows if r.get("solved")]
        ref = COUNTERPART.get(m)
        both = [r for r in solved if ref and recs.get((r["problem"], ref), {}).get("solved")]
        ratio = [r["steady_s"] / recs[(r["problem"], ref)]["steady_s"] for r in both
                 if r["n"] >= 1000 and r.get("steady_s")
                 and recs[(r["problem"], ref)].get("steady_s")]
        ok = sum(1 for r in rows if r.get("scipy_ok")) if m.startswith("scipy") else "-"
        comp = sum(r.get("compile_s") or 0.0 for r in rows) if m.startswith("jopt") else None
        errs = sum(1 for r in rows if r.get("error") or r.get("timeout"))
        lines.append(
            f"| {m} | {len(solved)} | {len(rows)} | {ok} | {med([r['nit'] for r in both])} | "
            f"{med([r['nhev'] for r in both])} | "
            f"{med([recs[(r['problem'], ref)]['nit'] for r in both])} / "
            f"{med([recs[(r['problem'], ref)]['nhev'] for r in both])} | "
            f"{med(ratio)} ({len(ratio)}) | {fmt(comp, '.1f')} | {errs} |")
    # Per-problem table, n >= 1000.
    big = [p for p in problems if nprob[p] >= 1000]
    show = [m for m in methods if m != "jopt-lbfgs"]
    lines += ["", "### n ≥ 1000: per problem", "",
              "Cell: steady ms / nit / nhev (✗ = not solved, T = aborted by the guard).", "",
              "| problem | " + " | ".join(show) + " |", "|---|" + "---|" * len(show)]

    def cell(p, m):
        r = recs.get((p, m))
        if r is None:
            return "n/a"
        if r.get("timeout"):
            return "T"
        if r.get("error"):
            return "error"
        t = r.get("steady_s")
        mark = "" if r.get("solved") else " ✗"
        return f"{fmt(t * 1e3 if t else None, '.1f')} / {r.get('nit')} / {r.get('nhev')}{mark}"

    for p in big:
        lines.append(f"| {p} | " + " | ".join(cell(p, m) for m in show) + " |")
    # Problems scipy solves and jopt does not.
    lines += ["", "### Solved by scipy Newton-CG / trust-ncg but not by jopt's counterpart", "",
              "Status codes: 0 converged, 1 maxiter, 2 line search failed, 3 non-finite, "
              "4 small change, 6 precision loss.", "",
              "| problem | n | jopt method | jopt status | jopt nit | jopt nhev | jopt ‖g‖∞ | "
              "jopt f | scipy nit | scipy nhev | scipy f |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    missing = 0
    for jm in ("jopt-newton-cg", "jopt-trust-ncg"):
        sm = COUNTERPART[jm]
        for p in problems:
            s, j = recs.get((p, sm)), recs.get((p, jm))
            if s and j and s.get("solved") and not j.get("solved"):
                missing += 1
                lines.append(
                    f"| {p} | {nprob[p]} | {jm} | {j.get('status', j.get('error', '-'))} | "
                    f"{j.get('nit', '-')} | {j.get('nhev', '-')} | {fmt(j.get('gnorm'))} | "
                    f"{fmt(j.get('f'), '.6g')} | {s['nit']} | {s['nhev']} | "
                    f"{fmt(s['f'], '.6g')} |")
    if not missing:
        lines.append("| (none) | | | | | | | | | | |")
    lines += ["", "### Unsolved problems per method", ""]
    for m in methods:
        bad = [p for p in problems if (p, m) in recs and not recs[(p, m)].get("solved")]
        desc = []
        for p in bad:
            r = recs[(p, m)]
            why = ("timeout" if r.get("timeout") else "error" if r.get("error")
                   else f"‖g‖∞={fmt(r.get('gnorm'), '.1e')}, status {r.get('status')}")
            desc.append(f"{p} ({why})")
        lines.append(f"- **{m}** ({len(bad)}): " + (", ".join(desc) if desc else "none"))
    # newton-cg vs lbfgs.
    lb = {k[0]: r for k, r in recs.items() if k[1] == "jopt-lbfgs"}
    src = "this run"
    if not lb:
        qn = load_records(qn_paths)
        lb = {k[0]: r for k, r in qn.items() if k[1] == "jopt-lbfgs"}
        src = "the issue-3 run (`benchmarks/results/qn_shard*.jsonl`, other load and code)"
    lines += ["", "### jopt newton-cg vs jopt lbfgs (n ≥ 1000, both solved)", "",
              f"jopt-lbfgs from {src}. Rows: problems where newton-cg needs fewer "
              "iterations than lbfgs.", "",
              "| problem | newton-cg nit / nhev | lbfgs nit | newton-cg ms | lbfgs ms | "
              "time ratio ncg/lbfgs | newton-cg faster? |", "|---|---|---|---|---|---|---|"]
    wins = fewer = 0
    for p in big:
        nc, lr = recs.get((p, "jopt-newton-cg")), lb.get(p)
        if not (nc and lr and nc.get("solved") and lr.get("solved")):
            continue
        if nc["nit"] >= lr["nit"] or not (nc.get("steady_s") and lr.get("steady_s")):
            continue
        fewer += 1
        rt = nc["steady_s"] / lr["steady_s"]
        wins += rt < 1
        lines.append(f"| {p} | {nc['nit']} / {nc['nhev']} | {lr['nit']} | "
                     f"{nc['steady_s'] * 1e3:.1f} | {lr['steady_s'] * 1e3:.1f} | {rt:.2f} | "
                     f"{'yes' if rt < 1 else 'no'} |")
    lines += ["", f"newton-cg needs fewer iterations on {fewer} problems (n ≥ 1000, both "
              f"solved) and is also faster in wall time on {wins} of them."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _suite.add_suite_arguments(ap, ALL_METHODS, maxiter=10_000)
    ap.add_argument("--no-wait", action="store_true", help="skip the load-average wait")
    ap.add_argument("--qn", nargs="*", default=["benchmarks/results/qn_shard0.jsonl",
                                                 "benchmarks/results/qn_shard1.jsonl"])
    args = ap.parse_args(argv)
    _suite.apply_process_options(args)
    if args.report is not None:
        text = report(args.report, args.qn)
        if args.md:
            with open(args.md, "w") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
    else:
        run_suite(args)


if __name__ == "__main__":
    main()
