"""Whether the gradient's backward pass pays as a computation of its own on XLA:CPU.

XLA:CPU fuses an elementwise producer into every reader of its output and re-evaluates it
per read, so in one fused program a derivative coefficient read through shifted slices (a
stencil, as in most large test problems) is evaluated once per slice; run as a separate
computation (``jopt.value_and_grad_fn(..., split=True)``) it is stored once. That pays
when the objective applies transcendental elementwise functions and no matrix products
(a matrix product's backward pass is no stencil, and XLA:CPU emits it less well alone).
"""

from __future__ import annotations

from typing import Any

import jax.extend.core

_TRANSCENDENTAL = frozenset({
    "pow", "exp", "exp2", "log", "log1p", "expm1", "sin", "cos", "tan", "asin", "acos",
    "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "logistic", "erf",
    "erfc", "erf_inv", "lgamma", "digamma", "cbrt",
})
_MATRIX_PRODUCTS = frozenset({"dot_general", "conv_general_dilated"})


def _primitive_names(jaxpr: Any) -> set[str]:
    names: set[str] = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names |= _primitive_names(sub)
    return names


def split_backward_pays(jaxpr: Any) -> bool:
    """True when ``jaxpr`` applies transcendental elementwise functions and no matrix
    products."""
    names = _primitive_names(jaxpr)
    return bool(names & _TRANSCENDENTAL) and not names & _MATRIX_PRODUCTS
