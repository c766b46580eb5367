"""Curve fitting with ``jopt.curve_fit`` and ``jopt.least_squares``: certified, real, robust, many.

Four sections. Each prints what it shows and checks its claims with ``assert``:

1. **A certified problem.** NIST's Thurber problem (StRD nonlinear regression, "higher
   level of difficulty": electron mobility against log density, 37 points, a cubic/cubic
   rational model with 7 parameters), read from ``tests/data/nist/Thurber.dat`` and
   fitted from both of NIST's starting points. ``jopt.curve_fit(model, x, y, p0)``
   returns ``(popt, pcov)`` as ``scipy.optimize.curve_fit`` does, and the standard errors
   ``√diag(pcov)`` are NIST's certified standard deviations. The score is the log relative
   error (LRE, about the number of correct digits; NIST certifies 11). With the default
   tolerances (``ftol = xtol = gtol = 1e-8``, scipy's) the fit stops at about 4 digits:
   the cost is flat along a valley, and it falls by less than ``ftol`` per step long
   before the parameters settle. Tolerances of 1e-15 reach at least 6 digits (checked).

2. **Real data, with an uncertainty band.** In scikit-learn's diabetes data (unscaled),
   column ``s4`` is total cholesterol / HDL and ``s3`` is HDL (mg/dL). A power law
   ``s4 = a·(HDL/50)^k`` fits them; dividing by 50 mg/dL (about the median) makes ``a``
   the ratio at HDL = 50, and its estimate far less correlated with ``k``'s (+0.53; the
   coefficient of a bare ``HDL^k`` would have −0.998). Since total cholesterol
   hardly depends on HDL, ``k`` should be about −1, and its 95 % interval contains −1
   (checked). The 95 % confidence band of the fitted curve comes from the covariance by
   the delta method, ``Var f(x) ≈ J(x) Σ J(x)ᵀ`` with ``J(x) = ∂f(x; p)/∂p`` from
   ``jax.jacfwd``; the prediction band adds the residual variance. At HDL = 50 the
   model's value is ``a``, so there the band's half-width is ``t·se(a)`` (checked), and
   ``popt`` and ``pcov`` agree with scipy's (checked). (The ratio is recorded mostly as a
   whole number, hence the rows of points; the prediction band assumes one noise level
   everywhere, which the data only roughly follow.)

3. **Robust losses against outliers.** An exponential decay ``a·e^(−kt) + c`` with small
   noise, 10 % of whose points are hit by large positive spikes. Plain least squares
   (``loss="linear"``) is pulled towards the spikes; ``jopt.least_squares(...,
   loss="soft_l1", f_scale=0.1)`` (also ``huber``, ``cauchy``, ``arctan``) treats
   residuals much larger than ``f_scale`` as outliers: it lands several times closer to
   the true parameters (checked), nearly as close as the "oracle" fit that knows which
   points are spikes and drops them (checked), and matches
   ``scipy.optimize.least_squares`` (checked).

4. **Many curves at once.** ``jax.jit(jax.vmap(...))`` of ``jopt.curve_fit`` fits
   thousands of decays as one compiled program, timed in steady state (the second call)
   against a Python loop of ``scipy.optimize.curve_fit`` on a sample, whose parameters
   agree to 1e-6 relative (checked). A batched solve runs until its slowest member has
   converged, so each dataset starts from a guess read off its own data, not from one
   fixed ``p0``. With so many fits the standard errors can be checked too: the true
   parameter lies within ``±1.96·se`` in about 95 % of them (checked, loosely).

Everything runs in float64. Run ``python examples/curve_fitting.py`` (``--quick``: fewer
datasets in section 4, two losses in section 3); the figures go to ``examples/out/``
(``--quick``: ``examples/out/quick/``).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

# scipy's BLAS (OpenBLAS) spins several threads on tiny vectors; on a small machine shared
# with XLA's own threads that oversubscription made scipy's solvers up to 30× slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)  # NIST certifies 11 digits: float64 throughout

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
import scipy.stats  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402

import jopt  # noqa: E402

EXAMPLES_DIR = Path(__file__).resolve().parent
OUT_DIR = EXAMPLES_DIR / "out"
NIST_DIR = EXAMPLES_DIR.parent / "tests" / "data" / "nist"
TIGHT = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15)  # for certified digits
FULL = dict(datasets=4096, scipy_sample=512, losses=("linear", "soft_l1", "huber", "cauchy",
                                                     "arctan"))
QUICK = dict(datasets=512, scipy_sample=128, losses=("linear", "soft_l1"))


def banner(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)))


# ------------------------------------------------------------- 1. a certified problem


class NistProblem(NamedTuple):
    """The parts of a NIST StRD ``.dat`` file this example uses."""

    x: np.ndarray
    y: np.ndarray
    starts: np.ndarray  # (2, n_params): NIST's Start 1 and Start 2
    certified: np.ndarray
    certified_sd: np.ndarray
    residual_sd: float


def read_nist(path: Path) -> NistProblem:
    """Parse a one-predictor NIST StRD nonlinear-regression file.

    Parameter lines read ``b1 = start1 start2 certified certified_sd``; the header says
    which lines hold the data (columns ``y x``).
    """
    text = path.read_text()
    lines = text.splitlines()
    first, last = map(int, re.search(r"Data\s+\(lines (\d+) to (\d+)\)", text).groups())
    table = np.array([line.split()[2:6] for line in lines[:first - 1]
                      if re.match(r"\s*b\d+\s*=", line)], dtype=np.float64)
    data = np.array([line.split() for line in lines[first - 1:last]], dtype=np.float64)
    residual_sd = float(re.search(r"Residual Standard Deviation:\s*(\S+)", text).group(1))
    return NistProblem(x=data[:, 1], y=data[:, 0], starts=table[:, :2].T,
                       certified=table[:, 2], certified_sd=table[:, 3],
                       residual_sd=residual_sd)


def thurber(x, b1, b2, b3, b4, b5, b6, b7):
    """NIST's Thurber model: ``(b1 + b2 x + b3 x² + b4 x³) / (1 + b5 x + b6 x² + b7 x³)``."""
    return (b1 + b2 * x + b3 * x**2 + b4 * x**3) / (1 + b5 * x + b6 * x**2 + b7 * x**3)


def lre(estimate: np.ndarray, certified: np.ndarray) -> np.ndarray:
    """Log relative error ``−log10(|est − cert| / |cert|)``, capped at NIST's 11 digits."""
    with np.errstate(divide="ignore"):
        digits = -np.log10(np.abs(estimate - certified) / np.abs(certified))
    return np.clip(digits, 0.0, 11.0)


def certified_section() -> dict:
    """Fit Thurber from both NIST starts; compare with the certified values."""
    problem = read_nist(NIST_DIR / "Thurber.dat")
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    n = problem.certified.size
    print(f"NIST StRD Thurber: {x.size} observations, {n} parameters, rational cubic/cubic")
    print("default tolerances (1e-8) vs 1e-15, smallest LRE over the parameters:")
    fits = []
    for i, start in enumerate(problem.starts, 1):
        p0 = jnp.asarray(start)
        loose = jopt.curve_fit(thurber, x, y, p0, full_output=True)
        tight = jopt.curve_fit(thurber, x, y, p0, full_output=True, **TIGHT)
        for label, (popt, _, res) in (("1e-8 ", loose), ("1e-15", tight)):
            digits = lre(np.asarray(popt), problem.certified).min()
            print(f"  start {i}, tol {label}: min LRE {digits:5.2f}  ({int(res.nfev)} "
                  f"evaluations, {res.message})")
        assert bool(tight[2].success), tight[2].message
        fits.append(tight)

    popt, pcov, res = fits[0]
    popt, se = np.asarray(popt), np.sqrt(np.diag(np.asarray(pcov)))
    print("\nfrom start 1, tolerances 1e-15:")
    print(f"  {'':4} {'jopt.curve_fit':>16} {'± se':>11}   {'NIST certified':>16} "
          f"{'± certified sd':>15}   {'LRE':>5} {'LRE(se)':>7}")
    for j in range(n):
        print(f"  b{j + 1:<3} {popt[j]:16.10e} {se[j]:11.4e}   {problem.certified[j]:16.10e} "
              f"{problem.certified_sd[j]:15.4e}   {lre(popt[j], problem.certified[j]):5.2f} "
              f"{lre(se[j], problem.certified_sd[j]):7.2f}")
    residual_sd = float(np.sqrt(2 * res.cost / (x.size - n)))
    print(f"  residual sd {residual_sd:.10e}   certified {problem.residual_sd:.10e}")
    # The claims: ≥ 6 digits from both starts; standard errors within 1e-4 relative.
    for popt_i, pcov_i, _ in fits:
        assert lre(np.asarray(popt_i), problem.certified).min() >= 6.0
        np.testing.assert_allclose(np.sqrt(np.diag(np.asarray(pcov_i))),
                                   problem.certified_sd, rtol=1e-4)
    np.testing.assert_allclose(residual_sd, problem.residual_sd, rtol=1e-8)
    return dict(popt=popt, se=se, min_lre=float(lre(popt, problem.certified).min()))


# ----------------------------------------------------------- 2. real data with a band

HDL_REF = 50.0  # mg/dL, about the median HDL: the unit of the power law's predictor


def power_law(hdl, a, k):
    """Total cholesterol / HDL as a power of HDL: ``a·(HDL/50)^k``."""
    return a * (hdl / HDL_REF) ** k


def curve_band(popt: jax.Array, pcov: jax.Array, grid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The fitted curve on ``grid`` and its variance ``J Σ Jᵀ`` (delta method)."""
    jac = jax.jacfwd(lambda p: power_law(grid, *p))(popt)  # (grid, params)
    return power_law(grid, *popt), jnp.einsum("gi,ij,gj->g", jac, pcov, jac)


def diabetes_section(out_dir: Path) -> dict:
    """Fit ``s4 = a·(s3/50)^k`` on the diabetes data; plot the 95 % bands."""
    features = load_diabetes(scaled=False).data
    hdl, ratio = features[:, 6], features[:, 7]  # s3 = HDL, s4 = total cholesterol / HDL
    p0 = jnp.array([4.0, -0.5])
    popt, pcov, res = jopt.curve_fit(power_law, hdl, ratio, p0, full_output=True,
                                     ftol=1e-12, xtol=1e-12, gtol=1e-12)
    assert bool(res.success), res.message
    se = jnp.sqrt(jnp.diag(pcov))
    dof = hdl.size - popt.size
    t = float(scipy.stats.t.ppf(0.975, dof))
    corr = float(pcov[0, 1] / (se[0] * se[1]))
    k_lo, k_hi = float(popt[1] - t * se[1]), float(popt[1] + t * se[1])
    print(f"diabetes (sklearn, unscaled): {hdl.size} patients, s4 = TC/HDL against s3 = HDL")
    print(f"  model s4 = a·(HDL/{HDL_REF:g})^k, fitted with jopt.curve_fit:")
    print(f"  a = {float(popt[0]):.4f} ± {float(se[0]):.4f}   (the ratio at HDL = 50 mg/dL)")
    print(f"  k = {float(popt[1]):.4f} ± {float(se[1]):.4f}   95 % interval "
          f"[{k_lo:.3f}, {k_hi:.3f}]   corr(a, k) = {corr:+.2f}")

    # Cross-checks: scipy's curve_fit on the same model (analytic Jacobian, same tolerances).
    def power_law_np(h, a, k):
        return a * (h / HDL_REF) ** k

    def power_law_jac(h, a, k):
        u = (h / HDL_REF) ** k
        return np.column_stack([u, a * u * np.log(h / HDL_REF)])

    sp_popt, sp_pcov = scipy.optimize.curve_fit(power_law_np, hdl, ratio, p0=np.asarray(p0),
                                                jac=power_law_jac, ftol=1e-12, xtol=1e-12,
                                                gtol=1e-12)
    np.testing.assert_allclose(popt, sp_popt, rtol=1e-6)
    np.testing.assert_allclose(pcov, sp_pcov, rtol=1e-6)
    print(f"  scipy.optimize.curve_fit: a = {sp_popt[0]:.4f}, k = {sp_popt[1]:.4f}; "
          f"popt and pcov agree to 1e-6")

    grid = jnp.linspace(hdl.min(), hdl.max(), 200)
    curve, var = curve_band(popt, pcov, grid)
    s2 = 2 * float(res.cost) / dof  # residual variance
    half = t * jnp.sqrt(var)
    half_pred = t * jnp.sqrt(var + s2)
    # At HDL = 50 the model is a, so the delta method must give exactly se(a) there.
    _, var_ref = curve_band(popt, pcov, jnp.array([HDL_REF]))
    np.testing.assert_allclose(jnp.sqrt(var_ref[0]), se[0], rtol=1e-12)
    fit_at_data, var_data = curve_band(popt, pcov, jnp.asarray(hdl))
    inside = float(jnp.mean(jnp.abs(ratio - fit_at_data) <= t * jnp.sqrt(var_data + s2)))
    print(f"  95 % confidence band half-width: {float(half.min()):.3f} (narrowest) to "
          f"{float(half.max()):.3f} (HDL = {float(grid[jnp.argmax(half)]):.0f})")
    print(f"  95 % prediction band holds {100 * inside:.1f} % of the patients")
    assert k_lo <= -1.0 <= k_hi, "the exponent's 95 % interval should contain −1"
    assert 0.9 <= inside <= 0.99

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(hdl, ratio, "o", ms=3.5, color="0.45", alpha=0.6, mec="none",
            label=f"patients (n = {hdl.size})")
    ax.fill_between(grid, curve - half_pred, curve + half_pred, color="C0", alpha=0.12,
                    label="95 % prediction band (a new patient)")
    ax.fill_between(grid, curve - half, curve + half, color="C0", alpha=0.4,
                    label="95 % confidence band of the curve (delta method)")
    ax.plot(grid, curve, color="C0", lw=2,
            label=rf"fit: ${float(popt[0]):.2f}\,(\mathrm{{HDL}}/50)^{{{float(popt[1]):.3f}"
                  rf" \pm {float(se[1]):.3f}}}$")
    ax.set_xlabel("s3: HDL cholesterol (mg/dL)")
    ax.set_ylabel("s4: total cholesterol / HDL")
    ax.set_title("Diabetes data: a power law fitted by jopt.curve_fit")
    ax.grid(True, alpha=0.3)
    ax.legend()
    path = out_dir / "curve_fitting_diabetes.png"
    fig.savefig(path, dpi=120)
    print(f"  figure: {path}")
    return dict(popt=np.asarray(popt), se=np.asarray(se), path=path)


# ------------------------------------------------------------- 3. robust losses

TRUE_DECAY = np.array([3.0, 0.6, 0.5])  # a, k, c of a·exp(−k t) + c


def decay_residuals(p: jax.Array, t: jax.Array, y: jax.Array, weight: jax.Array) -> jax.Array:
    """Residuals ``weight·(a·exp(−k t) + c − y)`` of an exponential decay (weight 0 drops a
    point: the same program fits all points or only some)."""
    a, k, c = p
    return weight * (a * jnp.exp(-k * t) + c - y)


def outlier_data(m: int = 80, noise: float = 0.05, fraction: float = 0.1,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, y, is_outlier)``: the decay with Gaussian noise; ``fraction`` of the points
    get a spike of +1 to +3."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, m)
    a, k, c = TRUE_DECAY
    y = a * np.exp(-k * t) + c + noise * rng.standard_normal(m)
    outlier = np.zeros(m, bool)
    outlier[rng.choice(m, round(fraction * m), replace=False)] = True
    y[outlier] += rng.uniform(1.0, 3.0, outlier.sum())
    return t, y, outlier


def robust_section(out_dir: Path, losses: tuple[str, ...], f_scale: float = 0.1) -> dict:
    """Fit the spiky decay with each loss; plot the plain against the soft-L1 fit."""
    t, y, outlier = outlier_data()
    p0 = jnp.array([1.0, 1.0, 0.0])
    true = ", ".join(f"{v:g}" for v in TRUE_DECAY)
    print(f"exponential decay a·exp(−kt) + c, true (a, k, c) = ({true}), {t.size} points, "
          f"noise sd 0.05, {outlier.sum()} spikes of +1…+3")
    print(f"  {'loss':36} {'a':>8} {'k':>8} {'c':>8}   {'‖p − p_true‖':>12}  evaluations")
    fits = {}
    runs = [(loss, loss, np.ones_like(y)) for loss in losses]
    runs.insert(1, ("linear, spikes dropped (the oracle)", "linear", (~outlier).astype(float)))
    for label, loss, weight in runs:
        res = jopt.least_squares(decay_residuals, p0, (t, y, weight), loss=loss,
                                 f_scale=f_scale, ftol=1e-12, xtol=1e-12, gtol=1e-12)
        assert bool(res.success), (label, res.message)
        p = fits[label] = np.asarray(res.x)
        print(f"  {label:36} {p[0]:8.4f} {p[1]:8.4f} {p[2]:8.4f}   "
              f"{np.linalg.norm(p - TRUE_DECAY):12.4f}  {int(res.nfev):5d}")
    error = {label: np.linalg.norm(p - TRUE_DECAY) for label, p in fits.items()}
    oracle = error["linear, spikes dropped (the oracle)"]
    print(f"  soft_l1 (f_scale = {f_scale}) is {error['linear'] / error['soft_l1']:.1f}× "
          f"closer to the truth than plain least squares, and its error is "
          f"{error['soft_l1'] / oracle:.2f}× the oracle's")

    # scipy's least_squares has the same losses (with method "trf": MINPACK's "lm" has none).
    def decay_residuals_np(p, t, y):
        return p[0] * np.exp(-p[1] * t) + p[2] - y  # (all weights 1)

    sp = scipy.optimize.least_squares(decay_residuals_np, np.asarray(p0), args=(t, y),
                                      method="trf", loss="soft_l1", f_scale=f_scale,
                                      ftol=1e-12, xtol=1e-12, gtol=1e-12)
    np.testing.assert_allclose(fits["soft_l1"], sp.x, rtol=1e-6)
    print(f"  scipy.optimize.least_squares(loss='soft_l1', method='trf') agrees to 1e-6: "
          f"{np.array2string(sp.x, precision=4)}")
    assert error["soft_l1"] < error["linear"] / 3, "the robust fit should be far closer"
    assert error["soft_l1"] < 2 * oracle, "… and nearly as close as the oracle's"

    fine = np.linspace(t.min(), t.max(), 300)
    true_curve = TRUE_DECAY[0] * np.exp(-TRUE_DECAY[1] * fine) + TRUE_DECAY[2]
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, loss, color in zip(axes, ("linear", "soft_l1"), ("C3", "C2"), strict=True):
        p = fits[loss]
        ax.plot(t[~outlier], y[~outlier], "o", ms=4, color="0.35", label="data")
        ax.plot(t[outlier], y[outlier], "x", ms=7, mew=2, color="C1",
                label=f"spikes ({outlier.sum()} of {t.size})")
        ax.plot(fine, true_curve, "k--", lw=1.2, label="true curve")
        ax.plot(fine, p[0] * np.exp(-p[1] * fine) + p[2], color=color, lw=2,
                label=f"fit: a={p[0]:.2f}, k={p[1]:.2f}, c={p[2]:.2f}")
        name = "plain least squares (loss='linear')" if loss == "linear" else \
            f"robust (loss='soft_l1', f_scale={f_scale})"
        ax.set_title(f"{name}\n‖p − p_true‖ = {error[loss]:.3f}")
        ax.set_xlabel("t")
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("y")
    fig.suptitle(f"jopt.least_squares on a decay with 10 % outliers (true a={TRUE_DECAY[0]:g}, "
                 f"k={TRUE_DECAY[1]:g}, c={TRUE_DECAY[2]:g})")
    path = out_dir / "curve_fitting_robust.png"
    fig.savefig(path, dpi=120)
    print(f"  figure: {path}")
    return dict(fits=fits, error=error, path=path)


# ----------------------------------------------------------- 4. many curves at once


def decay(t, a, k, c):
    """``a·exp(−k t) + c``, the model of section 4 (jax.numpy)."""
    return a * jnp.exp(-k * t) + c


def first_guess(t: jax.Array, y: jax.Array) -> jax.Array:
    """A starting point read off one dataset: ``c`` from the tail, ``a`` from the drop and
    ``k`` from where the curve has fallen to ``1/e`` of it."""
    t = jnp.asarray(t)
    c0, a0 = y[-1], y[0] - y[-1]
    below = jnp.abs(y - c0) <= jnp.abs(a0) / jnp.e
    k0 = 1.0 / jnp.maximum(t[jnp.argmax(below)] - t[0], t[1] - t[0])
    return jnp.stack([a0, k0, c0])


@jax.jit
def fit_many(t: jax.Array, ys: jax.Array) -> tuple[jax.Array, jax.Array, jopt.LeastSquaresResult]:
    """``jopt.curve_fit`` of :func:`decay` to every row of ``ys``: one compiled program."""

    def fit_one(y: jax.Array):
        return jopt.curve_fit(decay, t, y, first_guess(t, y), full_output=True,
                              ftol=1e-12, xtol=1e-12, gtol=1e-12)

    return jax.vmap(fit_one)(ys)


def many_data(n: int, m: int = 40, noise: float = 0.05,
              seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, ys, true)``: ``n`` decays with random ``a ∈ [1, 5]``, ``k ∈ [0.3, 2]``,
    ``c ∈ [−1, 1]``, each sampled at the same ``m`` times with Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 5.0, m)
    true = np.column_stack([rng.uniform(1, 5, n), rng.uniform(0.3, 2.0, n),
                            rng.uniform(-1, 1, n)])
    ys = true[:, :1] * np.exp(-true[:, 1:2] * t) + true[:, 2:] + noise * rng.standard_normal((n, m))
    return t, ys, true


def many_section(out_dir: Path, datasets: int, scipy_sample: int) -> dict:
    """Fit ``datasets`` decays with vmap; time them against scipy's loop on a sample."""
    t, ys, true = many_data(datasets)
    print(f"{datasets} decays a·exp(−kt) + c, {t.size} points each, one jit(vmap(curve_fit))")
    start = time.perf_counter()
    jax.block_until_ready(fit_many(t, ys))
    first_s = time.perf_counter() - start
    start = time.perf_counter()  # the same program again: compiled, so only the run
    popt, pcov, res = jax.block_until_ready(fit_many(t, ys))
    jopt_s = time.perf_counter() - start
    popt, pcov = np.asarray(popt), np.asarray(pcov)
    nfev = np.asarray(res.nfev)
    print(f"  first call {first_s:.2f} s (compile + run), again {jopt_s:.3f} s: "
          f"{datasets / jopt_s:,.0f} fits/s")
    print(f"  evaluations per fit: median {np.median(nfev):.0f}, max {nfev.max()} "
          f"(the batch runs until the slowest fit stops); all converged: "
          f"{bool(np.all(res.success))}")
    assert np.all(res.success)

    def decay_np(t, a, k, c):
        return a * np.exp(-k * t) + c

    def decay_jac(t, a, k, c):
        e = np.exp(-k * t)
        return np.column_stack([e, -a * t * e, np.ones_like(t)])

    guesses = np.asarray(jax.vmap(first_guess, (None, 0))(t, ys[:scipy_sample]))
    start = time.perf_counter()
    sp = np.array([scipy.optimize.curve_fit(decay_np, t, ys[i], p0=guesses[i], jac=decay_jac,
                                            ftol=1e-12, xtol=1e-12, gtol=1e-12)[0]
                   for i in range(scipy_sample)])
    scipy_s = time.perf_counter() - start
    rel = np.max(np.abs(sp - popt[:scipy_sample]) / np.maximum(np.abs(sp), 1e-2))
    jopt_rate, scipy_rate = datasets / jopt_s, scipy_sample / scipy_s
    print(f"  scipy.optimize.curve_fit in a Python loop (analytic Jacobian), {scipy_sample} of "
          f"them: {scipy_s:.3f} s: {scipy_rate:,.0f} fits/s")
    print(f"  jopt / scipy throughput: {jopt_rate / scipy_rate:.2f}×   largest parameter "
          f"difference on the sample: {rel:.1e} (relative)")
    np.testing.assert_allclose(popt[:scipy_sample], sp, rtol=1e-6, atol=1e-8)

    se = np.sqrt(np.einsum("nii->ni", pcov))
    pulls = (popt - true) / se
    covered = np.mean(np.abs(pulls) <= 1.96, axis=0)
    print("  true parameter within ±1.96·se:  "
          + "   ".join(f"{name} {100 * c:.1f} %" for name, c in zip("akc", covered, strict=True))
          + "   (95 % expected)")
    # Loose: the covariance is asymptotic (m = 40) and the count is binomial.
    assert np.all(np.abs(covered - 0.95) <= (0.02 if datasets >= 2000 else 0.04)), covered

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    fine = np.linspace(t.min(), t.max(), 200)
    for i in range(4):
        left.plot(t, ys[i], "o", ms=3, color=f"C{i}", alpha=0.6)
        left.plot(fine, decay_np(fine, *popt[i]), color=f"C{i}", lw=1.8,
                  label=f"fit: a={popt[i, 0]:.2f}, k={popt[i, 1]:.2f}, c={popt[i, 2]:+.2f}")
    left.set_xlabel("t")
    left.set_ylabel("y")
    left.set_title(f"4 of the {datasets} datasets and their fits")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    bins = np.linspace(-4, 4, 41)
    for j, name in enumerate("akc"):
        right.hist(pulls[:, j], bins=bins, density=True, histtype="step", lw=1.8,
                   label=f"{name}: within ±1.96 in {100 * covered[j]:.1f} %")
    z = np.linspace(-4, 4, 200)
    right.plot(z, scipy.stats.norm.pdf(z), "k--", lw=1.2, label="N(0, 1)")
    right.set_xlabel("(fitted − true) / standard error from pcov")
    right.set_ylabel("density")
    right.set_title("Are the standard errors right? (pulls should be N(0, 1))")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(f"jax.vmap over jopt.curve_fit: {datasets} fits, "
                 f"{jopt_rate:,.0f} fits/s (scipy loop: {scipy_rate:,.0f} fits/s)")
    path = out_dir / "curve_fitting_many.png"
    fig.savefig(path, dpi=120)
    print(f"  figure: {path}")
    return dict(jopt_rate=jopt_rate, scipy_rate=scipy_rate, covered=covered, path=path)


# ------------------------------------------------------------------------------ main


def main(out_dir: Path = OUT_DIR, quick: bool = False) -> dict:
    """Run the four sections; figures go to ``out_dir``."""
    settings = QUICK if quick else FULL
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    banner("1. A certified problem: NIST StRD Thurber")
    results["certified"] = certified_section()
    banner("2. Real data with a 95 % band: diabetes cholesterol ratio")
    results["diabetes"] = diabetes_section(out_dir)
    banner("3. Robust losses against outliers")
    results["robust"] = robust_section(out_dir, settings["losses"])
    banner("4. Many curves at once: jax.vmap over jopt.curve_fit")
    results["many"] = many_section(out_dir, settings["datasets"], settings["scipy_sample"])
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    quick = parser.parse_args().quick
    main(OUT_DIR / "quick" if quick else OUT_DIR, quick=quick)  # quick: figures of their own
