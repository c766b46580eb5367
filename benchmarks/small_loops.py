"""``jopt.enable_small_loop_kernels()`` on and off: solve time and compile time, A/B.

XLA reads the setting once per process, so each measurement runs in a fresh child process:
for every problem, one child with the setting off and one with it on (their order
alternating between rounds), each timing every method on that problem exactly as the
quasi-Newton suite does (``benchmarks.quasi_newton.run_one``: steady time = median of the
calls after the first, compile = first call − steady). The setting is process-wide, so the
JAX peers' loops are compiled the same way as jopt's in the "on" child. jopt's own
per-program outlining (its default since the fifth session of 2026-12-04) is turned off in
both children (``JOPT_OUTLINE_LOOPS=0``), so "off" stays XLA's usual code generation;
``examples/small_loops.py`` compares all three.

Usage::

    taskset -c 1 python -m benchmarks.small_loops [--rounds 2] [--md out.md]
    # or split over two cores, then tabulate both:
    taskset -c 0 python -m benchmarks.small_loops --problems A,B --out r0.jsonl &
    taskset -c 1 python -m benchmarks.small_loops --problems C,D --out r1.jsonl; wait
    python -m benchmarks.small_loops --report r0.jsonl r1.jsonl --md out.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

PROBLEMS = ("ROSENBROCK-2", "BOX3D-3", "WOOD-4", "BIGGS_EXP6-6", "WATSON-9",
            "EXT_ROSENBROCK-10", "PENALTY1-10", "LOGREG-2000x100", "GENROSE-1000",
            "TRIDIA-1000", "LIARWHD-1000", "COSINE-1000", "TRIDIA-10000", "LIARWHD-10000")
METHODS = ("jopt-lbfgs", "jopt-bfgs", "jopt-cg", "optax-lbfgs", "jaxopt-lbfgs", "optx-lbfgs")
MAXITER = 10_000


def _child(mode: str, problem: str, methods: list[str]) -> None:
    if mode == "on":
        import jopt

        jopt.enable_small_loop_kernels()
    from benchmarks import quasi_newton as qn
    from benchmarks.problems import suite

    p = next(q for q in suite(sizes=(1000, 10000)) if q.name == problem)
    for m in methods:
        if m in qn.DENSE and p.n > 1000:
            continue
        rec = qn.run_one(p, m, MAXITER, guard=60.0, long_s=5.0)
        keep = ("problem", "n", "method", "nit", "nfev", "status", "steady_s", "compile_s",
                "solved")
        print(json.dumps({**{k: rec.get(k) for k in keep}, "mode": mode}), flush=True)


def _run_child(mode: str, problem: str, methods: list[str]) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JOPT_OUTLINE_LOOPS"] = "0"  # the usual code generation on the "off" side
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.small_loops", "--child", mode, "--problems", problem,
         "--methods", ",".join(methods)],
        env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the {mode!r} child for {problem} failed:\n{out.stderr[-2000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _gmean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def report(recs: list[dict], rounds: int) -> str:
    by: dict[tuple, list[dict]] = {}
    for r in recs:
        by.setdefault((r["problem"], r["method"], r["mode"]), []).append(r)
    problems = list(dict.fromkeys(r["problem"] for r in recs))
    methods = [m for m in METHODS if any(r["method"] == m for r in recs)]
    lines = [
        "## `jopt.enable_small_loop_kernels()`: on vs off (`benchmarks/small_loops.py`)", "",
        f"One fresh process per (problem, setting), {rounds} round(s), settings alternating; "
        "medians over rounds. Time = steady solve time (ms), compile = first call − steady "
        "(s). Ratio = on / off (< 1: faster with the setting). The setting is process-wide: "
        "the peers' loops get it too.", "",
        "| problem | n | method | nit off / on | time off (ms) | time on (ms) | ratio | "
        "compile off (s) | compile on (s) | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    cratios: dict[str, list[float]] = {m: [] for m in methods}
    small: dict[str, list[float]] = {m: [] for m in methods}
    for p in problems:
        for m in methods:
            off, on = by.get((p, m, "off")), by.get((p, m, "on"))
            if not off or not on:
                continue
            t_off = statistics.median(r["steady_s"] for r in off)
            t_on = statistics.median(r["steady_s"] for r in on)
            c_off = statistics.median(r["compile_s"] for r in off)
            c_on = statistics.median(r["compile_s"] for r in on)
            ratios[m].append(t_on / t_off)
            cratios[m].append(c_on / c_off)
            if off[0]["n"] < 1000:
                small[m].append(t_on / t_off)
            lines.append(
                f"| {p} | {off[0]['n']} | {m} | {off[0]['nit']} / {on[0]['nit']} | "
                f"{t_off * 1e3:.3f} | {t_on * 1e3:.3f} | {t_on / t_off:.2f} | {c_off:.2f} | "
                f"{c_on:.2f} | {c_on / c_off:.2f} |")
    lines += ["", "Geometric means of the ratios (on / off):", "",
              "| method | time, all | time, n < 1000 | compile, all |", "|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | {_gmean(ratios[m]):.2f} | {_gmean(small[m]):.2f} | "
                     f"{_gmean(cratios[m]):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=("on", "off"), default=None)
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="", help="JSON lines of every child measurement")
    ap.add_argument("--md", default="")
    ap.add_argument("--report", nargs="*", default=None,
                    help="tabulate these --out files (e.g. two runs pinned to two cores)")
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    if args.report is not None:
        recs = [json.loads(line) for path in args.report for line in open(path)]
        text = report(recs, args.rounds)
        if args.md:
            with open(args.md, "w") as fh:
                fh.write(text)
        sys.stdout.write(text)
        return
    if args.child:
        _child(args.child, args.problems, methods)
        return
    recs: list[dict] = []
    for k in range(args.rounds):
        for problem in args.problems.split(","):
            for mode in (("off", "on") if k % 2 == 0 else ("on", "off")):
                got = _run_child(mode, problem, methods)
                recs += got
                for r in got:
                    print(json.dumps(r), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in recs)
    text = report(recs, args.rounds)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
