"""The step protocol: what a transform tells the solver loop after one step.

Every jopt optimizer is an ``optax.GradientTransformationExtraArgs``. A transform that
evaluates the objective itself (a line search, a trust region, Hessian-free, Newton)
keeps a :class:`StepRecord` in its state: the value and gradient at the new point, the
step length taken, whether the step failed, whether the direction was reset to steepest
descent, and the work done so far (:class:`Work`). A transform that evaluates curvature
without taking the step (a Newton-CG direction, SQN) keeps only a :class:`Work`.

The loop of :func:`jopt.minimize` reads a state through :func:`step_record` alone:

* a record found: the new point's value and gradient are taken from it (nothing is
  evaluated twice), a ``FAILED`` step counts towards the failure rule, and the counters
  are the record's work;
* no record (a plain optax transform): the loop evaluates ``f`` and ``∇f`` itself.

Two rules complete the contract. A transform whose last step failed (a zero step)
restarts itself at its next update (quasi-Newton memory cleared, trust radius reset):
the loop never replaces a state, and a second failure in a row ends the run. And the
counters are cumulative over the transform's life, so resuming a saved state continues
them.

Example — steepest descent with Armijo backtracking as a new method (counters and
statuses honest):

    >>> import jax.numpy as jnp, optax, jopt
    >>> def steepest_descent():
    ...     return optax.chain(optax.scale(-1.0), jopt.scale_by_backtracking())
    >>> res = jopt.minimize(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(3),
    ...                     method=steepest_descent())
    >>> bool(res.success), [round(float(v), 4) for v in res.x]
    (True, [1.0, 1.0, 1.0])

(:func:`jopt.scale_by_backtracking` fills the record; see the solver-protocol guide for a
method that fills its own.)
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = ["StepRecord", "StepStatus", "Work", "step_record", "step_status", "total_work"]


def step_status(failed: jax.Array) -> jax.Array:
    """The :class:`StepStatus` code (int32) of a step that ``failed`` or not."""
    return failed.astype(jnp.int32)  # FAILED = 1, ACCEPTED = 0


class StepStatus(enum.IntEnum):
    """:attr:`StepRecord.status`: the outcome of a transform's last step."""

    ACCEPTED = 0  # a step was taken (or none was needed)
    FAILED = 1  # no acceptable step found: a zero step was taken


class Work(NamedTuple):
    """Cumulative evaluations a transform has made (int32 scalars).

    A transform keeps only the counters it increments; the others are ``None`` (absent
    from the state's pytree, so a compiled loop carries no constant fields).

    Attributes:
      nfev: evaluations of ``f`` (each with its gradient: jopt evaluates both together).
      njev: extra gradient evaluations (e.g. the gradient each ``jax.linearize`` of a
        Newton step recomputes).
      nhvp: Hessian- (or Gauss-Newton-) vector products.
      nhess: dense Hessians formed.
    """

    nfev: jax.Array | None = None
    njev: jax.Array | None = None
    nhvp: jax.Array | None = None
    nhess: jax.Array | None = None

    @classmethod
    def zeros(cls, *counters: str) -> Work:
        """Zero ``counters`` (names of fields; default: all four), the others absent."""
        names = counters or cls._fields
        unknown = set(names) - set(cls._fields)
        if unknown:
            raise ValueError(f"Unknown Work counters {sorted(unknown)}; valid: {cls._fields}.")
        return cls(**{name: jnp.zeros([], jnp.int32) for name in names})

    def add(self, nfev: Any = 0, njev: Any = 0, nhvp: Any = 0, nhess: Any = 0) -> Work:
        """These counts plus the given ones (int32). A counter that is absent stays absent
        and may only be given a Python 0."""
        out = []
        for name, have, more in zip(self._fields, self, (nfev, njev, nhvp, nhess),
                                    strict=True):
            if isinstance(more, int) and more == 0:
                out.append(have)
            elif have is None:
                raise ValueError(f"Work counter `{name}` was not declared when the state was "
                                 f"made: create it with Work.zeros(..., {name!r}).")
            else:
                out.append(have + jnp.asarray(more, jnp.int32))
        return Work(*out)

    def filled(self) -> Work:
        """All four counters, absent ones as 0."""
        return Work(*(jnp.zeros([], jnp.int32) if v is None else v for v in self))


class StepRecord(NamedTuple):
    """What a transform that evaluates the objective reports after a step.

    Attributes:
      value: ``f`` at the new point (the old point's after a rejected step).
      grad: ``∇f`` there, shaped like the parameters.
      step: the step length taken along the direction (0: rejected or failed).
      slope: the first-order change of ``f`` predicted for the full step (``∇fᵀd`` for a
        line search, minus the model decrease for a trust region); a failure where it is at
        rounding level of ``f`` is a precision limit, not a failure of the method.
      status: a :class:`StepStatus` code.
      reset: the direction was replaced by steepest descent (it was not a descent one).
      work: the transform's cumulative :class:`Work`.
    """

    value: jax.Array
    grad: PyTree
    step: jax.Array
    slope: jax.Array
    status: jax.Array
    reset: jax.Array
    work: Work

    @classmethod
    def initial(cls, params: PyTree, counters: tuple[str, ...] = ("nfev",)) -> StepRecord:
        """The record before the first step (value ``inf``, zero gradient, no work; the
        transform will count ``counters``, see :class:`Work`)."""
        dtype = jnp.result_type(*jax.tree.leaves(params))
        zero = jnp.zeros([], dtype)
        return cls(value=jnp.full([], jnp.inf, dtype),
                   grad=jax.tree.map(jnp.zeros_like, params), step=zero, slope=zero,
                   status=jnp.asarray(StepStatus.ACCEPTED, jnp.int32),
                   reset=jnp.zeros([], bool), work=Work.zeros(*counters))


def _nodes(state: PyTree, kind: type) -> list:
    return [n for n in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, kind))
            if isinstance(n, kind)]


def total_work(state: PyTree) -> Work:
    """The sum of every :class:`Work` in a transform's state (records' included), all four
    counters present."""
    total = Work.zeros()
    for work in _nodes(state, Work):
        total = total.add(*work.filled())
    return total


def step_record(state: PyTree) -> StepRecord | None:
    """The step record of a transform's state, or ``None`` if it keeps none.

    For a chain (``optax.chain(direction, search)``) it is the last transform's record —
    the one that took the step — with the work of the whole chain summed into it (a
    Newton-CG direction's products and its search's evaluations). Which record exists is
    a matter of the state's structure, so the answer is known when tracing.
    """
    records = _nodes(state, StepRecord)
    if not records:
        return None
    return records[-1]._replace(work=total_work(state))
