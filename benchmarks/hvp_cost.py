"""Cost of one Hessian-vector product relative to one gradient on an MLP loss (issue 4).

MLP 784-512-512-10 (tanh), softmax cross-entropy, a batch of 1024 random inputs with random
labels, float32. Every quantity is a jitted function of (params, direction[s]); each is
timed as the median of ``--repeats`` (>= 20) calls after 3 warm-up calls, each call ended
with ``jax.block_until_ready``; the calls are interleaved (round r times every function once)
so that load changes on a shared machine affect all functions alike:

* ``grad``: ``jax.grad(loss)``;
* ``hvp (fwd-over-rev)``: ``jopt.hvp(loss, params, v)``;
* ``hvp (rev-over-rev)``: ``jax.grad(lambda p: <∇loss(p), v>)``;
* ``hvp_fn, K products``: ``jopt.hvp_fn(loss, params)`` once, then ``K`` products in a
  ``lax.scan`` (as a Krylov loop uses it); reported per product (total / K) for K = 10, and
  the marginal cost of one more product = (t[K=20] - t[K=10]) / 10;
* ``gnvp``: ``jopt.gnvp(model_fn, loss_fn, params, v)`` (Gauss-Newton product), and
  ``gnvp_fn`` amortised over 10 products likewise.

Ratios are to the gradient time. Targets (issue 4): one HVP <= 2 gradients; <= 1.6 per
product when many products share one point.

Usage::

    python -m benchmarks.hvp_cost --out benchmarks/results/hvp_cost.json --md out.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jopt
from benchmarks._timing import wait_for_load

SIZES = (784, 512, 512, 10)
BATCH = 1024



def make_problem(seed: int = 0):
    """Parameters, model_fn, loss_fn (of logits) and the full loss, all float32."""
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, 2 * len(SIZES))
    params = []
    for i, (din, dout) in enumerate(itertools.pairwise(SIZES)):
        w = jax.random.normal(keys[i], (din, dout), jnp.float32) / np.sqrt(din)
        params.append((w, jnp.zeros((dout,), jnp.float32)))
    x = jax.random.normal(keys[-1], (BATCH, SIZES[0]), jnp.float32)
    y = jax.random.randint(keys[-2], (BATCH,), 0, SIZES[-1])

    def model_fn(p):
        h = x
        for w, b in p[:-1]:
            h = jnp.tanh(h @ w + b)
        w, b = p[-1]
        return h @ w + b

    def loss_fn(logits):
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def loss(p):
        return loss_fn(model_fn(p))

    return params, model_fn, loss_fn, loss


def _vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def run(repeats: int, wait: bool = True, max_wait: float = 900.0) -> dict:
    params, model_fn, loss_fn, loss = make_problem()
    v = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(1), a.shape, a.dtype),
                     params)

    def stack(k):
        return jax.tree.map(lambda a: jnp.stack([a * (1.0 + 0.1 * i) for i in range(k)]), v)

    def many(make_fn, k):
        def f(p, vs):
            prod = make_fn(p)

            def body(c, vi):
                out = prod(vi)
                return c + _vdot(out, out), None

            return jax.lax.scan(body, jnp.zeros((), jnp.float32), vs)[0]

        return jax.jit(f), stack(k)

    fns = {
        "grad": (jax.jit(jax.grad(loss)), (params,), 1),
        "hvp fwd-over-rev (jopt.hvp)": (jax.jit(lambda p, u: jopt.hvp(loss, p, u)),
                                        (params, v), 1),
        "hvp rev-over-rev": (jax.jit(lambda p, u: jax.grad(
            lambda q: _vdot(jax.grad(loss)(q), u))(p)), (params, v), 1),
        "gnvp (jopt.gnvp)": (jax.jit(lambda p, u: jopt.gnvp(model_fn, loss_fn, p, u)),
                             (params, v), 1),
    }
    for k in (10, 20):
        f, vs = many(lambda p: jopt.hvp_fn(loss, p), k)
        fns[f"hvp_fn: linearize + {k} products"] = (f, (params, vs), k)
        f, vs = many(lambda p: jopt.gnvp_fn(model_fn, loss_fn, p), k)
        fns[f"gnvp_fn: linearize + {k} products"] = (f, (params, vs), k)
    out: dict = {"config": {"sizes": SIZES, "batch": BATCH, "dtype": "float32",
                            "activation": "tanh", "repeats": repeats,
                            "backend": jax.default_backend(),
                            "device": str(jax.devices()[0])}}
    if wait:
        load0 = wait_for_load(max_wait=max_wait)
    else:
        with open("/proc/loadavg") as fh:
            load0 = float(fh.read().split()[0])
    out["config"]["load_before"] = load0
    out["config"]["max_wait_s"] = max_wait if wait else 0.0
    # Interleaved: each round times every function once, so load changes during the run
    # hit all of them alike; the median over rounds is reported.
    for f, args, _ in fns.values():
        for _ in range(3):
            jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (f, args, _) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - t0)
    rows = {}
    for name, (_, _, k) in fns.items():
        ts = times[name]
        rows[name] = {"median_s": statistics.median(ts), "k": k, "min_s": min(ts),
                      "max_s": max(ts)}
        print(f"{name}: {rows[name]['median_s'] * 1e3:.3f} ms", flush=True)
    with open("/proc/loadavg") as fh:
        out["config"]["load_after"] = float(fh.read().split()[0])
    g = rows["grad"]["median_s"]
    for r in rows.values():
        r["per_product_s"] = r["median_s"] / r["k"]
        r["ratio"] = r["per_product_s"] / g
    for fam in ("hvp_fn", "gnvp_fn"):
        t10 = rows[f"{fam}: linearize + 10 products"]["median_s"]
        t20 = rows[f"{fam}: linearize + 20 products"]["median_s"]
        marg = (t20 - t10) / 10
        rows[f"{fam}: marginal product ((t20 - t10)/10)"] = {
            "median_s": marg, "k": 1, "per_product_s": marg, "ratio": marg / g}
    out["rows"] = rows
    return out


def report(res: dict) -> str:
    c = res["config"]
    rows = res["rows"]
    lines = ["## HVP cost on an MLP (issue 4)", "",
             f"MLP {'-'.join(map(str, c['sizes']))} ({c['activation']}), softmax "
             f"cross-entropy, batch {c['batch']} of random data, {c['dtype']}, backend "
             f"{c['backend']} ({c['device']}). Each jitted function timed as the median of "
             f"{c['repeats']} calls after 3 warm-ups, interleaved (each round times every "
             "function once). Before timing, the script waited "
             f"(polling every 30 s, at most {c.get('max_wait_s', 900):.0f} s) for the 1-minute "
             f"load average to fall below 1.5: load {c['load_before']:.2f} when timing "
             f"started, {c['load_after']:.2f} "
             "when it ended (the machine is shared; ratios, measured back-to-back in one "
             "process, are more robust than absolute times). Produced by "
             "`python -m benchmarks.hvp_cost`.", "",
             "| quantity | median (ms) | products | per product (ms) | ratio to gradient |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['median_s'] * 1e3:.3f} | {r['k']} | "
                     f"{r['per_product_s'] * 1e3:.3f} | {r['ratio']:.2f} |")
    h1 = rows["hvp fwd-over-rev (jopt.hvp)"]["ratio"]
    am = rows["hvp_fn: linearize + 10 products"]["ratio"]
    mg = rows["hvp_fn: marginal product ((t20 - t10)/10)"]["ratio"]
    lines += ["", f"Targets: one HVP ≤ 2 gradients → {h1:.2f} "
              f"({'met' if h1 <= 2 else 'missed'}); ≤ 1.6 per product when many share one "
              f"point → {am:.2f} amortised over 10 ({'met' if am <= 1.6 else 'missed'}), "
              f"{mg:.2f} marginal ({'met' if mg <= 1.6 else 'missed'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default="", help="JSON output")
    ap.add_argument("--md", default="", help="write the Markdown section here")
    ap.add_argument("--report", default="", help="only tabulate this JSON file")
    ap.add_argument("--max-wait", type=float, default=900.0, help="longest load wait (s)")
    ap.add_argument("--no-wait", action="store_true", help="skip the load-average wait")
    args = ap.parse_args(argv)
    if args.report:
        with open(args.report) as fh:
            res = json.load(fh)
    else:
        res = run(max(args.repeats, 20), wait=not args.no_wait,
                  max_wait=args.max_wait)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(res, fh, indent=1)
    text = report(res)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
