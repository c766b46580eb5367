"""The optimizer ladder: twelve methods, from gradient descent to Newton, on one problem.

The problem is L2-regularised logistic regression on scikit-learn's breast-cancer data
(569 tumours x 30 features, standardised; ``θ = [w, b]`` with an unpenalised intercept),
in float64:

    f(θ) = mean(log(1 + eᶻ) − y z) + ½ λ ‖w‖²,   z = X w + b,   λ = 1e-3.

It is smooth and strongly convex, so every method converges to the same ``f*`` (computed
first, by Newton's method at ``tol=1e-12``). The rungs, cheapest iteration first:

* **first order** — one gradient per iteration, each an optax/jopt transform in one
  jitted ``lax.scan`` of full-batch steps: gradient descent at the step ``1/L``, where
  ``L`` is the largest Hessian eigenvalue at ``θ = 0`` (``jopt.hessian_eigs``; there every
  ``σ'(z)`` is ¼, its maximum, so ``L`` bounds the curvature everywhere and each step
  decreases ``f``); heavy-ball and Nesterov momentum at the same step; AdaGrad, RMSProp
  and Adam, which rescale each coordinate by its gradient history;
* **quasi-Newton / nonlinear CG** — ``jopt.minimize`` with ``"lbfgs"``, ``"bfgs"``,
  ``"cg"``: a line search (a few function-and-gradient evaluations) per iteration and
  curvature learned from gradient differences;
* **second order** — ``"newton-cg"`` and ``"trust-ncg"`` solve each Newton system by
  conjugate gradients on Hessian-vector products (each about two gradients' cost);
  ``"newton"`` forms the dense Hessian and factorises it.

The table gives, for each method, iterations, function-and-gradient evaluations,
Hessian-vector products (dense Hessians for ``"newton"``), the steady-state wall time of
the compiled solve (median of three calls after a compiling one) and the final gap
``f − f*``; the figure (``examples/out/ladder.png``) plots the gap against iterations and
against time (the time axis of each method is its iteration count times its mean time
per iteration).

What it shows: climbing the ladder, each iteration costs more (the ``µs / iter`` column)
and fewer are needed. First-order methods pay when an iteration must be cheap: many
parameters, noisy minibatch gradients, or a modest accuracy target. Momentum and
per-coordinate scaling cost nothing extra per step and improve on plain gradient descent
on this ill-conditioned problem, but with a constant step an adaptive method can stall at
a floor set by that step. With exact gradients and a moderate number of parameters,
quasi-Newton methods reach float64 resolution in a fraction of the first-order methods'
time; Newton-type methods need the fewest iterations, and with few parameters even a
dense Hessian costs little more than a handful of gradients.

Run ``python examples/ladder.py`` (``--quick``: a tenth of the first-order steps; the figure
then goes to ``examples/out/quick/``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402

import jopt  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
L2 = 1e-3
STEPS, QUICK_STEPS = 3000, 300  # first-order iterations
TOL = 1e-10  # ‖∇f‖∞ at which jopt.minimize stops
SECOND_ORDER = ("lbfgs", "bfgs", "cg", "newton-cg", "trust-ncg", "newton")


def load_data() -> tuple[jax.Array, jax.Array]:
    """Standardised breast-cancer features ``(569, 30)`` and 0/1 labels, float64."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    return jnp.asarray(features, jnp.float64), jnp.asarray(labels, jnp.float64)


def objective(theta: jax.Array, features: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean logistic loss plus ``½ λ ‖w‖²`` for ``θ = [w, b]`` (intercept free)."""
    z = features @ theta[:-1] + theta[-1]
    return jnp.mean(jnp.logaddexp(0.0, z) - labels * z) + 0.5 * L2 * jnp.sum(theta[:-1] ** 2)


def median_time(fn, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (after one compiling call)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def first_order(opt: optax.GradientTransformation, theta0, data, steps: int) -> dict:
    """``steps`` full-batch steps of ``opt`` in one jitted ``lax.scan``; ``f`` at each iterate."""

    @jax.jit
    def train(theta, features, labels):
        def step(carry, _):
            theta, state = carry
            value, grad = jax.value_and_grad(objective)(theta, features, labels)
            updates, state = opt.update(grad, state, theta)
            return (optax.apply_updates(theta, updates), state), value

        (theta, _), values = jax.lax.scan(step, (theta, opt.init(theta)), length=steps)
        return jnp.append(values, objective(theta, features, labels))

    seconds = median_time(lambda: train(theta0, *data))
    return dict(values=np.asarray(train(theta0, *data)), nit=steps, nfev=steps, nhev=0,
                seconds=seconds)


def second_order(method: str, theta0, data) -> dict:
    """``jopt.minimize`` with ``method`` to ``‖∇f‖∞ <= TOL``, with its ``f`` history."""
    solve = lambda: jopt.minimize(objective, theta0, data, method=method, tol=TOL,  # noqa: E731
                                  history=True)
    seconds = median_time(solve)
    res = solve()
    assert res.success, f"{method}: {res.message}"
    return dict(values=np.asarray(res.f_history)[: int(res.nit) + 1], nit=int(res.nit),
                nfev=int(res.nfev), nhev=int(res.nhev), seconds=seconds)


def run(quick: bool = False, out_dir: Path = OUT_DIR) -> dict:
    """Run every rung, print the table, check the claims and save the figure."""
    data = load_data()
    theta0 = jnp.zeros(data[0].shape[1] + 1, jnp.float64)
    reference = jopt.minimize(objective, theta0, data, method="newton", tol=1e-12)
    f_star = float(reference.fun)
    f = lambda t: objective(t, *data)  # noqa: E731
    lipschitz = float(jopt.hessian_eigs(f, theta0, k=1).eigenvalues[0])  # L, at θ = 0
    curvature_at_optimum = float(jopt.hessian_eigs(f, reference.x, k=1).eigenvalues[0])
    step = 1.0 / lipschitz
    steps = QUICK_STEPS if quick else STEPS
    rungs = {
        "gradient descent": jopt.sgd(step),
        "heavy ball": jopt.sgd(step, momentum=0.9),
        "nesterov": jopt.sgd(step, momentum=0.9, nesterov=True),
        # adaptive steps: picked from a coarse grid (1e-3, 3e-3, ..., 3) by eye
        "adagrad": jopt.adagrad(1.0),
        "rmsprop": jopt.rmsprop(3e-3),
        "adam": jopt.adam(0.03),
    }
    rows = {name: first_order(opt, theta0, data, steps) for name, opt in rungs.items()}
    rows.update({m: second_order(m, theta0, data) for m in SECOND_ORDER})
    for row in rows.values():
        row["gap"] = row["values"] - f_star

    n = data[0].shape[0]
    print(f"breast cancer, L2 logistic regression: n = {n}, d = {theta0.size} (with "
          f"intercept), λ = {L2:g}, float64")
    print(f"f* = {f_star:.16f} (Newton, tol 1e-12, {int(reference.nit)} iterations); "
          f"L = λ_max(∇²f(0)) = {lipschitz:.4f} (jopt.hessian_eigs; at the optimum "
          f"λ_max = {curvature_at_optimum:.4f}), GD step 1/L = {step:.4f}\n")
    print(format_table(rows, f_star))

    # The claims the docstring makes, checked.
    assert curvature_at_optimum <= lipschitz, "L bounds the curvature everywhere"
    gd = rows["gradient descent"]["values"]
    assert np.all(np.diff(gd) <= 1e-15 * f_star), "GD at 1/L must decrease f at every step"
    assert rows["heavy ball"]["gap"][-1] < rows["gradient descent"]["gap"][-1]
    for m in SECOND_ORDER:
        assert rows[m]["gap"][-1] <= 1e-12, f"{m} stopped {rows[m]['gap'][-1]:.1e} above f*"
    newton_its = rows["newton"]["nit"]
    assert all(newton_its <= r["nit"] for r in rows.values()), "Newton: fewest iterations"

    path = plot(rows, f_star, out_dir / "ladder.png")
    print(f"\nfigure: {path}")
    return rows


def format_table(rows: dict, f_star: float) -> str:
    """Method, iterations, evaluations, HVPs, steady-state time and final gap."""
    resolution = 8 * np.finfo(np.float64).eps * f_star
    head = (f"{'method':<18}{'iters':>7}{'f+∇f evals':>12}{'HVPs':>7}{'time (ms)':>11}"
            f"{'µs / iter':>11}{'f − f*':>10}")
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        gap = r["gap"][-1]
        gap_text = f"{gap:10.1e}" if gap > resolution else f"{'≈ 0':>10}"
        lines.append(f"{name:<18}{r['nit']:>7d}{r['nfev']:>12d}{r['nhev']:>7d}"
                     f"{r['seconds'] * 1e3:>11.2f}{r['seconds'] / r['nit'] * 1e6:>11.1f}"
                     f"{gap_text}")
    lines.append("(≈ 0: within float64 rounding of f*; HVPs of newton = dense Hessians)")
    return "\n".join(lines)


def plot(rows: dict, f_star: float, path: Path) -> Path:
    """Gap against iterations and against time, log scales, one line per method."""
    floor = np.finfo(np.float64).eps * f_star
    colors = [f"C{i}" for i in range(10)] + ["black", "darkred"]
    fig = Figure(figsize=(13.0, 4.8), layout="constrained")
    by_iter, by_time = fig.subplots(1, 2, sharey=True)
    for i, (name, r) in enumerate(rows.items()):
        gap = np.maximum(r["gap"], floor)
        k = np.arange(gap.size)
        style = dict(color=colors[i % len(colors)], linestyle="-" if i < 6 else "--")
        by_iter.loglog(k[1:], gap[1:], label=name, **style)
        by_time.loglog(k[1:] * r["seconds"] / r["nit"] * 1e3, gap[1:], **style)
    by_iter.set_xlabel("iteration")
    by_time.set_xlabel("wall time (ms): iteration × mean time per iteration")
    by_iter.set_ylabel("f − f*  (floored at float64 resolution)")
    for ax in (by_iter, by_time):
        ax.grid(True, which="major", alpha=0.3)
    fig.legend(loc="outside right center", fontsize=9)
    fig.suptitle("Breast cancer, L2 logistic regression: first-order (solid) to "
                 "second-order (dashed)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def main(out_dir: Path = OUT_DIR, quick: bool = False) -> dict:
    return run(quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    quick = parser.parse_args().quick
    main(OUT_DIR / "quick" if quick else OUT_DIR, quick=quick)  # quick: a figure of its own
