"""One report for a lent GPU machine: Adam, L-BFGS, HVP, sweep, minimize_many, test battery.

Written to run as is on an NVIDIA GPU machine (jax with CUDA installed, nothing reachable
outside) within ~8 minutes, and to degrade to any CPU-only machine (``--quick``: smaller
sizes; the header then says backend "cpu"). It writes ONE markdown table to stdout and to
``--md`` (default ``benchmarks/results/gpu.md``). Every line gives the measured value and
its ratio to a floor and/or a peer, ratio = measured / reference (< 1: faster):

1. **Adam** at 1, 1,000 and 10,000 float32 leaves of one total size (2**24 elements;
   ``--quick`` 2**20): µs per jitted step (update + ``optax.apply_updates``, params and
   state donated) of ``jopt.adam(1e-3)``, ``optax.adam(1e-3)`` and ``jopt.adam(1e-3)`` on a
   ``jopt.FlatParams`` of the same leaves, against the *copy floor* (one jitted elementwise
   Adam on ONE flat array: reads p, g, m, v and writes p, m, v once, the bandwidth floor)
   and against ``torch.optim.Adam(..., fused=True)`` on CUDA (timed in its own process; the
   cell says "torch unavailable" without torch or a CUDA device).
2. **L-BFGS** per iteration at n = 10,000 (extended Rosenbrock, float32, defined inline):
   ``jopt.minimize(fun, x0, method="lbfgs")`` steady time / nit, against a jitted bare
   ``lax.while_loop`` running the same number of iterations of one ``value_and_grad`` plus
   three vector ops and one dot product.
3. **HVP cost in gradients** on an MLP loss (784-512-512-10 tanh, batch 1024, softmax
   cross-entropy; ``--quick`` 784-256-256-10, batch 256): ``jopt.hvp`` and the
   linearize-once ``jopt.hvp_fn`` (K = 10 and 20 products in a ``lax.scan``: per product
   amortised, and the marginal product) against ``jax.grad``.
4. **jopt.sweep** over learning rates (64 × 300 Adam steps of a logistic regression;
   ``--quick`` 16 × 100) against a Python loop of the same jitted training function.
5. **jopt.minimize_many** against ``jax.jit(jax.vmap(jopt.minimize))`` on 1,024 starts
   (``--quick`` 256) of extended Rosenbrock n = 10 whose iteration counts vary.
6. **Test battery** on the device: ``pytest -q tests/test_battery.py`` (or
   ``tests/test_minimize.py -x`` where the battery is missing), passed / failed counts.

How it runs. The parent process never starts a JAX backend (so it holds no GPU memory):
each group of rows runs in a fresh child process (``--task``) that prints tagged JSON
lines, row by row, so a child stopped by the time guard still reports what it finished.
Rows run in the order Adam 1, Adam 1,000, torch, rows 2-5, battery, Adam 10,000 (the
pytree paths at 10,000 leaves took 200-700 s to compile on a CPU: they go last and are
timed after the cheap contenders of that layout). A global time guard (``--budget``
seconds, default 450; 240 with ``--quick``) gives each child at most what is left,
keeping a reserve for the later rows, and skips a row with a note when too little is
left. Timing follows ``benchmarks/_timing.py``: compile (or first call) apart from runs,
steady time = median of timed calls after warm-up, each ended with
``jax.block_until_ready``, contenders interleaved round-robin.

Usage::

    python -m benchmarks.gpu                                # full run (GPU: <= ~8 min)
    python -m benchmarks.gpu --quick --md /tmp/gpu_quick.md  # small sizes (CPU smoke test)
    python -m benchmarks.gpu --only adam,hvp --budget 200    # a subset of the rows
    python -m benchmarks.gpu --no-battery                    # skip the pytest row
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._timing import (
    compile_timed,
    emit,
    median,
    time_calls_interleaved,
    time_interleaved,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MD = "benchmarks/results/gpu.md"
TAG = "GPU-BENCH-JSON:"
ROWS = ("adam", "lbfgs", "hvp", "sweep", "many", "battery")
MISC_ROWS = ("lbfgs", "hvp", "sweep", "many")
LAYOUTS = (1, 1000, 10_000)
ADAM_CONTENDERS = ("floor", "jopt-flat", "jopt", "optax")  # compile order
ADAM_LABELS = {"jopt": "jopt.adam", "optax": "optax.adam",
               "jopt-flat": "jopt.adam on FlatParams"}
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
LBFGS_N, LBFGS_TOL, LBFGS_MAXITER = 10_000, 1e-4, 1000
MANY_N, MANY_TOL, MANY_MAXITER = 10, 1e-4, 500
MIN_START_S = 15.0  # a row needs at least this many seconds of budget to start

# Sizes and repetitions: full (GPU, fits ~8 min) and --quick (CPU smoke test).
CONFIG: dict[bool, dict[str, Any]] = {
    False: {"adam_size": 2**24, "adam_warmup": 5, "adam_repeats": 50, "lbfgs_rounds": 15,
            "mlp": (784, 512, 512, 10), "batch": 1024, "hvp_rounds": 30,
            "sweep_lrs": 64, "sweep_steps": 300, "sweep_rounds": 10,
            "many_batch": 1024, "many_rounds": 5, "budget": 450.0},
    True: {"adam_size": 2**20, "adam_warmup": 2, "adam_repeats": 10, "lbfgs_rounds": 5,
           "mlp": (784, 256, 256, 10), "batch": 256, "hvp_rounds": 7,
           "sweep_lrs": 16, "sweep_steps": 100, "sweep_rounds": 3,
           "many_batch": 256, "many_rounds": 2, "budget": 240.0},
}
# (task, cap on its seconds, seconds kept back for the tasks after it)
PLAN: tuple[tuple[str, float, float], ...] = (
    ("adam/1", 60.0, 150.0),
    ("adam/1000", 150.0, 150.0),
    ("torch", 60.0, 150.0),
    ("misc", 240.0, 100.0),
    ("battery", 180.0, 30.0),
    ("adam/10000", 600.0, 0.0),
)


# ============================================================== child-side helpers


def send(key: str, payload: dict[str, Any]) -> None:
    """Print one tagged result line (the parent keeps the last line per key)."""
    print(TAG + json.dumps({"key": key, **payload}), flush=True)


def log(msg: str) -> None:
    """A progress line on stderr (children inherit the parent's stderr)."""
    print(f"[gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def api(name: str) -> Any:
    """``jopt.<name>``, or a clear error if the public API has no such name."""
    import jopt

    if name not in getattr(jopt, "__all__", ()) or not hasattr(jopt, name):
        raise AttributeError(f"jopt.{name} is not in jopt's public API")
    return getattr(jopt, name)


def env_payload() -> dict[str, Any]:
    """Backend and devices of this process (starts the backend)."""
    jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))
    devs = jax.devices()
    return {"backend": jax.default_backend(),
            "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in devs],
            "cores": len(os.sched_getaffinity(0))}


def error_text(err: BaseException) -> str:
    """A one-line, table-safe description of an exception."""
    return f"{type(err).__name__}: {err}".replace("\n", " ").replace("|", "/")[:240]


def guarded(key: str, deadline: float, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one row's measurement and send it; a row past ``deadline`` is sent as skipped,
    a row that raises as an error (the next rows still run)."""
    left = deadline - time.time()
    if left < MIN_START_S / 2:
        send(key, {"skipped": f"time guard ({left:.0f} s left for this group)"})
        return
    log(f"{key}: start ({left:.0f} s left)")
    try:
        send(key, fn())
    except Exception as err:  # a failure is a result too
        traceback.print_exc()
        send(key, {"error": error_text(err)})


def stats_us(times: Sequence[float]) -> dict[str, float]:
    """Median and min of wall times in µs, and the count."""
    return {"us": 1e6 * median(times), "min_us": 1e6 * min(times), "reps": len(times)}


def first_call(fn: Callable[[], Any]) -> float:
    """Seconds of one call of ``fn`` (the first: compile + run)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ================================================================ row 1: Adam


def floor_step(p: jax.Array, m: jax.Array, v: jax.Array, count: jax.Array, g: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Adam on one flat array (bias corrections folded into scalars, Kingma & Ba 2015 §2):
    reads p, g, m, v and writes p, m, v once: the copy (bandwidth) floor."""
    count = count + 1.0
    c2 = jnp.sqrt(1 - B2**count)
    step = LR * c2 / (1 - B1**count)
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    return p - step * m / (jnp.sqrt(v) + EPS * c2), m, v, count


def optimizer_step(opt: Any) -> Callable[[Any, Any, Any], tuple[Any, Any]]:
    """``(params, state, grads) -> (params, state)``: one update + ``apply_updates``."""
    import optax

    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def adam_case(name: str, p_host: np.ndarray, g_host: np.ndarray, leaves: int
              ) -> tuple[Callable[..., Any], tuple, tuple]:
    """Step function, carry (donated) and constant arguments of one Adam contender."""
    import optax

    if name == "floor":
        p, g = jnp.asarray(p_host), jnp.asarray(g_host)
        return floor_step, (p, jnp.zeros_like(p), jnp.zeros_like(p),
                            jnp.zeros((), jnp.float32)), (g,)
    p_parts, g_parts = np.split(p_host, leaves), np.split(g_host, leaves)
    if name == "jopt-flat":
        flat = api("FlatParams")
        params, grads = flat.from_tree(p_parts), flat.from_tree(g_parts)
    else:
        params = [jnp.asarray(x) for x in p_parts]
        grads = [jnp.asarray(x) for x in g_parts]
    opt = optax.adam(LR) if name == "optax" else api("adam")(LR)
    return optimizer_step(opt), (params, opt.init(params)), (grads,)


def fresh(tree: Any) -> Any:
    """A device copy of every leaf (a donated carry can be used once)."""
    return jax.tree.map(jnp.copy, tree)


def task_adam(leaves: int, cfg: dict[str, Any], deadline: float) -> None:
    """Row 1 at one layout: compile the contenders in ``ADAM_CONTENDERS`` order and time
    them interleaved; results are sent before each slow (pytree, >= 1,000 leaves) compile
    so a child stopped by the time guard keeps the cheap contenders' numbers."""
    key = f"adam/{leaves}"
    size = cfg["adam_size"]
    per = size // leaves
    rng = np.random.default_rng(0)
    p_host = rng.standard_normal(per * leaves, dtype=np.float32)
    g_host = rng.standard_normal(per * leaves, dtype=np.float32)
    row: dict[str, Any] = {"leaves": leaves, "per_leaf": per, "n": per * leaves,
                           "contenders": {}, "compiling": None, "skipped_names": []}
    cases: dict[str, tuple] = {}
    untimed = False

    def timing_pass() -> None:
        try:
            runs = {k: (step, fresh(carry), consts)
                    for k, (step, carry, consts) in cases.items()}
            times = time_interleaved(runs, cfg["adam_warmup"], cfg["adam_repeats"])
            for k, ts in times.items():
                row["contenders"][k].update(stats_us(ts))
        except Exception as err:
            traceback.print_exc()
            row["timing_error"] = error_text(err)
        row["compiling"] = None
        send(key, row)

    for name in ADAM_CONTENDERS:
        slow = name in ("jopt", "optax") and leaves >= 1000
        if slow and untimed:
            timing_pass()
            untimed = False
        if time.time() > deadline - 5:
            row["skipped_names"].append(name)
            continue
        log(f"{key}: building and compiling {name}")
        t0 = time.perf_counter()
        try:
            step, carry, consts = adam_case(name, p_host, g_host, leaves)
            build_s = time.perf_counter() - t0
            if slow:
                row["compiling"] = {"name": name, "since": time.time()}
                send(key, row)
            compiled, ct = compile_timed(step, (*carry, *consts),
                                         donate_argnums=range(len(carry)))
        except Exception as err:
            traceback.print_exc()
            row["contenders"][name] = {"error": error_text(err)}
            row["compiling"] = None
            continue
        cases[name] = (compiled, carry, consts)
        row["contenders"][name] = {"compile_s": ct.total_s, "lower_s": ct.lower_s,
                                   "build_s": build_s}
        row["compiling"] = None
        if slow:
            send(key, row)
        untimed = True
    if untimed or not cases:
        if cases:
            timing_pass()
        else:
            send(key, row)


def task_torch(cfg: dict[str, Any]) -> None:
    """Row 1's peer: ``torch.optim.Adam(fused=True)`` on CUDA at each layout (no JAX here)."""
    try:
        import torch
    except Exception as err:
        send("torch", {"unavailable": f"import torch failed ({type(err).__name__})"})
        return
    if not torch.cuda.is_available():
        send("torch", {"unavailable": f"torch {torch.__version__}: no CUDA device"})
        return
    dev = torch.device("cuda")
    out: dict[str, Any] = {"version": torch.__version__,
                           "device": torch.cuda.get_device_name(0), "layouts": {}}
    size = cfg["adam_size"]
    for leaves in LAYOUTS:
        try:
            per = size // leaves
            gen = torch.Generator(device=dev).manual_seed(0)
            flat_p = torch.randn(per * leaves, device=dev, generator=gen)
            flat_g = torch.randn(per * leaves, device=dev, generator=gen)
            params = [t.clone().requires_grad_(True) for t in flat_p.split(per)]
            for p, g in zip(params, flat_g.split(per), strict=True):
                p.grad = g.clone()
            opt = torch.optim.Adam(params, lr=LR, betas=(B1, B2), eps=EPS, fused=True)
            for _ in range(cfg["adam_warmup"]):
                opt.step()
            torch.cuda.synchronize()
            times = []
            for _ in range(cfg["adam_repeats"]):
                t0 = time.perf_counter()
                opt.step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            out["layouts"][str(leaves)] = stats_us(times)
            del opt, params, flat_p, flat_g
            torch.cuda.empty_cache()
        except Exception as err:
            traceback.print_exc()
            out["layouts"][str(leaves)] = {"error": error_text(err)}
        send("torch", out)


# ============================================================== row 2: L-BFGS


def ext_rosenbrock(x: jax.Array) -> jax.Array:
    """Extended Rosenbrock (Moré, Garbow & Hillstrom 1981, #21), n even."""
    x1, x2 = x[0::2], x[1::2]
    return jnp.sum(100.0 * (x2 - x1 * x1) ** 2 + (1.0 - x1) ** 2)


def rosenbrock_start(n: int) -> jax.Array:
    """The standard start (-1.2, 1, -1.2, 1, ...) in float32."""
    return jnp.asarray(np.tile(np.asarray([-1.2, 1.0], np.float32), n // 2))


def lbfgs_floor(x0: jax.Array, iters: jax.Array) -> jax.Array:
    """``iters`` iterations of a bare ``while_loop``: one ``value_and_grad``, three vector
    ops and a dot product each (a fixed gradient step; no line search, no tests)."""
    vg = jax.value_and_grad(ext_rosenbrock)

    def body(c: tuple) -> tuple:
        i, x, x_prev, g_prev, acc = c
        f, g = vg(x)
        sy = jnp.vdot(x - x_prev, g - g_prev)
        return i + 1, x - 1e-4 * g, x, g, acc + f + sy

    zero = jnp.zeros((), x0.dtype)
    init = (jnp.zeros((), jnp.int32), x0, x0, jnp.zeros_like(x0), zero)
    return jax.lax.while_loop(lambda c: c[0] < iters, body, init)[-1]


def row_lbfgs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Row 2: jopt.minimize L-BFGS per iteration against the bare-loop floor."""
    minimize = api("minimize")
    x0 = rosenbrock_start(LBFGS_N)

    def solve() -> Any:
        return jax.block_until_ready(minimize(ext_rosenbrock, x0, method="lbfgs",
                                              tol=LBFGS_TOL, maxiter=LBFGS_MAXITER))

    t0 = time.perf_counter()
    res = solve()
    first_s = time.perf_counter() - t0
    nit = int(res.nit)
    iters = jnp.asarray(max(nit, 1), jnp.int32)
    floor, ct = compile_timed(lbfgs_floor, (x0, iters))
    jax.block_until_ready(floor(x0, iters))
    solve()
    times = time_calls_interleaved(
        {"jopt": solve, "floor": lambda: jax.block_until_ready(floor(x0, iters))},
        cfg["lbfgs_rounds"])
    steady = median(times["jopt"])
    return {"n": LBFGS_N, "nit": nit, "nfev": int(res.nfev), "success": bool(res.success),
            "gnorm": float(jnp.max(jnp.abs(res.jac))), "first_s": first_s,
            "steady_ms": 1e3 * steady, "us_per_it": 1e6 * steady / max(nit, 1),
            "floor_us_per_it": 1e6 * median(times["floor"]) / max(nit, 1),
            "floor_compile_s": ct.total_s, "rounds": cfg["lbfgs_rounds"]}


# ================================================================= row 3: HVP


def mlp_loss(params: list, x: jax.Array, y: jax.Array) -> jax.Array:
    """Softmax cross-entropy of a tanh MLP."""
    h = x
    for w, b in params[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = params[-1]
    logp = jax.nn.log_softmax(h @ w + b)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """Σ over leaves of ``vdot``."""
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                               strict=True))


def row_hvp(cfg: dict[str, Any]) -> dict[str, Any]:
    """Row 3: ``jopt.hvp`` and ``jopt.hvp_fn`` products in units of one ``jax.grad``."""
    hvp, hvp_fn = api("hvp"), api("hvp_fn")
    sizes, batch = cfg["mlp"], cfg["batch"]
    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.standard_normal((i, o), np.float32) / np.sqrt(i)),
               jnp.zeros((o,), jnp.float32)) for i, o in itertools.pairwise(sizes)]
    v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape, np.float32)), params)
    x = jnp.asarray(rng.standard_normal((batch, sizes[0]), np.float32))
    y = jnp.asarray(rng.integers(0, sizes[-1], batch), jnp.int32)

    def many(k: int) -> tuple[Callable[..., Any], Any]:
        def f(p: Any, vs: Any, x: jax.Array, y: jax.Array) -> jax.Array:
            prod = hvp_fn(lambda q: mlp_loss(q, x, y), p)

            def body(c: jax.Array, vi: Any) -> tuple[jax.Array, None]:
                out = prod(vi)
                return c + tree_vdot(out, out), None

            return jax.lax.scan(body, jnp.zeros((), jnp.float32), vs)[0]

        vs = jax.tree.map(lambda a: jnp.stack([a * (1.0 + 0.1 * i) for i in range(k)]), v)
        return jax.jit(f), vs

    grad = jax.jit(jax.grad(mlp_loss))
    one = jax.jit(lambda p, u, x, y: hvp(lambda q: mlp_loss(q, x, y), p, u))
    m10, vs10 = many(10)
    m20, vs20 = many(20)
    calls = {"grad": lambda: jax.block_until_ready(grad(params, x, y)),
             "hvp": lambda: jax.block_until_ready(one(params, v, x, y)),
             "hvp_fn10": lambda: jax.block_until_ready(m10(params, vs10, x, y)),
             "hvp_fn20": lambda: jax.block_until_ready(m20(params, vs20, x, y))}
    first = {k: first_call(c) for k, c in calls.items()}
    for c in calls.values():
        c()
    times = time_calls_interleaved(calls, cfg["hvp_rounds"])
    med = {k: median(ts) for k, ts in times.items()}
    nparams = sum(a.size for a in jax.tree.leaves(params))
    return {"sizes": list(sizes), "batch": batch, "params": int(nparams),
            "rounds": cfg["hvp_rounds"], "grad_us": 1e6 * med["grad"],
            "hvp_us": 1e6 * med["hvp"], "hvp_fn10_us": 1e6 * med["hvp_fn10"] / 10,
            "marginal_us": 1e6 * (med["hvp_fn20"] - med["hvp_fn10"]) / 10,
            "first_s": first}


# =============================================================== row 4: sweep


def logistic_train(config: dict[str, jax.Array], data: tuple[jax.Array, jax.Array],
                   steps: int) -> dict[str, jax.Array]:
    """Full-batch ``jopt.adam`` training of a logistic regression; the final loss."""
    import optax

    x, y = data
    opt = api("adam")(config["lr"])

    def loss(w: jax.Array) -> jax.Array:
        z = x @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 5e-4 * jnp.vdot(w, w)

    def body(carry: tuple, _: Any) -> tuple[tuple, None]:
        w, state = carry
        updates, state = opt.update(jax.grad(loss)(w), state, w)
        return (optax.apply_updates(w, updates), state), None

    w0 = jnp.zeros((x.shape[1],), x.dtype)
    (w, _), _ = jax.lax.scan(body, (w0, opt.init(w0)), None, length=steps)
    return {"loss": loss(w)}


def row_sweep(cfg: dict[str, Any]) -> dict[str, Any]:
    """Row 4: ``jopt.sweep`` over learning rates against a Python loop of one jitted fn."""
    sweep, grid = api("sweep"), api("grid")
    rng = np.random.default_rng(1)
    n, d = 4096, 32
    x = rng.standard_normal((n, d), np.float32)
    y = (x @ rng.standard_normal(d, np.float32) + rng.standard_normal(n, np.float32) > 0)
    data = (jnp.asarray(x), jnp.asarray(y, jnp.float32))
    train = functools.partial(logistic_train, data=data, steps=cfg["sweep_steps"])
    lrs = np.logspace(-4, 0, cfg["sweep_lrs"]).astype(np.float32)
    configs = grid(lr=lrs)
    train_jit = jax.jit(train)
    loop_configs = [{"lr": jnp.asarray(lr)} for lr in lrs]

    def run_sweep() -> Any:
        return jax.block_until_ready(sweep(train, configs, metric="loss"))

    def run_loop() -> Any:
        return jax.block_until_ready([train_jit(c) for c in loop_configs])

    first = {"sweep": first_call(run_sweep), "loop": first_call(run_loop)}
    res, outs = run_sweep(), run_loop()
    loop_losses = np.asarray([float(o["loss"]) for o in outs])
    diff = float(np.nanmax(np.abs(np.asarray(res.outputs["loss"]) - loop_losses)))
    times = time_calls_interleaved({"sweep": run_sweep, "loop": run_loop},
                                   cfg["sweep_rounds"])
    return {"configs": len(lrs), "steps": cfg["sweep_steps"], "n": n, "d": d,
            "sweep_ms": 1e3 * median(times["sweep"]), "loop_ms": 1e3 * median(times["loop"]),
            "first_s": first, "max_loss_diff": diff,
            "best_lr": float(res.best_config["lr"]), "rounds": cfg["sweep_rounds"]}


# ======================================================= row 5: minimize_many


def row_many(cfg: dict[str, Any]) -> dict[str, Any]:
    """Row 5: ``jopt.minimize_many`` against ``jax.jit(jax.vmap(jopt.minimize))``."""
    minimize, minimize_many = api("minimize"), api("minimize_many")
    batch = cfg["many_batch"]
    rng = np.random.default_rng(2)
    radius = 10.0 ** rng.uniform(-3, np.log10(3.0), (batch, 1))
    x0s = jnp.asarray(1.0 + radius * rng.uniform(-1, 1, (batch, MANY_N)), jnp.float32)

    def one(x0: jax.Array) -> Any:
        return minimize(ext_rosenbrock, x0, method="lbfgs", tol=MANY_TOL,
                        maxiter=MANY_MAXITER)

    vmapped = jax.jit(jax.vmap(one))

    def run_many() -> Any:
        return jax.block_until_ready(minimize_many(ext_rosenbrock, x0s, method="lbfgs",
                                                   tol=MANY_TOL, maxiter=MANY_MAXITER))

    def run_vmap() -> Any:
        return jax.block_until_ready(vmapped(x0s))

    first = {"many": first_call(run_many), "vmap": first_call(run_vmap)}
    r_many, r_vmap = run_many(), run_vmap()
    nit = np.asarray(r_many.nit)
    times = time_calls_interleaved({"many": run_many, "vmap": run_vmap}, cfg["many_rounds"])
    return {"batch": batch, "n": MANY_N, "many_ms": 1e3 * median(times["many"]),
            "vmap_ms": 1e3 * median(times["vmap"]), "first_s": first,
            "nit": [int(nit.min()), float(np.median(nit)), int(nit.max())],
            "success": [int(np.sum(np.asarray(r_many.success))),
                        int(np.sum(np.asarray(r_vmap.success)))],
            "max_x_diff": float(np.max(np.abs(np.asarray(r_many.x) - np.asarray(r_vmap.x)))),
            "rounds": cfg["many_rounds"]}


ROW_FUNCS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "lbfgs": row_lbfgs, "hvp": row_hvp, "sweep": row_sweep, "many": row_many}


def run_task(args: argparse.Namespace) -> int:
    """Child process entry point: one task, results as tagged JSON lines on stdout."""
    cfg = CONFIG[args.quick]
    task = args.task
    if task == "torch":
        task_torch(cfg)
        return 0
    send("env", env_payload())
    if task.startswith("adam/"):
        task_adam(int(task.split("/")[1]), cfg, args.deadline)
    elif task == "misc":
        for row in args.rows.split(","):
            if row in ROW_FUNCS:
                guarded(row, args.deadline, functools.partial(ROW_FUNCS[row], cfg))
    return 0


# ===================================================================== parent


def run_child(argv: list[str], timeout: float) -> tuple[dict[str, dict], str | None, float]:
    """Run ``python -m benchmarks.gpu ARGV`` for at most ``timeout`` s; return its tagged
    results (last per key, including those printed before a timeout), a problem text (or
    None) and the wall seconds."""
    cmd = [sys.executable, "-m", "benchmarks.gpu", *argv]
    t0 = time.perf_counter()
    problem = None
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, text=True)
        try:
            rc = proc.wait(timeout=timeout)
            if rc:
                problem = f"child exited with code {rc}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            problem = f"stopped by the time guard after {timeout:.0f} s"
        out.seek(0)
        text = out.read()
    results: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith(TAG):
            rec = json.loads(line[len(TAG):])
            results[rec.pop("key")] = rec
    return results, problem, time.perf_counter() - t0


def battery_command(path: str | None) -> list[str]:
    """pytest arguments of row 6: ``path``, else the battery, else the minimize tests."""
    if path:
        return ["-q", path]
    if (ROOT / "tests" / "test_battery.py").exists():
        return ["-q", "tests/test_battery.py"]
    return ["-q", "tests/test_minimize.py", "-x"]


def parse_pytest(text: str) -> dict[str, Any]:
    """Counts from pytest's summary line, else from its progress characters; failed ids."""
    counts: dict[str, int] = {}
    for line in reversed(text.splitlines()):
        if re.search(r"\b(passed|failed|errors?|no tests ran)\b.* in [\d.]+s", line):
            for num, what in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|"
                                        r"xpassed|deselected)", line):
                counts["error" if what.startswith("error") else what] = int(num)
            counts["summary"] = 1
            break
    if "summary" not in counts:  # cut short: count the progress characters
        for line in text.splitlines():
            if re.fullmatch(r"[.FEsxX]+(\s+\[\s*\d+%\])?", line.strip()):
                chars = line.split()[0]
                for ch, what in ((".", "passed"), ("F", "failed"), ("E", "error"),
                                 ("s", "skipped")):
                    counts[what] = counts.get(what, 0) + chars.count(ch)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.MULTILINE)
    return {"counts": counts, "failed_ids": failed[:3]}


def run_battery(path: str | None, timeout: float) -> dict[str, Any]:
    """Row 6: pytest in a subprocess (stdout to a file), at most ``timeout`` s."""
    argv = battery_command(path)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv]
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"command": "pytest " + " ".join(argv)}
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
        try:
            rec["rc"] = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rec["timeout"] = timeout
        out.seek(0)
        text = out.read()
    rec["wall_s"] = time.perf_counter() - t0
    rec.update(parse_pytest(text))
    tail = "\n".join(text.splitlines()[-15:])
    log(f"battery: {rec['command']} -> rc {rec.get('rc')}\n{tail}")
    return rec


def version(dist: str) -> str:
    """Installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------------ formatting


def us(v: float | None) -> str:
    """A time in µs with a sensible unit."""
    if v is None:
        return "-"
    if v >= 1e5:
        return f"{v / 1e3:,.0f} ms"
    if v >= 1e3:
        return f"{v / 1e3:,.2f} ms"
    return f"{v:,.1f} µs"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``1.23×``, or ``-``."""
    if a is None or b is None or not b > 0:
        return "-"
    return f"{a / b:.2f}×"


def line(num: str, case: str, measured: str, floor: str = "-", x_floor: str = "-",
         peer: str = "-", x_peer: str = "-", notes: str = "") -> str:
    """One table line."""
    cells = (num, case, measured, floor, x_floor, peer, x_peer, notes)
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def missing_line(num: str, case: str, rec: dict[str, Any] | None, why: str) -> str | None:
    """A line for a row that did not produce numbers (skipped, error, not run); else None."""
    if rec is None:
        return line(num, case, "not measured", notes=why)
    if "skipped" in rec:
        return line(num, case, "skipped", notes=rec["skipped"])
    if "error" in rec:
        return line(num, case, "error", notes=rec["error"])
    return None


def adam_lines(res: dict[str, dict], notes: dict[str, str]) -> list[str]:
    """Row 1's lines: per layout, jopt / optax / jopt-flat against the floor and torch."""
    out = []
    torch = res.get("torch", {})
    for leaves in LAYOUTS:
        key = f"adam/{leaves}"
        rec = res.get(key)
        case = f"Adam, {leaves:,} {'leaves' if leaves > 1 else 'leaf'}"
        bad = missing_line("1", case, rec, notes.get(key, "not run"))
        if bad:
            out.append(bad)
            continue
        assert rec is not None
        case = f"Adam, {leaves:,} × {rec['per_leaf']:,} f32"
        cons = rec["contenders"]
        fl = cons.get("floor", {}).get("us")
        if "unavailable" in torch:
            t_us, t_cell = None, "torch unavailable"
        elif "layouts" in torch and "us" in torch["layouts"].get(str(leaves), {}):
            t_us = torch["layouts"][str(leaves)]["us"]
            t_cell = f"torch fused {us(t_us)}"
        else:
            t_us = None
            t_cell = ("torch: " + torch["layouts"][str(leaves)].get("error", "?")
                      if str(leaves) in torch.get("layouts", {})
                      else "torch " + notes.get("torch", "not measured"))
        floor_cell = f"copy floor {us(fl)}" if fl else "copy floor: not measured"
        gbs = f"floor {7 * 4 * rec['n'] / (fl * 1e3):,.0f} GB/s" if fl else ""
        for k, name in ADAM_LABELS.items():
            c = cons.get(k)
            if c is None or "us" not in c:
                if c and "error" in c:
                    why = c["error"]
                elif rec.get("timing_error"):
                    why = "timing failed: " + rec["timing_error"]
                elif c and "compile_s" in c:
                    why = (f"compiled in {c['compile_s']:.0f} s, then the time guard cut its "
                           f"timing off")
                elif k in rec["skipped_names"]:
                    why = "skipped: time guard"
                elif rec["compiling"] and rec["compiling"]["name"] == k:
                    why = (f"compile still running after {rec['compiling']['stopped_s']:.0f} s "
                           f"when the time guard stopped it" if "stopped_s" in rec["compiling"]
                           else "compile did not finish")
                else:
                    why = "not reached: " + notes.get(key, "the layout's child stopped early")
                out.append(line("1", f"{case}: {name}", "not measured", floor_cell, "-",
                                t_cell, "-", why))
                continue
            note = f"compile {c['compile_s']:.1f} s; median of {c['reps']}"
            if gbs and k == "jopt":
                note = f"{gbs}; {note}"
            out.append(line("1", f"{case}: {name}", f"{us(c['us'])}/step", floor_cell,
                            ratio(c["us"], fl), t_cell, ratio(c["us"], t_us), note))
    return out


def lbfgs_line(rec: dict[str, Any] | None, why: str) -> str:
    """Row 2's line."""
    case = f"L-BFGS, ext. Rosenbrock n = {LBFGS_N:,} f32: jopt.minimize per iteration"
    bad = missing_line("2", case, rec, why)
    if bad:
        return bad
    assert rec is not None
    return line("2", case, f"{us(rec['us_per_it'])}/it",
                f"while_loop floor {us(rec['floor_us_per_it'])}/it",
                ratio(rec["us_per_it"], rec["floor_us_per_it"]), notes=(
                    f"nit {rec['nit']}, nfev {rec['nfev']}, success {rec['success']}, "
                    f"‖g‖∞ {rec['gnorm']:.1e}; solve {rec['steady_ms']:.2f} ms steady, "
                    f"{rec['first_s']:.1f} s first call; floor = 1 value_and_grad + 3 "
                    f"vector ops + 1 dot per it"))


def hvp_lines(rec: dict[str, Any] | None, why: str) -> list[str]:
    """Row 3's lines (the floor column holds the unit: one ``jax.grad``)."""
    bad = missing_line("3", "HVP cost in gradients", rec, why)
    if bad:
        return [bad]
    assert rec is not None
    mlp = f"MLP {'-'.join(map(str, rec['sizes']))}, batch {rec['batch']}"
    g = rec["grad_us"]
    unit = f"jax.grad {us(g)}"
    note = f"{rec['params']:,} params; median of {rec['rounds']}"
    return [
        line("3", f"{mlp}: jopt.hvp (one product)", us(rec["hvp_us"]), unit,
             ratio(rec["hvp_us"], g), notes=f"ratio = cost in gradients; {note}"),
        line("3", f"{mlp}: jopt.hvp_fn, linearize + 10 products", f"{us(rec['hvp_fn10_us'])}"
             "/product", unit, ratio(rec["hvp_fn10_us"], g),
             notes="total of a lax.scan of 10 products / 10"),
        line("3", f"{mlp}: jopt.hvp_fn, marginal product", us(rec["marginal_us"]), unit,
             ratio(rec["marginal_us"], g), notes="(t[20 products] − t[10]) / 10"),
    ]


def sweep_line(rec: dict[str, Any] | None, why: str) -> str:
    """Row 4's line."""
    case = "jopt.sweep over learning rates (Adam, logistic regression)"
    bad = missing_line("4", case, rec, why)
    if bad:
        return bad
    assert rec is not None
    f = rec["first_s"]
    return line("4", f"jopt.sweep, {rec['configs']} lrs × {rec['steps']} Adam steps "
                f"(logistic, {rec['n']}×{rec['d']})", f"{rec['sweep_ms']:,.2f} ms",
                peer=f"Python loop {rec['loop_ms']:,.2f} ms",
                x_peer=ratio(rec["sweep_ms"], rec["loop_ms"]),
                notes=(f"first call {f['sweep']:.1f} s vs {f['loop']:.1f} s; max abs Δloss "
                       f"{rec['max_loss_diff']:.1e}; best lr {rec['best_lr']:.3g}; median "
                       f"of {rec['rounds']}"))


def many_line(rec: dict[str, Any] | None, why: str) -> str:
    """Row 5's line."""
    case = "jopt.minimize_many vs jax.vmap(jopt.minimize)"
    bad = missing_line("5", case, rec, why)
    if bad:
        return bad
    assert rec is not None
    f, nit = rec["first_s"], rec["nit"]
    return line("5", f"jopt.minimize_many, {rec['batch']:,} starts, ext. Rosenbrock n = "
                f"{rec['n']} f32", f"{rec['many_ms']:,.1f} ms",
                peer=f"jit(vmap(minimize)) {rec['vmap_ms']:,.1f} ms",
                x_peer=ratio(rec["many_ms"], rec["vmap_ms"]),
                notes=(f"nit min/median/max {nit[0]}/{nit[1]:g}/{nit[2]}; success "
                       f"{rec['success'][0]} vs {rec['success'][1]}; max abs Δx "
                       f"{rec['max_x_diff']:.1e}; first call {f['many']:.1f} s vs "
                       f"{f['vmap']:.1f} s; median of {rec['rounds']}"))


def battery_line(rec: dict[str, Any] | None, why: str) -> str:
    """Row 6's line."""
    if rec is None:
        return line("6", "test battery on the device", "not run", notes=why)
    c = rec["counts"]
    measured = f"{c.get('passed', 0)} passed, {c.get('failed', 0)} failed"
    extra = [f"{c[k]} {k}" for k in ("error", "skipped", "xfailed") if c.get(k)]
    if "timeout" in rec:
        extra.append(f"stopped by the time guard after {rec['timeout']:.0f} s (counts so far)")
    elif "summary" not in c:
        extra.append(f"no pytest summary (rc {rec.get('rc')})")
    if rec["failed_ids"]:
        extra.append("first failures: " + ", ".join(rec["failed_ids"]))
    extra.append(f"{rec['wall_s']:.0f} s")
    return line("6", f"test battery: `{rec['command']}`", measured,
                notes="; ".join(extra).replace("|", "/"))


def report(res: dict[str, dict], notes: dict[str, str], battery: dict[str, Any] | None,
           header: list[str]) -> list[str]:
    """The header lines and the one table."""
    lines = [*header, "",
             "| # | case | measured | floor (row 3: unit) | × floor | peer | × peer | notes |",
             "|---|---|---:|---|---:|---|---:|---|"]
    lines += adam_lines(res, notes)
    why = {r: notes.get(r, notes.get("misc", "not run")) for r in MISC_ROWS}
    lines.append(lbfgs_line(res.get("lbfgs"), why["lbfgs"]))
    lines += hvp_lines(res.get("hvp"), why["hvp"])
    lines.append(sweep_line(res.get("sweep"), why["sweep"]))
    lines.append(many_line(res.get("many"), why["many"]))
    lines.append(battery_line(battery, notes.get("battery", "not run")))
    return lines


def header_lines(env: dict[str, Any] | None, argv: Sequence[str], wall: float,
                 budget: float) -> list[str]:
    """Device, versions, date and command."""
    if env:
        devs = env["devices"]
        dev = f"{devs[0]}" + (f" (+{len(devs) - 1} more)" if len(devs) > 1 else "")
        dev = f"{dev}; backend {env['backend']}; {env['cores']} CPU core(s)"
    else:
        dev = "unknown (no child process reported)"
    return [
        "## jopt on one device (benchmarks/gpu.py)",
        "",
        f"- device: {dev}",
        f"- jax {version('jax')}, jaxlib {version('jaxlib')}, optax {version('optax')}, "
        f"torch {version('torch')}",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; wall {wall:.0f} s "
        f"(time guard {budget:.0f} s)",
        f"- command: `{shlex.join(['python', '-m', 'benchmarks.gpu', *argv])}`",
        "- ratio = measured / reference (< 1: faster than it); times are medians of "
        "steady calls after warm-up, each ended by block_until_ready, contenders "
        "interleaved; compile / first-call seconds in the notes",
    ]


# ------------------------------------------------------------------------ main


def child_argv(task: str, args: argparse.Namespace, deadline: float, rows: str) -> list[str]:
    """Command-line arguments of a child running ``task``."""
    argv = ["--task", task, "--deadline", f"{deadline:.3f}", "--rows", rows]
    return [*argv, "--quick"] if args.quick else argv


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--task``, ``--deadline`` and ``--rows`` are internal)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU smoke test)")
    ap.add_argument("--md", default=DEFAULT_MD, help=f"markdown output (default {DEFAULT_MD})")
    ap.add_argument("--budget", type=float, default=None,
                    help="global time guard in seconds (default 450; 240 with --quick)")
    ap.add_argument("--only", default=",".join(ROWS),
                    help=f"comma-separated rows to run, from {','.join(ROWS)}")
    ap.add_argument("--no-battery", action="store_true", help="skip row 6 (pytest)")
    ap.add_argument("--battery", default=None,
                    help="test file for row 6 (default tests/test_battery.py, else "
                         "tests/test_minimize.py -x)")
    ap.add_argument("--task", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    ap.add_argument("--rows", default=",".join(MISC_ROWS), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rows (each group in a child process) under the time guard; write the table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.task:
        return run_task(args)
    t_start = time.time()
    budget = args.budget if args.budget is not None else CONFIG[args.quick]["budget"]
    deadline = t_start + budget
    only = {r.strip() for r in args.only.split(",") if r.strip()}
    unknown = only - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; choose from {ROWS}")
    if args.no_battery:
        only.discard("battery")
    misc_rows = ",".join(r for r in MISC_ROWS if r in only)
    notes: dict[str, str] = {r: "not selected (--only)" for r in MISC_ROWS if r not in only}
    res: dict[str, dict] = {}
    battery = None
    for task, cap, reserve in PLAN:
        if (task.startswith("adam") or task == "torch") and "adam" not in only:
            notes[task] = "not selected (--only)"
            continue
        if (task == "misc" and not misc_rows) or (task == "battery" and "battery" not in only):
            notes[task] = "not selected (--only / --no-battery)"
            continue
        if task == "torch" and importlib.util.find_spec("torch") is None:
            res["torch"] = {"unavailable": "torch not installed"}
            continue
        left = deadline - time.time()
        timeout = min(cap, left - reserve)
        if timeout < MIN_START_S:
            timeout = min(cap, left)  # the reserve goes to the rows after; use what is left
        if timeout < MIN_START_S:
            notes[task] = f"skipped: time guard ({left:.0f} s of {budget:.0f} s left)"
            log(f"{task}: {notes[task]}")
            continue
        log(f"{task}: start, at most {timeout:.0f} s")
        if task == "battery":
            battery = run_battery(args.battery, timeout)
            continue
        got, problem, wall = run_child(child_argv(task, args, time.time() + timeout,
                                                  misc_rows), timeout)
        log(f"{task}: done in {wall:.0f} s" + (f" ({problem})" if problem else ""))
        if problem:
            notes[task] = problem
        for key, rec in got.items():
            if key == "env":
                res.setdefault("env", rec)
                continue
            if problem and rec.get("compiling"):
                rec["compiling"]["stopped_s"] = time.time() - rec["compiling"]["since"]
            res[key] = rec
    if "env" not in res and deadline - time.time() > 5:
        got, _, _ = run_child(["--task", "env"], max(5.0, min(60.0, deadline - time.time())))
        res.update({k: v for k, v in got.items() if k == "env"})
    header = header_lines(res.get("env"), argv, time.time() - t_start, budget)
    lines = report(res, notes, battery, header)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    emit(lines, args.md or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
