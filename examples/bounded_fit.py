"""Bound-constrained fitting: non-negative regression on the diabetes data with jopt.

The problem is least squares on scikit-learn's diabetes data (442 patients, 10 features,
:func:`sklearn.datasets.load_diabetes`), with features and target standardised, so the
coefficients are in standard units, no intercept is needed and ``R² = 1 − 2 f``:

    f(w; X, y, λ) = ½ mean((X w − y)²) + ½ λ ‖w‖²      subject to  lower ≤ w ≤ upper

(λ = 0 except in section 4). Plain least squares gives four of the ten coefficients
negative signs (age, sex, s1 = total cholesterol, which is strongly correlated with
s2 = LDL). Asking every feature to *raise* the predicted disease progression, ``w ≥ 0``,
is non-negative least squares (NNLS): some coefficients end on their bound 0. Four
sections, each printing what it shows and checking its claims with ``assert``:

1. **A bounded fit.** ``jopt.minimize(f, w0, args, method="l-bfgs-b", bounds=(0.0,
   None))`` and ``method="trust-region-newton"`` agree with ``scipy.optimize.nnls`` (an
   exact active-set solver) to 1e-8 (checked); a table shows the coefficients, the
   gradient and ``res.active_mask``. The first-order (KKT) conditions are checked on the
   result: the projected gradient ``P(w − ∇f) − w`` is below the tolerance, the gradient
   vanishes on the free coefficients and is positive on those held at 0 (the bound
   pushes back: dropping it would lower ``f``).

2. **A regularisation path by boxes.** Capping every coefficient, ``0 ≤ w ≤ c``, shrinks
   the fit like a penalty would; the box is a traced argument of the compiled solver, so
   ``jax.jit(jax.vmap(...))`` solves the problem for every cap in one program. The figure
   shows the coefficient paths against ``c``. At a small cap every feature positively
   correlated with the target sits on the cap (there the gradient is about ``−Xᵀy/n``);
   as ``c`` grows they leave it one by one, and sex, s2, s1 and age then fall to 0 as the
   correlated features they stood in for take over, until at ``c ≥ max(w_NNLS)`` the box
   no longer binds from above and the solution is section 1's (checked). The vmapped
   solve agrees with a Python loop of ``scipy.optimize.minimize(method="L-BFGS-B")`` over
   the same boxes to 1e-6 (checked); both are timed (the vmapped call in steady state,
   after its first call; best of three each) and their ratio printed.

3. **Projected first-order training.** ``optax.chain(optax.adam(...),
   jopt.keep_params_in_box(lo, hi))`` in a jitted ``lax.scan`` training loop on the box
   ``0 ≤ w ≤ 0.2`` (both sides active): every iterate stays in the box (checked at every
   step, exactly) and the final loss reaches L-BFGS-B's optimum to 1e-8 relative
   (checked). The transform turns Adam's update ``u`` into ``P(w + u) − w``.

4. **Derivatives of a bounded solution.** With a ridge weight λ, ``jax.jacobian`` of
   ``jopt.minimize(...).x`` with respect to λ and to the targets ``y`` differentiates
   through the solver by the implicit function theorem with the active set held: the
   coefficients on their bound have derivative exactly 0 (checked), the free ones match
   central finite differences (checked) and the closed form ``∂w_F/∂y = (X_Fᵀ X_F / n +
   λ I)⁻¹ X_Fᵀ / n`` on the free set ``F`` (checked).

Everything runs in float64. Run ``python examples/bounded_fit.py`` (``--quick``: fewer
boxes, training steps and grid points); the figures go to ``examples/out/`` (``--quick``:
``examples/out/quick/``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# scipy's BLAS (OpenBLAS) spins several threads on tiny vectors; on a small machine shared
# with XLA's own threads that oversubscription makes scipy's solvers many times slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)  # 1e-8 agreement with scipy: float64 throughout

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.optimize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402

import jopt  # noqa: E402

EXAMPLES_DIR = Path(__file__).resolve().parent
OUT_DIR = EXAMPLES_DIR / "out"
TOL = 1e-10  # projected-gradient tolerance of every jopt solve here
FULL = dict(caps=200, train_steps=2000, lambdas=61)
QUICK = dict(caps=50, train_steps=600, lambdas=21)
TRAIN_CAP = 0.2  # section 3's box: 0 <= w <= 0.2
LAMBDA0 = 0.1  # section 4's ridge weight


def banner(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)))


def load_data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The diabetes data, features and target standardised (mean 0, standard deviation 1)."""
    data = load_diabetes(scaled=False)
    features = (data.data - data.data.mean(0)) / data.data.std(0)
    target = (data.target - data.target.mean()) / data.target.std()
    return features, target, list(data.feature_names)


def objective(w: jax.Array, features: jax.Array, target: jax.Array,
              lam: jax.Array) -> jax.Array:
    """``½ mean((X w − y)²) + ½ λ ‖w‖²``; with λ = 0, ``R² = 1 − 2 f``."""
    residual = features @ w - target
    return 0.5 * jnp.mean(residual**2) + 0.5 * lam * jnp.sum(w**2)


def projected_gradient(w: np.ndarray, grad: np.ndarray, lower: float,
                       upper: float) -> np.ndarray:
    """``P(w − ∇f) − w``: zero exactly at a first-order point of the box problem."""
    return np.clip(w - grad, lower, upper) - w


# ---------------------------------------------------------------- 1. a bounded fit


def nnls_section(out_dir: Path, features, target, names) -> dict:
    """NNLS by L-BFGS-B and trust-region Newton; scipy's nnls; the KKT conditions."""
    n, p = features.shape
    args = (jnp.asarray(features), jnp.asarray(target), 0.0)
    w0 = jnp.zeros(p)
    ols = np.linalg.lstsq(features, target, rcond=None)[0]
    ref, _ = scipy.optimize.nnls(features, target)
    print(f"diabetes (sklearn): {n} patients, {p} standardised features, target standardised;"
          f"\nminimize ½ mean((Xw − y)²) subject to w ≥ 0 (non-negative least squares)")
    fits = {}
    for method in ("l-bfgs-b", "trust-region-newton"):
        start = time.perf_counter()
        res = jopt.minimize(objective, w0, args, method=method, bounds=(0.0, None), tol=TOL)
        seconds = time.perf_counter() - start
        assert bool(res.success), (method, res.message)
        fits[method] = res
        print(f"  {method:20} {int(res.nit):3d} iterations, {int(res.nfev):3d} evaluations, "
              f"{int(res.nhev):3d} Hessian-vector products  ({seconds:.2f} s, compile included)")

    res = fits["l-bfgs-b"]
    w, grad, active = np.asarray(res.x), np.asarray(res.jac), np.asarray(res.active_mask)
    w_trn = np.asarray(fits["trust-region-newton"].x)
    print(f"\n  {'feature':8} {'OLS':>8}   {'l-bfgs-b':>9} {'trust-rgn':>9} {'scipy nnls':>10}"
          f"   {'∂f/∂w':>9}  on a bound")
    for j, name in enumerate(names):
        print(f"  {name:8} {ols[j]:+8.4f}   {w[j]:9.4f} {w_trn[j]:9.4f} {ref[j]:10.4f}   "
              f"{grad[j]:+9.2e}  {'w = 0 (active)' if active[j] else '—'}")
    r2_ols = 1 - np.mean((features @ ols - target) ** 2)
    r2_nnls = 1 - 2 * float(res.fun)
    print(f"  R²: OLS {r2_ols:.4f}, non-negative {r2_nnls:.4f}: {int(active.sum())} of {p} "
          f"coefficients on the bound cost {r2_ols - r2_nnls:.4f} of R²")

    # Agreement with scipy's exact active-set NNLS, for both jopt methods.
    for method, fit in fits.items():
        gap = np.abs(np.asarray(fit.x) - ref).max()
        print(f"  max |w_{method} − w_scipy.nnls| = {gap:.1e}")
        np.testing.assert_allclose(fit.x, ref, rtol=0, atol=1e-8)
        np.testing.assert_array_equal(fit.active_mask, ref <= 0)

    # The KKT conditions, on L-BFGS-B's result.
    pg = np.abs(projected_gradient(w, grad, 0.0, np.inf)).max()
    free_grad = np.abs(grad[~active]).max()
    multipliers = grad[active]
    print(f"  KKT: ‖P(w − ∇f) − w‖∞ = {pg:.1e} (tol {TOL:g}); free: max |∂f/∂w| = "
          f"{free_grad:.1e}; on the bound: ∂f/∂w ≥ {multipliers.min():.3f} > 0 (a "
          f"multiplier: dropping w ≥ 0 would lower f)")
    assert pg <= TOL
    assert free_grad <= TOL
    assert np.all(w[active] == 0.0) and np.all(w[~active] > 0.0)
    assert np.all(multipliers > 1e-3), "strict complementarity: gradients > 0 on the bound"

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    pos = np.arange(p)
    left.bar(pos - 0.2, ols, 0.4, color="0.6", label="least squares (unconstrained)")
    left.bar(pos + 0.2, w, 0.4, color="C0", label="non-negative (jopt l-bfgs-b)")
    for j in np.flatnonzero(active):
        left.annotate("0", (pos[j] + 0.2, 0.0), xytext=(0, 3), textcoords="offset points",
                      ha="center", color="C3", fontweight="bold")
    left.axhline(0, color="k", lw=0.8)
    left.set_xticks(pos, names)
    left.set_ylabel("coefficient (standard units)")
    left.set_title(f"Coefficients: R² {r2_ols:.3f} unconstrained, {r2_nnls:.3f} with w ≥ 0\n"
                   f"(red 0: on the bound, active_mask)")
    left.grid(True, axis="y", alpha=0.3)
    left.legend(fontsize=8)
    colors = np.where(active, "C3", "C0")
    right.bar(pos, grad, 0.6, color=colors)
    for j in np.flatnonzero(~active):
        right.annotate(f"free\n{grad[j]:.0e}", (pos[j], 0.0), xytext=(0, 3),
                       textcoords="offset points", ha="center", fontsize=7, color="C0")
    right.axhline(0, color="k", lw=0.8)
    right.set_xticks(pos, names)
    right.set_ylabel("∂f/∂w at the solution")
    right.set_title("KKT: ∂f/∂w > 0 on the bound (red), 0 where free (blue)")
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Non-negative least squares on the diabetes data: "
                 "jopt.minimize(method='l-bfgs-b', bounds=(0, None))")
    path = out_dir / "bounded_fit_nnls.png"
    fig.savefig(path, dpi=120)
    print(f"  figure: {path}")
    return dict(w=w, active=active, fun=float(res.fun), r2=r2_nnls, ols=ols, path=path)


# ------------------------------------------------------- 2. a regularisation path by boxes


@jax.jit
def solve_boxes(caps: jax.Array, features: jax.Array, target: jax.Array) -> jopt.MinimizeResult:
    """L-BFGS-B on ``0 ≤ w ≤ c`` for every cap ``c`` in ``caps``: one compiled program."""

    def solve(cap):
        w0 = jnp.zeros(features.shape[1])
        return jopt.minimize(objective, w0, (features, target, 0.0), method="l-bfgs-b",
                             bounds=(0.0, cap), tol=TOL)

    return jax.vmap(solve)(caps)


def path_section(out_dir: Path, features, target, names, nnls_w: np.ndarray,
                 num_caps: int) -> dict:
    """The coefficient paths over the caps; vmap against a scipy loop."""
    n, p = features.shape
    caps = np.linspace(0.0, 0.4, num_caps + 1)[1:]
    X, y = jnp.asarray(features), jnp.asarray(target)
    print(f"0 ≤ w ≤ c for {num_caps} caps c from {caps[0]:.3f} to {caps[-1]:.1f}: "
          f"jax.jit(jax.vmap(jopt.minimize(..., method='l-bfgs-b', bounds=(0.0, c))))")
    start = time.perf_counter()
    jax.block_until_ready(solve_boxes(caps, X, y))
    first_s = time.perf_counter() - start
    jopt_s = np.inf
    for _ in range(3):  # the same program again: compiled, so only the run (best of 3)
        start = time.perf_counter()
        res = jax.block_until_ready(solve_boxes(caps, X, y))
        jopt_s = min(jopt_s, time.perf_counter() - start)
    W, active = np.asarray(res.x), np.asarray(res.active_mask)
    assert np.all(res.success)
    at_cap = active & (W >= caps[:, None])
    at_zero = active & (W <= 0.0)
    print(f"  first call {first_s:.2f} s (compile + run), again {jopt_s * 1e3:.1f} ms "
          f"(best of 3; {int(np.asarray(res.nit).max())} iterations for the slowest box)")

    def f_and_grad(w):
        r = features @ w - target
        return 0.5 * np.mean(r**2), features.T @ r / n

    scipy_s = np.inf
    for _ in range(3):  # best of 3, as for jopt
        start = time.perf_counter()
        ref = np.array([scipy.optimize.minimize(f_and_grad, np.zeros(p), jac=True,
                                                method="L-BFGS-B", bounds=[(0.0, c)] * p,
                                                options=dict(gtol=TOL, ftol=1e-15)).x
                        for c in caps])
        scipy_s = min(scipy_s, time.perf_counter() - start)
    gap = np.abs(W - ref).max()
    print(f"  scipy.optimize.minimize(method='L-BFGS-B') in a Python loop over the same boxes "
          f"(analytic gradient): {scipy_s * 1e3:.0f} ms (best of 3)")
    print(f"  scipy loop / vmapped jopt: {scipy_s / jopt_s:.1f}×   max |w_jopt − w_scipy| = "
          f"{gap:.1e}")
    np.testing.assert_allclose(W, ref, rtol=0, atol=1e-6)

    print(f"\n  {'c':>6}  {'on the cap c':38} {'at 0':24} {'R²':>6}")
    for i in np.linspace(0, num_caps - 1, 6).round().astype(int):
        capped = ", ".join(n_ for n_, a in zip(names, at_cap[i], strict=True) if a) or "—"
        zero = ", ".join(n_ for n_, a in zip(names, at_zero[i], strict=True) if a) or "—"
        print(f"  {caps[i]:6.3f}  {capped:38} {zero:24} {1 - 2 * float(res.fun[i]):6.4f}")
    # Where the box stops binding from above, the solution is the NNLS one of section 1.
    loose = caps >= nnls_w.max()
    np.testing.assert_allclose(W[loose], np.broadcast_to(nnls_w, W[loose].shape), atol=1e-8)
    assert not at_cap[loose].any() and at_cap[0].any() and np.all(W <= caps[:, None])
    leaves = {j: caps[np.flatnonzero(at_cap[:, j]).max() + 1] for j in range(p)
              if at_cap[:, j].any() and not at_cap[-1, j]}
    # ... and those that end at 0 reach it where they join the lower bound for good.
    zeros = {j: caps[np.flatnonzero(~at_zero[:, j]).max() + 1] for j in range(p)
             if at_zero[-1, j] and not at_zero[:, j].all()}
    print("  each coefficient leaves the cap at c = " + ", ".join(
        f"{names[j]} {c:.3f}" for j, c in sorted(leaves.items(), key=lambda kv: kv[1])))
    print("  and falls to 0 at c = " + ", ".join(
        f"{names[j]} {c:.3f}" for j, c in sorted(zeros.items(), key=lambda kv: kv[1]))
        + "; " + ", ".join(names[j] for j in range(p) if at_zero[:, j].all())
        + " stays at 0 throughout")

    fig = Figure(figsize=(12.0, 5.2), layout="constrained")
    axes = fig.subplot_mosaic([["path", "r2"], ["path", "count"]], width_ratios=[1.7, 1])
    ax = axes["path"]
    ax.plot(caps, caps, "k--", lw=1, label="the cap: w = c")
    order = np.argsort(-nnls_w)
    dot = 3.5 if num_caps <= 60 else 2.0  # (markers on the cap: one per box)
    for k, j in enumerate(order):
        color = f"C{k}"
        ax.plot(caps, W[:, j], color=color, lw=2, label=f"{names[j]} (NNLS {nnls_w[j]:.3f})")
        ax.plot(caps[at_cap[:, j]], W[at_cap[:, j], j], "o", ms=dot, color=color)
        if j in leaves:
            ax.plot(leaves[j], leaves[j], "D", ms=8, mfc="none", mec=color, mew=2)
        if j in zeros:
            ax.plot(zeros[j], 0.0, "v", ms=9, mfc="none", mec=color, mew=2)
    ax.plot([], [], "o", ms=dot, color="0.3", label="on the cap (active_mask)")
    ax.plot([], [], "D", ms=8, mfc="none", mec="0.3", mew=2, label="leaves the cap")
    ax.plot([], [], "v", ms=9, mfc="none", mec="0.3", mew=2, label="reaches 0 for good")
    ax.axvline(nnls_w.max(), color="0.5", lw=1, ls=":")
    ax.annotate("c = max NNLS coefficient:\nthe box stops binding", (nnls_w.max(), 0.2),
                xytext=(-5, 0), textcoords="offset points", ha="right", fontsize=8,
                color="0.35")
    ax.set_xlabel("cap c (box 0 ≤ w ≤ c)")
    ax.set_ylabel("coefficient (standard units)")
    ax.set_title("Coefficient paths (s3 stays at 0 throughout)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    r2 = 1 - 2 * np.asarray(res.fun)
    axes["r2"].plot(caps, r2, color="C0", lw=2, label="box-constrained fit")
    axes["r2"].axhline(1 - 2 * float(objective(jnp.asarray(nnls_w), X, y, 0.0)), color="C0",
                       ls=":", label="w ≥ 0 only (NNLS)")
    axes["r2"].set_ylabel("R²")
    axes["r2"].set_title("Fit against the cap")
    axes["r2"].grid(True, alpha=0.3)
    axes["r2"].legend(fontsize=8)
    axes["count"].step(caps, at_cap.sum(1), where="mid", color="C1", lw=2, label="on the cap")
    axes["count"].step(caps, at_zero.sum(1), where="mid", color="C3", lw=2, label="at 0")
    axes["count"].step(caps, p - active.sum(1), where="mid", color="C2", lw=2, label="free")
    axes["count"].set_title("Coefficients on each bound (active_mask)")
    axes["count"].set_xlabel("cap c")
    axes["count"].set_ylabel("coefficients")
    axes["count"].grid(True, alpha=0.3)
    axes["count"].legend(fontsize=8)
    fig.suptitle(f"A regularisation path by boxes: {num_caps} bounded fits in one "
                 f"jit(vmap(jopt.minimize)), {jopt_s * 1e3:.1f} ms "
                 f"(scipy L-BFGS-B loop: {scipy_s * 1e3:.0f} ms)")
    path = out_dir / "bounded_fit_path.png"
    fig.savefig(path, dpi=120)
    print(f"  figure: {path}")
    return dict(caps=caps, W=W, jopt_s=jopt_s, scipy_s=scipy_s, path=path)


# ------------------------------------------------------ 3. projected first-order training


def train_section(out_dir: Path, features, target, names, steps: int) -> dict:
    """Projected Adam in a jitted scan on the box ``0 ≤ w ≤ TRAIN_CAP``."""
    p = features.shape[1]
    X, y = jnp.asarray(features), jnp.asarray(target)
    lo, hi = 0.0, TRAIN_CAP
    ref = jopt.minimize(objective, jnp.zeros(p), (X, y, 0.0), method="l-bfgs-b",
                        bounds=(lo, hi), tol=TOL)
    f_star = float(ref.fun)
    opt = optax.chain(optax.adam(optax.cosine_decay_schedule(0.02, steps)),
                      jopt.keep_params_in_box(lo, hi))

    @jax.jit
    def train(w0: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``steps`` steps of projected Adam; the loss and the iterate after every step."""

        def step(carry, _):
            w, state = carry
            loss, grad = jax.value_and_grad(objective)(w, X, y, 0.0)
            updates, state = opt.update(grad, state, w)
            w = optax.apply_updates(w, updates)
            return (w, state), (loss, w)

        _, (losses, iterates) = jax.lax.scan(step, (w0, opt.init(w0)), length=steps)
        return losses, iterates

    w0 = jnp.full(p, 0.5 * hi)  # the middle of the box
    start = time.perf_counter()
    losses, iterates = jax.block_until_ready(train(w0))
    seconds = time.perf_counter() - start
    losses, iterates = np.asarray(losses), np.asarray(iterates)
    w_end = iterates[-1]
    f_end = float(objective(jnp.asarray(w_end), X, y, 0.0))
    gap = np.concatenate([losses[1:], [f_end]]) - f_star  # f(w_k) − f* after step k
    close = int(np.argmax(gap <= 1e-6 * f_star)) + 1
    print(f"box {lo:g} ≤ w ≤ {hi:g}; optax.chain(optax.adam(cosine 0.02 → 0), "
          f"jopt.keep_params_in_box({lo:g}, {hi:g})), {steps} full-batch steps in one "
          f"jitted lax.scan ({seconds:.2f} s, compile included)")
    print(f"  L-BFGS-B: f* = {f_star:.10f} in {int(ref.nit)} iterations; projected Adam: "
          f"f = {f_end:.10f}  (f − f* = {f_end - f_star:.1e}; within 1e-6·f* after step "
          f"{close})")
    print(f"  every iterate in the box: min w = {iterates.min():.3g}, max w = "
          f"{iterates.max():.3g};  max |w_Adam − w_L-BFGS-B| = "
          f"{np.abs(w_end - np.asarray(ref.x)).max():.1e}")
    active_ref = np.asarray(ref.active_mask)
    active_end = (w_end <= lo) | (w_end >= hi)
    print("  on a bound at the end: " + ", ".join(
        f"{names[j]} ({'0' if w_end[j] <= lo else 'cap'})" for j in np.flatnonzero(active_end))
        + f"; the same set as L-BFGS-B's active_mask: {bool(np.all(active_end == active_ref))}")
    assert np.all(iterates >= lo) and np.all(iterates <= hi), "an iterate left the box"
    assert f_end - f_star <= 1e-8 * f_star, (f_end, f_star)
    assert np.all(active_end == active_ref)

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.semilogy(np.arange(1, steps + 1), np.maximum(gap, 1e-16), color="C0", lw=1.5)
    left.set_xlabel("step")
    left.set_ylabel("f(w) − f*  (f* by L-BFGS-B; floor 1e-16)")
    left.set_title("Projected Adam reaches the bounded optimum")
    left.grid(True, which="both", alpha=0.3)
    right.axhspan(lo, hi, color="C2", alpha=0.08, label=f"the box [{lo:g}, {hi:g}]")
    for j in range(p):
        right.plot(np.arange(steps + 1), np.concatenate([[float(w0[j])], iterates[:, j]]),
                   lw=1.5, color=f"C{j}", label=names[j])
        right.plot(steps, float(ref.x[j]), "o", mfc="none", color=f"C{j}")
    right.set_xscale("symlog", linthresh=10)
    right.set_xlabel("step")
    right.set_ylabel("coefficient")
    for bound, side, va in ((lo, "lo", "bottom"), (hi, "hi", "top")):
        on = [names[j] for j in range(p) if (w_end[j] <= lo if side == "lo" else w_end[j] >= hi)]
        right.annotate("on the bound: " + ", ".join(on), (steps, bound), ha="right", va=va,
                       xytext=(-12, 4 if va == "bottom" else -4), textcoords="offset points",
                       fontsize=8)
    right.set_title("Iterates never leave the box (circles: L-BFGS-B's solution)")
    right.set_ylim(lo - 0.02, hi + 0.02)
    right.grid(True, alpha=0.3)
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("optax.chain(optax.adam(...), jopt.keep_params_in_box(0, 0.2)): "
                 "a training loop that keeps parameters in a box")
    path = out_dir / "bounded_fit_training.png"
    fig.savefig(path, dpi=120)
    print(f"  figure: {path}")
    return dict(f_end=f_end, f_star=f_star, path=path)


# ---------------------------------------------------- 4. derivatives of a bounded solution


def derivative_section(out_dir: Path, features, target, names, num_lambdas: int) -> dict:
    """``jax.jacobian`` of the NNLS-ridge solution with respect to λ and y."""
    n, p = features.shape
    X = jnp.asarray(features)

    def solution(lam, y):
        """The non-negative ridge solution ``w*(λ, y)``."""
        return jopt.minimize(objective, jnp.zeros(p), (X, y, lam), method="l-bfgs-b",
                             bounds=(0.0, None), tol=TOL).x

    def solve(lam, y=target):  # (eager: the same compiled program for every λ)
        res = jopt.minimize(objective, jnp.zeros(p), (X, y, lam), method="l-bfgs-b",
                            bounds=(0.0, None), tol=1e-13)
        assert bool(res.success), res.message
        return np.asarray(res.x)

    start = time.perf_counter()
    d_lam, d_y = jax.jit(jax.jacobian(solution, argnums=(0, 1)))(LAMBDA0, jnp.asarray(target))
    seconds = time.perf_counter() - start
    d_lam, d_y = np.asarray(d_lam) + 0.0, np.asarray(d_y) + 0.0  # (+ 0.0: no −0 printed)
    w = solve(LAMBDA0)
    free = w > 0
    print(f"non-negative ridge: ½ mean((Xw − y)²) + ½ λ‖w‖², w ≥ 0, at λ = {LAMBDA0:g};"
          f"\njax.jit(jax.jacobian(lambda λ, y: jopt.minimize(...).x, argnums=(0, 1))): "
          f"∂w*/∂λ {d_lam.shape} and ∂w*/∂y {d_y.shape} ({seconds:.2f} s, compile included)")

    h = 1e-4
    fd_lam = (solve(LAMBDA0 + h) - solve(LAMBDA0 - h)) / (2 * h) + 0.0
    i = int(np.argmax(np.abs(target)))  # the patient with the most extreme target
    e = np.zeros(n)
    e[i] = 1e-3
    fd_y = (solve(LAMBDA0, target + e) - solve(LAMBDA0, target - e)) / (2 * e[i]) + 0.0
    A = features[:, free]
    closed_y = np.linalg.solve(A.T @ A / n + LAMBDA0 * np.eye(free.sum()), A.T / n)
    closed_lam = -np.linalg.solve(A.T @ A / n + LAMBDA0 * np.eye(free.sum()), w[free])
    print(f"\n  {'feature':8} {'w*':>8}  {'∂w*/∂λ':>10} {'finite diff':>11}   "
          f"{f'∂w*/∂y[{i}]':>11} {'finite diff':>11}")
    for j, name in enumerate(names):
        print(f"  {name:8} {w[j]:8.4f}  {d_lam[j]:+10.6f} {fd_lam[j]:+11.6f}   "
              f"{d_y[j, i]:+11.3e} {fd_y[j]:+11.3e}  {'' if free[j] else 'w = 0: held'}"
              .rstrip())
    err_lam = np.abs(d_lam - fd_lam).max()
    err_y = np.abs(d_y[:, i] - fd_y).max()
    err_closed = max(np.abs(d_y[free] - closed_y).max(), np.abs(d_lam[free] - closed_lam).max())
    print(f"  active coefficients: ∂w*/∂λ and all {n} entries of ∂w*/∂y are exactly 0: "
          f"{bool(np.all(d_lam[~free] == 0) and np.all(d_y[~free] == 0))}")
    print(f"  free coefficients: max |jacobian − finite difference| {err_lam:.1e} (λ), "
          f"{err_y:.1e} (y[{i}]); max |jacobian − closed form| {err_closed:.1e}")
    assert np.all(d_lam[~free] == 0.0) and np.all(d_y[~free] == 0.0)
    np.testing.assert_allclose(d_lam, fd_lam, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_y[:, i], fd_y, rtol=1e-5, atol=1e-9)
    assert err_closed <= 1e-8

    # The solution over a grid of λ (the same eager program each time), with the tangents.
    lambdas = np.linspace(0.0, 0.5, num_lambdas)
    path = np.array([solve(lam) for lam in lambdas])
    # The active set does not change near λ0, so the derivative there is two-sided.
    near = np.abs(lambdas - LAMBDA0) <= 0.05
    assert np.all((path[near] > 0) == free)

    fig = Figure(figsize=(12.0, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])
    span = np.linspace(LAMBDA0 - 0.1, LAMBDA0 + 0.1, 2)
    for j in np.flatnonzero(free):
        left.plot(lambdas, path[:, j], color=f"C{j}", lw=2, label=names[j])
        left.plot(span, w[j] + d_lam[j] * (span - LAMBDA0), "k--", lw=1.2)
        left.plot(LAMBDA0, w[j], "o", color=f"C{j}")
    held = ", ".join(names[j] for j in np.flatnonzero(~free))
    left.plot(lambdas, path[:, ~free], color="0.6", lw=2)
    left.plot([], [], color="0.6", lw=2, label=f"{held} (at 0)")
    left.plot([], [], "k--", lw=1.2, label="tangent w* + (∂w*/∂λ) Δλ")
    left.axvline(LAMBDA0, color="0.5", ls=":", lw=1)
    left.set_xlabel("ridge weight λ")
    left.set_ylabel("w*(λ)")
    left.set_title(f"w*(λ) and its tangents at λ = {LAMBDA0:g} (jax.jacobian)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=7, ncols=2)
    limit = np.abs(d_y).max()
    image = right.imshow(d_y, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
                         interpolation="nearest")
    right.set_yticks(np.arange(p), [f"{nm}{'' if free[j] else ' (w=0)'}"
                                    for j, nm in enumerate(names)])
    right.set_xlabel("patient i")
    right.set_title("∂w*/∂y: each patient's pull on each coefficient; rows on the bound are 0")
    fig.colorbar(image, ax=right, label="∂w*[j] / ∂y[i]")
    fig.suptitle("Implicit differentiation of a bounded solution (active set held)")
    path_png = out_dir / "bounded_fit_derivatives.png"
    fig.savefig(path_png, dpi=120)
    print(f"  figure: {path_png}")
    return dict(d_lam=d_lam, d_y=d_y, path=path_png)


# ------------------------------------------------------------------------------ main


def main(out_dir: Path = OUT_DIR, quick: bool = False) -> dict:
    """Run the four sections; figures go to ``out_dir``."""
    settings = QUICK if quick else FULL
    out_dir.mkdir(parents=True, exist_ok=True)
    features, target, names = load_data()
    results = {}
    banner("1. Non-negative least squares: L-BFGS-B and trust-region Newton")
    results["nnls"] = nnls_section(out_dir, features, target, names)
    banner("2. A regularisation path by boxes: jax.vmap over 0 ≤ w ≤ c")
    results["path"] = path_section(out_dir, features, target, names, results["nnls"]["w"],
                                   settings["caps"])
    banner("3. Projected first-order training: Adam + jopt.keep_params_in_box")
    results["train"] = train_section(out_dir, features, target, names, settings["train_steps"])
    banner("4. Derivatives of the bounded solution: jax.jacobian through jopt.minimize")
    results["derivatives"] = derivative_section(out_dir, features, target, names,
                                                settings["lambdas"])
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    quick = parser.parse_args().quick
    main(OUT_DIR / "quick" if quick else OUT_DIR, quick=quick)  # quick: figures of their own
