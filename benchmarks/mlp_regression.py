"""Full-batch MLP regression (issue 4): Adam vs L-BFGS vs Newton-CG vs Hessian-free.

Model: MLP 8-64-64-1 with tanh (4,801 parameters), float64. Data: 2,048 points x ~ U[-1, 1]^8
(seed 0), target y = sin(a·x) + 0.5·cos(b·x)·x₀ + 0.25·x₁x₂ with fixed random a, b (smooth).
Loss: 0.5·mean((f(x) - y)²), full batch. Same initial parameters for every method.

* ``adam``: ``jopt.adam(lr)`` in one jitted ``lax.scan`` of ``--adam-steps`` steps (loss per
  step recorded inside the scan). lr tuned on a grid by the final loss of an untimed run
  of the same length.
* ``lbfgs`` / ``newton-cg``: ``jopt.minimize(loss, w0, method=..., tol=--tol,
  history=True)``.
* ``hessian-free`` (if ``jopt.hessian_free`` exists): ``jopt.minimize(loss, w0,
  method=jopt.hessian_free(model_fn, loss_fn))`` (Gauss-Newton products).

Wall time: the compiled call is run once to compile and then timed (median of
``--repeats`` calls); the per-iteration loss history is placed on a time axis assuming
every iteration costs total time / iterations (an approximation for the second-order
methods, whose iterations vary in their number of CG steps).

Usage::

    python -m benchmarks.mlp_regression --out benchmarks/results/mlp_regression.json \
        --png benchmarks/mlp_regression.png --md out.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jopt  # noqa: E402
from benchmarks._timing import wait_for_load  # noqa: E402

SIZES = (8, 64, 64, 1)
M = 2048
THRESHOLDS = (1e-2, 1e-3, 1e-4, 1e-5)



def make_problem():
    """Initial parameters, model_fn, loss_fn and the loss (float64)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(M, SIZES[0]))
    a, b = rng.standard_normal(SIZES[0]), rng.standard_normal(SIZES[0])
    y = np.sin(x @ a) + 0.5 * np.cos(x @ b) * x[:, 0] + 0.25 * x[:, 1] * x[:, 2]
    x, y = jnp.asarray(x), jnp.asarray(y)
    params = []
    for din, dout in itertools.pairwise(SIZES):
        params.append((jnp.asarray(rng.standard_normal((din, dout)) / np.sqrt(din)),
                       jnp.zeros((dout,))))

    def model_fn(p):
        h = x
        for w, bb in p[:-1]:
            h = jnp.tanh(h @ w + bb)
        w, bb = p[-1]
        return (h @ w + bb)[:, 0]

    def loss_fn(z):
        return 0.5 * jnp.mean((z - y) ** 2)

    def loss(p):
        return loss_fn(model_fn(p))

    return params, model_fn, loss_fn, loss


def adam_runner(loss, lr: float, steps: int):
    opt = jopt.adam(lr)
    vg = jax.value_and_grad(loss)

    @jax.jit
    def run(p0):
        def step(carry, _):
            p, s = carry
            f, g = vg(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), f

        (p, _), fs = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
        return p, jnp.concatenate([fs, loss(p)[None]])

    return run


def timed(fn, arg, repeats: int):
    """Compile ``jax.jit(fn)`` for ``arg`` (timed apart), then the median of ``repeats`` runs."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(arg).compile()
    comp = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(arg))
        ts.append(time.perf_counter() - t0)
    return out, comp, statistics.median(ts)


def run(args) -> dict:
    p0, model_fn, loss_fn, loss = make_problem()
    res: dict = {"config": {"sizes": SIZES, "m": M, "dtype": "float64",
                            "n_params": sum(a.size for a in jax.tree.leaves(p0)),
                            "f0": float(loss(p0)), "tol": args.tol,
                            "adam_steps": args.adam_steps}, "methods": {}}
    # Adam lr tuning (untimed runs).
    grid = [float(v) for v in args.adam_lrs.split(",")]
    tune_steps = args.adam_tune_steps or args.adam_steps
    tune = {}
    for lr in grid:
        _, fs = adam_runner(loss, lr, tune_steps)(p0)
        last = float(fs[-1])
        tune[lr] = last if math.isfinite(last) else math.inf
        print(f"adam lr {lr}: loss {tune[lr]:.3e} after {tune_steps}", flush=True)
    best = min(tune, key=tune.get)
    res["config"]["adam_tuning"] = {str(k): v for k, v in tune.items()}
    res["config"]["adam_lr"] = best
    res["config"]["adam_tune_steps"] = tune_steps
    methods = {
        "adam": None,
        "lbfgs": "lbfgs",
        "newton-cg": "newton-cg",
    }
    if hasattr(jopt, "hessian_free"):
        methods["hessian-free"] = jopt.hessian_free(model_fn, loss_fn)
    if not args.no_wait:
        res["config"]["load_before"] = wait_for_load(max_wait=args.max_wait)
    res["config"]["max_wait_s"] = 0.0 if args.no_wait else args.max_wait
    for name, method in methods.items():
        if name == "adam":
            runner = adam_runner(loss, best, args.adam_steps)
            (_, fs), comp, steady = timed(runner, p0, args.repeats)
            fs = np.asarray(fs)
            nit, counts = args.adam_steps, {"nfev": args.adam_steps}
        else:
            maxiter = {"lbfgs": args.maxiter_lbfgs, "newton-cg": args.maxiter_newton,
                       "hessian-free": args.maxiter_hf}[name]

            def call(w, m=method, k=maxiter):
                return jopt.minimize(loss, w, method=m, tol=args.tol, maxiter=k,
                                     history=True)

            r, comp, steady = timed(call, p0, args.repeats)
            nit = int(r.nit)
            fs = np.asarray(r.f_history)[: nit + 1]
            counts = {"nfev": int(r.nfev), "njev": int(r.njev), "nhev": int(r.nhev),
                      "status": int(r.status)}
        t = np.arange(len(fs)) * (steady / max(len(fs) - 1, 1))
        reach = {}
        for th in THRESHOLDS:
            idx = np.nonzero(fs <= th)[0]
            reach[str(th)] = float(t[idx[0]]) if idx.size else None
        res["methods"][name] = {"nit": nit, "final": float(fs[-1]), "steady_s": steady,
                                "compile_s": comp,
                                "maxiter": args.adam_steps if name == "adam" else maxiter,
                                "reach_s": reach,
                                "f": fs.tolist(), **counts}
        print(f"{name}: nit {nit}, final {fs[-1]:.3e}, {steady:.2f} s", flush=True)
    with open("/proc/loadavg") as fh:
        res["config"]["load_after"] = float(fh.read().split()[0])
    return res


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in res["methods"].items():
        fs = np.asarray(r["f"])
        t = np.arange(len(fs)) * (r["steady_s"] / max(len(fs) - 1, 1))
        ax.plot(t, fs, label=f"{name} ({r['nit']} it)")
    ax.set_yscale("log")
    ax.set_xlabel("wall time (s, steady; per-iteration time assumed uniform)")
    ax.set_ylabel("training loss 0.5·MSE")
    c = res["config"]
    ax.set_title(f"MLP {'-'.join(map(str, c['sizes']))} tanh, {c['m']} points, {c['dtype']}")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(res: dict) -> str:
    c = res["config"]
    lb = c.get("load_before")
    lines = ["## Full-batch MLP regression (issue 4)", "",
             f"MLP {'-'.join(map(str, c['sizes']))} (tanh, {c['n_params']} parameters), "
             f"{c['m']} synthetic points (smooth target), {c['dtype']}, loss 0.5·MSE "
             f"(initial {c['f0']:.3g}), full batch, same start for all. Adam: `jopt.adam` in "
             f"one jitted `lax.scan` of {c['adam_steps']} steps, lr {c['adam_lr']} chosen "
             f"from {sorted(float(k) for k in c['adam_tuning'])} by the final loss of an "
             f"untimed {c.get('adam_tune_steps', '?')}-step run. "
             f"Others: `jopt.minimize(..., tol={c['tol']}, history=True)`; Hessian-free = "
             "`method=jopt.hessian_free(model_fn, loss_fn)` (Gauss-Newton products, default "
             "settings). Time = wall time of one run of the whole call, compiled ahead "
             "with `jax.jit(...).lower().compile()` (compile column, timed apart); "
             "time to threshold places the recorded "
             "per-iteration losses on a "
             "uniform time grid (total / iterations). Before timing, the script waited "
             f"(polling every 30 s, at most {c.get('max_wait_s', 900):.0f} s) for the 1-minute "
             f"load average to fall below 1.5: load {_f(lb, '.2f')} at the start, "
             f"{_f(c['load_after'], '.2f')} at the "
             "end. Plot: `benchmarks/mlp_regression.png`. Produced by "
             "`python -m benchmarks.mlp_regression`.", "",
             "| method | iterations (limit) | nfev | nhev | final loss | steady time (s) | "
             "compile (s) | " + " | ".join(f"time to ≤ {th:g} (s)" for th in THRESHOLDS)
             + " |", "|---|---|---|---|---|---|---|" + "---|" * len(THRESHOLDS)]
    for name, r in res["methods"].items():
        lines.append(
            f"| {name} | {r['nit']} ({r['maxiter']}) | {r.get('nfev', '-')} | "
            f"{r.get('nhev', '-')} | "
            f"{r['final']:.3e} | {r['steady_s']:.2f} | {r['compile_s']:.1f} | "
            + " | ".join(_f(r["reach_s"][str(th)], ".2f") for th in THRESHOLDS) + " |")
    return "\n".join(lines) + "\n"


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adam-steps", type=int, default=5000)
    ap.add_argument("--adam-tune-steps", type=int, default=0,
                    help="length of the lr-tuning runs (0: --adam-steps)")
    ap.add_argument("--adam-lrs", default="1e-3,3e-3,1e-2,3e-2,1e-1")
    ap.add_argument("--maxiter-lbfgs", type=int, default=3000)
    ap.add_argument("--maxiter-newton", type=int, default=60)
    ap.add_argument("--maxiter-hf", type=int, default=150)
    ap.add_argument("--max-wait", type=float, default=900.0, help="longest load wait (s)")
    ap.add_argument("--tol", type=float, default=1e-7)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-wait", action="store_true", help="skip the load-average wait")
    ap.add_argument("--out", default="", help="JSON output")
    ap.add_argument("--png", default="benchmarks/mlp_regression.png")
    ap.add_argument("--md", default="")
    ap.add_argument("--report", default="", help="only tabulate/plot this JSON file")
    args = ap.parse_args(argv)
    if args.report:
        with open(args.report) as fh:
            res = json.load(fh)
    else:
        res = run(args)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(res, fh)
    plot(res, args.png)
    text = report(res)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
