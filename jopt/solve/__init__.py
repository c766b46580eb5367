"""The solve layer: the pure solver loop (:mod:`~jopt.solve.loop`), the method registry,
``minimize`` and its resumable pieces (:mod:`~jopt.solve.api`), and ``minimize_many``."""

from jopt.solve.api import minimize, minimize_init, minimize_result, minimize_run
from jopt.solve.loop import IntermediateResult, SolverState
from jopt.solve.many import minimize_many
from jopt.solve.registry import METHODS, method_names
from jopt.solve.status import MinimizeResult, Status

__all__ = [
    "METHODS",
    "IntermediateResult",
    "MinimizeResult",
    "SolverState",
    "Status",
    "method_names",
    "minimize",
    "minimize_init",
    "minimize_many",
    "minimize_result",
    "minimize_run",
]
