"""Least squares on scikit-learn's diabetes data with three jopt optimizers.

The problem is ordinary least squares on the 442 x 10 diabetes data set
(:func:`sklearn.datasets.load_diabetes`):

* features standardised to zero mean and unit variance, then an intercept added;
* target standardised too, so the mean squared error reads as ``1 - R²`` (the
  coefficients are in standard units; multiply by the target's standard deviation,
  about 77.0, to get back to disease-progression units);
* objective ``f(w, b) = mean((X w + b - y)²)``, the mean squared error;
* parameters kept as a pytree ``{"w": (10,), "b": ()}`` — jopt optimizers accept any
  pytree — and compared with the closed-form solution of ``numpy.linalg.lstsq`` on the
  design matrix ``[X, 1]``, i.e. the concatenation ``[w, b]``.

The Hessian ``2 [X, 1]ᵀ[X, 1] / n`` is ill-conditioned (the script prints its condition
number; most of it comes from the strongly correlated serum measurements ``s1`` and
``s2``), which makes plain gradient descent slow and shows what momentum and Adam buy.

With the default 2000 iterations, momentum reaches the exact solution to rounding, Adam
gets close, and gradient descent is still visibly short of it (the table's last column,
``‖[w, b] − [w*, b*]‖₂``). Adam with a constant step does not settle, though: once its
gradients fall to the size of its ``eps`` (1e-8), with the loss at float64 resolution,
its normalised steps grow back to the order of ``lr``, it jumps away and converges again
(``optax.adam`` does the same; the script prints when each method first reaches float64
resolution and how far it jumps back). A decaying step, e.g.
``jopt.adam(optax.cosine_decay_schedule(0.03, num_steps))``, damps those spikes.

Each optimizer's training loop is one compiled ``jax.lax.scan`` over iterations that
records the loss at every iterate. Everything runs in float64.

Run it with ``python examples/linear_regression.py`` (``--quick``: 500 iterations);
``examples/tour.py`` imports :func:`run` and plots the loss histories.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, NamedTuple, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_diabetes

import jopt

jax.config.update("jax_enable_x64", True)

Params = dict[str, jax.Array]
DEFAULT_NUM_STEPS = 2000
QUICK_NUM_STEPS = 500


class Data(NamedTuple):
    """Standardised features ``(n, d)`` and target ``(n,)``, both float64."""

    features: jax.Array
    targets: jax.Array


class MethodResult(TypedDict):
    """One optimizer's run: settings, loss history and distance to the exact solution."""

    optimizer: str
    learning_rate: float
    iterations: int
    losses: np.ndarray  # loss at iterates 0, 1, ..., iterations (length iterations + 1)
    final_loss: float
    distance: float  # ‖[w, b] − [w*, b*]‖₂
    coef: np.ndarray  # the fitted [w, b]
    resolution_step: int | None  # first iterate with loss − exact <= float64 resolution
    rebound: float  # largest loss − exact after that step, in units of that resolution


class RegressionResults(TypedDict):
    """What :func:`run` returns: the exact solution and one :class:`MethodResult` per method."""

    exact_coef: np.ndarray  # closed-form [w*, b*]
    exact_loss: float
    condition_number: float  # of the Hessian 2 AᵀA / n, A = [X, 1]
    methods: dict[str, MethodResult]
    table: str


class MethodSpec(NamedTuple):
    """A labelled optimizer: ``make(learning_rate)`` builds the transform."""

    label: str
    description: str
    learning_rate: float
    make: Callable[[float], optax.GradientTransformation]


# Step sizes for this problem (Hessian eigenvalues in [0.017, 8.05]):
# * gradient descent: 0.24, just below the stability limit 2 / λ_max ≈ 0.248;
# * heavy-ball momentum 0.9: any step in [(1 − √0.9)² / λ_min, (1 + √0.9)² / λ_max]
#   ≈ [0.15, 0.47] contracts at the optimal rate √0.9 — 0.2 sits inside;
# * Adam: 0.03, large enough to get there in time, small enough not to rattle at the end.
METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("gradient descent", "jopt.sgd(lr)", 0.24, jopt.sgd),
    MethodSpec("momentum", "jopt.sgd(lr, momentum=0.9)", 0.2, lambda lr: jopt.sgd(lr, 0.9)),
    MethodSpec("adam", "jopt.adam(lr)", 0.03, jopt.adam),
)


# ----------------------------------------------------------------------------- data


def load_data() -> Data:
    """The diabetes data with standardised features and standardised target."""
    features, targets = load_diabetes(return_X_y=True)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    targets = (targets - targets.mean()) / targets.std()
    return Data(jnp.asarray(features, jnp.float64), jnp.asarray(targets, jnp.float64))


def design_matrix(features: np.ndarray) -> np.ndarray:
    """``[X, 1]``: the features with an intercept column appended."""
    return np.column_stack([features, np.ones(len(features))])


# ---------------------------------------------------------------------------- model


def init_params(num_features: int) -> Params:
    """Zero weights and intercept, as the pytree ``{"w": (d,), "b": ()}``."""
    return {"w": jnp.zeros(num_features, jnp.float64), "b": jnp.zeros((), jnp.float64)}


def predict(params: Params, features: jax.Array) -> jax.Array:
    """Linear model ``X w + b``."""
    return features @ params["w"] + params["b"]


def mse_loss(params: Params, data: Data) -> jax.Array:
    """Mean squared error ``mean((X w + b − y)²)``."""
    return jnp.mean((predict(params, data.features) - data.targets) ** 2)


def flatten_params(params: Params) -> np.ndarray:
    """The concatenation ``[w, b]`` as a NumPy vector (the closed form's layout)."""
    return np.append(np.asarray(params["w"]), np.asarray(params["b"]))


def unflatten_params(coef: np.ndarray) -> Params:
    """Inverse of :func:`flatten_params`."""
    return {"w": jnp.asarray(coef[:-1]), "b": jnp.asarray(coef[-1])}


# ------------------------------------------------------------------------ reference


def exact_solution(data: Data) -> np.ndarray:
    """Closed-form least-squares ``[w*, b*]`` from ``numpy.linalg.lstsq`` on ``[X, 1]``."""
    design = design_matrix(np.asarray(data.features))
    coef, *_ = np.linalg.lstsq(design, np.asarray(data.targets), rcond=None)
    return coef


def hessian_condition_number(data: Data) -> float:
    """Condition number of the MSE's Hessian ``2 AᵀA / n`` with ``A = [X, 1]``."""
    design = design_matrix(np.asarray(data.features))
    eigenvalues = np.linalg.eigvalsh(2.0 * design.T @ design / len(design))
    return float(eigenvalues[-1] / eigenvalues[0])


# ------------------------------------------------------------------------- training


def fit(
    optimizer: optax.GradientTransformation, params: Params, data: Data, num_steps: int
) -> tuple[Params, np.ndarray]:
    """Run ``num_steps`` optimizer steps in one compiled ``lax.scan``.

    Returns the final parameters and the loss at every iterate ``0, ..., num_steps``.
    """

    @jax.jit
    def train(params: Params, data: Data) -> tuple[Params, jax.Array]:
        def step(carry: tuple[Params, Any], _: None) -> tuple[tuple[Params, Any], jax.Array]:
            params, opt_state = carry
            loss, grads = jax.value_and_grad(mse_loss)(params, data)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        carry = (params, optimizer.init(params))
        (params, _), losses = jax.lax.scan(step, carry, length=num_steps)
        return params, jnp.append(losses, mse_loss(params, data))

    # `data` is an argument, not a closure constant, so XLA does not bake it in.
    final_params, losses = train(params, data)
    return final_params, np.asarray(losses)


def run_method(
    spec: MethodSpec, data: Data, exact_coef: np.ndarray, exact_loss: float, num_steps: int
) -> MethodResult:
    """Fit with one optimizer from zero and measure it against the exact solution."""
    params, losses = fit(
        spec.make(spec.learning_rate), init_params(data.features.shape[1]), data, num_steps
    )
    coef = flatten_params(params)
    resolution = np.finfo(np.float64).eps * exact_loss
    gap = losses - exact_loss
    reached = np.flatnonzero(gap <= resolution)
    return MethodResult(
        optimizer=spec.description,
        learning_rate=spec.learning_rate,
        iterations=num_steps,
        losses=losses,
        final_loss=float(losses[-1]),
        distance=float(np.linalg.norm(coef - exact_coef)),
        coef=coef,
        resolution_step=int(reached[0]) if reached.size else None,
        rebound=float(gap[reached[0]:].max() / resolution) if reached.size else 0.0,
    )


# -------------------------------------------------------------------------- reports


def format_table(methods: dict[str, MethodResult], exact_loss: float) -> str:
    """A fixed-width table: method, iterations, final loss, exact loss, ‖w − w*‖₂."""
    header = (
        f"{'method':<18} {'optimizer':<28} {'lr':>5} {'iters':>6} "
        f"{'final loss':>19} {'exact loss':>19} {'‖w − w*‖₂':>10}"
    )
    rows = [
        f"{name:<18} {r['optimizer']:<28} {r['learning_rate']:>5g} {r['iterations']:>6d} "
        f"{r['final_loss']:>19.16f} {exact_loss:>19.16f} {r['distance']:>10.2e}"
        for name, r in methods.items()
    ]
    rule = "-" * len(header)
    return "\n".join([header, rule, *rows])


def run(num_steps: int = DEFAULT_NUM_STEPS, verbose: bool = True) -> RegressionResults:
    """Fit the diabetes regression with every method in :data:`METHODS`.

    Args:
      num_steps: iterations per optimizer (each run is one compiled ``lax.scan``).
      verbose: print the results table.

    Returns:
      The exact solution and loss, the Hessian's condition number, per-method results
      (``losses`` holds the loss at iterates ``0..num_steps`` as a NumPy array) and the
      formatted table.
    """
    data = load_data()
    exact_coef = exact_solution(data)
    exact_loss = float(mse_loss(unflatten_params(exact_coef), data))
    methods = {spec.label: run_method(spec, data, exact_coef, exact_loss, num_steps)
               for spec in METHODS}
    results = RegressionResults(
        exact_coef=exact_coef,
        exact_loss=exact_loss,
        condition_number=hessian_condition_number(data),
        methods=methods,
        table=format_table(methods, exact_loss),
    )
    if verbose:
        n, d = data.features.shape
        print(
            f"diabetes least squares: n={n}, d={d} + intercept, standardised target, "
            f"Hessian condition number {results['condition_number']:.0f}"
        )
        print(results["table"])
        print(describe(methods, exact_loss))
    # The claim of the docstring: momentum and Adam get closer than gradient descent.
    gd = methods["gradient descent"]["distance"]
    assert methods["momentum"]["distance"] < gd and methods["adam"]["distance"] < gd
    return results


def describe(methods: dict[str, MethodResult], exact_loss: float) -> str:
    """When each method first reaches float64 resolution, and how far it jumps back."""
    lines = []
    for name, r in methods.items():
        if r["resolution_step"] is None:
            lines.append(f"{name}: not at float64 resolution after {r['iterations']} steps "
                         f"(loss − exact loss = {r['final_loss'] - exact_loss:.1e})")
            continue
        text = f"{name}: at float64 resolution from step {r['resolution_step']}"
        if r["rebound"] > 1e3:
            text += f", then jumps back up to {r['rebound']:.0e}× that and re-converges"
        lines.append(text)
    return "\n".join(lines)


def main(quick: bool = False) -> None:
    """Print the comparison table (``quick``: :data:`QUICK_NUM_STEPS` iterations)."""
    run(num_steps=QUICK_NUM_STEPS if quick else DEFAULT_NUM_STEPS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    main(quick=parser.parse_args().quick)
