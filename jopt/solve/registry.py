"""The method registry: a name for each ready-made transform ``jopt.minimize`` accepts.

Adding a method to ``minimize`` by name is one line here; any optax or jopt transform also
runs unnamed (``method=transform``), reporting through the step protocol (:mod:`jopt.step`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import optax

from jopt.transforms.lbfgsb import lbfgsb
from jopt.transforms.newton import newton, newton_cg, trust_ncg
from jopt.transforms.quasi_newton import bfgs, lbfgs, nonlinear_cg
from jopt.transforms.tron import trust_region_newton

__all__ = ["ALIASES", "BOUNDED", "METHODS", "check_bounded_method", "method_names",
           "resolve_method"]

Factory = Callable[[], optax.GradientTransformationExtraArgs]

METHODS: dict[str, Factory] = {
    "lbfgs": lbfgs,
    "bfgs": bfgs,
    "cg": nonlinear_cg,
    "newton-cg": newton_cg,
    "trust-ncg": trust_ncg,
    "newton": newton,
    "l-bfgs-b": lbfgsb,
    "trust-region-newton": trust_region_newton,
}
# Other spellings (compared in lower case), scipy's among them ("BFGS", "CG",
# "Newton-CG", "trust-ncg" are registered names once lower-cased).
ALIASES: dict[str, str] = {"l-bfgs": "lbfgs", "l_bfgs": "lbfgs", "newton_cg": "newton-cg",
                           "trust_ncg": "trust-ncg", "lbfgsb": "l-bfgs-b", "l_bfgs_b": "l-bfgs-b",
                           "tron": "trust-region-newton",
                           "trust_region_newton": "trust-region-newton"}
# The registered methods that take `bounds` (they keep their iterates in the box).
BOUNDED = ("l-bfgs-b", "trust-region-newton")
# scipy's names for a method's own settings, where jopt's differ.
_SCIPY_OPTIONS: dict[str, dict[str, str]] = {"lbfgs": {"maxcor": "memory_size"},
                                              "l-bfgs-b": {"maxcor": "memory_size"}}
# scipy options that are arguments of minimize itself in jopt.
_RUN_OPTIONS = {"gtol": "tol", "disp": "verbose", "maxfun": "maxfev"}


def method_names() -> tuple[str, ...]:
    """The registered methods' canonical names."""
    return tuple(METHODS)


@functools.cache
def _named(name: str, options: tuple = ()) -> optax.GradientTransformationExtraArgs:
    """One transform object per name and options, so a compiled loop is reused across
    calls."""
    return METHODS[name](**dict(options))


def _method_options(name: str, options: Mapping[str, Any]) -> tuple:
    """``options`` as the sorted keyword items of ``METHODS[name]``, checked by name."""
    if not isinstance(options, Mapping):
        raise TypeError(f"`options` must be a dict of the method's settings, got "
                        f"{type(options).__name__}.")
    accepted = [p for p in inspect.signature(METHODS[name]).parameters]
    renamed = _SCIPY_OPTIONS.get(name, {})
    items = {}
    for key, value in options.items():
        if key in _RUN_OPTIONS:
            raise ValueError(f"`options[{key!r}]`: jopt takes this as an argument of "
                             f"minimize: pass `{_RUN_OPTIONS[key]}=` instead.")
        key = renamed.get(key, key)
        if key not in accepted:
            raise ValueError(f"`options` key {key!r} is not a setting of method {name!r}; "
                             f"its settings are {accepted}.")
        items[key] = value
    try:
        hash(tuple(items.values()))
    except TypeError:
        raise TypeError(f"`options` values must be hashable (numbers, strings, "
                        f"transforms), got {options!r}.") from None
    return tuple(sorted(items.items()))


def check_bounded_method(method: Any) -> None:
    """A ValueError unless ``method`` can run with ``bounds``: a registered bounded method,
    or a transform (a plain optax one takes projected steps; one with a step record must
    keep its iterates in the box, as the bounded methods do)."""
    if not isinstance(method, str):
        return
    key = ALIASES.get(method.lower(), method.lower())
    if key not in BOUNDED:
        raise ValueError(f"`method` {method!r} does not take `bounds`: use one of "
                         f"{list(BOUNDED)} (or scipy's 'L-BFGS-B'), or an optax transform "
                         f"(projected steps).")


def resolve_method(method: Any, options: Mapping[str, Any] | None = None,
                   ) -> optax.GradientTransformationExtraArgs:
    """The transform for ``method``: a registered name (built with the keyword settings
    ``options``, e.g. ``{"memory_size": 20}`` for ``"lbfgs"``), or any optax/jopt
    transform."""
    if isinstance(method, str):
        key = method.lower()
        key = ALIASES.get(key, key)
        if key not in METHODS:
            raise ValueError(
                f"Unknown `method` {method!r}. Valid names: {sorted({*METHODS, *ALIASES})}; "
                f"or pass any optax/jopt GradientTransformation."
            )
        return _named(key, _method_options(key, options or {}))
    if options:
        raise ValueError("`options` configure a method given by name; a transform passed as "
                         "`method` is already configured.")
    if isinstance(method, optax.GradientTransformationExtraArgs):
        return method
    if isinstance(method, optax.GradientTransformation):
        return optax.with_extra_args_support(method)
    raise TypeError(
        f"`method` must be a method name ({sorted(METHODS)}) or an optax "
        f"GradientTransformation, got {type(method).__name__}."
    )
