"""The benchmark floors are real solvers: ``benchmarks.loop_floor.bare_lbfgs_wolfe``, the
smallest complete L-BFGS + strong-Wolfe program that issue 3's compile target is measured
against, must solve what it claims to (else its compile time would be no floor)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jopt
from benchmarks.loop_floor import bare_lbfgs_wolfe
from benchmarks.problems import large_problems, mgh_problems

PROBLEMS = {p.name: p for p in mgh_problems() + large_problems(100)}
NAMES = ["ROSENBROCK-2", "BEALE-2", "GULF-3", "WOOD-4", "WATSON-9", "TRIDIA-100",
         "LIARWHD-100"]


@pytest.mark.parametrize("outline", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_wolfe_floor_solves_like_scipy(name, outline):
    if outline and jax.default_backend() != "cpu":
        pytest.skip("one XLA:CPU function: a CPU code-generation choice")
    p = PROBLEMS[name]
    x, f, nit, nfev, status = bare_lbfgs_wolfe(p.fun, p.x0, outline=outline)(jnp.asarray(p.x0))
    assert int(status) == 0 and int(nfev) >= int(nit) >= 1
    assert float(jnp.max(jnp.abs(jax.grad(p.fun)(x)))) <= 1e-6
    ref = scipy.optimize.minimize(
        lambda z: float(p.fun(jnp.asarray(z))), np.asarray(p.x0), method="L-BFGS-B",
        jac=lambda z: np.asarray(jax.grad(p.fun)(jnp.asarray(z))),
        options={"gtol": 1e-8, "ftol": 0.0, "maxiter": 20_000})
    assert float(f) == pytest.approx(ref.fun, rel=1e-6, abs=1e-9)


def test_wolfe_floor_takes_jopts_steps():
    """Where no fallback of jopt's search is needed, the floor makes the same iterations
    and evaluations as ``jopt.minimize(method="lbfgs")``: it does the same work."""
    p = PROBLEMS["ROSENBROCK-2"]
    x, f, nit, nfev, _ = bare_lbfgs_wolfe(p.fun, p.x0)(jnp.asarray(p.x0))
    r = jopt.minimize(p.fun, jnp.asarray(p.x0), method="lbfgs")
    assert (int(nit), int(nfev)) == (int(r.nit), int(r.nfev))
    np.testing.assert_allclose(x, r.x, rtol=1e-10)
    np.testing.assert_allclose(f, r.fun, rtol=1e-8, atol=1e-20)
