"""Self-checks of the NIST StRD data files and models in :mod:`tests.nist`.

The certified residual sum of squares, reproduced at the certified parameters in float64, checks
the data and each model's transcription at once.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.nist import DATA_DIR, PROBLEMS, lre, min_lre, parse

NIST_ORDER = {
    "lower": ["Misra1a", "Chwirut2", "Chwirut1", "Lanczos3", "Gauss1", "Gauss2", "DanWood",
              "Misra1b"],
    "average": ["Kirby2", "Hahn1", "Nelson", "MGH17", "Lanczos1", "Lanczos2", "Gauss3", "Misra1c",
                "Misra1d", "Roszman1", "ENSO"],
    "higher": ["MGH09", "Thurber", "BoxBOD", "Rat42", "MGH10", "Eckerle4", "Rat43", "Bennett5"],
}  # fmt: skip

NAMES = list(PROBLEMS)


def rss(problem, b):
    r = problem.residuals(jnp.asarray(b, dtype=jnp.float64))
    assert r.dtype == jnp.float64
    return float(r @ r)


def test_all_27_in_nist_order():
    assert NAMES == [name for names in NIST_ORDER.values() for name in names]
    assert sorted(p.name for p in DATA_DIR.glob("*.dat")) == sorted(f"{n}.dat" for n in NAMES)
    for difficulty, names in NIST_ORDER.items():
        assert all(PROBLEMS[name].difficulty == difficulty for name in names)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_counts(name):
    p = PROBLEMS[name]
    raw = parse(DATA_DIR / f"{name}.dat")  # also checks the data line range is all there
    n = p.y.shape[0]
    assert raw["n_observations"] == n == p.dof + p.n_params
    # The file's own count, except Rat43.dat's misprinted 9 (see tests/nist.py).
    assert raw["dof"] == (9 if name == "Rat43" else p.dof)
    assert p.x.shape == ((2, n) if name == "Nelson" else (n,))
    assert p.x.dtype == p.y.dtype == np.float64
    for a in (*p.starts, p.certified, p.certified_sd):
        assert a.shape == (p.n_params,) and a.dtype == np.float64
    assert np.all(p.certified_sd > 0)


@pytest.mark.parametrize("name", NAMES)
def test_certified_rss(name):
    p = PROBLEMS[name]
    got = rss(p, p.certified)
    if name == "Lanczos1":
        # Certified RSS 1.43e-25 is below what 11-digit parameters can reach: rounding them to
        # 11 significant digits moves the residuals by ~|J| * 5e-12 (RSS ~4e-21). Check RSS at
        # the certified values against that rounding bound, then one Gauss-Newton step, which
        # reaches the certified RSS to float64's resolution of these ~3e-14 residuals.
        b = jnp.asarray(p.certified)
        jac = np.asarray(jax.jacfwd(p.residuals)(b))
        half_ulp = 0.5 * 10.0 ** (np.floor(np.log10(np.abs(p.certified))) - 10)
        bound = (math.sqrt(p.certified_rss) + np.linalg.norm(np.abs(jac) @ half_ulp)) ** 2
        assert p.certified_rss <= got <= bound
        step = np.linalg.lstsq(jac, -np.asarray(p.residuals(b)), rcond=None)[0]
        refined = np.asarray(b) + step
        assert rss(p, refined) == pytest.approx(p.certified_rss, rel=1e-2)
        assert min_lre(p, refined) > 9
    else:
        assert got == pytest.approx(p.certified_rss, rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_certified_standard_deviations(name):
    """residual_sd = sqrt(RSS / dof), and the parameters' certified standard deviations are
    residual_sd * sqrt(diag((JᵀJ)⁻¹)) at the certified values (J from jax.jacfwd). (The
    models at NIST's starting points are exercised by tests/test_lsq_nist.py.)"""
    p = PROBLEMS[name]
    assert math.sqrt(p.certified_rss / p.dof) == pytest.approx(p.residual_sd, rel=1e-9)
    jac = np.asarray(jax.jit(jax.jacfwd(p.residuals))(jnp.asarray(p.certified)))
    r_inv = np.linalg.inv(np.linalg.qr(jac, mode="r"))
    sd = p.residual_sd * np.linalg.norm(r_inv, axis=1)
    np.testing.assert_allclose(sd, p.certified_sd, rtol=1e-8)


def test_lre():
    assert lre(1.0, 1.0) == 11
    assert lre(1.0 + 1e-5, 1.0) == pytest.approx(5)
    assert lre(-2.0 - 2e-3, -2.0) == pytest.approx(3)
    assert lre(0.5, 1e-3) == 0  # would be negative
    assert lre(np.nan, 1.0) == 0
    assert lre(np.inf, 1.0) == 0
    assert lre(1e-7, 0.0) == pytest.approx(7)  # certified 0: log absolute error
    np.testing.assert_allclose(lre([1.0, 1.001], [1.0, 1.0]), [11, 3], rtol=1e-9)
    assert lre(1.0 + 1e-5, 1.0, digits=4) == 4
    p = PROBLEMS["Misra1a"]
    assert min_lre(p, p.certified) == 11
    assert min_lre(p, p.certified * (1 + np.array([1e-11, 1e-6]))) == pytest.approx(6)
    assert min_lre(p, p.starts[0]) == 0
