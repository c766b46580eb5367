"""The 27 NIST StRD nonlinear least-squares reference problems, as data and ``jax.numpy`` models.

The data are the original NIST/ITL StRD ``.dat`` files (public-domain reference data from
https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml), kept unchanged in
``tests/data/nist/``; everything below is parsed from them: both starting points, the certified
parameters and their standard deviations, the certified residual sum of squares, residual
standard deviation and degrees of freedom, and the data. Each model is written from its file's
``Model:`` section.

:data:`PROBLEMS` maps each name to a :class:`NistProblem`, in NIST's order (lower, average,
then higher level of difficulty). ``problem.model(b, x)`` maps a 1-D parameter array ``b`` and
the predictor ``x`` to the fitted response; ``problem.residuals(b)`` is ``y - model(b, x)``,
whose sum of squares at ``problem.certified`` is ``problem.certified_rss``.

Two problems differ from the plain ``y = f(x; b)`` form:

* **Nelson** has two predictors and a transformed response: its model is
  ``log[y] = b1 - b2*x1 * exp[-b3*x2]`` (natural log), so ``problem.y`` holds ``log(y)`` of the
  file's response column (the certified values are for the fit on that scale), and
  ``problem.x`` has shape ``(2, n)`` (rows ``x1`` = time, ``x2`` = temperature), the
  ``(k, n)`` layout of ``scipy.optimize.curve_fit``.
* **Roszman1**'s ``arctan`` is the principal branch (``arctan(b3/(x-b4))``, not ``atan2``).

One correction to a file: **Rat43.dat** says "Degrees of Freedom: 9", but it has 15
observations and 4 parameters, and its certified residual standard deviation and parameter
standard deviations are computed with 11; ``PROBLEMS["Rat43"].dof`` is 11.

The problems are float64 problems (Lanczos1's certified RSS is 1.4e-25): use them with
``jax_enable_x64`` on. NIST certifies about 11 significant digits; :func:`lre` scores an
estimate by the log relative error of McCullough (1999), capped at :data:`DIGITS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["DATA_DIR", "DIGITS", "PROBLEMS", "NistProblem", "lre", "min_lre"]

DATA_DIR = Path(__file__).resolve().parent / "data" / "nist"
DIGITS = 11  # significant digits NIST certifies; the cap of :func:`lre`


class NistProblem(NamedTuple):
    """One NIST StRD nonlinear regression problem (all arrays numpy float64)."""

    name: str
    difficulty: str  # "lower", "average" or "higher"
    model: Callable  # model(b, x) -> y_hat, in jax.numpy
    x: np.ndarray  # (n,); (2, n) for Nelson
    y: np.ndarray  # (n,); log of the file's response for Nelson
    starts: tuple[np.ndarray, np.ndarray]  # NIST's Start 1 and Start 2
    certified: np.ndarray  # certified parameter values
    certified_sd: np.ndarray  # their certified standard deviations
    certified_rss: float  # residual sum of squares at ``certified``
    residual_sd: float  # sqrt(certified_rss / dof)
    dof: int  # n - number of parameters (11 for Rat43, whose file misprints 9)

    @property
    def n_params(self) -> int:
        return self.certified.shape[0]

    def residuals(self, b):
        """``y - model(b, x)`` (a jax array)."""
        return jnp.asarray(self.y) - self.model(b, jnp.asarray(self.x))


# --- models, transcribed from each file's "Model:" section -----------------------------------


def misra1a(b, x):  # also BoxBOD
    b1, b2 = b
    return b1 * (1 - jnp.exp(-b2 * x))


def chwirut(b, x):  # Chwirut1, Chwirut2
    b1, b2, b3 = b
    return jnp.exp(-b1 * x) / (b2 + b3 * x)


def lanczos(b, x):  # Lanczos1, Lanczos2, Lanczos3
    b1, b2, b3, b4, b5, b6 = b
    return b1 * jnp.exp(-b2 * x) + b3 * jnp.exp(-b4 * x) + b5 * jnp.exp(-b6 * x)


def gauss(b, x):  # Gauss1, Gauss2, Gauss3
    b1, b2, b3, b4, b5, b6, b7, b8 = b
    return (
        b1 * jnp.exp(-b2 * x)
        + b3 * jnp.exp(-((x - b4) ** 2) / b5**2)
        + b6 * jnp.exp(-((x - b7) ** 2) / b8**2)
    )


def danwood(b, x):
    b1, b2 = b
    return b1 * x**b2


def misra1b(b, x):
    b1, b2 = b
    return b1 * (1 - (1 + b2 * x / 2) ** (-2))


def kirby2(b, x):
    b1, b2, b3, b4, b5 = b
    return (b1 + b2 * x + b3 * x**2) / (1 + b4 * x + b5 * x**2)


def rational_cubic(b, x):  # Hahn1, Thurber
    b1, b2, b3, b4, b5, b6, b7 = b
    return (b1 + b2 * x + b3 * x**2 + b4 * x**3) / (1 + b5 * x + b6 * x**2 + b7 * x**3)


def nelson(b, x):
    """log[y] = b1 - b2*x1 * exp[-b3*x2]; ``x`` is (2, n): rows x1, x2."""
    b1, b2, b3 = b
    x1, x2 = x[0], x[1]
    return b1 - b2 * x1 * jnp.exp(-b3 * x2)


def mgh17(b, x):
    b1, b2, b3, b4, b5 = b
    return b1 + b2 * jnp.exp(-x * b4) + b3 * jnp.exp(-x * b5)


def misra1c(b, x):
    b1, b2 = b
    return b1 * (1 - (1 + 2 * b2 * x) ** (-0.5))


def misra1d(b, x):
    b1, b2 = b
    return b1 * b2 * x * ((1 + b2 * x) ** (-1))


def roszman1(b, x):
    b1, b2, b3, b4 = b
    return b1 - b2 * x - jnp.arctan(b3 / (x - b4)) / math.pi


def enso(b, x):
    b1, b2, b3, b4, b5, b6, b7, b8, b9 = b
    w, w4, w7 = 2 * math.pi * x / 12, 2 * math.pi * x / b4, 2 * math.pi * x / b7
    return (
        b1
        + b2 * jnp.cos(w)
        + b3 * jnp.sin(w)
        + b5 * jnp.cos(w4)
        + b6 * jnp.sin(w4)
        + b8 * jnp.cos(w7)
        + b9 * jnp.sin(w7)
    )


def mgh09(b, x):
    b1, b2, b3, b4 = b
    return b1 * (x**2 + x * b2) / (x**2 + x * b3 + b4)


def mgh10(b, x):
    b1, b2, b3 = b
    return b1 * jnp.exp(b2 / (x + b3))


def rat42(b, x):
    b1, b2, b3 = b
    return b1 / (1 + jnp.exp(b2 - b3 * x))


def eckerle4(b, x):
    b1, b2, b3 = b
    return (b1 / b2) * jnp.exp(-0.5 * ((x - b3) / b2) ** 2)


def rat43(b, x):
    b1, b2, b3, b4 = b
    return b1 / ((1 + jnp.exp(b2 - b3 * x)) ** (1 / b4))


def bennett5(b, x):
    b1, b2, b3 = b
    return b1 * (b2 + x) ** (-1 / b3)


# name -> (difficulty, model), in NIST's order.
_MODELS: dict[str, tuple[str, Callable]] = {
    "Misra1a": ("lower", misra1a),
    "Chwirut2": ("lower", chwirut),
    "Chwirut1": ("lower", chwirut),
    "Lanczos3": ("lower", lanczos),
    "Gauss1": ("lower", gauss),
    "Gauss2": ("lower", gauss),
    "DanWood": ("lower", danwood),
    "Misra1b": ("lower", misra1b),
    "Kirby2": ("average", kirby2),
    "Hahn1": ("average", rational_cubic),
    "Nelson": ("average", nelson),
    "MGH17": ("average", mgh17),
    "Lanczos1": ("average", lanczos),
    "Lanczos2": ("average", lanczos),
    "Gauss3": ("average", gauss),
    "Misra1c": ("average", misra1c),
    "Misra1d": ("average", misra1d),
    "Roszman1": ("average", roszman1),
    "ENSO": ("average", enso),
    "MGH09": ("higher", mgh09),
    "Thurber": ("higher", rational_cubic),
    "BoxBOD": ("higher", misra1a),
    "Rat42": ("higher", rat42),
    "MGH10": ("higher", mgh10),
    "Eckerle4": ("higher", eckerle4),
    "Rat43": ("higher", rat43),
    "Bennett5": ("higher", bennett5),
}


# --- parsing -----------------------------------------------------------------------------------

_PARAM = re.compile(r"^\s*b(\d+)\s*=\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")
_DIFFICULTY = re.compile(r"(Lower|Average|Higher) Level of Difficulty")


def _scalar(text: str, label: str) -> float:
    match = re.search(rf"^{label}:\s*(\S+)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {label!r} line")
    return float(match.group(1))


def parse(path: Path | str) -> dict:
    """Parse a NIST StRD nonlinear-regression ``.dat`` file into a dict of its contents."""
    text = Path(path).read_text()
    lines = text.splitlines()
    span = re.search(r"Data\s+\(lines (\d+) to (\d+)\)", text)
    if span is None:
        raise ValueError(f"{path}: no data line range")
    first, last = int(span.group(1)), int(span.group(2))

    params = [m.groups() for m in map(_PARAM.match, lines[: first - 1]) if m is not None]
    if [int(p[0]) for p in params] != list(range(1, len(params) + 1)):
        raise ValueError(f"{path}: parameters are not b1..b{len(params)}")
    table = np.array([[float(v) for v in p[1:]] for p in params], dtype=np.float64)

    rows = [line.split() for line in lines[first - 1 : last]]
    data = np.array(rows, dtype=np.float64)  # raises on ragged or short rows
    if data.ndim != 2 or data.shape[0] != last - first + 1 or data.shape[1] < 2:
        raise ValueError(f"{path}: data lines {first}..{last} incomplete")
    if any(line.strip() for line in lines[last:]):
        raise ValueError(f"{path}: text after data line {last}")

    difficulty = _DIFFICULTY.search(text)
    return {
        "difficulty": difficulty.group(1).lower() if difficulty else None,
        "starts": (table[:, 0].copy(), table[:, 1].copy()),
        "certified": table[:, 2].copy(),
        "certified_sd": table[:, 3].copy(),
        "certified_rss": _scalar(text, "Residual Sum of Squares"),
        "residual_sd": _scalar(text, "Residual Standard Deviation"),
        "dof": int(_scalar(text, "Degrees of Freedom")),
        "n_observations": int(_scalar(text, "Number of Observations")),
        "y": data[:, 0].copy(),
        "x": data[:, 1].copy() if data.shape[1] == 2 else data[:, 1:].T.copy(),
    }


def _load(name: str, difficulty: str, model: Callable) -> NistProblem:
    raw = parse(DATA_DIR / f"{name}.dat")
    if raw["difficulty"] != difficulty:
        raise ValueError(f"{name}: file says {raw['difficulty']!r} difficulty")
    y = np.log(raw["y"]) if name == "Nelson" else raw["y"]  # Nelson's model is for log[y]
    dof = y.shape[0] - raw["certified"].shape[0]
    if raw["n_observations"] != y.shape[0] or (raw["dof"] != dof and name != "Rat43"):
        raise ValueError(f"{name}: observation or degrees-of-freedom count disagrees")
    return NistProblem(
        name=name,
        difficulty=difficulty,
        model=model,
        x=raw["x"],
        y=y,
        starts=raw["starts"],
        certified=raw["certified"],
        certified_sd=raw["certified_sd"],
        certified_rss=raw["certified_rss"],
        residual_sd=raw["residual_sd"],
        dof=dof,
    )


PROBLEMS: dict[str, NistProblem] = {
    name: _load(name, difficulty, model) for name, (difficulty, model) in _MODELS.items()
}


# --- scoring -----------------------------------------------------------------------------------


def lre(estimate, certified, digits: int = DIGITS) -> np.ndarray:
    """Log relative error -log10(|estimate - certified| / |certified|), elementwise.

    McCullough (1999), "Assessing the reliability of statistical software", Am. Stat. 53(2):
    roughly the number of correct significant digits. Capped at ``digits`` (NIST certifies
    about 11); 0 where it would be negative or the estimate is not finite. Where ``certified``
    is 0 the absolute error is used instead (the log absolute error).
    """
    est = np.asarray(estimate, dtype=np.float64)
    cert = np.asarray(certified, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(est - cert)
        rel = np.where(cert != 0, err / np.where(cert != 0, np.abs(cert), 1.0), err)
        out = -np.log10(rel)
    return np.where(np.isfinite(est), np.clip(np.nan_to_num(out, nan=0.0), 0.0, digits), 0.0)


def min_lre(problem: NistProblem, estimate, digits: int = DIGITS) -> float:
    """The smallest :func:`lre` over a problem's parameters: the score of a whole fit."""
    estimate = np.asarray(estimate, dtype=np.float64)
    if estimate.shape != problem.certified.shape:
        raise ValueError(f"{problem.name}: estimate shape {estimate.shape}")
    return float(np.min(lre(estimate, problem.certified, digits)))
