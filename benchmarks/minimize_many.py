"""``jopt.minimize_many`` vs ``jax.vmap(jopt.minimize)`` vs a Python loop of ``jopt.minimize``.

Two batches of 1,024 independent L-BFGS solves (float64, CPU) whose iteration counts vary
by more than 10×:

* ``rosenbrock``: extended Rosenbrock (MGH #21) in n = 2, 4, 6, 8 or 10 variables (padded
  to 10; a per-member mask switches pairs off, the padding coordinates sit at their
  optimum), started at ``1 + r·u`` with ``u`` uniform in [-1, 1]ⁿ and ``r`` log-uniform in
  [1e-3, 3] — from next to the solution to far away;
* ``logistic``: per-member L2-regularised logistic regressions (64 samples × 8 features,
  each member its own data with feature scales 10^U(-1.5, 1.5), label noise up to 20 %
  (30 % of the members noise-free, nearly separable) and λ log-uniform in [1e-6, 1]).

Contenders (same options: ``method="lbfgs"``, ``tol=1e-8``, ``maxiter=5000``):

* ``minimize_many``: ``jopt.minimize_many`` (default segment and buckets), per-member args;
* ``vmap``: ``jax.jit(jax.vmap(lambda x0, *a: jopt.minimize(fun, x0, args=a)))`` compiled
  once, with the XLA:CPU options ``jopt.minimize`` uses for its own programs;
* ``loop``: a Python loop of ``jopt.minimize`` calls (one compiled program, reused).

Timing: every contender is run once untimed (compile + run; compile = first − median
steady), then ``--repeats`` rounds of all contenders, interleaved, each round in a
rotated order; the table reports medians. ``loop`` is timed on ``--loop-subset`` members
per round and extrapolated to 1,024 (marked) unless ``--loop-subset 0`` (full loop).
Also reported: the spread of iteration counts, the batched work (lane-iterations:
``minimize_many``'s Σ bucket × iterations per segment vs ``1024 × max nit`` for vmap), and
agreement of the three solutions. A ``--segments`` sweep times ``minimize_many`` at
several segment lengths.

Usage::

    python -m benchmarks.minimize_many [--repeats 5] [--md out.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jopt  # noqa: E402
from benchmarks._timing import wait_for_load  # noqa: E402
from jopt._platform import options as platform_options  # noqa: E402
from jopt.solve.many import DEFAULT_SEGMENT, _minimize_many, minimize_many  # noqa: E402

BATCH = 1024
TOL = 1e-8
MAXITER = 5000
METHOD = "lbfgs"


# ----------------------------------------------------------------------------- problems


def masked_rosenbrock(x, pair_mask):
    """Σ over active pairs of the Rosenbrock term + Σ over inactive coordinates (x - 1)²."""
    x1, x2 = x[0::2], x[1::2]
    terms = 100.0 * (x2 - x1**2) ** 2 + (1.0 - x1) ** 2
    off = (1.0 - pair_mask) * ((x1 - 1.0) ** 2 + (x2 - 1.0) ** 2)
    return jnp.sum(pair_mask * terms + off)


def rosenbrock_batch(seed: int = 0) -> tuple[Callable, jax.Array, tuple]:
    rng = np.random.default_rng(seed)
    n_max = 10
    dims = rng.choice([2, 4, 6, 8, 10], BATCH)
    masks = (np.arange(n_max // 2)[None, :] < (dims[:, None] // 2)).astype(np.float64)
    radius = 10.0 ** rng.uniform(-3.0, np.log10(3.0), BATCH)
    x0s = 1.0 + radius[:, None] * rng.uniform(-1.0, 1.0, (BATCH, n_max))
    x0s = np.where(np.repeat(masks, 2, axis=1) > 0, x0s, 1.0)
    return masked_rosenbrock, jnp.asarray(x0s), (jnp.asarray(masks),)


def logistic(w, features, labels, lam):
    return jnp.mean(jnp.logaddexp(0.0, -labels * (features @ w))) + 0.5 * lam * w @ w


def logistic_batch(seed: int = 0) -> tuple[Callable, jax.Array, tuple]:
    rng = np.random.default_rng(seed)
    m, d = 64, 8
    scales = 10.0 ** rng.uniform(-1.5, 1.5, (BATCH, 1, d))  # badly scaled features
    features = rng.standard_normal((BATCH, m, d)) * scales
    w_true = rng.standard_normal((BATCH, d)) * 10.0 ** rng.uniform(-0.5, 1.0, (BATCH, 1))
    margins = np.einsum("bmd,bd->bm", features, w_true)
    # Label noise up to 20 %; 30 % of the members noise-free (nearly separable).
    noise = rng.uniform(0.0, 0.2, (BATCH, 1)) * (rng.uniform(size=(BATCH, 1)) > 0.3)
    labels = np.where((margins > 0) ^ (rng.uniform(size=(BATCH, m)) < noise), 1.0, -1.0)
    lam = 10.0 ** rng.uniform(-6.0, 0.0, BATCH)
    args = (jnp.asarray(features), jnp.asarray(labels), jnp.asarray(lam))
    return logistic, jnp.zeros((BATCH, d)), args


SUITES = {"rosenbrock": rosenbrock_batch, "logistic": logistic_batch}


# ----------------------------------------------------------------------------- contenders


def run_many(fun, x0s, args, segment: int = DEFAULT_SEGMENT, bucket_sizes=None):
    return minimize_many(fun, x0s, method=METHOD, args=args, args_axes=0, tol=TOL,
                         maxiter=MAXITER, segment=segment, bucket_sizes=bucket_sizes)


# Bucket schedules compared (all sizes are among the default's, so nothing new compiles).
SCHEDULES = {"powers of 2 (default)": None, "powers of 4": (64, 256),
             "full batch only": ()}


def make_vmap(fun, x0s, args):
    def solve(x0, *a):
        return jopt.minimize(fun, x0, method=METHOD, args=a, tol=TOL, maxiter=MAXITER)

    options = platform_options.compiler_options(
        "cpu" if jax.default_backend() == "cpu" else None)
    jitted = jax.jit(jax.vmap(solve), compiler_options=options)
    t0 = time.perf_counter()
    compiled = jitted.lower(x0s, *args).compile()
    return compiled, time.perf_counter() - t0


def run_loop(fun, x0s, args, members) -> list:
    out = []
    for i in members:
        res = jopt.minimize(fun, x0s[i], method=METHOD, args=tuple(a[i] for a in args),
                            tol=TOL, maxiter=MAXITER)
        out.append(jax.block_until_ready(res))
    return out


def timed(fn: Callable) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


# ----------------------------------------------------------------------------- benchmark


def bench_suite(name: str, repeats: int, loop_subset: int) -> dict:
    fun, x0s, args = SUITES[name]()
    rec: dict = {"suite": name}

    # First calls: compile + run.
    first_many, res_many = timed(lambda: run_many(fun, x0s, args))
    vmap_fn, rec["vmap_compile_s"] = make_vmap(fun, x0s, args)
    first_loop, _ = timed(lambda: run_loop(fun, x0s, args, [0]))
    subset = list(range(BATCH)) if loop_subset <= 0 else list(
        np.random.default_rng(1).choice(BATCH, loop_subset, replace=False))

    cases = {
        "minimize_many": lambda: run_many(fun, x0s, args),
        "vmap": lambda: vmap_fn(x0s, *args),
        "loop": lambda: run_loop(fun, x0s, args, subset),
    }
    for label, buckets in SCHEDULES.items():
        if buckets is not None:
            cases[label] = lambda b=buckets: run_many(fun, x0s, args, bucket_sizes=b)
    times: dict[str, list[float]] = {k: [] for k in cases}
    res_vmap = res_loop = None
    names = list(cases)
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            dt, out = timed(cases[k])
            if k == "loop":
                dt *= BATCH / len(subset)
                res_loop = out
            elif k == "vmap":
                res_vmap = out
            times[k].append(dt)
    rec["times"] = {k: statistics.median(v) for k, v in times.items()}
    rec["spread"] = {k: (min(v), max(v)) for k, v in times.items()}
    rec["many_compile_s"] = first_many - rec["times"]["minimize_many"]
    rec["loop_compile_s"] = first_loop - rec["times"]["loop"] / BATCH
    rec["loop_extrapolated"] = len(subset) < BATCH

    rec["schedules"] = {}
    for label, buckets in SCHEDULES.items():
        _, stats = _minimize_many(fun, x0s, method=METHOD, args=args, args_axes=0, tol=TOL,
                                  ftol=0.0, xtol=0.0, maxiter=MAXITER, maxfev=None,
                                  history=False, history_size=None, segment=DEFAULT_SEGMENT,
                                  bucket_sizes=buckets)
        key = "minimize_many" if buckets is None else label
        rec["schedules"][label] = (rec["times"][key], stats.lane_iterations,
                                   len(set(stats.buckets)), len(stats.buckets))
    _, stats = _minimize_many(fun, x0s, method=METHOD, args=args, args_axes=0, tol=TOL,
                              ftol=0.0, xtol=0.0, maxiter=MAXITER, maxfev=None,
                              history=False, history_size=None, segment=DEFAULT_SEGMENT,
                              bucket_sizes=None)
    nit = np.asarray(res_many.nit)
    rec["nit"] = (int(nit.min()), float(np.median(nit)), int(nit.max()), int(nit.sum()))
    rec["lane_iterations"] = {"minimize_many": stats.lane_iterations,
                              "vmap": BATCH * int(np.asarray(res_vmap.nit).max())}
    rec["buckets"] = stats.buckets
    rec["success"] = int(np.sum(np.asarray(res_many.success)))
    # Agreement: minimize_many vs vmap (all members), vs the loop (its subset).
    xm, xv = np.asarray(res_many.x), np.asarray(res_vmap.x)
    scale = np.maximum(np.abs(xv), 1.0)
    rec["max_rel_dx_vmap"] = float(np.max(np.abs(xm - xv) / scale))
    fm, fv = np.asarray(res_many.fun), np.asarray(res_vmap.fun)
    rec["max_rel_df_vmap"] = float(np.max(np.abs(fm - fv) / np.maximum(np.abs(fv), 1.0)))
    rec["same_nit_vmap"] = int(np.sum(nit == np.asarray(res_vmap.nit)))
    rec["same_status_vmap"] = int(np.sum(np.asarray(res_many.status)
                                         == np.asarray(res_vmap.status)))
    xl = np.stack([np.asarray(r.x) for r in res_loop])
    rec["max_rel_dx_loop"] = float(np.max(np.abs(xm[subset] - xl)
                                          / np.maximum(np.abs(xl), 1.0)))
    fl = np.asarray([float(r.fun) for r in res_loop])
    rec["max_rel_df_loop"] = float(np.max(np.abs(fm[subset] - fl) / np.maximum(np.abs(fl), 1.0)))
    rec["same_nit_loop"] = (int(np.sum(nit[subset] == np.asarray([int(r.nit)
                                                                    for r in res_loop]))),
                            len(subset))
    return rec


def segment_sweep(name: str, segments: list[int], repeats: int) -> dict[int, float]:
    fun, x0s, args = SUITES[name]()
    for k in segments:
        jax.block_until_ready(run_many(fun, x0s, args, k))  # compile
    times: dict[int, list[float]] = {k: [] for k in segments}
    for r in range(repeats):
        for k in segments[r % len(segments):] + segments[: r % len(segments)]:
            times[k].append(timed(lambda k=k: run_many(fun, x0s, args, k))[0])
    return {k: statistics.median(v) for k, v in times.items()}


def markdown(records: list[dict], sweep: dict[str, dict[int, float]], load: tuple,
             repeats: int) -> str:
    lines = [
        "## minimize_many: 1,024 independent L-BFGS solves (float64, CPU)",
        "",
        f"`python -m benchmarks.minimize_many` — {BATCH} members per suite, tol = {TOL:g}, "
        f"segment = {DEFAULT_SEGMENT}, default buckets; medians of {repeats} interleaved "
        f"rounds; 1-min load average {load[0]:.1f} before / {load[1]:.1f} after (2-core "
        "machine shared with other jobs).",
        "",
        "| suite | nit min / median / max (Σ) | minimize_many | vmap(minimize) | loop of "
        "minimize | vmap / many | loop / many | lane-iterations many / vmap | compile many "
        "/ vmap / loop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        t = r["times"]
        lo, med, hi, total = r["nit"]
        loop = f"{t['loop']:.2f} s" + (" (extrap.)" if r["loop_extrapolated"] else "")
        li = r["lane_iterations"]
        lines.append(
            f"| {r['suite']} | {lo} / {med:g} / {hi} ({total}) | {t['minimize_many']:.2f} s | "
            f"{t['vmap']:.2f} s | {loop} | {t['vmap'] / t['minimize_many']:.1f}× | "
            f"{t['loop'] / t['minimize_many']:.1f}× | {li['minimize_many']} / {li['vmap']} "
            f"({li['vmap'] / li['minimize_many']:.1f}×) | {r['many_compile_s']:.1f} / "
            f"{r['vmap_compile_s']:.1f} / {r['loop_compile_s']:.1f} s |"
        )
    lines += ["", "Agreement (minimize_many vs the others; the batched programs round "
              "differently from single solves, so equality is to rounding, not bitwise):", ""]
    for r in records:
        sn, ns = r["same_nit_loop"]
        lines.append(
            f"* {r['suite']}: {r['success']}/{BATCH} converged; vs vmap: same nit "
            f"{r['same_nit_vmap']}/{BATCH}, same status {r['same_status_vmap']}/{BATCH}, "
            f"max |Δx|/max(|x|,1) = {r['max_rel_dx_vmap']:.1e}, max |Δf|/max(|f|,1) = "
            f"{r['max_rel_df_vmap']:.1e}; vs loop: same nit {sn}/{ns}, max |Δx|/max(|x|,1) = "
            f"{r['max_rel_dx_loop']:.1e}, max |Δf|/max(|f|,1) = {r['max_rel_df_loop']:.1e}. "
            f"Buckets used: "
            f"{' → '.join(str(b) for b in dict.fromkeys(r['buckets']))} "
            f"({len(r['buckets'])} segments)."
        )
    lines += ["", "Bucket schedules (same segment length; programs = bucket sizes compiled):",
              "", "| suite | schedule | time | lane-iterations | programs | segments |",
              "|---|---|---|---|---|---|"]
    for r in records:
        for label, (t, li, programs, segs) in r["schedules"].items():
            lines.append(f"| {r['suite']} | {label} | {t:.2f} s | {li} | {programs} | {segs} |")
    if sweep:
        ks = sorted(next(iter(sweep.values())))
        lines += ["", "Segment length (minimize_many wall time, medians):", "",
                  "| suite | " + " | ".join(f"k = {k}" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for name, row in sweep.items():
            lines.append(f"| {name} | " + " | ".join(f"{row[k]:.2f} s" for k in ks) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-subset", type=int, default=0,
                        help="members of the Python loop timed per round (0: all 1,024)")
    parser.add_argument("--segments", type=str, default="4,8,16,32,64",
                        help="segment lengths to sweep ('' to skip)")
    parser.add_argument("--suites", type=str, default="rosenbrock,logistic")
    parser.add_argument("--md", type=str, default=None, help="write the markdown here")
    opts = parser.parse_args(argv)

    load0 = wait_for_load(limit=2.5, max_wait=300)
    records = []
    for name in opts.suites.split(","):
        rec = bench_suite(name, opts.repeats, opts.loop_subset)
        print(rec, flush=True)
        records.append(rec)
    sweep = {}
    if opts.segments:
        ks = [int(k) for k in opts.segments.split(",")]
        for name in opts.suites.split(","):
            sweep[name] = segment_sweep(name, ks, max(3, opts.repeats // 2))
            print(name, sweep[name], flush=True)
    with open("/proc/loadavg") as fh:
        load1 = float(fh.read().split()[0])
    md = markdown(records, sweep, (load0, load1), opts.repeats)
    print(md)
    if opts.md:
        with open(opts.md, "w") as fh:
            fh.write(md)


if __name__ == "__main__":
    main(sys.argv[1:])
