"""Adam step time and compile time vs leaf count (issue 2), against the bandwidth floor.

One jitted Adam step (update + ``optax.apply_updates``; parameters and optimizer state
donated) on float32 parameters totalling about 2**24 elements, laid out as 1, 1,000 or
10,000 equal 1-D leaves (a list). Contenders:

* ``floor``      one fused elementwise Adam formula on ONE flat array: reads p, g, m, v and
                 writes p, m, v. Nothing that updates these parameters can move fewer bytes.
* ``optax``      ``optax.adam(1e-3)`` + ``optax.apply_updates`` on the list of leaves.
* ``jopt``       ``jopt.adam(1e-3)`` + ``optax.apply_updates`` on the same list.
* ``jopt-flat``  ``jopt.adam(1e-3)`` on ``jopt.FlatParams.from_tree(list)`` (gradient also a
                 ``FlatParams``, built once outside the timed region).

Every (size, layout, contender) case runs in a fresh subprocess, so no compile cache or
allocator state carries from one case to the next. Each case reports the trace+lower and
compile seconds of ``jax.jit(step, donate_argnums=...).lower(...).compile()``, then runs 3
steps from a fixed start (saved for the equality check), then times ``--repeats`` steps
after ``--warmup`` more. The parent compares jopt's 3-step results (params, mu, nu; the
flat path viewed through ``.tree()``) with optax's: jitted optax's when that case ran, else
optax run eagerly (op by op, no compile).

Usage::

    python benchmarks/adam_layouts.py                      # full run (~10 min on 2 CPU cores)
    python benchmarks/adam_layouts.py --skip-slow          # skip optax at >= 10,000 leaves
    python benchmarks/adam_layouts.py --sizes 65536 --layouts 1 100 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import compile_timed, median, run_steps, time_steps

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
    params = rng.standard_normal(n, dtype=np.float32)
    grads = rng.standard_normal(n, dtype=np.float32)
    return params, grads


def as_leaves(flat: np.ndarray, leaves: int) -> list[jax.Array]:
    """Split ``flat`` into ``leaves`` equal 1-D device arrays (the pytree layout)."""
    return [jnp.asarray(x) for x in np.split(flat, leaves)]


def flatten_np(tree: Any) -> np.ndarray:
    """All leaves of ``tree`` concatenated in tree order, on the host."""
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)])


# ---------------------------------------------------------------------- step builders


def floor_step(p, m, v, count, g):
    """Adam's formula on one flat array: reads p, g, m, v; writes p, m, v (one fused kernel)."""
    count = count + 1.0
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    m_hat = m / (1 - B1**count)
    v_hat = v / (1 - B2**count)
    return p - LR * m_hat / (jnp.sqrt(v_hat) + EPS), m, v, count


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
        zeros = jnp.zeros_like(p)
        return floor_step, (p, zeros, jnp.zeros_like(zeros), jnp.float32(0)), (g,)
    p_tree, g_tree = as_leaves(params, leaves), as_leaves(grads, leaves)
    if contender == "jopt-flat":
        p_tree, g_tree = jopt.FlatParams.from_tree(p_tree), jopt.FlatParams.from_tree(g_tree)
    opt = optax.adam(LR) if contender == "optax" else jopt.adam(LR)
    return optimizer_step(opt), (p_tree, opt.init(p_tree)), (g_tree,)


def results_of(contender: str, carry: tuple) -> dict[str, np.ndarray]:
    """Params and Adam moments after the check steps, each as one host vector."""
    if contender == "floor":
        p, m, v, _ = carry
        return {"params": np.asarray(p), "mu": np.asarray(m), "nu": np.asarray(v)}
    params, state = carry
    adam_state = state[0] if contender == "optax" else state  # optax.adam is a chain
    trees = (params, adam_state.mu, adam_state.nu)
    if contender == "jopt-flat":  # one jitted view: eager .tree() compiles one slice per leaf
        trees = jax.jit(lambda ts: tuple(t.tree() for t in ts))(trees)
    return {q: flatten_np(t) for q, t in zip(QUANTITIES, trees, strict=True)}


# ------------------------------------------------------------------ one case (child)


def run_eager_reference(args: argparse.Namespace) -> dict[str, Any]:
    """Run optax op by op (no jit) for the check steps; save its results."""
    params, grads = start_point(args.size, args.leaves)
    step, carry, consts = build_case("optax", params, grads, args.leaves)
    carry = run_steps(step, carry, consts, CHECK_STEPS)
    save_results(Path(args.save_dir), "optax-eager", results_of("optax", carry))
    return {"contender": "optax-eager", "leaves": args.leaves, "n": int(params.size)}


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    """Compile, check-run and time one contender at one layout; return its numbers."""
    params, grads = start_point(args.size, args.leaves)
    step, carry, consts = build_case(args.case, params, grads, args.leaves)
    del params, grads
    compiled, ct = compile_timed(step, (*carry, *consts), donate_argnums=range(len(carry)))
    carry = run_steps(compiled, carry, consts, CHECK_STEPS)
    if args.save_dir:
        save_results(Path(args.save_dir), args.case, results_of(args.case, carry))
    times, _ = time_steps(compiled, carry, consts, args.warmup, args.repeats)
    return {
        "contender": args.case,
        "leaves": args.leaves,
        "n": args.leaves * (args.size // args.leaves),
        "lower_s": ct.lower_s,
        "compile_s": ct.total_s,
        "step_ms": 1e3 * median(times),
        "min_ms": 1e3 * min(times),
        "max_ms": 1e3 * max(times),
        "repeats": len(times),
    }


def save_results(directory: Path, name: str, results: dict[str, np.ndarray]) -> None:
    """Write each quantity to ``directory/name.quantity.npy``."""
    for q, arr in results.items():
        np.save(directory / f"{name}.{q}.npy", arr)


def child_main(args: argparse.Namespace) -> None:
    """Entry point of a case subprocess: print one tagged JSON line."""
    out = run_eager_reference(args) if args.case == "optax-eager" else run_case(args)
    print(RESULT_TAG + json.dumps(out), flush=True)


# ----------------------------------------------------------------- driver (parent)


def spawn_case(
    args: argparse.Namespace, case: str, size: int, leaves: int, save_dir: str
) -> dict[str, Any]:
    """Run one case in a fresh Python process; return its JSON (or an error record)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--size", str(size),
           "--leaves", str(leaves), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    if save_dir:
        cmd += ["--save-dir", save_dir]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.case_timeout)
    except subprocess.TimeoutExpired:
        return {"contender": case, "leaves": leaves, "error": f"timeout {args.case_timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            out = json.loads(line[len(RESULT_TAG):])
            out["wall_s"] = time.perf_counter() - t0
            return out
    sys.stderr.write(proc.stderr[-4000:])
    return {"contender": case, "leaves": leaves, "error": f"exit code {proc.returncode}"}


def is_slow(contender: str, leaves: int, args: argparse.Namespace) -> bool:
    """Cases that ``--skip-slow`` drops: optax at ``--slow-leaves`` leaves or more."""
    return args.skip_slow and contender == "optax" and leaves >= args.slow_leaves


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``: the largest difference relative to the reference's scale."""
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))


def compare(save_dir: Path, name: str, ref: str) -> dict[str, float]:
    """Max relative difference of ``name``'s check results from ``ref``'s, per quantity."""
    load = lambda who, q: np.load(save_dir / f"{who}.{q}.npy")  # noqa: E731
    return {q: max_rel_diff(load(name, q), load(ref, q)) for q in QUANTITIES}


def equality_check(
    args: argparse.Namespace, size: int, leaves: int, save_dir: str, ran: set[str]
) -> dict[str, Any]:
    """Compare jopt (and the floor) with optax after the check steps at one layout."""
    ref = "optax"
    if "optax" not in ran:
        spawn_case(args, "optax-eager", size, leaves, save_dir)
        ref = "optax-eager"
    d = Path(save_dir)
    if not (d / f"{ref}.params.npy").exists():
        return {"reference": ref, "error": "reference did not run"}
    diffs = {c: compare(d, c, ref) for c in ("floor", "jopt", "jopt-flat") if c in ran}
    return {"reference": ref, "diffs": diffs}


def run_layout(args: argparse.Namespace, size: int, leaves: int) -> dict[str, Any]:
    """All contenders at one (size, layout), each in its own process, then the check."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="adam_layouts_") as tmp:
        save_dir = tmp if args.check else ""
        for contender in args.contenders:
            if is_slow(contender, leaves, args):
                rows.append({"contender": contender, "leaves": leaves, "error": "skipped"})
                continue
            rows.append(spawn_case(args, contender, size, leaves, save_dir))
            print_row(rows[-1])
        ran = {r["contender"] for r in rows if "error" not in r}
        check = equality_check(args, size, leaves, tmp, ran) if args.check else None
    return {"size": size, "leaves": leaves, "rows": rows, "check": check}


# ---------------------------------------------------------------------- reporting


def print_row(row: dict[str, Any]) -> None:
    """One progress line per finished case."""
    if "error" in row:
        print(f"  {row['leaves']:>6} leaves  {row['contender']:<10} {row['error']}", flush=True)
        return
    print(f"  {row['leaves']:>6} leaves  {row['contender']:<10} step {row['step_ms']:9.2f} ms "
          f"(min {row['min_ms']:.2f}, max {row['max_ms']:.2f})  compile {row['compile_s']:7.2f} s "
          f"(lower {row['lower_s']:.2f})  [{row['wall_s']:.0f} s wall]", flush=True)


def floor_ms(layout: dict[str, Any]) -> float | None:
    """The floor's step time at this layout, if it ran."""
    for r in layout["rows"]:
        if r["contender"] == "floor" and "error" not in r:
            return r["step_ms"]
    return None


def markdown_rows(layout: dict[str, Any]) -> list[str]:
    """Table rows for one layout: time, ratio to the floor, compile and lowering seconds."""
    fl = floor_ms(layout)
    per = layout["size"] // layout["leaves"]
    name = f"{layout['leaves']:,} × {per:,}"
    lines = []
    for r in layout["rows"]:
        if "error" in r:
            lines.append(f"| {name} | {r['contender']} | {r['error']} | | | |")
            continue
        ratio = f"{r['step_ms'] / fl:.2f}" if fl else "n/a"
        lines.append(f"| {name} | {r['contender']} | {r['step_ms']:.1f} | {ratio} | "
                     f"{r['compile_s']:.2f} | {r['lower_s']:.2f} |")
    return lines


def markdown_table(layouts: list[dict[str, Any]]) -> str:
    """The results table (one block of rows per layout)."""
    head = ["| layout (leaves × elements) | contender | step (ms) | × floor | compile (s) "
            "| of which trace+lower (s) |", "|---|---|---:|---:|---:|---:|"]
    return "\n".join(head + [line for lay in layouts for line in markdown_rows(lay)])


def check_lines(layouts: list[dict[str, Any]]) -> list[str]:
    """One line per layout with the max relative differences from optax."""
    lines = []
    for lay in layouts:
        chk = lay["check"]
        if not chk or "diffs" not in chk:
            lines.append(f"- {lay['leaves']:,} leaves: {chk}")
            continue
        parts = [f"{c}: " + ", ".join(f"{q} {v:.1e}" for q, v in d.items())
                 for c, d in chk["diffs"].items()]
        lines.append(f"- {lay['leaves']:,} leaves (vs {chk['reference']}): " + "; ".join(parts))
    return lines


def bandwidth_lines(layouts: list[dict[str, Any]]) -> list[str]:
    """Memory bandwidth implied by the floor: 7 float32 arrays moved per step."""
    lines = []
    for lay in layouts:
        fl = floor_ms(lay)
        if fl:
            n = next(r["n"] for r in lay["rows"] if r["contender"] == "floor")
            gbs = 7 * 4 * n / (fl * 1e-3) / 1e9
            lines.append(f"- floor at n = {n:,}: {7 * 4 * n / 1e6:.0f} MB in {fl:.1f} ms "
                         f"= {gbs:.1f} GB/s")
    return lines


def report(layouts: list[dict[str, Any]]) -> None:
    """Print the markdown table, the bandwidth and the equality check."""
    print()
    print(markdown_table(layouts))
    print("\nFloor bandwidth:")
    print("\n".join(bandwidth_lines(layouts)))
    print(f"\nEquality after {CHECK_STEPS} steps, max|x - x_optax| / max|x_optax|:")
    print("\n".join(check_lines(layouts)))


# -------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (the ``--case`` group is internal: one case per subprocess)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2**24],
                    help="total parameter counts (each layout uses leaves * (size // leaves))")
    ap.add_argument("--layouts", type=int, nargs="+", default=[1, 1000, 10000],
                    help="leaf counts")
    ap.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    ap.add_argument("--skip-slow", action="store_true",
                    help="skip optax at --slow-leaves leaves or more (~200 s compile at 10k)")
    ap.add_argument("--slow-leaves", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-check", dest="check", action="store_false",
                    help="skip the equality check against optax")
    ap.add_argument("--case-timeout", type=float, default=900.0, help="seconds per case")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--leaves", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--save-dir", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every requested case (each in a subprocess), then print the report."""
    args = parse_args(argv)
    if args.case:
        child_main(args)
        return
    print(f"jax {jax.__version__}, optax {optax.__version__}, {os.cpu_count()} CPUs, "
          f"devices {jax.devices()}", flush=True)
    layouts = []
    for size in args.sizes:
        for leaves in args.layouts:
            layouts.append(run_layout(args, size, leaves))
    report(layouts)
    if args.json:
        args.json.write_text(json.dumps(layouts, indent=1))


if __name__ == "__main__":
    main()
