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
from jopt.transforms import (
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

__version__ = "0.1.0"

__all__ = [
    "AdagradState",
    "AdamState",
    "FlatParams",
    "JoptWarning",
    "RMSPropState",
    "SGDState",
    "adagrad",
    "adam",
    "adamw",
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
    "rademacher_like",
    "rmsprop",
    "sgd",
]
