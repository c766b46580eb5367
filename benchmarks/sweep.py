"""A 64-learning-rate Adam sweep (issue 6) against the matrix-form floor (issue 8).

Problem: L2-regularised logistic regression on scikit-learn's breast-cancer data (569
samples, 30 standardised features + an intercept column, d = 31), float32,

    f(w) = mean(log(1 + exp(z)) − y z) + ½ λ Σ_{j<30} w_j²,   z = X w,   λ = 1e-3,

trained full-batch for 300 steps from w = 0 at 64 learning rates log-spaced in [1e-4, 1].
Every contender returns the 64 final weight vectors and final losses. Contenders:

* ``jopt-sweep``   ``jopt.sweep(train, {"learning_rate": lrs}, metric="loss")``: the whole
                   ``jopt.sweep`` call (validation, one compiled program, best config);
* ``optax-vmap``   the same training function with ``optax.adam``, ``jax.jit(jax.vmap(.))``
                   written by hand;
* ``jopt-loop``    a Python loop of 64 calls of ``jax.jit(train)`` (compiled once, reused);
                   the 64 calls are dispatched asynchronously and waited for at the end;
* ``floor``        all 64 configurations at once in matrix form: weights ``W`` of shape
                   ``[d, 64]``, hand-written gradient ``Xᵀ(σ(XW) − Y)/n + λW`` and plain
                   gradient steps ``W ← W − G·diag(lr)``, 300 steps in one ``fori_loop``.
                   (Adam's moments add a few elementwise kernels on [31, 64] per step; the
                   floor leaves them out.)
* ``floor-adam``   (context) the floor with Adam's update written in the same matrix form:
                   it separates Adam's own per-step cost from the cost of batching by vmap.

The training function (``train`` below) is written the way it runs fastest on XLA:CPU,
which profiling the first version showed (``jopt-sweep-naive`` is that first version):

* the derivative of the per-sample loss is given as a ``jax.custom_vjp`` (σ(z) − y: one
  exponential); ``jax.grad`` through ``logaddexp`` evaluates three transcendentals per
  sample (the naive sweep measured ~3.3× the floor);
* the product ``z = X w`` is a ``jax.custom_vjp`` (:func:`linear`) whose VJP reads a
  stored transpose ``Xᵀ`` [d, n]. Under ``vmap`` reverse mode's own product is
  ``[n, 64]ᵀ·[n, d]`` (contracting dimension first on both sides), which XLA:CPU runs
  outside its fast (YNNPACK) dot path — 1.3–1.45× the floor in early runs — while
  ``Xᵀ·G`` is the floor's own ``[d, n]·[n, 64]``. With both, the sweep's loop body is the
  floor's two products plus Adam's elementwise kernels.

Timing (``benchmarks/_timing.py``): each contender is compiled from a fresh ``jax.jit``
(trace + lower and compile timed apart from running; ``jopt-sweep`` as ``jax.jit`` of a
function calling ``jopt.sweep``, which compiles the same program), then all contenders
run interleaved (round-robin, order rotated every round) after warm-up; medians are
reported with the CPU share other processes used meanwhile. The equality check compares
``jopt-sweep``'s final weights and losses with ``jopt-loop``'s.

Usage::

    python -m benchmarks.sweep                   # ~1 min on 2 shared CPU cores
    python -m benchmarks.sweep --repeats 30 --out /tmp/sweep_results.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_breast_cancer

import jopt
from jopt.sweep import sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import compile_timed, median, time_interleaved, wait_for_load

DTYPE = jnp.float32
NUM_LRS = 64
STEPS = 300
L2 = 1e-3
CONTENDERS = ("jopt-sweep", "optax-vmap", "jopt-loop", "floor", "floor-adam", "jopt-sweep-naive")


# ---------------------------------------------------------------------------- problem


def load_problem() -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(X [n, d], Xᵀ [d, n], y [n], penalty mask [d])`` in float32, intercept last."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    x = np.hstack([features, np.ones((features.shape[0], 1))])
    mask = np.r_[np.ones(features.shape[1]), 0.0]
    return (jnp.asarray(x, DTYPE), jnp.asarray(x.T, DTYPE), jnp.asarray(labels, DTYPE),
            jnp.asarray(mask, DTYPE))


X, XT, Y, MASK = load_problem()
N, D = X.shape
LEARNING_RATES = jnp.asarray(np.logspace(-4, 0, NUM_LRS), DTYPE)


@jax.custom_vjp
def logistic_nll(z: jax.Array, y: jax.Array) -> jax.Array:
    """``log(1 + eᶻ) − y z`` per sample; its VJP is ``g (σ(z) − y)`` (one exponential)."""
    return jnp.logaddexp(0.0, z) - y * z


def _nll_fwd(z: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return logistic_nll(z, y), (z, y)


def _nll_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    z, y = res
    return g * (jax.nn.sigmoid(z) - y), -g * z


logistic_nll.defvjp(_nll_fwd, _nll_bwd)


@jax.custom_vjp
def linear(w: jax.Array, x: jax.Array, xt: jax.Array) -> jax.Array:
    """``x @ w``, whose VJP ``xt @ g`` reads the transpose ``xt`` stored row-major."""
    return x @ w


def _linear_fwd(w: jax.Array, x: jax.Array, xt: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x @ w, xt


def _linear_bwd(xt: jax.Array, g: jax.Array) -> tuple[jax.Array, None, None]:
    return xt @ g, None, None  # the data gets no cotangent


linear.defvjp(_linear_fwd, _linear_bwd)


def loss(w: jax.Array) -> jax.Array:
    """The regularised objective as the benchmark trains it (see the module docstring)."""
    return jnp.mean(logistic_nll(linear(w, X, XT), Y)) + 0.5 * L2 * jnp.sum(MASK * w * w)


def naive_loss(w: jax.Array) -> jax.Array:
    """The same objective written plainly: ``jax.grad`` through ``logaddexp`` and ``X @ w``."""
    z = X @ w
    return jnp.mean(jnp.logaddexp(0.0, z) - Y * z) + 0.5 * L2 * jnp.sum(MASK * w * w)


def make_train(make_opt, loss=loss):
    """``train(config) -> {"w", "loss"}``: ``STEPS`` full-batch steps from ``w = 0``."""
    grad = jax.grad(loss)

    def train(config: dict) -> dict:
        opt = make_opt(config["learning_rate"])
        w = jnp.zeros(D, DTYPE)

        def step(carry: tuple, _: None) -> tuple[tuple, None]:
            w, state = carry
            updates, state = opt.update(grad(w), state, w)
            return (w + updates, state), None

        w, _ = jax.lax.scan(step, (w, opt.init(w)), None, length=STEPS)[0]
        return {"w": w, "loss": loss(w)}

    return train


train_jopt = make_train(jopt.adam)
train_optax = make_train(optax.adam)
train_naive = make_train(jopt.adam, naive_loss)


def floor(lrs: jax.Array) -> dict:
    """All configurations at once: ``W [d, k]``, hand-written gradient, plain steps."""
    ymat = Y[:, None]
    reg = L2 * MASK[:, None]

    def body(_: int, w: jax.Array) -> jax.Array:
        g = X.T @ (jax.nn.sigmoid(X @ w) - ymat) / N + reg * w
        return w - lrs * g

    w = jax.lax.fori_loop(0, STEPS, body, jnp.zeros((D, lrs.shape[0]), DTYPE))
    z = X @ w
    losses = jnp.mean(jnp.logaddexp(0.0, z) - ymat * z, axis=0) + 0.5 * jnp.sum(reg * w * w, 0)
    return {"w": w.T, "loss": losses}


def floor_adam(lrs: jax.Array) -> dict:
    """:func:`floor` with Adam's update (Kingma & Ba 2015, Alg. 1) in the same matrix form.

    Not the target's floor: it separates what Adam's own per-step work costs from what
    batching by ``vmap`` costs.
    """
    ymat = Y[:, None]
    reg = L2 * MASK[:, None]
    b1, b2, eps = 0.9, 0.999, 1e-8

    def body(i: jax.Array, carry: tuple) -> tuple:
        w, m, v = carry
        g = X.T @ (jax.nn.sigmoid(X @ w) - ymat) / N + reg * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        t = (i + 1).astype(DTYPE)
        w = w - lrs * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)
        return w, m, v

    zeros = jnp.zeros((D, lrs.shape[0]), DTYPE)
    w = jax.lax.fori_loop(0, STEPS, body, (zeros, zeros, zeros))[0]
    z = X @ w
    losses = jnp.mean(jnp.logaddexp(0.0, z) - ymat * z, axis=0) + 0.5 * jnp.sum(reg * w * w, 0)
    return {"w": w.T, "loss": losses}


# -------------------------------------------------------------------------- contenders


def prepare() -> tuple[dict, dict, dict]:
    """Compile every contender (timed); return its timed call, compile times and result."""
    configs = {"learning_rate": LEARNING_RATES}
    lr0 = {"learning_rate": LEARNING_RATES[0]}
    compiled, timings = {}, {}
    compiled["jopt-sweep"], timings["jopt-sweep"] = compile_timed(
        lambda c: sweep(train_jopt, c, metric="loss").outputs, (configs,))
    compiled["optax-vmap"], timings["optax-vmap"] = compile_timed(
        jax.vmap(train_optax), (configs,))
    compiled["jopt-loop"], timings["jopt-loop"] = compile_timed(train_jopt, (lr0,))
    compiled["floor"], timings["floor"] = compile_timed(floor, (LEARNING_RATES,))
    compiled["floor-adam"], timings["floor-adam"] = compile_timed(floor_adam, (LEARNING_RATES,))
    compiled["jopt-sweep-naive"], timings["jopt-sweep-naive"] = compile_timed(
        lambda c: sweep(train_naive, c, metric="loss").outputs, (configs,))

    loop_single = compiled["jopt-loop"]
    per_lr = [{"learning_rate": lr} for lr in LEARNING_RATES]  # built once, untimed

    def run_sweep() -> dict:
        # The public call, as a user makes it (its own jit cache; compiled while warming up).
        return sweep(train_jopt, configs, metric="loss").outputs

    def run_loop() -> dict:
        outs = [loop_single(c) for c in per_lr]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    runners = {
        "jopt-sweep": run_sweep,
        "optax-vmap": lambda: compiled["optax-vmap"](configs),
        "jopt-loop": run_loop,
        "floor": lambda: compiled["floor"](LEARNING_RATES),
        "floor-adam": lambda: compiled["floor-adam"](LEARNING_RATES),
        "jopt-sweep-naive": lambda: sweep(train_naive, configs, metric="loss").outputs,
    }
    results = {k: jax.block_until_ready(f()) for k, f in runners.items()}
    return runners, timings, results


def proc_stat_busy() -> tuple[float, float]:
    """(busy CPU-seconds of the machine since boot, this process's CPU-seconds)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0.0, time.process_time()
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK"), time.process_time()


def timed(runners: dict, warmup: int, repeats: int) -> tuple[dict, float]:
    """Interleaved wall times per contender and the CPU share used by other processes."""
    def as_step(run):
        def step() -> tuple:
            jax.block_until_ready(run())
            return ()
        return step

    cases = {k: (as_step(f), (), ()) for k, f in runners.items()}
    busy0, own0 = proc_stat_busy()
    t0 = time.perf_counter()
    times = time_interleaved(cases, warmup=warmup, repeats=repeats)
    wall = time.perf_counter() - t0
    busy1, own1 = proc_stat_busy()
    others = ((busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))
    return times, max(0.0, others)


def max_rel_diff(a: jax.Array, b: jax.Array) -> float:
    """``max|a − b| / max|b|``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------------------ report


def report(times: dict, others: float, timings: dict, results: dict, load: float) -> str:
    """The markdown section: table, equality check and conditions."""
    med = {k: median(v) for k, v in times.items()}
    fl, loop = med["floor"], med["jopt-loop"]
    ratio = med["jopt-sweep"] / fl
    a, c = results["jopt-sweep"], results["jopt-loop"]
    best = int(np.nanargmin(np.asarray(a["loss"])))

    lines = [
        "## Hyperparameter sweep: 64 Adam learning rates (issues 6 and 8)",
        "",
        f"L2-regularised logistic regression on breast cancer (n = {N}, d = {D} with "
        f"intercept, λ = {L2:g}), float32, {STEPS} full-batch steps from w = 0, "
        f"{NUM_LRS} learning rates log-spaced in [1e-4, 1]. Produced by "
        f"`python -m benchmarks.sweep` on {date.today().isoformat()} "
        f"(jax {jax.__version__}, {jax.default_backend()}, {os.cpu_count()} CPUs). "
        f"Median of {len(times['floor'])} interleaved repeats; compile = trace + lower + "
        f"compile of a fresh `jax.jit`. Load average before timing {load:.2f}; other "
        f"processes used {others:.0%} of the CPUs while timing.",
        "",
        "| method | median (s) | min (s) | × floor | × loop | compile (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "jopt-sweep": "jopt.sweep (vmapped, one program)",
        "optax-vmap": "optax.adam, vmapped by hand",
        "jopt-loop": "Python loop of 64 jitted runs",
        "floor": "floor: matrix form W [d, 64], plain gradient steps",
        "floor-adam": "(context) matrix form with Adam's update, by hand",
        "jopt-sweep-naive": "(context) jopt.sweep, loss written plainly (`X @ w`, `logaddexp`)",
    }
    for k in CONTENDERS:
        lines.append(
            f"| {names[k]} | {med[k]:.4f} | {min(times[k]):.4f} | {med[k] / fl:.2f} | "
            f"{med[k] / loop:.2f} | {timings[k].total_s:.2f} |")
    target = "met" if ratio <= 1.1 else "missed"
    lines += [
        "",
        f"**Target (jopt.sweep ≤ 1.1× the floor): {target}, {ratio:.2f}×.** "
        f"jopt.sweep is {loop / med['jopt-sweep']:.1f}× faster than the loop of jitted runs.",
        "",
        f"**Equality** (jopt.sweep vs the loop, same float32 training function): final "
        f"weights max|Δ|/max|w| = {max_rel_diff(a['w'], c['w']):.1e}, final losses "
        f"{max_rel_diff(a['loss'], c['loss']):.1e} (a batched product rounds differently "
        f"from a single matrix-vector product). Best learning rate "
        f"{float(LEARNING_RATES[best]):.3g} (final loss {float(a['loss'][best]):.5f}); "
        f"optax.adam vmapped vs jopt.sweep: weights "
        f"{max_rel_diff(results['optax-vmap']['w'], a['w']):.1e}; matrix-form Adam vs "
        f"jopt.sweep: final losses {max_rel_diff(results['floor-adam']['loss'], a['loss']):.1e}.",
        "",
        f"**Where the rest goes** (medians). jopt.sweep / matrix-form Adam = "
        f"{med['jopt-sweep'] / med['floor-adam']:.2f}; matrix-form Adam / floor = "
        f"{med['floor-adam'] / fl:.2f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for the load average to drop before timing")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    runners, timings, results = prepare()
    load = os.getloadavg()[0] if args.no_wait else wait_for_load()
    times, others = timed(runners, args.warmup, args.repeats)
    text = report(times, others, timings, results, load)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
