"""jopt — a JAX toolkit in which calculus builds optimizers.

The public face is this flat namespace; nothing outside ``__all__`` is promised to users.
Every optimizer is an ``optax.GradientTransformation`` (optax's own type), so optax and
jopt mix freely.
"""

from jopt._checks import JoptWarning
from jopt.calculus import (
    gnvp,
    gnvp_fn,
    grad_and_hvp_fn,
    hessian,
    hessian_matrix,
    hutchinson_diag,
    hutchinson_trace,
    hvp,
    hvp_fn,
    jacobian,
    rademacher_like,
)
from jopt.flat import FlatParams
from jopt.linesearch import (
    LineSearchState,
    LineSearchStatus,
    scale_by_backtracking,
    scale_by_strong_wolfe,
)
from jopt.minimize import MinimizeResult, Status, minimize
from jopt.transforms import (
    AdagradState,
    AdamState,
    BFGSState,
    LBFGSState,
    NonlinearCGState,
    RMSPropState,
    SGDState,
    adagrad,
    adam,
    adamw,
    bfgs,
    lbfgs,
    nonlinear_cg,
    rmsprop,
    scale_by_bfgs,
    scale_by_lbfgs,
    scale_by_nonlinear_cg,
    sgd,
)

__version__ = "0.1.0"

__all__ = [
    "AdagradState",
    "AdamState",
    "BFGSState",
    "FlatParams",
    "JoptWarning",
    "LBFGSState",
    "LineSearchState",
    "LineSearchStatus",
    "MinimizeResult",
    "NonlinearCGState",
    "RMSPropState",
    "SGDState",
    "Status",
    "adagrad",
    "adam",
    "adamw",
    "bfgs",
    "gnvp",
    "gnvp_fn",
    "grad_and_hvp_fn",
    "hessian",
    "hessian_matrix",
    "hutchinson_diag",
    "hutchinson_trace",
    "hvp",
    "hvp_fn",
    "jacobian",
    "lbfgs",
    "minimize",
    "nonlinear_cg",
    "rademacher_like",
    "rmsprop",
    "scale_by_backtracking",
    "scale_by_bfgs",
    "scale_by_lbfgs",
    "scale_by_nonlinear_cg",
    "scale_by_strong_wolfe",
    "sgd",
]
