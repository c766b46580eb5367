"""Adam step time and compile time vs leaf count (issue 2), against the bandwidth floor.

One jitted Adam step (update + ``optax.apply_updates``; parameters and optimizer state
donated) on float32 parameters totalling about 2**24 elements, laid out as 1, 1,000 or
10,000 equal 1-D leaves (a list). Contenders:

* ``floor``      Adam in its cheapest form (Kingma & Ba 2015, end of Sec. 2: bias
                 corrections folded into the scalar step size) as one fused elementwise
                 kernel on ONE flat array: reads p, g, m, v and writes p, m, v.
* ``optax``      ``optax.adam(1e-3)`` + ``optax.apply_updates`` on the list of leaves.
* ``jopt``       ``jopt.adam(1e-3)`` + ``optax.apply_updates`` on the same list.
* ``jopt-flat``  ``jopt.adam(1e-3)`` on ``jopt.FlatParams.from_tree(list)`` (the gradient is
                 also a ``FlatParams``, built once outside the timed region).

Each layout runs in a fresh subprocess (so nothing compiled for one layout is reused by
another). In it every contender is compiled in turn from a fresh ``jax.jit`` (distinct
programs share no compile cache) and the trace+lower and compile seconds are recorded;
then each runs 3 steps from the same start for the equality check; then the steps are
timed interleaved (round-robin, order rotated every round) so that load from other
processes on a shared machine falls on all contenders alike. The CPU share used by other
processes while timing is reported with each layout.

The equality check compares jopt's params, ``mu`` and ``nu`` after 3 steps (the flat path
viewed through ``FlatParams.tree()``) with optax's: jitted optax's where that case ran,
else optax run eagerly (op by op, nothing to compile).

Usage::

    python benchmarks/adam_layouts.py              # full run: 22 min on 2 shared CPU cores
    python benchmarks/adam_layouts.py --skip-slow  # no pytree paths at 10,000 leaves: ~2 min
    python benchmarks/adam_layouts.py --skip-slow --slow-contenders optax   # keep jopt
    python benchmarks/adam_layouts.py --sizes 65536 --layouts 1 100 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import compile_timed, median, run_steps, time_interleaved

CONTENDERS = ("floor", "optax", "jopt", "jopt-flat")
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
CHECK_STEPS = 3
RESULT_TAG = "RESULT-JSON:"
QUANTITIES = ("params", "mu", "nu")


# ---------------------------------------------------------------------------- data


def start_point(size: int, leaves: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic float32 params and gradient of ``leaves * (size // leaves)`` elements."""
    n = leaves * (size // leaves)
    rng = np.random.default_rng(0)
    return rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)


def as_leaves(flat: np.ndarray, leaves: int) -> list[jax.Array]:
    """Split ``flat`` into ``leaves`` equal 1-D device arrays (the pytree layout)."""
    return [jnp.asarray(x) for x in np.split(flat, leaves)]


def flatten_np(tree: Any) -> np.ndarray:
    """All leaves of ``tree`` concatenated in tree order, on the host."""
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)])


@jax.jit
def tree_view(flat: jopt.FlatParams) -> jax.Array:
    """The leaves of ``flat.tree()`` concatenated in tree order (one compile per layout).

    Concatenating inside the jit keeps this cheap: a jitted ``flat.tree()`` returning
    10,000 separate slices took 257 s to compile here, and an eager one compiles each slice.
    """
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(flat.tree())])


# ---------------------------------------------------------------------- step builders


def floor_step(p, m, v, count, g):
    """Adam on one flat array, per element 1 sqrt + 1 divide: reads p, g, m, v; writes p, m, v.

    Bias corrections are folded into the scalars ``step`` and ``eps_hat`` (Kingma & Ba 2015,
    Sec. 2, last paragraph); equal to Adam up to rounding.
    """
    count = count + 1.0
    c2 = jnp.sqrt(1 - B2**count)
    step = LR * c2 / (1 - B1**count)
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    return p - step * m / (jnp.sqrt(v) + EPS * c2), m, v, count


def optimizer_step(opt: optax.GradientTransformation):
    """``(params, state, grads) -> (params, state)``: one update + apply_updates."""

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def build_case(contender: str, params: np.ndarray, grads: np.ndarray, leaves: int):
    """The step function, its donated carry and its constant arguments for ``contender``."""
    if contender == "floor":
        p, g = jnp.asarray(params), jnp.asarray(grads)
        return floor_step, (p, jnp.zeros_like(p), jnp.zeros_like(p), jnp.float32(0)), (g,)
    p_tree, g_tree = as_leaves(params, leaves), as_leaves(grads, leaves)
    if contender == "jopt-flat":
        p_tree, g_tree = jopt.FlatParams.from_tree(p_tree), jopt.FlatParams.from_tree(g_tree)
    opt = optax.adam(LR) if contender.startswith("optax") else jopt.adam(LR)
    return optimizer_step(opt), (p_tree, opt.init(p_tree)), (g_tree,)


def results_of(contender: str, carry: tuple) -> dict[str, np.ndarray]:
    """Params and Adam moments after the check steps, each as one host vector."""
    if contender == "floor":
        return {q: np.asarray(x) for q, x in zip(QUANTITIES, carry[:3], strict=True)}
    params, state = carry
    adam_state = state[0] if contender.startswith("optax") else state  # optax.adam: a chain
    trees = (params, adam_state.mu, adam_state.nu)
    if contender == "jopt-flat":
        trees = tuple(tree_view(t) for t in trees)
    return {q: flatten_np(t) for q, t in zip(QUANTITIES, trees, strict=True)}


# ------------------------------------------------------------ one layout (subprocess)


def prepare(contender: str, params: np.ndarray, grads: np.ndarray, leaves: int) -> dict:
    """Build and compile one contender, then run the check steps; time the phases."""
    t0 = time.perf_counter()
    step, carry, consts = build_case(contender, params, grads, leaves)
    build_s = time.perf_counter() - t0
    log(f"{leaves} leaves, {contender}: built in {build_s:.1f} s; compiling")
    compiled, ct = compile_timed(step, (*carry, *consts), donate_argnums=range(len(carry)))
    log(f"{leaves} leaves, {contender}: compiled in {ct.total_s:.1f} s; check steps")
    carry = run_steps(compiled, carry, consts, CHECK_STEPS)
    return {
        "case": (compiled, carry, consts),
        "check": results_of(contender, carry),
        "row": {"contender": contender, "build_s": build_s, "lower_s": ct.lower_s,
                "compile_s": ct.total_s},
    }


def log(msg: str) -> None:
    """A progress line on stderr (the parent passes the subprocess's stderr through)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def eager_reference(params: np.ndarray, grads: np.ndarray, leaves: int) -> dict:
    """optax run op by op (no jit) for the check steps: the reference when optax is skipped."""
    step, carry, consts = build_case("optax-eager", params, grads, leaves)
    return results_of("optax-eager", run_steps(step, carry, consts, CHECK_STEPS))


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``: the largest difference relative to the reference's scale."""
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))


def equality(prepared: dict[str, dict], ref: dict[str, np.ndarray]) -> dict[str, dict]:
    """Max relative difference from the reference, per contender and quantity."""
    return {
        c: {q: max_rel_diff(p["check"][q], ref[q]) for q in QUANTITIES}
        for c, p in prepared.items()
        if not c.startswith("optax")
    }


def proc_stat_busy() -> tuple[float, float]:
    """(busy CPU-seconds of the whole machine since boot, own process CPU-seconds)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0.0, time.process_time()
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), time.process_time()


def timed_with_load(cases: dict, warmup: int, repeats: int) -> tuple[dict, float]:
    """Interleaved step times and the CPU share other processes used meanwhile (0-1)."""
    busy0, own0 = proc_stat_busy()
    t0 = time.perf_counter()
    times = time_interleaved(cases, warmup, repeats)
    wall = time.perf_counter() - t0
    busy1, own1 = proc_stat_busy()
    others = ((busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))
    return times, max(0.0, others)


def run_layout_here(args: argparse.Namespace) -> dict[str, Any]:
    """Compile, check and time every requested contender at one layout (in this process)."""
    params, grads = start_point(args.size, args.leaves)
    prepared = {c: prepare(c, params, grads, args.leaves) for c in args.contenders}
    ref_name, diffs = ("optax" if "optax" in prepared else "optax-eager"), {}
    if args.check:
        ref = (prepared["optax"]["check"] if ref_name == "optax"
               else eager_reference(params, grads, args.leaves))
        diffs = equality(prepared, ref)
    log(f"{args.leaves} leaves: timing {', '.join(prepared)} interleaved")
    times, others = timed_with_load({c: p["case"] for c, p in prepared.items()},
                                    args.warmup, args.repeats)
    rows = [p["row"] | step_stats(times[c]) for c, p in prepared.items()]
    return {"size": args.size, "leaves": args.leaves, "n": int(params.size), "rows": rows,
            "check": {"reference": ref_name, "diffs": diffs}, "others_busy": others}


def step_stats(times: list[float]) -> dict[str, float]:
    """Median, min and max step time in ms, and the number of timed steps."""
    ms = [1e3 * t for t in times]
    return {"step_ms": median(ms), "min_ms": min(ms), "max_ms": max(ms), "repeats": len(ms)}


# ----------------------------------------------------------------- driver (parent)


def spawn_layout(args: argparse.Namespace, size: int, leaves: int) -> dict[str, Any]:
    """Run one layout in a fresh Python process; return its record (or an error record)."""
    contenders = [c for c in args.contenders if not is_slow(c, leaves, args)]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--size", str(size),
           "--leaves", str(leaves), "--warmup", str(args.warmup), "--repeats",
           str(args.repeats), "--contenders", *contenders]
    if not args.check:
        cmd.append("--no-check")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.case_timeout)
    except subprocess.TimeoutExpired:
        return {"size": size, "leaves": leaves, "error": f"timeout {args.case_timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            out = json.loads(line[len(RESULT_TAG):])
            out["wall_s"] = time.perf_counter() - t0
            out["skipped"] = [c for c in args.contenders if c not in contenders]
            return out
    return {"size": size, "leaves": leaves, "error": f"exit code {proc.returncode}"}


def is_slow(contender: str, leaves: int, args: argparse.Namespace) -> bool:
    """Cases ``--skip-slow`` drops: ``--slow-contenders`` at ``--slow-leaves`` leaves or more."""
    return args.skip_slow and contender in args.slow_contenders and leaves >= args.slow_leaves


# ---------------------------------------------------------------------- reporting


def floor_ms(layout: dict[str, Any]) -> float | None:
    """The floor's median step time at this layout, if it ran."""
    return next((r["step_ms"] for r in layout.get("rows", []) if r["contender"] == "floor"),
                None)


def print_layout(layout: dict[str, Any]) -> None:
    """Progress lines for one finished layout."""
    if "error" in layout:
        print(f"  {layout['leaves']:>6} leaves: {layout['error']}", flush=True)
        return
    print(f"  {layout['leaves']:>6} leaves, n = {layout['n']:,} [{layout['wall_s']:.0f} s wall; "
          f"other processes used {layout['others_busy']:.0%} of the CPUs while timing]")
    for r in layout["rows"]:
        print(f"    {r['contender']:<10} step {r['step_ms']:8.2f} ms (min {r['min_ms']:.2f}, "
              f"max {r['max_ms']:.2f})  compile {r['compile_s']:7.2f} s (lower "
              f"{r['lower_s']:.2f})  build {r['build_s']:.2f} s", flush=True)


def markdown_rows(layout: dict[str, Any]) -> list[str]:
    """Table rows for one layout: time, ratio to the floor, compile and lowering seconds."""
    name = f"{layout['leaves']:,} × {layout['size'] // layout['leaves']:,}"
    if "error" in layout:
        return [f"| {name} | all | {layout['error']} | | | | |"]
    fl = floor_ms(layout)
    lines = []
    for r in layout["rows"]:
        ratio = f"{r['step_ms'] / fl:.2f}" if fl else "n/a"
        lines.append(f"| {name} | {r['contender']} | {r['step_ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{ratio} | {r['compile_s']:.2f} | {r['lower_s']:.2f} |")
    lines += [f"| {name} | {c} | skipped | | | | |" for c in layout["skipped"]]
    return lines


def markdown_table(layouts: list[dict[str, Any]]) -> str:
    """The results table (one block of rows per layout)."""
    head = ["| layout (leaves × elements) | contender | step median (ms) | step min (ms) "
            "| × floor (median) | compile (s) | of which trace+lower (s) |",
            "|---|---|---:|---:|---:|---:|---:|"]
    return "\n".join(head + [line for lay in layouts for line in markdown_rows(lay)])


def check_lines(layouts: list[dict[str, Any]]) -> list[str]:
    """One line per layout with the max relative differences from optax."""
    lines = []
    for lay in layouts:
        if "error" in lay:
            continue
        chk = lay["check"]
        parts = [f"{c}: " + ", ".join(f"{q} {v:.1e}" for q, v in d.items())
                 for c, d in chk["diffs"].items()]
        lines.append(f"- {lay['leaves']:,} leaves (vs {chk['reference']}): " + "; ".join(parts))
    return lines


def bandwidth_lines(layouts: list[dict[str, Any]]) -> list[str]:
    """Memory bandwidth implied by the floor: 7 float32 arrays of n elements per step."""
    lines = []
    for lay in layouts:
        fl = floor_ms(lay)
        if fl:
            mb = 7 * 4 * lay["n"] / 1e6
            lines.append(f"- n = {lay['n']:,}: {mb:.0f} MB per step in {fl:.1f} ms = "
                         f"{mb / fl:.1f} GB/s")
    return lines


def report(layouts: list[dict[str, Any]]) -> None:
    """Print the markdown table, the floor's bandwidth and the equality check."""
    print(f"\n{date.today()}, jax {jax.__version__}, optax {optax.__version__}, "
          f"{os.cpu_count()} CPUs\n")
    print(markdown_table(layouts))
    print("\nBandwidth implied by the floor (median):")
    print("\n".join(bandwidth_lines(layouts)))
    print(f"\nEquality after {CHECK_STEPS} steps, max|x - x_optax| / max|x_optax|:")
    print("\n".join(check_lines(layouts)))


# -------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--child`` and friends are internal: one layout per process)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2**24],
                    help="total parameter counts (a layout uses leaves * (size // leaves))")
    ap.add_argument("--layouts", type=int, nargs="+", default=[1, 1000, 10000],
                    help="leaf counts")
    ap.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    ap.add_argument("--skip-slow", action="store_true",
                    help="skip --slow-contenders at --slow-leaves leaves or more (at 10,000 "
                         "leaves both pytree paths took 450-700 s to compile on 2 cores)")
    ap.add_argument("--slow-contenders", nargs="+", choices=CONTENDERS,
                    default=["optax", "jopt"])
    ap.add_argument("--slow-leaves", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-check", dest="check", action="store_false",
                    help="skip the equality check against optax")
    ap.add_argument("--case-timeout", type=float, default=1500.0,
                    help="seconds allowed per layout subprocess")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--leaves", type=int, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every requested layout (each in a subprocess), then print the report."""
    args = parse_args(argv)
    if args.child:
        print(RESULT_TAG + json.dumps(run_layout_here(args)), flush=True)
        return
    print(f"jax {jax.__version__}, optax {optax.__version__}, {os.cpu_count()} CPUs", flush=True)
    layouts = []
    for size in args.sizes:
        for leaves in args.layouts:
            layouts.append(spawn_layout(args, size, leaves))
            print_layout(layouts[-1])
    report(layouts)
    if args.json:
        args.json.write_text(json.dumps(layouts, indent=1))


if __name__ == "__main__":
    main()
