"""Sweep Adam's learning rate: 64 rates × 4 seeds, trained at once by ``jopt.sweep``.

The problem is L2-regularised logistic regression on scikit-learn's breast-cancer data
(569 samples, 30 features standardised to zero mean and unit variance, plus an intercept):

    f(w, b) = mean(log(1 + exp(z)) − y z) + ½ λ ‖w‖²,   z = X w + b,   λ = 1e-3

Every run trains with minibatch Adam (batches of 64, 8 per epoch, 40 epochs = 320 steps);
the **seed** draws the initial weights (``w ~ N(0, 0.1²)``) and the minibatch order of
every epoch. ``jopt.sweep`` runs all 64 × 4 = 256 runs as ONE compiled program — the runs
are batched with ``jax.vmap``, so each Adam step works on 256 weight vectors at once —
and picks the learning rate whose final loss (mean over seeds) is lowest.

The reference optimum ``f*`` comes from ``jopt.minimize(..., method="newton")`` in
float64 (on the same objective with JAX's own derivatives: Newton's method differentiates
twice, and forward-mode differentiation cannot go through a ``jax.custom_vjp``), and the
figure shows the final gap ``f − f*`` against the learning rate, with the band from the
best to the worst seed. Small rates have not converged after 320 steps; large rates are
limited by minibatch noise (Adam's step does not shrink with the gradient).

Two things keep the sweep fast:

* ``jopt.sweep`` batches configurations outside and seeds inside, with the keys shared
  by all configurations: the minibatch order and the gathered minibatch depend on the
  seed alone, so they are computed once per seed (4×), not once per run (256×), and
  each minibatch meets the 64 learning rates' weights as one matrix product;
* the loss's derivative is written out (:func:`logistic_nll`, a ``jax.custom_vjp``):
  ``σ(z) − y`` costs one exponential, while differentiating ``logaddexp`` costs three.

Everything trains in float32 (the dtype is pinned; x64 is on only for the reference).
Run it with ``python examples/sweep_learning_rates.py``; the figure goes to
``examples/out/sweep_learning_rates.png`` (``--quick``: 16 rates × 2 seeds × 10 epochs,
figure under ``examples/out/quick/``). The script checks that the best rate lies inside
the range, with both ends worse.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax

jax.config.update("jax_enable_x64", True)  # for the float64 reference; training is float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402

import jopt  # noqa: E402
from jopt.sweep import grid, sweep  # noqa: E402  (also exported as jopt.grid, jopt.sweep)

OUT_DIR = Path(__file__).resolve().parent / "out"
DTYPE = jnp.float32
LEARNING_RATES = (1e-4, 1.0, 64)  # from, to, number of log-spaced values
NUM_SEEDS = 4
BATCH_SIZE = 64
EPOCHS = 40
QUICK = dict(num_rates=16, seeds=2, epochs=10)  # --quick: the same sweep, smaller
L2 = 1e-3
INIT_SCALE = 0.1


class Data(NamedTuple):
    """Standardised features ``(n, d)`` and 0/1 labels ``(n,)``."""

    features: jax.Array
    labels: jax.Array


def load_data(dtype: Any = DTYPE) -> Data:
    """Breast-cancer features standardised to zero mean and unit variance."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    return Data(jnp.asarray(features, dtype), jnp.asarray(labels, dtype))


# ---------------------------------------------------------------------------- model


def nll(z: jax.Array, y: jax.Array) -> jax.Array:
    """Per-sample negative log-likelihood ``log(1 + eᶻ) − y z`` (stable for any ``z``)."""
    return jnp.logaddexp(0.0, z) - y * z


# Its derivative in ``z`` is ``σ(z) − y``; the custom VJP computes exactly that (one
# exponential) instead of differentiating ``logaddexp`` (three transcendentals).
logistic_nll = jax.custom_vjp(nll)


def _nll_fwd(z: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return logistic_nll(z, y), (z, y)


def _nll_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    z, y = res
    return g * (jax.nn.sigmoid(z) - y), -g * z


logistic_nll.defvjp(_nll_fwd, _nll_bwd)


def objective(params: dict, features: jax.Array, labels: jax.Array,
              loss: Any = logistic_nll) -> jax.Array:
    """Mean ``loss`` on ``(features, labels)`` plus ``½ λ ‖w‖²`` (intercept free)."""
    z = features @ params["w"] + params["b"]
    return jnp.mean(loss(z, labels)) + 0.5 * L2 * jnp.sum(params["w"] ** 2)


def accuracy(params: dict, data: Data) -> jax.Array:
    """Fraction of training labels predicted right."""
    z = data.features @ params["w"] + params["b"]
    return jnp.mean((z > 0) == (data.labels > 0.5))


def make_train(data: Data, epochs: int = EPOCHS, batch_size: int = BATCH_SIZE):
    """``train(config, key)``: minibatch Adam from a random start; returns final metrics."""
    n, d = data.features.shape
    batches = n // batch_size  # the last partial batch of each epoch is dropped

    def train(config: dict, key: jax.Array) -> dict:
        init_key, order_key = jax.random.split(key)
        params = {"w": INIT_SCALE * jax.random.normal(init_key, (d,), DTYPE),
                  "b": jnp.zeros((), DTYPE)}
        opt = jopt.adam(config["learning_rate"])

        def step(carry: tuple, idx: jax.Array) -> tuple[tuple, None]:
            params, state = carry
            grads = jax.grad(objective)(params, data.features[idx], data.labels[idx])
            updates, state = opt.update(grads, state, params)
            return (jax.tree.map(jnp.add, params, updates), state), None

        def epoch(carry: tuple, k: jax.Array) -> tuple[tuple, None]:
            order = jax.random.permutation(k, n)[: batches * batch_size]
            return jax.lax.scan(step, carry, order.reshape(batches, batch_size))[0], None

        carry = (params, opt.init(params))
        params, _ = jax.lax.scan(epoch, carry, jax.random.split(order_key, epochs))[0]
        return {"loss": objective(params, data.features, data.labels),
                "accuracy": accuracy(params, data)}

    return train


def optimum(tol: float = 1e-12) -> float:
    """``f*`` by ``jopt.minimize(..., method="newton")`` in float64 (31 parameters, convex).

    The objective uses :func:`nll` (JAX's own derivatives): Newton's Hessian is forward
    over reverse mode, and forward mode cannot go through :func:`logistic_nll`'s custom VJP.
    """
    data = load_data(jnp.float64)
    params0 = {"w": jnp.zeros(data.features.shape[1]), "b": jnp.zeros(())}
    res = jopt.minimize(functools.partial(objective, loss=nll), params0, data,
                        method="newton", tol=tol)
    if not res.success:
        raise RuntimeError(f"the reference Newton solve failed: {res.message}")
    return float(res.fun)


# ---------------------------------------------------------------------------- sweep


def run(verbose: bool = True, quick: bool = False) -> dict:
    """Run the sweep; return learning rates, per-run final losses and the best rate.

    ``quick``: the settings of :data:`QUICK` (fewer rates, seeds and epochs).
    """
    lo, hi, num = LEARNING_RATES
    num, seeds, epochs = (QUICK["num_rates"], QUICK["seeds"], QUICK["epochs"]) if quick \
        else (num, NUM_SEEDS, EPOCHS)
    data = load_data()
    train = make_train(data, epochs=epochs)
    configs = grid(learning_rate=np.logspace(np.log10(lo), np.log10(hi), num))
    configs = jax.tree.map(lambda a: a.astype(DTYPE), configs)
    start = time.perf_counter()
    res = sweep(train, configs, seeds=seeds, metric="loss")
    jax.block_until_ready(res)
    first_s = time.perf_counter() - start
    start = time.perf_counter()  # the same program again: compiled once, only runs
    jax.block_until_ready(sweep(train, configs, seeds=seeds, metric="loss"))
    run_s = time.perf_counter() - start
    results = {
        "learning_rates": np.asarray(configs["learning_rate"]),
        "losses": np.asarray(res.outputs["loss"]),  # [configs, seeds]
        "accuracy": np.asarray(res.outputs["accuracy"]),
        "best_index": int(res.best_index),
        "best_learning_rate": float(res.best_config["learning_rate"]),
        "best_loss": float(res.best_metric),
        "optimum": optimum(),
        "steps": epochs * (data.labels.shape[0] // BATCH_SIZE),
        "first_call_s": first_s,
        "run_s": run_s,
    }
    if verbose:
        print(format_report(results))
    # The claims of the docstring: too small and too large rates both end worse than the best.
    mean = results["losses"].mean(axis=1)
    assert 0 < results["best_index"] < num - 1, "the best rate should be inside the range"
    assert mean[0] > mean.min() and mean[-1] > mean.min()
    assert results["best_loss"] >= results["optimum"] - 1e-6, "below the optimum?"
    return results


def format_report(results: dict) -> str:
    """The best learning rate and a table of final losses at every 8th rate."""
    lrs, losses, best = results["learning_rates"], results["losses"], results["best_index"]
    num_runs = losses.size
    lines = [
        f"{len(lrs)} learning rates × {losses.shape[1]} seeds = {num_runs} Adam runs of "
        f"{results['steps']} minibatch steps, one compiled program:",
        f"  first call {results['first_call_s']:.2f} s (compile + run), "
        f"again {results['run_s']:.3f} s (run only)",
        f"  best learning rate {results['best_learning_rate']:.3g}: final loss "
        f"{results['best_loss']:.5f} (mean of seeds; min {losses[best].min():.5f}, max "
        f"{losses[best].max():.5f}), accuracy {results['accuracy'][best].mean():.3f}",
        f"  optimum f* = {results['optimum']:.5f} (jopt.minimize, method=\"newton\", "
        "float64)",
        "",
        "  learning rate   mean final loss   min … max over seeds",
    ]
    for i in [*range(0, len(lrs), 8), len(lrs) - 1]:
        mark = "  ← best" if i == best else ""
        lines.append(f"  {lrs[i]:13.3g}   {losses[i].mean():15.5f}   "
                     f"{losses[i].min():.5f} … {losses[i].max():.5f}{mark}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    """Final gap ``f − f*`` against the learning rate (log–log), seed min–max band."""
    lrs, gap = results["learning_rates"], results["losses"] - results["optimum"]
    floor = np.finfo(np.float32).eps * results["optimum"]  # float32 resolution of f
    gap = np.maximum(gap, floor)
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.fill_between(lrs, gap.min(axis=1), gap.max(axis=1), color="C0", alpha=0.25,
                    label=f"min–max over {gap.shape[1]} seeds")
    ax.loglog(lrs, gap.mean(axis=1), color="C0", label="mean over seeds")
    best = results["best_index"]
    ax.plot(lrs[best], gap[best].mean(), "*", color="C3", mec="k", ms=14,
            label=f"best: lr = {results['best_learning_rate']:.3g}")
    ax.set_xlabel("Adam learning rate")
    ax.set_ylabel("final loss − optimum  (f − f*)")
    ax.set_title(f"Breast cancer, L2 logistic regression: {gap.size} Adam runs in one "
                 f"jopt.sweep")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def main(out_dir: Path = OUT_DIR, quick: bool = False) -> dict:
    """Run the sweep, print the report and save the figure under ``out_dir``."""
    results = run(verbose=True, quick=quick)
    path = plot(results, out_dir / "sweep_learning_rates.png")
    print(f"\nfigure: {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    quick = parser.parse_args().quick
    main(OUT_DIR / "quick" if quick else OUT_DIR, quick=quick)  # quick: a figure of its own
