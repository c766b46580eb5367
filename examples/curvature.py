"""Curvature of a small network: Hessian spectrum diagnostics and Hessian-scaled training.

A 64-32-10 tanh MLP on scikit-learn's handwritten digits is trained briefly with
``jopt.adahessian`` (Hutchinson-diagonal Adam, Yao et al. 2021) and with optax's
``optax.contrib.sophia`` through the very same training loop (each takes its objective
as an ``update`` extra argument: ``value_fn`` for jopt, ``obj_fn`` for sophia). At the
AdaHessian solution the Hessian of the training loss (averaged over four data batches)
is then examined with ``jopt.diagnostics``: the top five eigenvalues (Lanczos), the
trace with its standard error and per-layer traces (Hutchinson), and the eigenvalue
density (stochastic Lanczos quadrature), saved to ``examples/out/spectral_density.png``.

Run: ``python examples/curvature.py`` (``--quick``: 60 training steps and fewer Lanczos
steps and probes, the same calls; figure under ``examples/out/quick/``). It checks that
both optimizers learn the task and that the top eigenvalue stands far above the average
one (``trace / n``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import jopt
from jopt import diagnostics

OUT_DIR = Path(__file__).resolve().parent / "out"
DTYPE = jnp.float32
STEPS = 300
BATCH = 128
QUICK_STEPS = 60


def load_data(seed: int = 0) -> tuple[dict, dict]:
    """Digits (8x8 images scaled to [0, 1]) split 1400 train / 397 test, shuffled."""
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(y))
    x, y = (x[perm] / 16.0).astype(np.float32), y[perm].astype(np.int32)
    train = {"x": jnp.asarray(x[:1400]), "y": jnp.asarray(y[:1400])}
    test = {"x": jnp.asarray(x[1400:]), "y": jnp.asarray(y[1400:])}
    return train, test


def init_params(seed: int = 0, sizes: tuple[int, ...] = (64, 32, 10)) -> dict:
    """LeCun-normal weights, zero biases, in float32."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        params[f"layer{i}"] = {"w": jnp.asarray(w, DTYPE), "b": jnp.zeros(fan_out, DTYPE)}
    return params


def logits_fn(params: dict, x: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["layer0"]["w"] + params["layer0"]["b"][None])
    return h @ params["layer1"]["w"] + params["layer1"]["b"][None]


def loss_fn(params: dict, batch: dict) -> jax.Array:
    """Mean softmax cross-entropy of one batch."""
    logp = jax.nn.log_softmax(logits_fn(params, batch["x"]))
    return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))


def accuracy(params: dict, data: dict) -> float:
    return float(jnp.mean(jnp.argmax(logits_fn(params, data["x"]), axis=1) == data["y"]))


def train(opt: optax.GradientTransformation, params: dict, data: dict, seed: int = 0,
          steps: int = STEPS):
    """``steps`` minibatch steps in one compiled ``lax.scan``.

    The objective of the current minibatch is passed both as ``value_fn`` (jopt's
    convention) and ``obj_fn`` (sophia's); each transform reads the one it knows.
    """
    n = data["y"].shape[0]
    idx = np.stack([np.random.default_rng(seed + s).choice(n, BATCH, replace=False)
                    for s in range(steps)])

    def step(carry, batch_idx):
        params, state = carry
        batch = jax.tree.map(lambda a: a[batch_idx], data)
        objective = lambda p: loss_fn(p, batch)  # noqa: E731
        value, grads = jax.value_and_grad(objective)(params)
        updates, state = opt.update(grads, state, params, value_fn=objective,
                                    obj_fn=objective)
        return (optax.apply_updates(params, updates), state), value

    run = jax.jit(lambda p, i: jax.lax.scan(step, (p, opt.init(p)), i))
    start = time.perf_counter()
    (params, state), losses = jax.block_until_ready(run(params, jnp.asarray(idx)))
    return params, state, losses, time.perf_counter() - start


def find_hvp_count(state) -> int | None:
    """Hessian-vector products recorded in an (optax-chained) state, if it counts any."""
    return int(jopt.total_work(state).nhvp) or None


def compare_optimizers(params0: dict, train_set: dict, test_set: dict,
                       steps: int = STEPS) -> tuple[list, dict]:
    sophia_interval = 10
    optimizers = {
        "jopt.adahessian": optax.chain(optax.clip_by_global_norm(5.0),
                                       jopt.adahessian(0.15, seed=0)),
        "optax sophia-h": optax.contrib.sophia(3e-3, update_interval=sophia_interval),
    }
    rows, solutions = [], {}
    for name, opt in optimizers.items():
        params, state, losses, seconds = train(opt, params0, train_set, steps=steps)
        hvps = find_hvp_count(state)
        if name.startswith("optax sophia"):
            hvps = -(-steps // sophia_interval)  # one Hutchinson HVP every interval steps
        rows.append(dict(name=name, loss=float(jnp.mean(losses[-20:])),
                         train_acc=accuracy(params, train_set),
                         test_acc=accuracy(params, test_set), hvps=hvps or 0,
                         seconds=seconds))
        solutions[name] = params
    return rows, solutions


def curvature_report(params: dict, train_set: dict, out_dir: Path,
                     quick: bool = False) -> dict:
    """Top-5 eigenvalues, trace, per-layer traces and SLQ density of the train loss."""
    batches = jax.tree.map(lambda a: a.reshape(4, -1, *a.shape[1:]), train_set)
    iters, samples, probes = (20, 40, 2) if quick else (40, 400, 4)
    eigs = diagnostics.hessian_eigs(loss_fn, params, 5, batches=batches, num_iters=iters,
                                    key=jax.random.PRNGKey(1))
    trace = diagnostics.hessian_trace(loss_fn, params, batches=batches, rtol=0.02,
                                      max_samples=samples, block_size=4, key=2)
    density = diagnostics.hessian_spectral_density(loss_fn, params, batches=batches,
                                                   num_probes=probes, num_iters=iters, key=3)
    out_dir.mkdir(parents=True, exist_ok=True)
    ax = diagnostics.plot_spectral_density(density)
    for lam in np.asarray(eigs.eigenvalues):
        ax.axvline(float(lam), color="tab:red", lw=0.6, ls=":")
    path = out_dir / "spectral_density.png"
    ax.figure.savefig(path, dpi=120)
    return dict(eigs=eigs, trace=trace, density=density, path=path)


def main(out_dir: Path = OUT_DIR, quick: bool = False) -> dict:
    """Train, print the optimizer table and the curvature report; return the results."""
    train_set, test_set = load_data()
    params0 = init_params()
    n = sum(x.size for x in jax.tree.leaves(params0))
    steps = QUICK_STEPS if quick else STEPS
    print(f"digits MLP 64-32-10 (tanh), {n} parameters, {steps} steps of batch {BATCH}, "
          f"float32\n")
    rows, solutions = compare_optimizers(params0, train_set, test_set, steps)
    print("learning rates: adahessian 0.15 (the paper's default; gradients clipped at norm "
          "5), sophia 3e-3;\ntime includes compilation\n")
    head = f"{'optimizer':<18}{'loss':>9}{'train acc':>11}{'test acc':>10}{'HVPs':>7}{'time':>9}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['name']:<18}{r['loss']:>9.4f}{r['train_acc']:>11.3f}{r['test_acc']:>10.3f}"
              f"{r['hvps']:>7d}{r['seconds']:>8.2f}s")

    report = curvature_report(solutions["jopt.adahessian"], train_set, out_dir, quick)
    eigs, trace = report["eigs"], report["trace"]
    print("\nHessian of the training loss at the AdaHessian solution (4 batches averaged)")
    values = ", ".join(f"{v:.4g}" for v in np.asarray(eigs.eigenvalues))
    print(f"  top-5 eigenvalues  {values}   (Lanczos residuals <= "
          f"{float(jnp.max(eigs.residual_norms)):.0e}, {int(eigs.num_hvps)} HVPs)")
    print(f"  trace              {float(trace.estimate):.4g} ± {float(trace.stderr):.2g}"
          f"   ({int(trace.num_samples)} probes, {int(trace.num_hvps)} HVPs)")
    for layer, leaves in trace.per_leaf.items():
        parts = "   ".join(f"{k}: {float(v):.4g} ± {float(trace.per_leaf_stderr[layer][k]):.1g}"
                           for k, v in leaves.items())
        print(f"    {layer:<8}         {parts}")
    top = float(eigs.eigenvalues[0])
    print(f"  λ_max / (trace/n)  {top / (float(trace.estimate) / n):.0f}  "
          f"(a few outliers above a bulk near zero)")
    print(f"  spectral density   {report['path'].relative_to(out_dir.parent)}  "
          f"({int(report['density'].num_hvps)} HVPs)")
    assert all(r["test_acc"] > 0.8 for r in rows), "both optimizers should learn digits"
    assert top / (float(trace.estimate) / n) > 10, "λ_max should stand far above the mean"
    return dict(rows=rows, **report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    quick = parser.parse_args().quick
    main(OUT_DIR / "quick" if quick else OUT_DIR, quick=quick)  # quick: a figure of its own
