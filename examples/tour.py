"""A tour of jopt: every feature gets a short, runnable section here.

``make demo`` runs this file (``MPLBACKEND=Agg .venv/bin/python examples/tour.py``); it
works from any working directory. Figures go to ``examples/out/``. With ``--quick`` (or
``JOPT_EXAMPLES_QUICK=1``) every section runs its example's quick mode, and figures go to
``examples/out/quick/``.

To add a section, write a function ``section(out_dir: Path, quick: bool) -> None`` that
prints what it shows (and saves any figure under ``out_dir``), then append
``(title, function)`` to :data:`SECTIONS`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

# scipy's BLAS (OpenBLAS) spins several threads on tiny vectors; on a small machine shared
# with XLA's own threads that oversubscription made scipy's solvers up to 30× slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

import jopt

EXAMPLES_DIR = Path(__file__).resolve().parent
OUT_DIR = EXAMPLES_DIR / "out"

Section = Callable[[Path, bool], None]


# -------------------------------------------------------------------------- helpers


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by file path, so the tour runs from any directory."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES_DIR / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load example {name!r} from {EXAMPLES_DIR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look the module up by name
    spec.loader.exec_module(module)
    return module


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_banner(title: str) -> None:
    """A section heading."""
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)))


# ------------------------------------------------------------------ linear regression


def plot_convergence(results: dict, path: Path) -> Path:
    """Plot loss minus the exact loss (log scale) per iteration, one line per method.

    Gaps below float64 resolution (``eps · exact loss``, where rounding makes them zero
    or negative) are drawn at that floor, marked by a dotted line.
    """
    exact_loss = results["exact_loss"]
    floor = np.finfo(np.float64).eps * exact_loss
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name, method in results["methods"].items():
        gap = np.maximum(method["losses"] - exact_loss, floor)
        label = f"{name}: {method['optimizer']}, lr={method['learning_rate']:g}"
        ax.semilogy(np.arange(gap.size), gap, label=label)
    ax.axhline(floor, color="grey", linestyle=":", linewidth=1, label="float64 resolution")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss − exact least-squares loss")
    ax.set_title(
        f"Diabetes least squares (Hessian condition number {results['condition_number']:.0f})"
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def linear_regression_section(out_dir: Path, quick: bool) -> None:
    """Gradient descent, momentum and Adam against the closed-form least-squares fit."""
    example = load_example("linear_regression")
    num_steps = example.QUICK_NUM_STEPS if quick else example.DEFAULT_NUM_STEPS
    results = example.run(num_steps=num_steps, verbose=False)
    print(
        "Least squares on scikit-learn's diabetes data (standardised), params as the "
        'pytree {"w", "b"};\neach training loop is one compiled lax.scan, in float64.\n'
    )
    print(results["table"])
    print("\nGradient descent crawls along the flattest direction; momentum and Adam get "
          "further.\nA spike in the plot is Adam with a constant step bouncing off the "
          "noise floor:\n")
    print(example.describe(results["methods"], results["exact_loss"]))
    path = plot_convergence(results, out_dir / "linear_regression_convergence.png")
    print(f"\nconvergence plot: {display_path(path)}")


# ---------------------------------------------------------------------- quasi-Newton


def quasi_newton_section(out_dir: Path, quick: bool) -> None:
    """jopt.minimize (L-BFGS, BFGS, nonlinear CG) beside scipy on chained Rosenbrock."""
    del out_dir
    example = load_example("quasi_newton")
    settings = example.QUICK if quick else example.FULL
    print(f"Chained Rosenbrock, n = {settings['n']}, from (−1.2, 1, …); ‖∇f‖∞ ≤ 1e-6, "
          "float64.")
    print("Each jopt solve is one compiled lax.while_loop; times are steady-state medians.\n")
    print(example.format_table(example.run(**settings)))


# ------------------------------------------------------------------ bilevel / implicit


def plot_validation_curve(results: dict, path: Path) -> Path:
    """Validation loss over the λ grid (log axes) with the hypergradient-descent path."""
    grid, steps = results["grid"], results["path"]
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    lam = np.exp(grid["log_lam"])
    ax.loglog(lam, grid["val_loss"], "-", color="C0",
              label=f"validation loss ({lam.size}-point grid)")
    ax.loglog(lam, grid["test_loss"], "--", color="grey", linewidth=1, label="test loss (grid)")
    path_lam = np.exp(steps["log_lam"])
    ax.plot(path_lam, steps["val_loss"], "o-", color="C3", ms=4, linewidth=0.8,
            label="outer iterates (gradient descent on log λ)", zorder=3)
    for k in range(min(6, path_lam.size)):  # the first steps; the rest pile up at the end
        ax.annotate(str(k), (path_lam[k], steps["val_loss"][k]), textcoords="offset points",
                    xytext=(4, -11), fontsize=8, color="C3")
    start, found, best = results["start"], results["found"], results["grid_best"]
    ax.plot(start["lam"], start["val_loss"], "s", mfc="none", mec="k", ms=10,
            label=f"start λ = {start['lam']:g}")
    ax.plot(found["lam"], found["val_loss"], "*", color="C2", mec="k", ms=15, zorder=4,
            label=f"found λ = {found['lam']:.4g} (after {steps['log_lam'].size - 1} steps)")
    ax.axvline(best["lam"], color="C0", linestyle=":", linewidth=1,
               label=f"grid best λ = {best['lam']:.4g}")
    ax.set_xlabel("L2 strength λ")
    ax.set_ylabel("mean logistic loss")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_title("Breast cancer: λ by gradient descent on validation loss (implicit diff.)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def bilevel_section(out_dir: Path, quick: bool) -> None:
    """Hyperparameter tuning: jax.grad through jopt.minimize by the implicit function theorem."""
    example = load_example("bilevel_regularization")
    results = example.run(verbose=False, **(example.QUICK if quick else {}))
    check, steps = results["fd_check"], results["path"]
    n_train, n_val, n_test = results["sizes"]
    print(
        "L2-regularised logistic regression on scikit-learn's breast-cancer data "
        f"(train/val/test\n{n_train}/{n_val}/{n_test}, standardised). Inner: "
        "jopt.minimize(inner, θ0, args=(log λ,), method=\"lbfgs\");\nouter: jopt.sgd on "
        "log λ, with dV/dlog λ = jax.grad of the validation loss through minimize\n(implicit "
        "function theorem: one CG solve on Hessian-vector products, no unrolling).\n"
    )
    print(
        f"dV/dlog λ at λ = {results['start']['lam']:g}: implicit {check['implicit']:.10f}, "
        f"central difference {check['finite_difference']:.10f} (rel. {check['rel_error']:.0e})"
    )
    shown = sorted({0, 1, 2, 3, 5, 10, steps["log_lam"].size - 1})
    print("outer steps: " + ", ".join(
        f"{k}: λ={np.exp(steps['log_lam'][k]):.4g}" for k in shown))
    print(f"|dV/dlog λ| at the last step: {abs(steps['hypergrad'][-1]):.1e}\n")
    print(results["table"])
    offset = abs(results["found"]["log_lam"] - results["grid_best"]["log_lam"]) / np.log(10)
    relation = "at or below" if results["found_beats_grid"] else "above"
    print(
        f"\nThe found λ lies {offset:.3f} decades from the grid's best (grid spacing "
        f"{results['grid_spacing'] / np.log(10):.3f} decades);\nits validation loss is "
        f"{relation} every grid point's."
    )
    path = plot_validation_curve(results, out_dir / "bilevel_validation_curve.png")
    print(f"\nvalidation curve: {display_path(path)}")


# ------------------------------------------------------------------ more examples


def example_section(name: str) -> Section:
    """A section that runs ``examples/<name>.py``'s ``main(out_dir, quick=quick)`` (it
    prints its own report)."""

    def section(out_dir: Path, quick: bool) -> None:
        load_example(name).main(out_dir, quick=quick)

    section.__name__ = f"{name}_section"
    return section


# ------------------------------------------------------------------------------ tour

SECTIONS: list[tuple[str, Section]] = [
    ("Calculus: a gradient derived by hand, checked against jax.grad and jopt",
     lambda out_dir, quick: load_example("gradient_check").main(quick=quick)),
    ("First-order optimizers on linear regression", linear_regression_section),
    ("First-order practice: the stable step, schedules, clipping, minibatches",
     lambda out_dir, quick: load_example("first_order").main(quick=quick)),
    ("Quasi-Newton solvers: jopt.minimize beside scipy", quasi_newton_section),
    ("The ladder: twelve optimizers, gradient descent to Newton, on one problem",
     example_section("ladder")),
    ("Small solver loops as one XLA:CPU kernel", example_section("small_loops")),
    ("Implicit differentiation: tuning L2 strength by hypergradient", bilevel_section),
    ("Hessian diagnostics and AdaHessian / Sophia on digits", example_section("curvature")),
    ("Hyperparameter sweeps: learning rates × seeds, all in one program",
     example_section("sweep_learning_rates")),
    ("Compression: distillation, OBD pruning, Hessian-aware quantization",
     lambda out_dir, quick: load_example("compress_digits").run(out_dir=out_dir, quick=quick)),
]


def print_header() -> None:
    """What is running, and where."""
    print(f"jopt {jopt.__version__} tour — jax {jax.__version__} on {jax.default_backend()}")


def main(out_dir: Path | None = None, quick: bool = False) -> None:
    """Run every section in order, timing each (``quick``: each example's quick mode)."""
    out_dir = out_dir or (OUT_DIR / "quick" if quick else OUT_DIR)
    print_header()
    for title, section in SECTIONS:
        print_banner(title)
        start = time.perf_counter()
        section(out_dir, quick)
        print(f"[{time.perf_counter() - start:.1f} s]")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="every section in its quick mode (also JOPT_EXAMPLES_QUICK=1)")
    main(quick=parser.parse_args().quick)
