"""The method registry: a name for each ready-made transform ``jopt.minimize`` accepts.

Adding a method to ``minimize`` by name is one line here; any optax or jopt transform also
runs unnamed (``method=transform``), reporting through the step protocol (:mod:`jopt.step`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import optax

from jopt.transforms.newton import newton, newton_cg, trust_ncg
from jopt.transforms.quasi_newton import bfgs, lbfgs, nonlinear_cg

__all__ = ["ALIASES", "METHODS", "method_names", "resolve_method"]

Factory = Callable[[], optax.GradientTransformationExtraArgs]

METHODS: dict[str, Factory] = {
    "lbfgs": lbfgs,
    "bfgs": bfgs,
    "cg": nonlinear_cg,
    "newton-cg": newton_cg,
    "trust-ncg": trust_ncg,
    "newton": newton,
}
# Other spellings (compared in lower case), scipy's among them.
ALIASES: dict[str, str] = {"l-bfgs": "lbfgs", "l_bfgs": "lbfgs", "newton_cg": "newton-cg",
                           "trust_ncg": "trust-ncg"}


def method_names() -> tuple[str, ...]:
    """The registered methods' canonical names."""
    return tuple(METHODS)


@functools.cache
def _named(name: str) -> optax.GradientTransformationExtraArgs:
    """One transform object per name, so a compiled loop is reused across calls."""
    return METHODS[name]()


def resolve_method(method: Any) -> optax.GradientTransformationExtraArgs:
    """The transform for ``method``: a registered name, or any optax/jopt transform."""
    if isinstance(method, str):
        key = method.lower()
        key = ALIASES.get(key, key)
        if key not in METHODS:
            raise ValueError(
                f"Unknown `method` {method!r}. Valid names: {sorted({*METHODS, *ALIASES})}; "
                f"or pass any optax/jopt GradientTransformation."
            )
        return _named(key)
    if isinstance(method, optax.GradientTransformationExtraArgs):
        return method
    if isinstance(method, optax.GradientTransformation):
        return optax.with_extra_args_support(method)
    raise TypeError(
        f"`method` must be a method name ({sorted(METHODS)}) or an optax "
        f"GradientTransformation, got {type(method).__name__}."
    )
