"""Breadth report: jopt's unconstrained solvers on sif2jax's CUTEst problems (held out).

The problems are ``sif2jax.unconstrained_minimisation_problems`` (pure-JAX CUTEst
definitions; sif2jax 0.0.8 lists 200 entries, 197 distinct names since SCURLY10/20/30 are
listed twice, 69 distinct with n >= 1000), none of which jopt was tuned on. Each runs from its
own ``y0`` with its own ``args`` in float64, the objective wrapped once per problem as
``fun(x) = problem.objective(x, problem.args)``.

Contenders, each with the same target ``‖∇f‖∞ <= 1e-6`` (checked by this script with
``jax.grad`` at the returned point, whatever the contender's own stopping rule) and the same
iteration limit:

* ``jopt-<method>`` for every method of ``jopt.method_names()`` (an older jopt without it:
  lbfgs, bfgs, cg, newton-cg, trust-ncg, newton), called as
  ``jopt.minimize(fun, x0, method=..., tol=1e-6, maxiter=...)``; the dense ``bfgs`` and
  ``newton`` only for n <= 1000;
* ``scipy-lbfgsb``: ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` on a jitted
  ``jax.value_and_grad`` (``gtol=1e-6, ftol=0, maxfun=20·maxiter``), OpenBLAS on 1 thread;
* ``optax-lbfgs``: ``optax.lbfgs()`` in optax's documented ``while_loop`` (with
  ``optax.value_and_grad_from_state``), jitted as a whole, stopping on ``‖g‖∞ <= 1e-6``.

The solvers are those of :mod:`benchmarks.quasi_newton` and the timing that of
:func:`benchmarks._suite.run_one`: first call (compile + run), then steady time = median of
further calls (at least 3, more up to 50 until they take 0.25 s). A first call longer than
``--guard`` seconds is recorded as unsolved and not repeated. The pairs run in a worker
process; one that has not answered ``--kill`` seconds after it started (or
``--kill + 3·first`` seconds once its first call has returned) is killed, recorded as a
timeout (``killed``), and the next pair gets a fresh worker.

Which jopt: ``--jopt DIR``, else the first ``PYTHONPATH`` entry holding ``jopt/``, else the
installed one; it is placed first on ``sys.path`` (so ``PYTHONPATH=/work/base python -m
benchmarks.breadth`` benchmarks /work/base's jopt even though the current directory comes
first for ``-m``). Only ``jopt.minimize(fun, x0, method=, tol=, maxiter=)`` and the result's
``x``, ``nit``, ``nfev``, ``status`` are used, so older checkouts run too. Each record names
the jopt directory and its git commit.

Usage::

    python -m benchmarks.breadth --list                       # problems and sizes
    python -m benchmarks.breadth --quick --out q.jsonl        # a few small problems
    python -m benchmarks.breadth --only ROSENBR,BDQRTIC --methods jopt-lbfgs,optax-lbfgs
    python -m benchmarks.breadth --out r0.jsonl --shard 0/2   # resumable: skips done pairs
    python -m benchmarks.breadth --out b0.jsonl --shard 0/2 --jopt /work/base   # older jopt
    python -m benchmarks.breadth --report r0.jsonl r1.jsonl --md breadth.md
"""

from __future__ import annotations

import os

# Before numpy / scipy load OpenBLAS (as benchmarks/results/run_shards.sh does).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: this checkout's benchmark helpers
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

# Every helper module is imported here, before the worker puts another jopt checkout first
# on sys.path (``benchmarks`` is a namespace package: a later import could come from there).
from benchmarks import _suite, quasi_newton  # noqa: E402
from benchmarks._suite import fmt, load_records  # noqa: E402
from benchmarks._timing import machine_line  # noqa: E402

TOL = quasi_newton.TOL  # 1e-6
TOL_TEXT = f"{TOL:.0e}".replace("e-0", "e-")
FALLBACK_METHODS = ("lbfgs", "bfgs", "cg", "newton-cg", "trust-ncg", "newton")
DENSE_METHODS = ("bfgs", "newton")  # jopt methods with an n×n matrix: only for n <= DENSE_MAX_N
DENSE_MAX_N = 1000
PEERS = ("scipy-lbfgsb", "optax-lbfgs")
QUICK = ("ROSENBR", "BEALE", "PALMER1C", "HILBERTB", "CHNROSNB")
BIG_N = 1000


# ----------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One sif2jax problem as :func:`benchmarks._suite.run_one` expects it."""

    name: str
    n: int
    fun: Callable[[jax.Array], jax.Array]
    x0: jax.Array
    source: str = "sif2jax"


def sif_problems() -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """sif2jax's unconstrained problems: ``({name: problem}, {name: n}, counts)``.

    Distinct names only (the list repeats a few), ordered by (n, name). ``counts`` gives
    ``entries`` (the list's length), ``distinct``, and ``entries_big`` / ``distinct_big``
    (those with n >= 1000).
    """
    import sif2jax

    entries = [(int(p.num_variables()), p.name, p) for p in
               sif2jax.unconstrained_minimisation_problems]
    probs: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for n, name, p in sorted(entries, key=lambda e: (e[0], e[1])):
        if name not in probs:
            probs[name], sizes[name] = p, n
    counts = {"entries": len(entries), "distinct": len(probs),
              "entries_big": sum(n >= BIG_N for n, _, _ in entries),
              "distinct_big": sum(n >= BIG_N for n in sizes.values())}
    return probs, sizes, counts


def wrap(problem: Any) -> Problem:
    """``problem`` with its objective as a plain function of one array (built once: a new
    function object would be compiled again)."""
    args = problem.args
    objective = problem.objective

    def fun(x: jax.Array) -> jax.Array:
        return objective(x, args)

    x0 = jnp.asarray(problem.y0, jnp.float64)
    return Problem(name=problem.name, n=int(x0.size), fun=fun, x0=x0)


def skip(n: int, contender: str) -> bool:
    """Dense jopt methods only for n <= DENSE_MAX_N."""
    return contender in {f"jopt-{m}" for m in DENSE_METHODS} and n > DENSE_MAX_N


# ----------------------------------------------------------------------------- jopt


def jopt_dir(explicit: str | None) -> str | None:
    """The directory whose ``jopt`` package to benchmark: ``explicit``, else the first
    ``PYTHONPATH`` entry holding ``jopt/__init__.py``, else None (the installed one)."""
    if explicit:
        return os.path.abspath(explicit)
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and os.path.isfile(os.path.join(entry, "jopt", "__init__.py")):
            return os.path.abspath(entry)
    return None


def import_jopt(directory: str | None) -> Any:
    """Import jopt from ``directory`` (first on ``sys.path``), or the default one."""
    if directory:
        sys.path.insert(0, directory)
    import jopt

    where = os.path.dirname(os.path.abspath(jopt.__file__))
    if directory and not where.startswith(os.path.join(directory, "")):
        raise RuntimeError(f"asked for jopt from {directory} but imported {where}")
    return jopt


def _git_commit(path: str) -> str | None:
    try:
        head = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=30)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def contenders(jopt: Any) -> list[str]:
    """Every registered jopt method, then the two peers."""
    names = jopt.method_names() if hasattr(jopt, "method_names") else FALLBACK_METHODS
    return [f"jopt-{m}" for m in names] + list(PEERS)


# ----------------------------------------------------------------------------- worker


def _worker(conn: Any, directory: str | None, maxiter: int, guard: float,
            long_s: float) -> None:
    """Runs in a child process: lists the problems, then solves the (problem, contender)
    pairs it is sent, one at a time; ``None`` ends it.

    Messages: ``("ready", [(name, n)...], counts, info)``, then for each pair ``("first",
    seconds)`` when the first call has returned and ``("record", rec)``.
    """
    jopt = import_jopt(directory)
    import sif2jax

    probs, sizes, counts = sif_problems()
    machine = machine_line()  # starts the backend
    from importlib.metadata import version

    where = os.path.dirname(os.path.dirname(os.path.abspath(jopt.__file__)))
    info = {"jopt": where, "jopt_commit": _git_commit(where), "jax": jax.__version__,
            "backend": jax.default_backend(), "cores": len(os.sched_getaffinity(0)),
            "sif2jax": version("sif2jax"), "machine": machine,
            "contenders": contenders(jopt)}
    print(f"# worker: {machine}; jopt {where} ({info['jopt_commit']}); sif2jax "
          f"{info['sif2jax']} from {os.path.dirname(sif2jax.__file__)}", flush=True)
    conn.send(("ready", list(sizes.items()), counts, info))
    current: Problem | None = None
    while True:
        req = conn.recv()
        if req is None:
            return
        name, contender = req
        if current is None or current.name != name:
            current = None
            jax.clear_caches()
            current = wrap(probs[name])
        t0 = time.perf_counter()
        calls = [0]
        try:
            solve = quasi_newton.build(contender, current.fun, maxiter)

            def as_record(x0, solve=solve, calls=calls, t0=t0):
                x, nit, nfev, status = solve(x0)
                calls[0] += 1
                if calls[0] == 1:
                    conn.send(("first", time.perf_counter() - t0))
                return {"x": x, "nit": nit, "nfev": nfev, "status": status}

            rec = _suite.run_one(current, contender, as_record, maxiter=maxiter, tol=TOL,
                                 guard=guard, long_s=long_s)
        except Exception as e:  # outside run_one's own handling (e.g. building the solver)
            rec = {"problem": name, "n": current.n, "source": current.source,
                   "method": contender, "maxiter": maxiter, "solved": False,
                   "error": f"{type(e).__name__}: {e}"[:300]}
        rec.update({k: v for k, v in info.items() if k not in ("contenders", "machine")})
        rec.update(guard=guard, load1=os.getloadavg()[0])
        conn.send(("record", rec))


class Worker:
    """The parent's handle on a worker process (started by :meth:`start`)."""

    def __init__(self, args: argparse.Namespace, directory: str | None) -> None:
        self.args = args
        self.directory = directory
        self.proc: Any = None
        self.conn: Any = None
        self.info: dict[str, Any] = {}

    def start(self) -> tuple[list[tuple[str, int]], dict, dict]:
        """Start a worker; wait for (and return) its problem list, counts and info."""
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.directory, self.args.maxiter,
                                                      self.args.guard, self.args.long),
                                daemon=True)
        self.proc.start()
        child.close()
        try:
            kind, plist, counts, info = self.conn.recv()
        except EOFError:
            self.stop()
            raise RuntimeError("the worker died while starting (see its output above)") from None
        assert kind == "ready"
        self.info = info
        return [tuple(p) for p in plist], counts, info

    def run(self, name: str, n: int, contender: str) -> dict:
        """Solve one pair; kill the worker past the hard limit (``--kill``)."""
        if self.proc is None:
            self.start()
        self.conn.send((name, contender))
        deadline = time.monotonic() + self.args.kill
        first = None
        while True:
            left = deadline - time.monotonic()
            try:
                ready = left > 0 and self.conn.poll(left)
                msg = self.conn.recv() if ready else None
            except (EOFError, OSError):
                self.stop()
                return self._failed(name, n, contender, first,
                                    error="worker died (e.g. out of memory)")
            if msg is None:
                self.stop()
                return self._failed(name, n, contender, first, killed=True)
            if msg[0] == "first":
                first = msg[1]
                deadline = time.monotonic() + self.args.kill + 3 * first
            elif msg[0] == "record":
                return msg[1]

    def _failed(self, name: str, n: int, contender: str, first: float | None,
                killed: bool = False, error: str | None = None) -> dict:
        rec: dict[str, Any] = {"problem": name, "n": n, "source": "sif2jax",
                               "method": contender, "maxiter": self.args.maxiter,
                               "solved": False, "steady_s": None, "compile_s": None,
                               "first_s": first, "guard": self.args.guard,
                               "load1": os.getloadavg()[0]}
        rec.update({k: v for k, v in self.info.items() if k not in ("contenders", "machine")})
        if killed:
            rec.update(timeout=True, killed=True, kill_s=self.args.kill)
        if error:
            rec["error"] = error
        return rec

    def stop(self) -> None:
        """End the worker: politely if it is idle and alive, else by SIGKILL to its pid."""
        if self.proc is None:
            return
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=30)
        self.conn.close()
        self.proc = self.conn = None

    def close(self) -> None:
        """Ask an idle worker to exit, then make sure it has."""
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(timeout=30)
            except (OSError, BrokenPipeError):
                pass
        self.stop()


def select(plist: list[tuple[str, int]], args: argparse.Namespace) -> list[tuple[str, int]]:
    """The problems selected by ``--quick``, ``--only`` and ``--shard i/k``."""
    names = {name for name, _ in plist}
    if args.only:
        wanted = [s for s in args.only.split(",") if s]
        unknown = sorted(set(wanted) - names)
        if unknown:
            raise SystemExit(f"unknown problem(s): {', '.join(unknown)}")
        plist = [p for p in plist if p[0] in set(wanted)]
    elif args.quick:
        plist = [p for p in plist if p[0] in QUICK]
    i, k = (int(v) for v in args.shard.split("/"))
    return plist[i::k]


def run(args: argparse.Namespace, argv: list[str]) -> None:
    """Run every selected (problem, contender) pair not yet in ``args.out``."""
    directory = jopt_dir(args.jopt)
    cmd = " ".join(filter(None, [
        f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}"
        if os.environ.get("PYTHONPATH") else "",
        "python -m benchmarks.breadth", shlex.join(argv)]))
    done: set[tuple[str, str]] = set()
    if args.out and os.path.exists(args.out):
        with open(args.out) as fh:
            done = {(r["problem"], r["method"]) for r in map(json.loads, fh)}
    worker = Worker(args, directory)
    try:
        plist, counts, info = worker.start()
        print(f"# {counts['entries']} entries ({counts['distinct']} distinct names), "
              f"{counts['entries_big']} ({counts['distinct_big']}) with n >= {BIG_N}; "
              f"contenders {info['contenders']}", flush=True)
        names = info["contenders"]
        if args.methods:
            wanted = [m for m in args.methods.split(",") if m]
            unknown = sorted(set(wanted) - set(names))
            if unknown:
                raise SystemExit(f"unknown contender(s): {', '.join(unknown)}; "
                                 f"choose from {names}")
            names = [m for m in names if m in wanted]
        todo = [(p, n, m) for p, n in select(plist, args) for m in names
                if not skip(n, m) and (p, m) not in done]
        print(f"# {len(todo)} pair(s) to run", flush=True)
        for i, (p, n, m) in enumerate(todo):
            print(f"# [{i + 1}/{len(todo)}] {p} (n = {n}) {m}", file=sys.stderr, flush=True)
            rec = worker.run(p, n, m)
            rec["cmd"] = cmd
            line = json.dumps(rec)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(line + "\n")
    finally:
        worker.close()


def list_problems() -> None:
    """Print the problem list and its counts."""
    _, sizes, counts = sif_problems()
    for name, n in sizes.items():
        print(f"{name} {n}")
    print(f"# {counts['entries']} entries in sif2jax.unconstrained_minimisation_problems, "
          f"{counts['distinct']} distinct names; n >= {BIG_N}: {counts['entries_big']} "
          f"entries, {counts['distinct_big']} distinct")


# ----------------------------------------------------------------------------- report


def _median(xs: list[float]) -> str:
    return f"{fmt(statistics.median(xs))} ({len(xs)})" if xs else "- (0)"


def _distinct(recs: Iterable[dict], key: str) -> str:
    vals = sorted({str(r[key]) for r in recs if r.get(key) is not None})
    return ", ".join(vals) if vals else "-"


def report(paths: list[str], argv: list[str] | None = None) -> str:
    """Markdown breadth report from the JSON-lines result files."""
    recs = load_records(paths)
    rows = list(recs.values())
    if not rows:
        return "No records.\n"
    nprob = {r["problem"]: r["n"] for r in rows}
    problems = sorted(nprob, key=lambda p: (nprob[p], p))
    big = [p for p in problems if nprob[p] >= BIG_N]
    seen = {r["method"] for r in rows}
    order = [m for r in rows for m in [r["method"]] if m.startswith("jopt-")]
    methods = list(dict.fromkeys(order)) + [m for m in PEERS if m in seen]
    ok = {k: bool(r.get("solved")) for k, r in recs.items()}

    def steady(p: str, m: str) -> float | None:
        r = recs.get((p, m))
        return r.get("steady_s") if r and r.get("solved") else None

    load = [r["load1"] for r in rows if r.get("load1") is not None]
    report_cmd = ("python -m benchmarks.breadth " + shlex.join(argv)) if argv else (
        "python -m benchmarks.breadth --report " + " ".join(paths))
    lines = [
        "## Breadth: sif2jax unconstrained problems (held out)", "",
        "Reproduce: "
        + "; ".join(f"`{c}`" for c in sorted({r.get("cmd", "?") for r in rows}))
        + f" (from the repository root), then `{report_cmd}`.", "",
        f"Machine: jax {_distinct(rows, 'jax')} ({_distinct(rows, 'backend')} backend), "
        f"{_distinct(rows, 'cores')} core(s) available per process, OpenBLAS on 1 thread; "
        "1-min load during the run "
        + (f"{min(load):.1f}–{max(load):.1f}" if load else "-") + ". "
        f"jopt from {_distinct(rows, 'jopt')} (commit {_distinct(rows, 'jopt_commit')}); "
        f"sif2jax {_distinct(rows, 'sif2jax')}.", "",
        f"{len(problems)} problems ({len(big)} with n ≥ {BIG_N}), float64, each from its "
        f"`y0`. Solved = ‖∇f‖∞ ≤ {TOL_TEXT} by `jax.grad` at the returned x (f finite), "
        f"whatever the contender's own rule; maxiter {_distinct(rows, 'maxiter')}; a first "
        f"call (compile + run) over {_distinct(rows, 'guard')} s counts as unsolved "
        "(*timeouts*, including pairs killed past the hard limit). Steady time = median of "
        "≥ 3 calls after the first (more, up to 50, until they take 0.25 s). Dense jopt "
        f"methods ({', '.join(DENSE_METHODS)}) only for n ≤ {DENSE_MAX_N} (*run* < problems). "
        "Ratios: median over the problems both solve of contender steady time / peer steady "
        "time (< 1: the contender is faster), with the number of such problems.", "",
        "| contender | solved | run | solved n ≥ 1000 | run n ≥ 1000 | timeouts | errors | "
        "time / scipy-lbfgsb | time / optax-lbfgs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        mine = [recs[(p, m)] for p in problems if (p, m) in recs]
        mine_big = [r for r in mine if r["n"] >= BIG_N]
        ratios = []
        for peer in PEERS:
            rs = [steady(p, m) / steady(p, peer) for p in problems
                  if m != peer and steady(p, m) and steady(p, peer)]
            ratios.append(_median(rs) if m != peer else "-")
        lines.append(
            f"| {m} | {sum(r.get('solved', False) for r in mine)} | {len(mine)} | "
            f"{sum(r.get('solved', False) for r in mine_big)} | {len(mine_big)} | "
            f"{sum(bool(r.get('timeout')) for r in mine)} | "
            f"{sum(bool(r.get('error')) for r in mine)} | {ratios[0]} | {ratios[1]} |")
    # jopt-lbfgs against optax-lbfgs, problem by problem.
    lines += ["", "### jopt-lbfgs at or below optax-lbfgs (steady time)", ""]
    for label, subset in ((f"n ≥ {BIG_N}", big), ("all", problems)):
        both = [p for p in subset if steady(p, "jopt-lbfgs") and steady(p, "optax-lbfgs")]
        wins = sum(steady(p, "jopt-lbfgs") <= steady(p, "optax-lbfgs") for p in both)
        lines.append(f"- {label}: {wins} of the {len(both)} problems both solve "
                     f"(jopt-lbfgs solves {sum(ok.get((p, 'jopt-lbfgs'), False) for p in subset)}"
                     f", optax-lbfgs {sum(ok.get((p, 'optax-lbfgs'), False) for p in subset)} "
                     f"of {len(subset)}).")
    # Steady times on the large problems.
    lines += ["", f"### n ≥ {BIG_N}: steady time (ms) per problem", "",
              "✗ = not solved (time of the unsolved run), t/o = timeout, err = error, "
              "blank = not run.", "",
              "| problem | n | " + " | ".join(methods) + " |",
              "|---|---|" + "---|" * len(methods)]

    def cell(p: str, m: str) -> str:
        r = recs.get((p, m))
        if r is None:
            return ""
        if r.get("timeout"):
            return "t/o"
        if r.get("error"):
            return "err"
        t = r.get("steady_s")
        return (fmt(t * 1e3) if t else "-") + ("" if r.get("solved") else " ✗")

    for p in big:
        lines.append(f"| {p} | {nprob[p]} | " + " | ".join(cell(p, m) for m in methods) + " |")
    if not big:
        lines.append("| (none) | |" + " |" * len(methods))
    # Unsolved problems, per contender.
    lines += ["", "### Unsolved, per contender", "",
              "*timeout*: first call over the guard; *killed*: past the hard limit; else "
              "‖∇f‖∞ at the returned x.", ""]
    for m in methods:
        bad = []
        for p in problems:
            r = recs.get((p, m))
            if r is None or r.get("solved"):
                continue
            why = ("killed" if r.get("killed") else "timeout" if r.get("timeout")
                   else "error" if r.get("error") else f"‖g‖∞={fmt(r.get('gnorm'), '.1e')}")
            bad.append(f"{p}-{nprob[p]} ({why})")
        lines.append(f"- **{m}** ({len(bad)}): " + (", ".join(bad) if bad else "none"))
    errors = [(k, r["error"]) for k, r in recs.items() if r.get("error")]
    if errors:
        lines += ["", "### Errors", ""]
        lines += [f"- {p} / {m}: `{e.splitlines()[0][:200]}`" for (p, m), e in errors]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the problems and counts")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    ap.add_argument("--only", default="", help="comma-separated problem names")
    ap.add_argument("--methods", default="",
                    help="comma-separated contenders (default: all), e.g. jopt-lbfgs,optax-lbfgs")
    ap.add_argument("--maxiter", type=int, default=10_000)
    ap.add_argument("--guard", type=float, default=60.0,
                    help="a first call longer than this (s) is unsolved and not repeated")
    ap.add_argument("--kill", type=float, default=None,
                    help="hard limit (s, default 2·guard): a pair whose first call has not "
                         "returned by then is killed (with its worker) and unsolved")
    ap.add_argument("--long", type=float, default=math.inf,
                    help="a first call longer than this (s) is repeated once, not 3 times")
    ap.add_argument("--shard", default="0/1", help="i/k: run problems i, i+k, ... (by n)")
    ap.add_argument("--out", default="", help="JSON-lines output (appended; resumable)")
    ap.add_argument("--jopt", default=None,
                    help="directory holding the jopt package to benchmark (default: the "
                         "first PYTHONPATH entry with one, else the installed jopt)")
    ap.add_argument("--report", nargs="*", default=None, help="JSON-lines files to tabulate")
    ap.add_argument("--md", default="", help="write the report here (default: stdout)")
    args = ap.parse_args(argv)
    if args.kill is None:
        args.kill = 2 * args.guard
    if args.report is not None:
        text = report(args.report, argv)
        if args.md:
            with open(args.md, "w") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
    elif args.list:
        list_problems()
    else:
        run(args, argv)


if __name__ == "__main__":
    main()
