"""Derivative operators on pytrees: the calculus layer every jopt optimizer builds on.

All functions here are pure, work on arbitrary pytrees of real floating-point arrays,
keep the caller's dtypes, and compose with ``jax.jit`` and ``jax.vmap``. Objectives are
plain callables ``f(x) -> scalar``; close over data (a minibatch, labels, ...) to pass it.

References
----------
* Pearlmutter, B. A. (1994). Fast exact multiplication by the Hessian. Neural Computation 6(1).
* Griewank, A. & Walther, A. (2008). Evaluating Derivatives, 2nd ed., SIAM, ch. 3-5
  (forward/reverse mode costs), §5.4 (second-order adjoints: forward-over-reverse).
* Schraudolph, N. N. (2002). Fast curvature matrix-vector products for second-order
  gradient descent. Neural Computation 14(7) (Gauss-Newton products).
* Hutchinson, M. F. (1989). A stochastic estimator of the trace of the influence matrix.
  Comm. Statist. Simul. Comput. 18(3); Bekas, Kokiopoulou & Saad (2007). An estimator
  for the diagonal of a matrix. Appl. Numer. Math. 57 (diagonal estimator).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jopt._checks import (
    check_float_tree,
    check_positive_int,
    check_same_structure,
    check_scalar_output,
    check_scalar_shape,
)

PyTree = Any
ScalarFn = Callable[[PyTree], jax.Array]

__all__ = [
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
    "value_and_grad_fn",
]


def _check_objective(f: ScalarFn, x: PyTree, name: str = "f") -> None:
    check_float_tree("x", x)
    check_scalar_output(name, f, x)


# ------------------------------------------------------------------- value and gradient

def value_and_grad_fn(
    f: ScalarFn, x: PyTree, *, split: bool = False
) -> Callable[[PyTree], tuple[jax.Array, PyTree]]:
    """``y -> (f(y), ∇f(y))`` for points shaped like ``x``: ``jax.value_and_grad(f)``,
    or with ``split`` its backward pass as a computation of its own.

    With ``split`` the reverse pass runs inside a ``lax.cond`` on ``isfinite(f(y))``, so
    the derivative coefficients the forward pass computes are stored once instead of being
    re-evaluated inside every fused reader (the form optimistix's solvers take); where
    ``f(y)`` is not finite the gradient is NaN. Values and gradients are those of
    ``jax.value_and_grad`` up to the compiler's fusion-dependent rounding. Under ``vmap``
    the ``cond`` becomes a ``select``. ``jopt.minimize`` picks the form per objective and
    backend; the measured effect is on the performance page.

    ``f`` is traced once here, at ``x``, to check that it returns a real floating scalar.

    Raises:
      TypeError: ``x`` has non-float leaves, ``f`` returns a non-float, or ``split`` is
        not ``True`` or ``False``.
      ValueError: ``f`` does not return a scalar.
    """
    return _value_and_grad_fn(f, x, split, "f")


class Objective:
    """A scalar function ``x -> f(x)`` that carries its value-and-gradient form.

    ``jopt.minimize`` passes its objective to transforms as such a ``value_fn``, so that a
    search evaluates ``(f, ∇f)`` in the form chosen for this objective (see
    :func:`value_and_grad_fn`'s ``split``); any plain callable works as well.
    """

    __slots__ = ("__weakref__", "fn", "value_and_grad")

    def __init__(self, fn: ScalarFn, value_and_grad: Callable[[PyTree], tuple]) -> None:
        self.fn, self.value_and_grad = fn, value_and_grad

    def __call__(self, x: PyTree) -> jax.Array:
        return self.fn(x)


def value_and_grad_of(f: ScalarFn, x: PyTree, name: str = "value_fn"
                      ) -> Callable[[PyTree], tuple[jax.Array, PyTree]]:
    """``f``'s own value-and-gradient form (an :class:`Objective`'s), else
    ``jax.value_and_grad(f)`` after checking that ``f`` returns a real scalar at ``x``."""
    if isinstance(f, Objective):
        return f.value_and_grad
    return _value_and_grad_fn(f, x, False, name)


def _value_and_grad_fn(f: ScalarFn, x: PyTree, split: bool, name: str
                       ) -> Callable[[PyTree], tuple[jax.Array, PyTree]]:
    """:func:`value_and_grad_fn`, naming ``f`` as ``name`` in its errors."""
    if not isinstance(split, bool):
        raise TypeError(f"`split` must be True or False, got {split!r}.")
    check_float_tree("x", x)
    out_shape = jax.eval_shape(f, x)
    check_scalar_shape(name, out_shape)
    if not split:
        return jax.value_and_grad(f)

    def value_and_grad(y: PyTree) -> tuple[jax.Array, PyTree]:
        value, pullback = jax.vjp(f, y)
        grad = jax.lax.cond(
            jnp.isfinite(value),
            lambda: pullback(jnp.ones_like(value))[0],
            lambda: jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), y),
        )
        return value, grad

    return value_and_grad


# --------------------------------------------------------------------------- HVPs


def hvp(f: ScalarFn, x: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product ``∇²f(x) v`` by forward-over-reverse differentiation.

    One JVP of the reverse-mode gradient (Pearlmutter 1994; Griewank & Walther 2008, §5.4):
    costs about two gradient evaluations and never forms the Hessian.

    Args:
      f: objective ``x -> scalar``.
      x: point (pytree of float arrays).
      v: direction, same pytree structure and shapes as ``x``.

    Returns:
      ``∇²f(x) v`` with the structure and dtypes of ``x``.
    """
    _check_objective(f, x)
    check_same_structure("x", x, "v", v)
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def grad_and_hvp_fn(f: ScalarFn, x: PyTree) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
    """Gradient at ``x`` and a function ``v -> ∇²f(x) v``, linearizing the gradient once.

    ``jax.linearize`` runs the forward-over-reverse trace once and stores the linear
    tangent map, so every further product costs only the tangent evaluation (about one
    gradient) — the form Krylov loops (CG, Lanczos) should use at a fixed point.

    Returns:
      ``(grad, hvp)`` where ``grad = ∇f(x)`` and ``hvp(v) = ∇²f(x) v``.
    """
    _check_objective(f, x)
    grad, lin = jax.linearize(jax.grad(f), x)

    def hvp_at_x(v: PyTree) -> PyTree:
        check_same_structure("x", x, "v", v)
        return lin(v)

    return grad, hvp_at_x


def hvp_fn(f: ScalarFn, x: PyTree) -> Callable[[PyTree], PyTree]:
    """``v -> ∇²f(x) v`` for many products at one point (see :func:`grad_and_hvp_fn`)."""
    return grad_and_hvp_fn(f, x)[1]


# ------------------------------------------------------------- Gauss-Newton products


def gnvp_fn(
    model_fn: Callable[[PyTree], PyTree], loss_fn: ScalarFn, params: PyTree
) -> Callable[[PyTree], PyTree]:
    """``v -> Jᵀ H_L J v`` at ``params``: the generalized Gauss-Newton product.

    ``J`` is the Jacobian of ``model_fn`` at ``params`` and ``H_L`` the Hessian of
    ``loss_fn`` at the model output ``z = model_fn(params)`` (Schraudolph 2002). The model
    is linearized once (one forward pass); each product is one JVP through the linearized
    model, one HVP of the (cheap) loss at ``z``, and the transpose of the linear model —
    ``J`` is never formed. With a convex ``loss_fn`` the product is positive semi-definite.

    Args:
      model_fn: ``params -> z`` (any pytree output, e.g. logits).
      loss_fn: ``z -> scalar`` (close over labels).
      params: point at which to linearize.
    """
    check_float_tree("params", params)
    z_shape = jax.eval_shape(model_fn, params)
    check_scalar_output("loss_fn", loss_fn, z_shape)
    z, jvp_model = jax.linearize(model_fn, params)
    vjp_model = jax.linear_transpose(jvp_model, params)
    _, hvp_loss = grad_and_hvp_fn(loss_fn, z)

    def product(v: PyTree) -> PyTree:
        check_same_structure("params", params, "v", v)
        (out,) = vjp_model(hvp_loss(jvp_model(v)))
        return out

    return product


def gnvp(
    model_fn: Callable[[PyTree], PyTree], loss_fn: ScalarFn, params: PyTree, v: PyTree
) -> PyTree:
    """Gauss-Newton product ``Jᵀ H_L J v`` (see :func:`gnvp_fn`) for one direction ``v``."""
    return gnvp_fn(model_fn, loss_fn, params)(v)


# --------------------------------------------------------------- dense derivatives


def _tree_size(tree: PyTree) -> int:
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(tree))


def jacobian(f: Callable[[PyTree], PyTree], x: PyTree) -> PyTree:
    """Jacobian of ``f`` at ``x``, choosing forward or reverse mode by size.

    Rule: forward mode (``jax.jacfwd``, one JVP per input component) when the input size
    ``n_in`` is at most the output size ``n_out``; reverse mode (``jax.jacrev``, one VJP
    per output component) otherwise. A JVP is cheaper than a VJP (no stored residuals),
    so ties go to forward mode (Griewank & Walther 2008, ch. 3-4).

    Returns:
      The Jacobian with the nested structure ``jax.jacfwd`` / ``jax.jacrev`` give: for each
      output leaf, a pytree like ``x`` whose leaves have shape ``out.shape + in.shape``.
    """
    check_float_tree("x", x)
    n_in = _tree_size(x)
    n_out = _tree_size(jax.eval_shape(f, x))
    mode = jax.jacfwd if n_in <= n_out else jax.jacrev
    return mode(f)(x)


def hessian(f: ScalarFn, x: PyTree) -> PyTree:
    """Dense Hessian of a scalar ``f`` at ``x`` as a nested pytree (forward-over-reverse).

    Meant for small problems and oracles: memory is ``n²``. Leaf ``[a][b]`` has shape
    ``a.shape + b.shape``, as with ``jax.hessian``. See :func:`hessian_matrix` for the
    flattened ``(n, n)`` matrix.
    """
    _check_objective(f, x)
    return jax.jacfwd(jax.grad(f))(x)


def hessian_matrix(f: ScalarFn, x: PyTree) -> jax.Array:
    """Dense ``(n, n)`` Hessian of ``f`` in the order of ``jax.flatten_util.ravel_pytree(x)``."""
    _check_objective(f, x)
    flat, unravel = ravel_pytree(x)
    return jax.jacfwd(jax.grad(lambda z: f(unravel(z))))(flat)


# --------------------------------------------------------------------- Hutchinson


def rademacher_like(key: jax.Array, tree: PyTree, num_samples: int) -> PyTree:
    """``num_samples`` Rademacher (±1) probes shaped like ``tree``, stacked on axis 0."""
    check_positive_int("num_samples", num_samples)
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    probes = [
        jax.random.rademacher(k, (num_samples, *jnp.shape(leaf)), dtype=jnp.result_type(leaf))
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, probes)


def _probe_products(
    f: ScalarFn, x: PyTree, key: jax.Array, num_samples: int, batch_size: int | None
) -> tuple[PyTree, PyTree]:
    """Rademacher probes ``z`` and the products ``z ⊙ Hz``, all samples on axis 0."""
    _check_objective(f, x)
    check_positive_int("num_samples", num_samples)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    probes = rademacher_like(key, x, num_samples)
    hvp_at_x = hvp_fn(f, x)

    def z_hz(z: PyTree) -> PyTree:
        return jax.tree.map(jnp.multiply, z, hvp_at_x(z))

    if batch_size is None or batch_size >= num_samples:
        return probes, jax.vmap(z_hz)(probes)
    return probes, jax.lax.map(z_hz, probes, batch_size=batch_size)


def hutchinson_diag(
    f: ScalarFn,
    x: PyTree,
    key: jax.Array,
    num_samples: int = 1,
    *,
    batch_size: int | None = None,
) -> PyTree:
    """Unbiased estimate of ``diag(∇²f(x))`` from Rademacher probes.

    ``diag(H) ≈ (1/S) Σ_s z_s ⊙ H z_s`` with ``z_s ∈ {±1}ⁿ`` (Bekas et al. 2007). The gradient
    is linearized once and all ``S`` products are evaluated in one vmapped batch (or in
    chunks of ``batch_size`` to bound memory).

    Args:
      f: objective ``x -> scalar``.
      x: point (pytree).
      key: PRNG key.
      num_samples: number of probes ``S >= 1``.
      batch_size: optional chunk size for the probe batch.

    Returns:
      A pytree like ``x`` holding the estimated Hessian diagonal.
    """
    _, prods = _probe_products(f, x, key, num_samples, batch_size)
    return jax.tree.map(lambda p: jnp.mean(p, axis=0), prods)


def hutchinson_trace(
    f: ScalarFn,
    x: PyTree,
    key: jax.Array,
    num_samples: int = 1,
    *,
    batch_size: int | None = None,
) -> jax.Array:
    """Unbiased estimate of ``tr(∇²f(x)) ≈ (1/S) Σ_s z_sᵀ H z_s`` (Hutchinson 1989).

    Rademacher probes give the minimum-variance estimator among i.i.d. probes with unit
    second moment: ``Var = 2 Σ_{i≠j} H_ij² / S``. Arguments as in :func:`hutchinson_diag`.
    """
    _, prods = _probe_products(f, x, key, num_samples, batch_size)
    per_sample = sum(
        jnp.sum(p.reshape(num_samples, -1), axis=1) for p in jax.tree.leaves(prods)
    )
    return jnp.mean(per_sample)
