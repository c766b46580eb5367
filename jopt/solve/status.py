"""The result of a solve: :class:`Status` codes and :class:`MinimizeResult` (scipy's fields)."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import jax
import numpy as np

PyTree = Any

__all__ = ["MESSAGES", "MinimizeResult", "Status"]


class Status(enum.IntEnum):
    """``MinimizeResult.status`` codes (``message`` gives the text)."""

    RUNNING = -1  # a state still iterating (minimize_run with num_steps)
    CONVERGED = 0  # ‖∇f‖∞ <= tol
    MAXITER = 1
    STEP_FAILED = 2  # two failed steps in a row (line search or trust region)
    LINESEARCH_FAILED = 2  # (scipy's name for it; an alias)
    NONFINITE = 3
    SMALL_CHANGE = 4  # relative f change <= ftol or step <= xtol
    MAXFEV = 5
    PRECISION = 6  # no decrease possible at the dtype's precision, or no progress


MESSAGES: dict[int, str] = {
    -1: "Running.",
    0: "Optimization terminated successfully: gradient norm below tol.",
    1: "Maximum number of iterations reached.",
    2: "No lower value found: two steps in a row failed (the line search, or the trust "
       "region's step).",
    3: "Non-finite value or gradient (NaN/Inf) encountered; returning the last finite point.",
    4: "Converged: change in f or x below ftol/xtol.",
    5: "Maximum number of function evaluations reached.",
    6: "Desired gradient tolerance not reached due to precision loss: no lower value "
       "exists at the precision of the dtype (or f and the gradient stopped improving).",
}


def message(status: Any) -> Any:
    """The text of a status code (a numpy array of texts for an array of codes)."""
    arr = np.asarray(status)
    if arr.ndim == 0:
        return MESSAGES.get(int(arr), f"Unknown status {int(arr)}.")
    return np.vectorize(lambda s: MESSAGES.get(int(s), "?"), otypes=[object])(arr)


class MinimizeResult(NamedTuple):
    """Result of :func:`jopt.minimize`, with scipy's field names (a pytree of arrays).

    Attributes:
      x: solution. fun: objective at ``x``. jac: gradient at ``x``.
      nit: iterations. nfev / njev: objective / gradient evaluations (line-search trials
        included; jopt evaluates both together, and ``njev`` adds the gradient each Newton
        linearization recomputes). nhev: Hessian-vector products (and dense Hessians for
        ``"newton"``). success: ``status`` is CONVERGED or SMALL_CHANGE. status: a
        :class:`Status` code; ``message`` (host only) explains it.
      f_history / gnorm_history: per-iteration ``f`` and ``‖∇f‖∞`` (``history=True``;
        entry 0 is ``x0``, unused entries are NaN; with bounds, the projected gradient's
        norm).
      active_mask: with ``bounds``, booleans like ``x``: the entry is on a bound (else
        ``None``).

    From an eager call the counters may be numpy scalars (read back in one transfer);
    under ``jit`` or ``vmap`` every field is a ``jax.Array``.
    """

    x: PyTree
    fun: jax.Array
    jac: PyTree
    nit: jax.Array
    nfev: jax.Array
    njev: jax.Array
    nhev: jax.Array
    success: jax.Array
    status: jax.Array
    f_history: jax.Array | None = None
    gnorm_history: jax.Array | None = None
    active_mask: PyTree | None = None

    @property
    def message(self) -> Any:
        """Text for ``status`` (a numpy array of texts for a batched result)."""
        return message(self.status)


Status.MESSAGES = MESSAGES  # (Status.MESSAGES[code]: the text of a code)
