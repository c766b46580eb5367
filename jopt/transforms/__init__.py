"""jopt's optimizers: pure ``optax.GradientTransformation``s."""

from jopt.transforms.adahessian import AdaHessianState, adahessian
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
from jopt.transforms.hessian_free import HessianFreeState, hessian_free
from jopt.transforms.lbfgsb import LBFGSBState, lbfgsb
from jopt.transforms.newton import (
    NewtonCGState,
    NewtonState,
    TrustNCGState,
    newton,
    newton_cg,
    scale_by_newton,
    scale_by_newton_cg,
    trust_ncg,
)
from jopt.transforms.projection import keep_params_in_box
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
from jopt.transforms.sqn import SQNState, sqn
from jopt.transforms.tron import TronState, trust_region_newton

__all__ = [
    "AdaHessianState",
    "AdagradState",
    "AdamState",
    "BFGSState",
    "HessianFreeState",
    "LBFGSBState",
    "LBFGSState",
    "NewtonCGState",
    "NewtonState",
    "NonlinearCGState",
    "RMSPropState",
    "SGDState",
    "SQNState",
    "TronState",
    "TrustNCGState",
    "adagrad",
    "adahessian",
    "adam",
    "adamw",
    "bfgs",
    "hessian_free",
    "keep_params_in_box",
    "lbfgs",
    "lbfgsb",
    "newton",
    "newton_cg",
    "nonlinear_cg",
    "rmsprop",
    "scale_by_bfgs",
    "scale_by_lbfgs",
    "scale_by_newton",
    "scale_by_newton_cg",
    "scale_by_nonlinear_cg",
    "sgd",
    "sqn",
    "trust_ncg",
    "trust_region_newton",
]
