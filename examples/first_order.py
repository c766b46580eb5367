"""First-order practice: the stable step size, and minibatch SGD with a schedule and clipping.

1. **The stable step size** (least squares on scikit-learn's diabetes data, standardised,
   float64). The mean squared error is a quadratic, so its Hessian ``H`` is the same
   everywhere. Gradient descent ``θ ← θ − η ∇f(θ)`` multiplies the error along an
   eigenvector of ``H`` with eigenvalue ``λ`` by ``1 − η λ`` every step: it converges
   when ``|1 − η λ| < 1`` for every ``λ``, i.e. ``η < 2 / λ_max``. The script finds
   ``λ_max`` with ``jopt.hessian_eigs`` (Lanczos on Hessian-vector products; no Hessian
   is formed), runs gradient descent at 0.9 and 1.1 times ``2 / λ_max``, and checks that
   the first decreases ``f`` at every step, the second diverges, and its gap grows by the
   predicted factor ``(1.1 · 2 − 1)² = 1.44`` per step.

2. **Minibatch SGD with momentum** on scikit-learn's digits (softmax regression, 64
   pixels → 10 classes, float32, a stratified 75/25 split): ``jopt.sgd`` with Nesterov
   momentum, its learning rate an ``optax.warmup_cosine_decay_schedule`` (a linear
   warm-up, then a cosine decay to zero) and the gradient clipped first by
   ``optax.clip_by_global_norm``, combined with ``optax.chain``. The warm-up keeps the
   first steps — large gradients, momentum not yet built up — from overshooting; the
   decay shrinks the minibatch noise at the end; clipping bounds any single step. The
   script prints the schedule at a few steps, how many steps were clipped, and the
   train/test accuracy, and checks that the test accuracy exceeds 90 %.

Run ``python examples/first_order.py`` (``--quick``: fewer steps and epochs).
"""

from __future__ import annotations

import argparse
import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import jopt  # noqa: E402

# ------------------------------------------------------------------ 1. stable step size


def least_squares() -> tuple:
    """``f(θ) = mean((X w + b − y)²)`` on standardised diabetes data, and ``θ0 = 0``."""
    x, y = load_diabetes(return_X_y=True)
    x = jnp.asarray((x - x.mean(0)) / x.std(0))
    y = jnp.asarray((y - y.mean()) / y.std())

    def f(theta):
        return jnp.mean((x @ theta[:-1] + theta[-1] - y) ** 2)

    return f, jnp.zeros(x.shape[1] + 1)


def gradient_descent(f, theta0, learning_rate: float, steps: int) -> np.ndarray:
    """``f`` at iterates ``0..steps`` of ``jopt.sgd(learning_rate)`` (one jitted scan)."""
    opt = jopt.sgd(learning_rate)

    @jax.jit
    def run(theta):
        def step(carry, _):
            theta, state = carry
            value, grad = jax.value_and_grad(f)(theta)
            updates, state = opt.update(grad, state)
            return (optax.apply_updates(theta, updates), state), value

        (theta, _), values = jax.lax.scan(step, (theta, opt.init(theta)), length=steps)
        return jnp.append(values, f(theta))

    return np.asarray(run(theta0))


def stable_step_size(steps: int) -> None:
    f, theta0 = least_squares()
    lam_max = float(jopt.hessian_eigs(f, theta0, k=1).eigenvalues[0])
    f_star = float(jopt.minimize(f, theta0, method="newton", tol=1e-12).fun)
    print(f"diabetes least squares: λ_max(∇²f) = {lam_max:.4f} (jopt.hessian_eigs), "
          f"stable steps η < 2/λ_max = {2 / lam_max:.4f}")
    gaps = {}
    for factor in (0.9, 1.1):
        gaps[factor] = gradient_descent(f, theta0, factor * 2 / lam_max, steps) - f_star
        shown = "  ".join(f"{k}: {gaps[factor][k]:.2e}" for k in (0, 10, steps // 2, steps))
        print(f"  η = {factor} · 2/λ_max: f − f* at step {shown}")
    converging, diverging = gaps[0.9], gaps[1.1]
    growth = diverging[-1] / diverging[-2]
    predicted = (1.1 * 2 - 1) ** 2
    print(f"  divergent gap grows ×{growth:.4f} per step (predicted (1.1·2 − 1)² = "
          f"{predicted:.2f})\n")
    # below 2/λ_max every eigencomponent of the error shrinks, so f decreases every step
    assert np.all(np.diff(converging) <= 0) and converging[-1] < 1e-2 * converging[0], \
        "0.9 · 2/λ_max must converge"
    assert diverging[-1] > 1e3 * diverging[0], "1.1 · 2/λ_max must diverge"
    assert abs(growth - predicted) < 1e-2 * predicted


# ------------------------------------------------------------------- 2. minibatch SGD


def digits() -> dict:
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.25, random_state=0,
                                              stratify=y)
    as32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return dict(x_train=as32(x_tr), y_train=jnp.asarray(y_tr), x_test=as32(x_te),
                y_test=jnp.asarray(y_te))


def cross_entropy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = x @ params["w"] + params["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def accuracy(params: dict, x: jax.Array, y: jax.Array) -> float:
    return float(jnp.mean(jnp.argmax(x @ params["w"] + params["b"], axis=1) == y))


def minibatch_sgd(epochs: int, batch_size: int = 64, clip: float = 0.3) -> None:
    data = digits()
    n = data["x_train"].shape[0]
    per_epoch = n // batch_size
    total = epochs * per_epoch
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=0.5, warmup_steps=total // 10, decay_steps=total)
    opt = optax.chain(optax.clip_by_global_norm(clip),
                      jopt.sgd(schedule, momentum=0.9, nesterov=True))
    params = {"w": jnp.zeros((64, 10), jnp.float32), "b": jnp.zeros(10, jnp.float32)}

    @jax.jit
    def train(params, key):
        order = jax.vmap(lambda k: jax.random.permutation(k, n)[: per_epoch * batch_size])(
            jax.random.split(key, epochs)).reshape(total, batch_size)

        def step(carry, idx):
            params, state = carry
            loss, grads = jax.value_and_grad(cross_entropy)(
                params, data["x_train"][idx], data["y_train"][idx])
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), (loss,
                                                                    optax.global_norm(grads))

        (params, _), (losses, norms) = jax.lax.scan(step, (params, opt.init(params)), order)
        return params, losses, norms

    params, losses, norms = train(params, jax.random.key(0))
    marks = (0, total // 10, total // 2, total - 1)
    print(f"digits softmax regression: {epochs} epochs × {per_epoch} minibatches of "
          f"{batch_size} = {total} steps, Nesterov momentum 0.9")
    print("  learning rate (warm-up cosine): " + "  ".join(
        f"step {k}: {float(schedule(k)):.3f}" for k in marks))
    clipped = int(np.sum(np.asarray(norms) > clip))
    print(f"  gradients clipped to norm {clip}: {clipped} of {total} steps "
          f"(first step's norm {float(norms[0]):.2f})")
    print(f"  minibatch loss: first {float(losses[0]):.3f}, mean of the last 10 "
          f"{float(jnp.mean(losses[-10:])):.3f}")
    train_acc = accuracy(params, data["x_train"], data["y_train"])
    test_acc = accuracy(params, data["x_test"], data["y_test"])
    print(f"  accuracy: train {train_acc:.3f}, test {test_acc:.3f}")
    assert test_acc > 0.9, f"test accuracy {test_acc:.3f}"
    assert float(jnp.mean(losses[-10:])) < 0.5 * float(losses[0])


def main(quick: bool = False) -> None:
    stable_step_size(steps=40 if quick else 200)
    minibatch_sgd(epochs=3 if quick else 30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    main(quick=parser.parse_args().quick)
