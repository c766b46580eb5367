"""Implicit differentiation through the solution of an optimization problem.

At a minimiser ``x*(θ)`` of ``f(x, θ)`` the optimality condition ``∇ₓf(x*, θ) = 0`` holds,
so by the implicit function theorem

    dx*/dθ · u = -[∇²ₓₓf(x*, θ)]⁻¹ ∇²ₓθ f(x*, θ) · u.

:func:`implicit_solution` attaches exactly this derivative to a solution computed by any
solver: the linear system is solved by conjugate gradients on Hessian-vector products
(the Hessian is never formed) inside ``jax.lax.custom_linear_solve``, which makes the rule
transposable — forward mode (``jvp``, ``jacfwd``) and reverse mode (``grad``, ``vjp``)
both work, and nothing is differentiated through the solver's ``while_loop``.

:func:`jopt.minimize` applies it to its result, so ``jax.grad`` of any function of
``minimize(fun, x0, args=θ).x`` (or ``.fun``) with respect to ``θ`` just works.

References:
  Griewank, A. & Walther, A. (2008). Evaluating Derivatives, 2nd ed., §15 (implicit
  functions and their derivatives).
  Blondel, M. et al. (2022). Efficient and modular implicit differentiation. NeurIPS.
  Pedregosa, F. (2016). Hyperparameter optimization with approximate gradient. ICML
  (bilevel hyperparameter gradients by the implicit function theorem).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jopt.calculus import hvp_fn
from jopt.linalg import cg

PyTree = Any

__all__ = ["implicit_solution", "implicit_value"]


def _solve_hessian_system(fun, x, args, rhs, rtol: float, maxiter: int | None):
    """``[∇²ₓₓ f(x, args)]⁻¹ rhs`` by CG on HVPs, transposable via custom_linear_solve."""
    matvec = hvp_fn(lambda z: fun(z, *args), x)

    limit = maxiter or 10 * sum(leaf.size for leaf in jax.tree.leaves(rhs))

    def solve(mv, b):
        return cg(mv, b, rtol=rtol, maxiter=limit).x

    return jax.lax.custom_linear_solve(matvec, rhs, solve=solve, symmetric=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 3, 4))
def _implicit(fun, x_star, args, rtol, maxiter):
    return x_star


@_implicit.defjvp
def _implicit_jvp(fun, rtol, maxiter, primals, tangents):
    x_star, args = primals
    _, dargs = tangents  # x_star carries no derivative of its own: it is a fixed point
    x_star = jax.lax.stop_gradient(x_star)

    def grad_x(a):
        return jax.grad(fun)(x_star, *a)

    _, cross = jax.jvp(grad_x, (args,), (dargs,))
    # Leaves of x that do not depend on args get symbolic-zero tangents, which the
    # transpose of custom_linear_solve rejects (jax-ml/jax#10929): tie every leaf to the
    # tangent through an explicit zero multiple so reverse mode sees a linear function.
    tie = 0.0 * sum(jnp.sum(c) for c in jax.tree.leaves(cross))
    rhs = jax.tree.map(lambda c: -c + tie.astype(c.dtype), cross)
    dx = _solve_hessian_system(fun, x_star, args, rhs, rtol, maxiter)
    return x_star, dx


def implicit_solution(
    fun: Callable[..., jax.Array],
    x_star: PyTree,
    args: tuple,
    *,
    rtol: float = 1e-10,
    maxiter: int | None = None,
) -> PyTree:
    """Return ``x_star`` with the implicit-function-theorem derivative w.r.t. ``args``.

    Args:
      fun: objective ``(x, *args) -> scalar`` that ``x_star`` minimises (``∇ₓf = 0``).
      x_star: the solution, from any solver (its own derivatives are discarded).
      args: the parameters ``θ`` (a tuple of pytrees) to differentiate with respect to.
      rtol: relative residual of the CG solve with the Hessian.
      maxiter: CG iteration limit (default: 10 × the dimension of ``x``: in floating point
        CG needs more than ``n`` steps for a tight residual).

    Returns:
      ``x_star`` unchanged in value; its JVP/VJP w.r.t. ``args`` is
      ``-[∇²ₓₓf]⁻¹ ∇²ₓθ f · dθ``. Accuracy needs ``x_star`` to be a good minimiser and the
      Hessian to be non-singular there.
    """
    return _implicit(fun, jax.lax.stop_gradient(x_star), args, rtol, maxiter)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _value(fun, f_star, x_star, args):
    return f_star


@_value.defjvp
def _value_jvp(fun, primals, tangents):
    f_star, x_star, args = primals
    _, _, dargs = tangents
    x_star = jax.lax.stop_gradient(x_star)
    _, df = jax.jvp(lambda a: fun(x_star, *a), (args,), (dargs,))
    return f_star, df.astype(jnp.result_type(f_star))


def implicit_value(
    fun: Callable[..., jax.Array], f_star: jax.Array, x_star: PyTree, args: tuple
) -> jax.Array:
    """``f_star = f(x*(θ), θ)`` with its derivative w.r.t. ``θ`` attached.

    By the envelope theorem ``d f(x*(θ), θ)/dθ = ∂_θ f(x*, θ)`` (the ``∇ₓf·dx*`` term
    vanishes at a minimiser), so no linear solve is needed. The value itself is not
    recomputed: ``f_star`` is returned as is.
    """
    return _value(fun, jax.lax.stop_gradient(f_star), jax.lax.stop_gradient(x_star), args)
