"""jopt's optimizers: pure ``optax.GradientTransformation``s."""

from jopt.transforms.first_order import (
    AdagradState,
    AdamState,
    RMSPropState,
    SGDState,
    adagrad,
    adam,
    adamw,
    rmsprop,
    sgd,
)
from jopt.transforms.quasi_newton import (
    BFGSState,
    LBFGSState,
    NonlinearCGState,
    bfgs,
    lbfgs,
    nonlinear_cg,
    scale_by_bfgs,
    scale_by_lbfgs,
    scale_by_nonlinear_cg,
)

__all__ = [
    "AdagradState",
    "AdamState",
    "BFGSState",
    "LBFGSState",
    "NonlinearCGState",
    "RMSPropState",
    "SGDState",
    "adagrad",
    "adam",
    "adamw",
    "bfgs",
    "lbfgs",
    "nonlinear_cg",
    "rmsprop",
    "scale_by_bfgs",
    "scale_by_lbfgs",
    "scale_by_nonlinear_cg",
    "sgd",
]
