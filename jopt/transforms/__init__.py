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

__all__ = [
    "AdagradState",
    "AdamState",
    "RMSPropState",
    "SGDState",
    "adagrad",
    "adam",
    "adamw",
    "rmsprop",
    "sgd",
]
