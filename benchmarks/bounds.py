"""Bound-constrained minimization: jopt's ``l-bfgs-b`` and ``trust-region-newton`` against
scipy and jaxopt on the problems of :mod:`benchmarks.bound_problems`.

Contenders (float64, all given the same target ``tol = 1e-6`` in their own terms):

* ``scipy-lbfgsb``: ``scipy.optimize.minimize(method="L-BFGS-B")`` on a jitted
  ``jax.value_and_grad`` (float64 NumPy in and out), ``gtol = 1e-6``, ``ftol = 0``,
  ``maxiter``, ``maxfun = 20·maxiter`` (Byrd, Lu, Nocedal & Zhu 1995; Morales & Nocedal
  2011).
* ``scipy-tnc``: ``method="TNC"`` (Nash's truncated Newton with finite-difference
  Hessian-vector products), ``scale = 1`` (no variable scaling, so its tests are in x's
  units), ``gtol = 1e-6`` (its test is ‖projected g‖₂ <= gtol on f rescaled by TNC),
  ``ftol = xtol = 0`` (with its defaults it stops on small changes at ‖pg‖∞ ≈ 4e-4 on
  EPT-50x50), ``maxfun = 20·maxiter``. Its nfev counts the gradient evaluations of its
  difference Hessian-vector products too.
* ``jaxopt-lbfgsb``: ``jaxopt.LBFGSB(tol=1e-6, maxiter)``, ``jax.jit(solver.run)``; its
  test is this benchmark's (‖P(x − g) − x‖∞); nfev = ``num_fun_eval``.
* ``jaxopt-pg``: ``jaxopt.ProjectedGradient`` (FISTA with backtracking,
  ``projection_box``), ``maxiter = --pg-maxiter``, ``tol = 1e-7``: its test is
  ‖Δx‖₂ / stepsize between FISTA iterates, which at 1e-6 stops with ‖pg‖∞ up to 5e-6 on
  the small suite problems. It counts no evaluations (nfev "-", nit shown).
* ``jopt-lbfgsb`` / ``jopt-trn``: ``jopt.minimize(fun, x0, method="l-bfgs-b" /
  "trust-region-newton", bounds=(lower, upper), tol=1e-6, maxiter)``; nhvp = the result's
  Hessian-vector-product counter. Probed once at start: if jopt rejects the method or
  ``bounds=``, the column says "n/a".

Solved (decided here, not by the solver): at the returned x, which must lie in the box
(to 1e-12·max(1, |bound|): rounding),
``‖P(x − ∇f(x)) − x‖∞ <= 1e-6`` with ``jax.grad`` in float64, and
``|f − f_ref| <= 1e-8·max(1, |f_ref|)``, where ``f_ref`` is the problem's stored f* — or,
when none is stored or a contender meeting the gradient test finds an f lower than f* by
more than that tolerance (flagged in the report), the lowest such f.

Timing: per problem, every contender's first call (compile + run), then ``--repeats``
rounds of one call each, interleaved (the order rotated every round) so that load from
other processes falls on all alike; steady time = median of the rounds. A first call over
``--long`` seconds gets one round; over ``--guard`` seconds, none (and scipy's are stopped
there). Time ratios are contender / scipy-lbfgsb on the problems with n >= 1000 that both
solved.

``--sif`` (held out: not used to tune anything) runs the bound-constrained problems of
sif2jax (``sif2jax.bounded_minimisation_problems``, 108 problems, n = 1 to 100,001) with
scipy-lbfgsb and the jopt methods only, in worker processes (sif2jax takes about a minute to
import): a (problem, contender) running past ``--sif-cap`` seconds is a timeout and its
worker is replaced. There the reference is the lowest f meeting the gradient test
(sif2jax's expected value, often rounded, is shown beside it).

Usage::

    python -m benchmarks.bounds --minpack --md benchmarks/results/bounds_minpack.md
    python -m benchmarks.bounds --suite --real --md benchmarks/results/bounds_suite_real.md
    python -m benchmarks.bounds --sif --md benchmarks/results/bounds_sif.md
    python -m benchmarks.bounds --minpack --problems EPT-50x50 --methods scipy-lbfgsb,jopt-lbfgsb

References:
  Byrd, R. H., Lu, P., Nocedal, J. & Zhu, C. (1995). A limited memory algorithm for bound
  constrained optimization. SIAM J. Sci. Comput. 16(5), 1190–1208.
  Lin, C.-J. & Moré, J. J. (1999). Newton's method for large bound-constrained
  optimization problems. SIAM J. Optim. 9(4), 1100–1127.
  Nash, S. G. (1984). Newton-type minimization via the Lanczos method. SIAM J. Numer.
  Anal. 21(4), 770–788.
  Beck, A. & Teboulle, M. (2009). A fast iterative shrinkage-thresholding algorithm for
  linear inverse problems. SIAM J. Imaging Sci. 2(1), 183–202.
  Morales, J. L. & Nocedal, J. (2011). Remark on "Algorithm 778: L-BFGS-B". ACM Trans.
  Math. Softw. 38(1), 7.
"""

from __future__ import annotations

import os

# Before numpy / scipy load OpenBLAS (as benchmarks/breadth.py does): multithreaded BLAS on
# these vector sizes made scipy's L-BFGS-B ~50× slower on this 2-core machine. Worker
# processes inherit the setting.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import bound_problems as bp  # noqa: E402
from benchmarks._timing import machine_line  # noqa: E402

TOL = 1e-6  # ‖projected gradient‖∞
PG_TOL = 1e-7  # jaxopt-pg's own test (see the docstring)
FEAS_TOL = 1e-12  # x may leave the box by this much (times max(1, |bound|)): rounding
F_RTOL = 1e-8  # |f − f_ref| <= F_RTOL·max(1, |f_ref|)
CONTENDERS = ("scipy-lbfgsb", "scipy-tnc", "jaxopt-lbfgsb", "jaxopt-pg", "jopt-lbfgsb",
              "jopt-trn")
SIF_CONTENDERS = ("scipy-lbfgsb", "jopt-lbfgsb", "jopt-trn")
JOPT_METHODS = {"jopt-lbfgsb": "l-bfgs-b", "jopt-trn": "trust-region-newton"}
REFERENCE = "scipy-lbfgsb"
LARGE_N = 1000


class Timeout(Exception):
    """A scipy solve ran past its guard time."""


# ---------------------------------------------------------------------------------------------
# Contenders: each builder returns solve() -> {"x": ..., counters...}
# ---------------------------------------------------------------------------------------------


def _scipy_fg(problem, deadline: list[float]) -> Callable:
    """Float64 NumPy (f, g) through a jitted value_and_grad; raises Timeout past deadline[0]."""
    vg = jax.jit(jax.value_and_grad(problem.fun))

    def fg(x):
        if time.perf_counter() > deadline[0]:
            raise Timeout
        v, g = vg(jnp.asarray(x))
        return float(v), np.asarray(g, np.float64)

    return fg


def _scipy(problem, method: str, maxiter: int, guard: float) -> Callable[[], dict]:
    from scipy.optimize import minimize

    deadline = [math.inf]
    fg = _scipy_fg(problem, deadline)
    bounds = list(zip(problem.lower, problem.upper, strict=True))
    if method == "L-BFGS-B":
        options = dict(gtol=TOL, ftol=0.0, maxiter=maxiter, maxfun=20 * maxiter)
    else:  # TNC
        options = dict(gtol=TOL, ftol=0.0, xtol=0.0, maxfun=20 * maxiter,
                       scale=np.ones(problem.n), offset=np.zeros(problem.n))

    def solve():
        deadline[0] = time.perf_counter() + guard
        res = minimize(fg, np.array(problem.x0), jac=True, method=method, bounds=bounds,
                       options=options)
        return {"x": res.x, "nfev": int(res.nfev), "nit": int(getattr(res, "nit", -1)),
                "status": int(res.status)}

    return solve


def _jaxopt_lbfgsb(problem, maxiter: int) -> Callable[[], dict]:
    import jaxopt

    solver = jaxopt.LBFGSB(fun=problem.fun, tol=TOL, maxiter=maxiter)
    run = jax.jit(solver.run)
    x0, box = jnp.asarray(problem.x0), (jnp.asarray(problem.lower), jnp.asarray(problem.upper))

    def solve():
        x, state = jax.block_until_ready(run(x0, bounds=box))
        return {"x": x, "nfev": int(state.num_fun_eval), "nit": int(state.iter_num)}

    return solve


def _jaxopt_pg(problem, maxiter: int) -> Callable[[], dict]:
    import jaxopt
    from jaxopt.projection import projection_box

    solver = jaxopt.ProjectedGradient(fun=problem.fun, projection=projection_box,
                                      tol=PG_TOL, maxiter=maxiter)
    run = jax.jit(solver.run)
    x0, box = jnp.asarray(problem.x0), (jnp.asarray(problem.lower), jnp.asarray(problem.upper))

    def solve():
        x, state = jax.block_until_ready(run(x0, hyperparams_proj=box))
        return {"x": x, "nit": int(state.iter_num)}

    return solve


def _jopt_counters(res) -> dict:
    nhvp = getattr(res, "nhvp", None)
    nhvp = res.nhev if nhvp is None else nhvp
    return {"nfev": int(res.nfev), "njev": int(res.njev), "nhvp": int(nhvp),
            "nit": int(res.nit), "status": int(res.status)}


def _jopt(problem, method: str, maxiter: int) -> Callable[[], dict]:
    import jopt

    x0, box = jnp.asarray(problem.x0), (jnp.asarray(problem.lower), jnp.asarray(problem.upper))

    def solve():
        res = jopt.minimize(problem.fun, x0, method=method, bounds=box, tol=TOL,
                            maxiter=maxiter)
        return {"x": jax.block_until_ready(res.x), **_jopt_counters(res)}

    return solve


def jopt_availability() -> dict[str, str | None]:
    """``{contender: None if usable else why not}``: one tiny bounded solve per method."""
    out: dict[str, str | None] = {}
    try:
        import jopt
    except Exception as e:  # no jopt at all
        return {k: f"import jopt: {e}" for k in JOPT_METHODS}
    for name, method in JOPT_METHODS.items():
        try:
            res = jopt.minimize(lambda x: jnp.sum((x - 2.0) ** 2), jnp.zeros(2), method=method,
                                bounds=(0.0, 1.0), tol=TOL)
            ok = np.allclose(np.asarray(res.x), 1.0, atol=1e-6)
            out[name] = None if ok else f"probe returned x = {np.asarray(res.x)}"
        except Exception as e:
            out[name] = f"{type(e).__name__}: {e}"[:160]
    return out


def build(name: str, problem, args) -> Callable[[], dict]:
    """The solve() closure of contender ``name`` on ``problem``."""
    if name == "scipy-lbfgsb":
        return _scipy(problem, "L-BFGS-B", args.maxiter, args.guard)
    if name == "scipy-tnc":
        return _scipy(problem, "TNC", args.maxiter, args.guard)
    if name == "jaxopt-lbfgsb":
        return _jaxopt_lbfgsb(problem, args.maxiter)
    if name == "jaxopt-pg":
        return _jaxopt_pg(problem, args.pg_maxiter)
    if name in JOPT_METHODS:
        return _jopt(problem, JOPT_METHODS[name], args.maxiter)
    raise ValueError(f"unknown contender {name!r}")


# ---------------------------------------------------------------------------------------------
# The independent check and the solved decision
# ---------------------------------------------------------------------------------------------


def _violation(excess: np.ndarray, bound: np.ndarray) -> float:
    """The largest ``excess / max(1, |bound|)`` over the finite bounds (0 if none > 0)."""
    finite = np.isfinite(bound)
    rel = excess[finite] / np.maximum(1.0, np.abs(bound[finite]))
    return float(np.max(rel, initial=0.0))


def check_point(problem, x, value_and_grad: Callable) -> dict:
    """f, ‖projected gradient‖∞ and the largest bound violation at x (float64)."""
    x = np.asarray(x, np.float64)
    v, g = value_and_grad(jnp.asarray(x))
    viol = max(_violation(problem.lower - x, problem.lower),
               _violation(x - problem.upper, problem.upper))
    return {"f": float(v), "pg": bp.projected_gradient_norm(x, np.asarray(g), problem.lower,
                                                            problem.upper),
            "infeas": viol}


def _tol_f(ref: float) -> float:
    return F_RTOL * max(1.0, abs(ref))


def decide(recs: list[dict], f_star: float | None) -> tuple[float | None, str]:
    """Set ``solved`` on every record of one problem; return ``(f_ref, note)``."""
    ok = [r for r in recs if r.get("pg") is not None and math.isfinite(r["f"])
          and r["pg"] <= TOL and r["infeas"] <= FEAS_TOL]
    best = min((r["f"] for r in ok), default=None)
    ref, note = f_star, ""
    if ref is None:
        ref, note = best, "f_ref = best f found"
    elif best is not None and best < ref - _tol_f(ref):
        ref, note = best, f"f* improved by {(f_star - best):.3g}"
    for r in recs:
        r["f_ref"] = ref
        passed = any(r is o for o in ok)
        r["solved"] = bool(passed and ref is not None and abs(r["f"] - ref) <= _tol_f(ref))
    return ref, note


# ---------------------------------------------------------------------------------------------
# Running one problem: first calls, then interleaved rounds
# ---------------------------------------------------------------------------------------------


def _first_call(name: str, problem, args, vg) -> tuple[dict, Callable | None]:
    rec: dict[str, Any] = {"problem": problem.name, "n": problem.n, "family": problem.family,
                           "method": name, "f_star": problem.f_star}
    try:
        solve = build(name, problem, args)
        t0 = time.perf_counter()
        out = dict(solve())
        rec["first_s"] = time.perf_counter() - t0
        x = out.pop("x")
        rec.update(out)
        rec.update(check_point(problem, x, vg))
        return rec, solve
    except Timeout:
        rec.update(timeout=True, first_s=args.guard)
    except Exception as e:  # a crash is a result too
        rec["error"] = f"{type(e).__name__}: {e}"[:300]
        traceback.print_exc()
    return rec, None


def _interleaved_rounds(solves: dict[str, tuple[Callable, int]]) -> dict[str, list[float]]:
    """Wall times of ``{name: (solve, repeats)}``: round r calls every solve still owed a
    repeat once, the order rotated by r."""
    times: dict[str, list[float]] = {k: [] for k in solves}
    order = list(solves)
    for r in range(max((reps for _, reps in solves.values()), default=0)):
        for k in order[r % len(order):] + order[: r % len(order)]:
            solve, reps = solves[k]
            if len(times[k]) >= reps:
                continue
            t0 = time.perf_counter()
            try:
                solve()
            except Timeout:
                continue
            times[k].append(time.perf_counter() - t0)
    return times


def run_problem(problem, names: Sequence[str], args, unavailable: dict) -> list[dict]:
    """Every contender on ``problem``: first calls, then ``args.repeats`` interleaved rounds."""
    vg = jax.jit(jax.value_and_grad(problem.fun))
    recs, solves = [], {}
    for name in names:
        if unavailable.get(name):
            recs.append({"problem": problem.name, "n": problem.n, "family": problem.family,
                         "method": name, "f_star": problem.f_star, "na": unavailable[name]})
            continue
        rec, solve = _first_call(name, problem, args, vg)
        recs.append(rec)
        if solve is not None and rec["first_s"] <= args.guard:
            solves[name] = (solve, 1 if rec["first_s"] > args.long else args.repeats)
    times = _interleaved_rounds(solves)
    for rec in recs:
        ts = times.get(rec["method"])
        if ts:
            rec["steady_s"], rec["reps"] = statistics.median(ts), len(ts)
        elif "first_s" in rec and not rec.get("timeout") and "error" not in rec:
            rec["steady_s"], rec["reps"] = rec["first_s"], 0  # past the guard: not repeated
    _, note = decide(recs, problem.f_star)
    for rec in recs:
        rec["note"] = note
        rec["load1"] = os.getloadavg()[0]
    return recs


# ---------------------------------------------------------------------------------------------
# sif2jax (held out), one worker process per (problem, contender)
# ---------------------------------------------------------------------------------------------


def sif_problems() -> list:
    """sif2jax's bound-constrained minimisation problems (quadratic ones included), by name."""
    import sif2jax

    seen, out = set(), []
    for p in list(sif2jax.bounded_minimisation_problems) + list(
            getattr(sif2jax, "bounded_quadratic_problems", [])):
        if p.name not in seen:
            seen.add(p.name)
            out.append(p)
    return out


def sif_as_bound_problem(p) -> bp.BoundProblem:
    """A sif2jax problem as a :class:`BoundProblem` (pytree y flattened; x0 projected)."""
    from jax.flatten_util import ravel_pytree

    y0, unravel = ravel_pytree(p.y0)
    lower, upper = p.bounds
    lo = np.asarray(ravel_pytree(lower)[0], np.float64) if lower is not None else -np.inf
    hi = np.asarray(ravel_pytree(upper)[0], np.float64) if upper is not None else np.inf
    args = p.args

    def fun(x):
        return p.objective(unravel(x), args)

    x0, lo, hi = bp._box(np.asarray(y0, np.float64), lo, hi)
    expected = p.expected_objective_value
    f_exp = None if expected is None else float(np.asarray(expected))
    return bp.BoundProblem(p.name, fun, x0, lo, hi, f_exp, "sif2jax", "sif2jax expected value",
                           "sif")


def _sif_repeats(first_s: float, args) -> int:
    """Timed calls after the first: ``args.repeats``, one when the first took over
    ``args.long`` (a first call is mostly compilation, so it is never the steady time),
    none when one more would not fit in the pair's ``args.sif_cap``."""
    if first_s <= args.long:
        return args.repeats
    return 1 if 2 * first_s <= args.sif_cap else 0


def _sif_pair(problem, contender: str, args) -> dict:
    """First call, then :func:`_sif_repeats` timed calls."""
    vg = jax.jit(jax.value_and_grad(problem.fun))
    rec, solve = _first_call(contender, problem, args, vg)
    if solve is not None:
        ts = []
        for _ in range(_sif_repeats(rec["first_s"], args)):
            t0 = time.perf_counter()
            solve()
            ts.append(time.perf_counter() - t0)
        rec["steady_s"] = statistics.median(ts) if ts else rec["first_s"]
        rec["reps"] = len(ts)
    f_exp = problem.f_star
    rec["f_expected"] = f_exp if f_exp is not None and math.isfinite(f_exp) else None
    rec["f_star"] = None
    return rec


def sif_worker(pairs: str, args) -> None:
    """Run ``pairs`` ("PROBLEM:contender,...") in order, printing ``START`` before each and
    one ``RESULT`` JSON line after it (sif2jax is imported once: it takes about a minute)."""
    todo = [tuple(s.split(":")) for s in pairs.split(",") if s]
    probs = {p.name: p for p in sif_problems()}
    print("READY", flush=True)
    built: dict[str, bp.BoundProblem] = {}
    for name, contender in todo:
        print(f"START {name}:{contender}", flush=True)
        try:
            if name not in built:
                built = {name: sif_as_bound_problem(probs[name])}  # one problem kept at a time
            rec = _sif_pair(built[name], contender, args)
        except Exception as e:
            rec = {"problem": name, "method": contender, "error": f"{type(e).__name__}: {e}"[:300]}
        rec.update(problem=name, method=contender, family="sif")
        print("RESULT " + json.dumps(rec), flush=True)
        jax.clear_caches()


def _line_queue(proc):
    """A queue fed with the worker's stdout lines by a thread (``None`` at its end)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _read_line(lines, deadline: float) -> str | None:
    """The next line, or None at ``deadline`` or when the worker has exited."""
    import queue

    try:
        return lines.get(timeout=max(deadline - time.perf_counter(), 0.0))
    except queue.Empty:
        return None


def _sif_worker_cmd(pairs: list[tuple[str, str]], args) -> list[str]:
    return [sys.executable, "-m", "benchmarks.bounds", "--sif-worker",
            ",".join(f"{p}:{c}" for p, c in pairs), "--maxiter", str(args.maxiter),
            "--repeats", str(args.repeats), "--long", str(args.long), "--guard",
            str(args.sif_cap)]


def _sif_stream(pairs: list[tuple[str, str]], args) -> dict[tuple[str, str], dict]:
    """Results of every pair; a pair running past ``args.sif_cap`` s is a timeout (its
    worker is killed and a new one goes on with the next pair)."""
    results: dict[tuple[str, str], dict] = {}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while len(results) < len(pairs):
        todo = [pc for pc in pairs if pc not in results]
        proc = subprocess.Popen(_sif_worker_cmd(todo, args), stdout=subprocess.PIPE, text=True,
                                cwd=root)
        lines = _line_queue(proc)
        current, deadline = None, time.perf_counter() + args.sif_import_cap
        t0 = time.perf_counter()
        while True:
            line = _read_line(lines, deadline)
            if line is None:  # past the deadline, or the worker exited
                proc.kill()
                proc.wait()
                pc = current or todo[0]
                why = {"timeout": True} if time.perf_counter() >= deadline else \
                    {"error": "worker exited without a result"}
                results[pc] = {"problem": pc[0], "method": pc[1], "family": "sif",
                               "wall_s": time.perf_counter() - t0, **why}
                break
            if line.startswith("START "):
                current = tuple(line[6:].strip().split(":"))
                deadline, t0 = time.perf_counter() + args.sif_cap, time.perf_counter()
            elif line.startswith("RESULT "):
                rec = json.loads(line[7:])
                rec["wall_s"] = time.perf_counter() - t0
                results[(rec["problem"], rec["method"])] = rec
                print(json.dumps({k: rec.get(k) for k in ("problem", "method", "f", "pg",
                                                          "steady_s", "error")}), flush=True)
                current = None
                if len(results) == len(pairs):
                    proc.wait()
                    break
    return results


def run_sif(args, names: Sequence[str], unavailable: dict) -> list[dict]:
    """The sif2jax problems with the available contenders (see :func:`_sif_stream`)."""
    import sif2jax  # noqa: F401  (fail here, not in every worker, when it is missing)

    probs = [p.name for p in sif_problems()]
    if args.problems:
        wanted = set(args.problems.split(","))
        probs = [p for p in probs if p in wanted]
    pairs = [(p, c) for p in probs for c in names if not unavailable.get(c)]
    results = _sif_stream(pairs, args)
    all_recs = []
    for p in probs:
        recs = [results.get((p, c)) or {"problem": p, "method": c, "family": "sif",
                                        "na": unavailable.get(c) or "not run"}
                for c in names]
        expected = next((r.get("f_expected") for r in recs if r.get("f_expected") is not None),
                        None)
        _, note = decide(recs, None)
        for r in recs:
            r["note"] = note + (f"; sif2jax expects {expected:.8g}" if expected is not None
                                else "")
        all_recs += recs
    return all_recs


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt(v, spec: str = ".3g") -> str:
    """``v`` formatted, or ``-`` when missing or not finite."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def _ms(s) -> str:
    return "-" if s is None else (f"{1e3 * s:.3g} ms" if s < 1 else f"{s:.3g} s")


def _cell(r: dict) -> str:
    if r.get("na"):
        return "n/a"
    if r.get("timeout"):
        return "timeout"
    if "error" in r:
        return "error"
    mark = "✓" if r.get("solved") else "✗"
    ev = r.get("nfev")
    ev = f" · {ev}" if ev is not None else (f" · it {r['nit']}" if "nit" in r else "")
    if r.get("nhvp"):
        ev += f" + {r['nhvp']} hvp"
    return f"{mark} {_ms(r.get('steady_s'))}{ev}"


def _why(r: dict) -> str:
    if r.get("na"):
        return "n/a: " + r["na"]
    if r.get("timeout"):
        return "timeout"
    if "error" in r:
        return r["error"][:120]
    if r.get("solved"):
        return ""
    why = []
    if r.get("infeas", 0) > FEAS_TOL:
        why.append(f"infeasible by {r['infeas']:.2g}")
    if r.get("pg") is not None and r["pg"] > TOL:
        why.append("pg > tol")
    if r.get("f_ref") is not None and r.get("f") is not None and \
            abs(r["f"] - r["f_ref"]) > _tol_f(r["f_ref"]):
        why.append("f ≠ f_ref")
    return ", ".join(why)


def _median(xs, spec: str = ".3g") -> str:
    return fmt(statistics.median(xs), spec) if xs else "-"


def _versus_reference(solved: list[dict], by: dict) -> tuple[list[float], list[float]]:
    """Steady-time ratios (n >= LARGE_N) and nfev ratios against scipy-lbfgsb, on the
    problems both solved."""
    times, evals = [], []
    for r in solved:
        ref = by.get((r["problem"], REFERENCE))
        if ref is None or not ref.get("solved"):
            continue
        if r.get("n", 0) >= LARGE_N and r.get("steady_s") and ref.get("steady_s"):
            times.append(r["steady_s"] / ref["steady_s"])
        if r.get("nfev") and ref.get("nfev"):
            evals.append(r["nfev"] / ref["nfev"])
    return times, evals


def _summary_row(c: str, mine: list[dict], by: dict, families: list[str]) -> str:
    solved = [r for r in mine if r.get("solved")]
    per_family = [f"{sum(1 for r in solved if r.get('family', 'sif') == f)} / "
                  f"{sum(1 for r in mine if r.get('family', 'sif') == f)}" for f in families]
    times, evals = _versus_reference(solved, by)
    nfev = [r["nfev"] for r in solved if r.get("nfev") is not None]
    nhvp = [r["nhvp"] for r in solved if r.get("nhvp")]
    errors = sum(1 for r in mine if "error" in r)
    timeouts = sum(1 for r in mine if r.get("timeout"))
    return (f"| {c} | {len(solved)} / {len(mine)} | " + " | ".join(per_family)
            + f" | {_median(times)} ({len(times)}) | {_median(nfev, '.6g')} | "
              f"{_median(evals)} | {_median(nhvp, '.6g')} | {errors} / {timeouts} |")


def summary_rows(recs: list[dict], names: Sequence[str]) -> list[str]:
    """Per contender: solved counts (by family), time ratio vs scipy-lbfgsb at n >= 1000,
    and nfev medians."""
    by = {(r["problem"], r["method"]): r for r in recs}
    probs = list(dict.fromkeys(r["problem"] for r in recs))
    families = list(dict.fromkeys(r.get("family", "sif") for r in recs))
    head = ["contender", "solved", *families,
            f"median time / {REFERENCE} (n ≥ {LARGE_N}, both solved; count)",
            "median nfev (solved)", f"median nfev / {REFERENCE}'s (both solved)",
            "median nhvp (solved)", "errors / timeouts"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in names:
        mine = [by[(p, c)] for p in probs if (p, c) in by]
        if mine and all(r.get("na") for r in mine):
            rows.append(f"| {c} | n/a | " + " | ".join("-" for _ in head[2:]) + " |")
        else:
            rows.append(_summary_row(c, mine, by, families))
    return rows


def problem_rows(problems: Sequence) -> list[str]:
    rows = ["| problem | n | finite lower / upper | f* | f* from | source |",
            "|---|---|---|---|---|---|"]
    for p in problems:
        rows.append(f"| {p.name} | {p.n} | {int(np.isfinite(p.lower).sum())} / "
                    f"{int(np.isfinite(p.upper).sum())} | {fmt(p.f_star, '.12g')} | "
                    f"{p.f_star_source} | {p.source} |")
    return rows


def result_rows(recs: list[dict], names: Sequence[str]) -> list[str]:
    """One row per problem, one cell per contender: solved mark, steady time, nfev(+nhvp)."""
    by = {(r["problem"], r["method"]): r for r in recs}
    rows = ["| problem | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for p in dict.fromkeys(r["problem"] for r in recs):
        n = next((r.get("n") for r in recs if r["problem"] == p and r.get("n")), "")
        rows.append(f"| {p} | {n} | " + " | ".join(_cell(by[(p, c)]) if (p, c) in by else "-"
                                                  for c in names) + " |")
    return rows


def detail_rows(recs: list[dict]) -> list[str]:
    rows = ["| problem | contender | solved | f | (f − f_ref) / max(1, abs(f_ref)) | ‖pg‖∞ | "
            "steady | first call | nfev | nhvp | nit | status | why not / note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        if r.get("na"):
            continue
        rel = None
        if r.get("f") is not None and r.get("f_ref") is not None:
            rel = (r["f"] - r["f_ref"]) / max(1.0, abs(r["f_ref"]))
        why = "; ".join(s for s in (_why(r), r.get("note", "")) if s)
        rows.append(
            f"| {r['problem']} | {r['method']} | {'✓' if r.get('solved') else '✗'} | "
            f"{fmt(r.get('f'), '.10g')} | {fmt(rel, '.1e')} | {fmt(r.get('pg'), '.1e')} | "
            f"{_ms(r.get('steady_s'))} | {_ms(r.get('first_s'))} | {fmt(r.get('nfev'), 'd')} | "
            f"{fmt(r.get('nhvp'), 'd')} | {fmt(r.get('nit'), 'd')} | "
            f"{fmt(r.get('status'), 'd')} | {why} |")
    return rows


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"python {platform.python_version()}"]
    for dist in ("jopt", "scipy", "jaxopt", "sif2jax"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} -")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__)).stdout.strip()
        out.append(f"commit {commit or '?'}")
    except OSError:
        pass
    return ", ".join(out)


def report(recs: list[dict], problems: Sequence, names: Sequence[str], args,
           unavailable: dict, machine: str) -> str:
    cmd = "python -m benchmarks.bounds " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [f"`{cmd}`", "",
             f"## Bound-constrained benchmark ({time.strftime('%Y-%m-%d')})", "",
             f"{machine}; {versions()}; OpenBLAS threads "
             f"{os.environ.get('OPENBLAS_NUM_THREADS')}.", "",
             f"Solved: x in the box, ‖P(x − ∇f) − x‖∞ ≤ {TOL:g} (checked here with jax.grad), "
             f"and |f − f_ref| ≤ {F_RTOL:g}·max(1, |f_ref|); f_ref = stored f* (or the best f "
             f"meeting the gradient test, where lower or where no f* is stored). Steady time = "
             f"median of {args.repeats} interleaved calls after the first (1 call when the "
             f"first took > {args.long:g} s). maxiter {args.maxiter} (jaxopt-pg "
             f"{args.pg_maxiter}). Cells: solved mark, steady time, nfev (+ Hessian-vector "
             f"products). See the module docstring of benchmarks/bounds.py for each "
             f"contender's settings.", ""]
    missing = {k: v for k, v in unavailable.items() if v and k in names}
    if missing:
        lines += ["Not available in this checkout: "
                  + "; ".join(f"{k} ({v})" for k, v in missing.items()), ""]
    lines += ["### Summary", "", *summary_rows(recs, names), ""]
    if problems:
        lines += ["### Problems", "", *problem_rows(problems), ""]
    lines += ["### Results", "", *result_rows(recs, names), "", "### Details", "",
              *detail_rows(recs), ""]
    return "\n".join(lines)


def sif_report(recs: list[dict], names: Sequence[str], args, unavailable: dict,
               machine: str) -> str:
    cmd = "python -m benchmarks.bounds " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [f"`{cmd}`", "", f"## Held out: sif2jax bound-constrained problems "
             f"({time.strftime('%Y-%m-%d')})", "", f"{machine}; {versions()}; OpenBLAS threads "
             f"{os.environ.get('OPENBLAS_NUM_THREADS')}.", "",
             f"Worker processes (sif2jax imported once each); a (problem, contender) running "
             f"past {args.sif_cap:g} s (compile and {args.repeats} timed runs included) is a "
             f"timeout and its worker is replaced. Solved: in the box, ‖pg‖∞ ≤ {TOL:g} and "
             f"|f − f_ref| ≤ {F_RTOL:g}·max(1, |f_ref|), f_ref = the lowest f meeting the "
             f"gradient test among the contenders (sif2jax's expected value, often rounded, "
             f"in the notes). Steady time = median of {args.repeats} timed runs after the first "
             f"call (one when the first took > {args.long:g} s; the first call itself only "
             f"when a second would not fit in the {args.sif_cap:g} s).", ""]
    missing = {k: v for k, v in unavailable.items() if v and k in names}
    if missing:
        lines += ["Not available in this checkout: "
                  + "; ".join(f"{k} ({v})" for k, v in missing.items()), ""]
    lines += ["### Summary", "", *summary_rows(recs, names), "", "### Results", "",
              *result_rows(recs, names), "", "### Details", "", *detail_rows(recs), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def select(args) -> list:
    probs: list = []
    if args.minpack:
        probs += bp.minpack_problems(tuple(args.grids))
    if args.suite:
        probs += bp.suite_problems()
    if args.real:
        probs += bp.real_problems()
    if args.problems:
        wanted = set(args.problems.split(","))
        probs = [p for p in probs if p.name in wanted]
    return probs


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minpack", action="store_true", help="MINPACK-2 EPT, PJB, OBS, MSA")
    ap.add_argument("--suite", action="store_true", help="boxed unconstrained suite")
    ap.add_argument("--real", action="store_true", help="NNLS and logistic regression")
    ap.add_argument("--sif", action="store_true", help="sif2jax bounded problems (held out)")
    ap.add_argument("--grids", type=int, nargs="+", default=[50, 100],
                    help="MINPACK-2 grid sizes (s for s × s)")
    ap.add_argument("--problems", default="", help="comma-separated problem names")
    ap.add_argument("--methods", default="", help=f"comma-separated, from {CONTENDERS}")
    ap.add_argument("--maxiter", type=int, default=10_000)
    ap.add_argument("--pg-maxiter", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long", type=float, default=5.0,
                    help="a first call longer than this (s) is repeated once")
    ap.add_argument("--guard", type=float, default=120.0,
                    help="a first call longer than this (s) is not repeated (scipy: stopped)")
    ap.add_argument("--sif-cap", type=float, default=120.0,
                    help="seconds per (sif problem, contender): compile and runs")
    ap.add_argument("--sif-import-cap", type=float, default=900.0,
                    help="seconds a sif worker may take to import sif2jax")
    ap.add_argument("--md", default="", help="write the markdown report here")
    ap.add_argument("--jsonl", default="", help="write the raw records here")
    ap.add_argument("--sif-worker", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    chosen = [m for m in args.methods.split(",") if m]
    names = chosen or list(CONTENDERS)
    sif_names = chosen or list(SIF_CONTENDERS)
    if args.sif_worker:
        sif_worker(args.sif_worker, args)
        return
    if not (args.minpack or args.suite or args.real or args.sif):
        args.minpack = args.suite = args.real = True
    machine = machine_line()
    unavailable = jopt_availability() if any(n in JOPT_METHODS for n in names + sif_names) else {}
    for k, v in unavailable.items():
        if v:
            print(f"{k}: n/a ({v})", flush=True)
    recs: list[dict] = []
    problems = select(args) if (args.minpack or args.suite or args.real) else []
    for p in problems:
        out = run_problem(p, names, args, unavailable)
        for r in out:
            print(json.dumps({k: v for k, v in r.items() if k != "note"}), flush=True)
        recs += out
        jax.clear_caches()
    text = report(recs, problems, names, args, unavailable, machine) if problems else ""
    if args.sif:
        sif_recs = run_sif(args, sif_names, unavailable)
        recs += sif_recs
        text += ("\n" if text else "") + sif_report(sif_recs, sif_names, args, unavailable,
                                                     machine)
    if args.jsonl:
        with open(args.jsonl, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in recs)
    if args.md:
        os.makedirs(os.path.dirname(args.md) or ".", exist_ok=True)
        with open(args.md, "w") as fh:
            fh.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
