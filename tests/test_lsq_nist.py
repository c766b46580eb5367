"""jopt.least_squares on the 27 NIST StRD nonlinear regression problems from both of
NIST's starting points, scored against the certified parameters by the log relative error
(LRE, McCullough 1999): at least 6 correct digits on every run, MGH17 from start 1 among
them (MINPACK's Levenberg–Marquardt in scipy walks to a stationary region at infinity
there, b2 ≈ −b3 → ∞).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from tests.nist import PROBLEMS, min_lre

RUNS = [(name, start) for name in PROBLEMS for start in (1, 2)]


def _residual_fn(problem):
    def residuals(b, x, y):
        return y - problem.model(b, x)

    return residuals


_FUNCTIONS = {name: _residual_fn(problem) for name, problem in PROBLEMS.items()}


@pytest.mark.parametrize(("name", "start"), RUNS, ids=[f"{n}-{s}" for n, s in RUNS])
def test_certified_digits(name, start):
    problem = PROBLEMS[name]
    res = jopt.least_squares(_FUNCTIONS[name], jnp.asarray(problem.starts[start - 1]),
                             (jnp.asarray(problem.x), jnp.asarray(problem.y)),
                             ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=5000)
    assert np.all(np.isfinite(np.asarray(res.x))) and np.isfinite(float(res.cost))
    assert bool(res.success), res.message
    assert min_lre(problem, np.asarray(res.x)) >= 6.0
    np.testing.assert_allclose(2 * float(res.cost), problem.certified_rss, rtol=1e-6,
                               atol=1e-20)
