"""Least squares: the NIST StRD accuracy table, and many small fits in one call.

``--nist``: the 27 NIST StRD nonlinear regression problems from both starting points (54
runs), float64, scored by the log relative error of the parameters against the certified
values (LRE, McCullough 1999; the minimum over parameters, capped at 11). Peers in the
same run: ``scipy.optimize.least_squares`` (``lm`` = MINPACK, ``trf``),
``scipy.optimize.curve_fit``, optimistix (Levenberg–Marquardt, Gauss–Newton, dogleg) and
jaxopt (Levenberg–Marquardt, Gauss–Newton). Every solver gets the exact Jacobian (JAX's)
and tight tolerances (1e-15, or the peer's equivalent) and up to 5,000 evaluations.

``--many``: 10,000 Misra1a-type datasets (the certified Misra1a curve plus Gaussian noise
of the certified residual standard deviation, a different draw per dataset), fitted from
NIST's first start: ``jax.vmap(jopt.curve_fit)`` in one compiled call against a Python
loop over ``scipy.optimize.curve_fit`` (timed on a sample and scaled) and
``jax.vmap`` over optimistix's Levenberg–Marquardt. Steady-state times (compiled first).

Run: ``python -m benchmarks.least_squares --nist --many --md results/least_squares.md``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

import jopt  # noqa: E402
from tests.nist import PROBLEMS, min_lre  # noqa: E402

TOL = 1e-15
MAX_NFEV = 5000


def _residual_fn(problem):
    def residuals(b, x, y):
        return y - problem.model(b, x)

    return residuals


def _jopt(method):
    def run(problem, b0):
        r = _residual_fn(problem)
        res = jopt.least_squares(r, jnp.asarray(b0), (jnp.asarray(problem.x),
                                                      jnp.asarray(problem.y)),
                                 method=method, ftol=TOL, xtol=TOL, gtol=TOL,
                                 max_nfev=MAX_NFEV)
        return np.asarray(res.x)

    return run


def _scipy(method):
    def run(problem, b0):
        r = _residual_fn(problem)
        x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
        fun, jac = jax.jit(r), jax.jit(jax.jacfwd(r))
        kwargs = dict(max_nfev=MAX_NFEV) if method == "trf" else {}
        res = scipy.optimize.least_squares(lambda b: np.asarray(fun(b, x, y)), b0,
                                           jac=lambda b: np.asarray(jac(b, x, y)),
                                           method=method, ftol=TOL, xtol=TOL, gtol=TOL,
                                           **kwargs)
        return res.x

    return run


def _scipy_curve_fit(problem, b0):
    model = jax.jit(problem.model)
    x = jnp.asarray(problem.x)
    popt, _ = scipy.optimize.curve_fit(lambda _x, *b: np.asarray(model(jnp.asarray(b), x)),
                                       np.zeros(problem.y.size), problem.y, p0=b0)
    return popt


def _optimistix(kind):
    import optimistix as optx

    def run(problem, b0):
        r = _residual_fn(problem)
        solver = {"lm": optx.LevenbergMarquardt, "gn": optx.GaussNewton,
                  "dogleg": optx.Dogleg}[kind](rtol=TOL, atol=TOL)
        sol = optx.least_squares(lambda b, a: r(b, *a), solver, jnp.asarray(b0),
                                 args=(jnp.asarray(problem.x), jnp.asarray(problem.y)),
                                 max_steps=MAX_NFEV, throw=False)
        return np.asarray(sol.value)

    return run


def _jaxopt(kind):
    import jaxopt

    def run(problem, b0):
        r = _residual_fn(problem)
        cls = {"lm": jaxopt.LevenbergMarquardt, "gn": jaxopt.GaussNewton}[kind]
        solver = cls(residual_fun=r, maxiter=MAX_NFEV, tol=TOL, **(
            dict(xtol=TOL, gtol=TOL) if kind == "lm" else {}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = solver.run(jnp.asarray(b0), jnp.asarray(problem.x), jnp.asarray(problem.y))
        return np.asarray(out.params)

    return run


CONTENDERS = {
    "jopt lm": _jopt("lm"), "jopt dogleg": _jopt("dogleg"),
    "jopt gauss-newton": _jopt("gauss-newton"),
    "scipy lm": _scipy("lm"), "scipy trf": _scipy("trf"), "scipy curve_fit": _scipy_curve_fit,
    "optx LM": _optimistix("lm"), "optx GN": _optimistix("gn"),
    "optx dogleg": _optimistix("dogleg"), "jaxopt LM": _jaxopt("lm"),
    "jaxopt GN": _jaxopt("gn"),
}


def nist_table() -> str:
    names = list(CONTENDERS)
    rows = []
    for pname, problem in PROBLEMS.items():
        for start, b0 in enumerate(problem.starts, 1):
            row = []
            for name in names:
                try:
                    row.append(min_lre(problem, CONTENDERS[name](problem, np.asarray(b0))))
                except Exception:  # (a peer that raises scores 0)
                    row.append(0.0)
            rows.append((pname, start, row))
            print(pname, start, " ".join(f"{v:4.1f}" for v in row), flush=True)
    lre = np.array([r[2] for r in rows])
    lines = ["| problem | start | " + " | ".join(names) + " |",
             "|---|--:|" + "--:|" * len(names)]
    lines += [f"| {p} | {s} | " + " | ".join(f"{v:.1f}" for v in row) + " |"
              for p, s, row in rows]
    lines.append("| **runs with LRE ≥ 6** | | " + " | ".join(
        f"**{int(c)}**" for c in (lre >= 6).sum(0)) + " |")
    lines.append("| runs with LRE ≥ 4 | | " + " | ".join(
        str(int(c)) for c in (lre >= 4).sum(0)) + " |")
    return "\n".join(lines)


def _misra_data(num: int, seed: int = 0):
    problem = PROBLEMS["Misra1a"]
    x = jnp.asarray(problem.x)
    clean = problem.model(jnp.asarray(problem.certified), x)
    noise = problem.residual_sd * jax.random.normal(jax.random.key(seed), (num, x.size))
    return problem, x, clean[None, :] + noise


def _time(fn, *args, repeats: int = 3) -> float:
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def many_table(num: int = 10_000, scipy_sample: int = 500) -> str:
    import optimistix as optx

    problem, x, ys = _misra_data(num)
    b0 = jnp.asarray(problem.starts[0])

    def model(x, b1, b2):
        return b1 * (1.0 - jnp.exp(-b2 * x))

    fit_all = jax.jit(jax.vmap(lambda y: jopt.curve_fit(model, x, y, b0)[0]))
    t_jopt = _time(fit_all, ys)
    popt = np.asarray(fit_all(ys))
    t_many = _time(lambda y: jopt.curve_fit_many(model, x, y, b0)[0], ys)

    def optx_one(y):
        solver = optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8)
        return optx.least_squares(lambda b, a: model(x, b[0], b[1]) - a, solver, b0, args=y,
                                  max_steps=1000, throw=False).value

    optx_all = jax.jit(jax.vmap(optx_one))
    t_optx = _time(optx_all, ys)
    p_optx = np.asarray(optx_all(ys))

    xn, ysn = np.asarray(x), np.asarray(ys)
    start = time.perf_counter()
    p_scipy = np.stack([scipy.optimize.curve_fit(
        lambda x, b1, b2: b1 * (1.0 - np.exp(-b2 * x)), xn, ysn[i], p0=np.asarray(b0))[0]
        for i in range(scipy_sample)])
    t_scipy = (time.perf_counter() - start) * num / scipy_sample
    agree = np.max(np.abs(popt[:scipy_sample] - p_scipy) / np.abs(p_scipy))
    agree_optx = np.max(np.abs(popt - p_optx) / np.abs(p_optx))
    return "\n".join([
        f"{num:,} Misra1a-type fits (14 points, 2 parameters), float64, steady state:",
        "",
        "| contender | time (s) | fits/s | × jopt |",
        "|---|--:|--:|--:|",
        f"| jopt `vmap(curve_fit)` | {t_jopt:.3f} | {num / t_jopt:,.0f} | 1.0 |",
        f"| jopt `curve_fit_many` (segments) | {t_many:.3f} | {num / t_many:,.0f} | "
        f"{t_many / t_jopt:.1f} |",
        f"| optimistix `vmap(LevenbergMarquardt)` | {t_optx:.3f} | {num / t_optx:,.0f} | "
        f"{t_optx / t_jopt:.1f} |",
        f"| scipy `curve_fit` in a Python loop ({scipy_sample} timed, scaled) | "
        f"{t_scipy:.2f} | {num / t_scipy:,.0f} | {t_scipy / t_jopt:.1f} |",
        "",
        f"Largest relative difference of the parameters: jopt vs scipy {agree:.1e} "
        f"(first {scipy_sample}), jopt vs optimistix {agree_optx:.1e}.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nist", action="store_true")
    parser.add_argument("--many", action="store_true")
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--md", type=Path, default=None)
    args = parser.parse_args()
    parts = []
    if args.nist:
        parts.append(nist_table())
    if args.many:
        parts.append(many_table(args.num))
    text = "\n\n".join(parts)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")


if __name__ == "__main__":
    main()
