"""Derive a gradient by hand and check it against automatic differentiation.

Linear regression with ``m`` examples ``xᵢ`` (with ``xᵢ₀ = 1`` for the intercept),
hypothesis ``h_θ(x) = θᵀx`` and the cost

    J(θ) = (1 / 2m) Σᵢ (h_θ(xᵢ) − yᵢ)².

By the chain rule, ``∂/∂θⱼ (h_θ(xᵢ) − yᵢ)² = 2 (h_θ(xᵢ) − yᵢ) xᵢⱼ``, so

    ∂J/∂θⱼ = (1/m) Σᵢ (h_θ(xᵢ) − yᵢ) xᵢⱼ,   i.e.   ∇J(θ) = (1/m) Xᵀ(Xθ − y),

and differentiating once more, ``∇²J = (1/m) XᵀX`` (constant: ``J`` is a quadratic).

On scikit-learn's diabetes data (442 examples, 10 standardised features plus the
intercept column; target standardised), in float64, the script compares at random points
``θ``:

* the formula, written literally (a sum over ``i`` for each ``j``) and as ``Xᵀ(Xθ − y)/m``,
  with ``jax.grad(J)`` (reverse mode);
* directional derivatives ``∇J(θ)·v`` with ``jax.jvp`` (forward mode) and with a central
  difference ``(J(θ + hv) − J(θ − hv)) / 2h`` — exact for a quadratic up to rounding,
  which grows like ``ε |J| / h`` as ``h`` shrinks;
* the Hessian ``XᵀX/m`` with ``jopt.hessian_matrix`` and its product with ``v`` with
  ``jopt.hvp`` (forward-over-reverse, no Hessian formed).

It prints the largest absolute differences and asserts those of exact derivatives are
at most 1e-12 (the finite differences get a looser bound: they are only approximations).

Run ``python examples/gradient_check.py`` (``--quick``: fewer random points).
"""

from __future__ import annotations

import argparse
import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402

import jopt  # noqa: E402

TOL = 1e-12


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """Design matrix ``X`` (``m x (1 + 10)``, first column ones) and standardised target."""
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return np.column_stack([np.ones(len(y)), x]), (y - y.mean()) / y.std()


def cost(theta: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """``J(θ) = (1/2m) Σᵢ (θᵀxᵢ − yᵢ)²``."""
    return 0.5 * jnp.mean((x @ theta - y) ** 2)


def gradient_by_hand(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``∂J/∂θⱼ = (1/m) Σᵢ (h_θ(xᵢ) − yᵢ) xᵢⱼ``, written out index by index."""
    m, n = x.shape
    residual = x @ theta - y  # h_θ(xᵢ) − yᵢ for every i
    return np.array([sum(residual[i] * x[i, j] for i in range(m)) / m for j in range(n)])


def main(quick: bool = False) -> None:
    x, y = load_data()
    m, n = x.shape
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    J = lambda t: cost(t, xj, yj)  # noqa: E731
    grad = jax.jit(jax.grad(J))
    rng = np.random.default_rng(0)
    points = 2 if quick else 10
    worst = dict.fromkeys(("loop vs Xᵀr/m", "hand vs jax.grad", "hand vs jax.jvp",
                           "XᵀX/m vs jopt.hessian_matrix", "XᵀX v/m vs jopt.hvp"), 0.0)
    fd_steps = (1e-2, 1e-4, 1e-6)
    fd_worst = dict.fromkeys(fd_steps, 0.0)
    hessian = x.T @ x / m
    hess_diff = np.max(np.abs(np.asarray(jopt.hessian_matrix(J, jnp.zeros(n))) - hessian))
    worst["XᵀX/m vs jopt.hessian_matrix"] = float(hess_diff)
    for _ in range(points):
        theta, v = rng.standard_normal(n), rng.standard_normal(n)
        by_hand = gradient_by_hand(theta, x, y)
        vectorised = x.T @ (x @ theta - y) / m
        automatic = np.asarray(grad(jnp.asarray(theta)))
        _, directional = jax.jvp(J, (jnp.asarray(theta),), (jnp.asarray(v),))
        hv = np.asarray(jopt.hvp(J, jnp.asarray(theta), jnp.asarray(v)))
        diffs = {"loop vs Xᵀr/m": np.abs(by_hand - vectorised),
                 "hand vs jax.grad": np.abs(by_hand - automatic),
                 "hand vs jax.jvp": abs(by_hand @ v - float(directional)),
                 "XᵀX v/m vs jopt.hvp": np.abs(hessian @ v - hv)}
        for name, d in diffs.items():
            worst[name] = max(worst[name], float(np.max(d)))
        for h in fd_steps:
            central = (float(J(jnp.asarray(theta + h * v))) -
                       float(J(jnp.asarray(theta - h * v)))) / (2 * h)
            fd_worst[h] = max(fd_worst[h], abs(central - by_hand @ v))

    print(f"linear regression on diabetes: m = {m} examples, n = {n} parameters "
          f"(with intercept), float64, {points} random points θ and directions v\n")
    print(f"{'comparison':<36}{'max |difference|':>18}")
    for name, d in worst.items():
        print(f"{name:<36}{d:>18.2e}")
    for h, d in fd_worst.items():
        print(f"{f'hand vs central difference h={h:g}':<36}{d:>18.2e}")
    print("\nThe exact derivatives agree to rounding. For this quadratic the central "
          "difference has\nno truncation error; its error is rounding, ≈ ε |J| / h, so it "
          "grows as h shrinks.")
    for name, d in worst.items():
        assert d <= TOL, f"{name}: {d:.2e} > {TOL:g}"
    assert fd_worst[1e-4] <= 1e-9, fd_worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    main(quick=parser.parse_args().quick)
