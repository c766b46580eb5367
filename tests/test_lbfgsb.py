"""L-BFGS-B (jopt.transforms.lbfgsb) against oracles: dense BFGS and two-loop L-BFGS for
the compact form, a brute-force walk of the projected path for the Cauchy point, a dense
reduced solve for the subspace step, scipy's L-BFGS-B on bounded Rosenbrock, and exact
solutions of small bounded quadratics by enumerating active sets (hypothesis).

Full solves run through ``jopt.minimize(..., bounds=...)``; the property test, the
restart and the first-step rule drive the transform with a small ``lax.while_loop``
(below) that records every iterate's distance outside the box, stops on the projected
gradient ``‖P(x − g) − x‖∞`` and after two failed steps in a row, as jopt's loop does.

Run this file (``python tests/test_lbfgsb.py``) for the iteration / evaluation counts
next to scipy's.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import jopt
from jopt.box import projected_gradient
from jopt.linesearch import LineSearchStatus, strong_wolfe_search
from jopt.step import StepStatus
from jopt.transforms.lbfgsb import (
    CompactBFGS,
    LBFGSBState,
    SubspaceKind,
    cauchy_point,
    compact_form,
    free_gram,
    full_bounds,
    gram_blocks,
    lbfgsb,
    store_pair,
    subspace_minimizer,
)
from jopt.transforms.quasi_newton import LBFGSState, lbfgs_direction
from jopt.tree import tree_inf_norm

PyTree = Any

# One transform object per variant, so jopt.minimize compiles each program once.
LBFGSB = lbfgsb()
LBFGSB_TRUNCATED = lbfgsb(subspace_step="truncated")

# ------------------------------------------------------------------------- drivers


class Run(NamedTuple):
    x: PyTree
    f: jax.Array
    g: PyTree
    nit: jax.Array
    nfev: jax.Array
    failures: jax.Array  # failed steps in a row at the end
    violation: jax.Array  # largest distance outside the box of any iterate
    state: LBFGSBState


@functools.cache
def _solver(fun, bounded: bool, options: tuple):
    """``(tx, run)``: the transform and a jitted ``run(x0, state0, lower, upper, tol,
    maxiter, *args) -> Run`` for ``fun(x, *args)`` (``bounded=False``: the box is not
    passed to the transform)."""
    tx = lbfgsb(**dict(options))

    def run(x0, state0, lower, upper, tol, maxiter, *args):
        value_fn = lambda x: fun(x, *args)  # noqa: E731
        box = {"lower": lower, "upper": upper} if bounded else {}
        f0, g0 = jax.value_and_grad(value_fn)(x0)

        def stationarity(x, g):
            if not bounded:
                return tree_inf_norm(g)
            return tree_inf_norm(projected_gradient(x, g, lower, upper))

        def cond(r: Run):
            return (stationarity(r.x, r.g) > tol) & (r.nit < maxiter) & (r.failures < 2)

        def body(r: Run) -> Run:
            updates, state = tx.update(r.g, r.state, r.x, value=r.f, grad=r.g,
                                       value_fn=value_fn, **box)
            x = optax.apply_updates(r.x, updates)
            record = state.record
            failed = record.status == StepStatus.FAILED
            violation = r.violation
            if bounded:
                below = jax.tree.map(jnp.subtract, lower, x)
                above = jax.tree.map(jnp.subtract, x, upper)
                outside = jnp.max(jnp.stack([jnp.max(v) for v in jax.tree.leaves(
                    (below, above))]))
                violation = jnp.maximum(violation, outside)
            return Run(x, record.value, record.grad, r.nit + 1, 1 + record.work.nfev,
                       jnp.where(failed, r.failures + 1, 0), violation, state)

        zero = jnp.zeros([], jnp.int32)
        start = Run(x0, f0, g0, zero, zero + 1, zero, jnp.zeros([], tol.dtype), state0)
        return jax.lax.while_loop(cond, body, start)

    return tx, jax.jit(run)


def solve(fun, x0, lower, upper, args=(), *, tol=1e-10, maxiter=500, bounded=True,
          state=None, **options) -> Run:
    """Run L-BFGS-B on ``fun(x, *args)`` from ``x0`` (and the transform's ``state``, a
    fresh one by default) until ``‖P(x − g) − x‖∞ <= tol``, ``maxiter`` iterations or two
    failed steps in a row (one compiled program per ``fun``, ``bounded``, options, shapes
    and dtypes)."""
    dtype = jnp.result_type(*jax.tree.leaves(x0))
    tx, run = _solver(fun, bounded, tuple(sorted(options.items())))
    strong = lambda v: jax.tree.map(lambda a: jnp.asarray(a, dtype), v)  # noqa: E731
    x0 = strong(x0)
    state = tx.init(x0) if state is None else state
    return run(x0, state, strong(lower), strong(upper), strong(tol),
               jnp.asarray(maxiter, jnp.int32), *(strong(a) for a in args))


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def quadratic(x, a, b, anchor):
    """``½xᵀAx − bᵀx``; with a finite ``anchor``, NaN everywhere except at ``anchor``."""
    keep = jnp.all(jnp.isnan(anchor)) | jnp.all(x == anchor)
    return jnp.where(keep, 0.5 * x @ (a @ x) - b @ x, jnp.nan)


def qp_args(a, b, anchor=None):
    return a, b, np.full(b.shape, np.nan) if anchor is None else anchor


@functools.cache
def _jitted_value_and_grad(fun):
    return jax.jit(jax.value_and_grad(fun))


def scipy_lbfgsb(fun, x0, lower, upper, args=(), gtol=1e-10):
    vg = _jitted_value_and_grad(fun)

    def f(z):
        v, g = vg(jnp.asarray(z), *args)
        return float(v), np.asarray(g)

    bounds = list(zip(np.asarray(lower), np.asarray(upper), strict=True))
    return scipy.optimize.minimize(f, np.asarray(x0), jac=True, method="L-BFGS-B",
                                   bounds=bounds, options={"gtol": gtol, "ftol": 0.0,
                                                           "maxiter": 1000})


def on_bounds(x, lower, upper):
    """``(at_lower, at_upper)``: within a few ulps of the bound. (The loop adds the update,
    ``x + (ℓ − x)``, which cannot always equal ``ℓ`` exactly: the transform lands on the
    bound where some update gets there, else one ulp of the update inside.)"""
    x, lower, upper = (np.asarray(v, np.float64) for v in (x, lower, upper))
    eps = np.finfo(np.asarray(x).dtype).eps
    near = lambda bound: 8 * eps * (1.0 + np.abs(np.where(np.isfinite(bound), bound, 0)))  # noqa: E731
    return x <= lower + near(lower), x >= upper - near(upper)


def assert_kkt(x, g, lower, upper, atol):
    """First-order conditions of the box problem, checked one by one: inside the box,
    zero gradient on free variables, ``g >= 0`` at a lower bound, ``g <= 0`` at an upper."""
    x, g, lower, upper = (np.asarray(v, np.float64) for v in (x, g, lower, upper))
    assert np.all(x >= lower) and np.all(x <= upper)
    at_lower, at_upper = on_bounds(x, lower, upper)
    free = ~at_lower & ~at_upper
    assert np.all(np.abs(g[free]) <= atol), g[free]
    assert np.all(g[at_lower & ~at_upper] >= -atol)
    assert np.all(g[at_upper & ~at_lower] <= atol)


# -------------------------------------------------------------- the compact form


UNIT_N, UNIT_M = 6, 3  # the unit tests' sizes (one compiled program each)
_store = jax.jit(store_pair, static_argnums=4)
_compact = jax.jit(compact_form)


def state_with_pairs(n: int, memory: int, num: int, seed: int) -> tuple[LBFGSBState, list]:
    """A state after ``num`` random pairs with ``sᵀy > 0`` (more than ``memory`` wraps the
    ring buffer), and the pairs kept, oldest first."""
    rng = np.random.default_rng(seed)
    state = lbfgsb(memory).init(jnp.zeros(n))
    pairs = []
    for _ in range(num):
        s = rng.standard_normal(n)
        q = rng.standard_normal((n, n))
        y = (q @ q.T + n * np.eye(n)) @ s / n  # sᵀy > 0
        state = _store(state, jnp.asarray(s), jnp.asarray(y), jnp.asarray(True), memory)
        pairs = [*pairs, (s, y)][-memory:]
    return state, pairs


def dense_bfgs(theta: float, pairs: list) -> np.ndarray:
    """``B`` by the BFGS recursion from ``θI`` over the pairs in order (N&W eq. 6.19)."""
    n = pairs[0][0].size
    b = theta * np.eye(n)
    for s, y in pairs:
        bs = b @ s
        b = b - np.outer(bs, bs) / (s @ bs) + np.outer(y, y) / (y @ s)
    return b


@pytest.mark.parametrize("num", [1, 3, 5])
def test_compact_form_matches_dense_bfgs(num):
    """``θI − W M Wᵀ`` from the ring buffer (3 slots; 5 pairs wrap it) equals the BFGS
    recursion from ``θI`` over the last 3 pairs, θ from the newest pair."""
    state, pairs = state_with_pairs(n=UNIT_N, memory=UNIT_M, num=num, seed=num)
    s, y = pairs[-1]
    theta = (y @ y) / (s @ y)
    np.testing.assert_allclose(float(state.theta), theta, rtol=1e-14)
    form = _compact(state)
    np.testing.assert_allclose(np.asarray(form.dense()), dense_bfgs(theta, pairs),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("changes", [0, 1, 2, 5])
def test_free_set_changes_update_the_gram_blocks(changes):
    """``free_gram`` with a cap of 2: zero to two variables entering or leaving the free
    set give a low-rank update, five the full product; both equal the dense products
    for the new set."""
    state, _ = state_with_pairs(UNIT_N, UNIT_M, 4, seed=3)
    rng = np.random.default_rng(changes)
    old = rng.random(UNIT_N) < 0.5
    new = old.copy()
    new[rng.choice(UNIT_N, changes, replace=False)] ^= True
    blocks = gram_blocks(state.y_history, state.s_history, jnp.asarray(old, jnp.float64))
    state = state._replace(free=jnp.asarray(old), zyy=blocks[0], zsy=blocks[1],
                           zss=blocks[2])
    got = _free_gram(state, jnp.asarray(new))
    y, s = np.asarray(state.y_history), np.asarray(state.s_history)
    z = new.astype(np.float64)
    dense = ((y * z) @ y.T, s @ (y * z).T, (s * z) @ s.T)
    for kept, ref in zip(got, dense, strict=True):
        np.testing.assert_allclose(np.asarray(kept), ref, rtol=0, atol=1e-12 * (
            1 + np.abs(ref).max()))


_free_gram = jax.jit(functools.partial(free_gram, changes=2))


def test_unbounded_direction_is_the_two_loop_lbfgs_direction():
    """Without bounds the subspace point is ``x − B⁻¹g``: the L-BFGS two-loop direction
    with ``H₀ = (1/θ)I`` and the same pairs."""
    from jopt.transforms.lbfgsb import lbfgsb_direction

    n, m = UNIT_N, UNIT_M
    state, pairs = state_with_pairs(n=n, memory=m, num=5, seed=0)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(n))
    x = jnp.zeros(n)
    inf = jnp.full(n, jnp.inf)
    d = jax.jit(lbfgsb_direction, static_argnums=5)(x, g, -inf, inf, state, True)
    assert int(d.kind) == SubspaceKind.PROJECTED
    s_hist = jnp.asarray(np.stack([p[0] for p in pairs]))
    y_hist = jnp.asarray(np.stack([p[1] for p in pairs]))
    rho = 1.0 / jnp.sum(s_hist * y_hist, axis=1)
    two_loop = LBFGSState(count=jnp.asarray(1), s_history=s_hist, y_history=y_hist, rho=rho,
                          head=jnp.asarray(0), gamma=1.0 / state.theta, prev_params=x,
                          prev_grad=x)
    expected = jax.jit(lbfgs_direction, static_argnums=2)(g, two_loop, m)
    np.testing.assert_allclose(np.asarray(d.d), np.asarray(expected), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------- the Cauchy point


def brute_force_cauchy(x, g, lower, upper, b):
    """First local minimizer of ``q(t) = m(P(x − t g))`` with a dense ``B``: walk the
    segments between sorted breakpoints, each a quadratic in ``t`` evaluated directly."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(g < 0, (x - upper) / g, np.where(g > 0, (x - lower) / g, np.inf))
    t = np.maximum(t, 0.0)
    knots = np.unique(np.concatenate([[0.0], t[np.isfinite(t)]]))
    knots = np.append(knots, np.inf)
    for t0, t1 in itertools.pairwise(knots):
        d = np.where(t > t0, -g, 0.0)  # the path's direction on (t0, t1)
        z = np.clip(x - t0 * g, lower, upper) - x
        slope = g @ d + z @ b @ d
        curv = d @ b @ d
        if slope >= 0:
            return t0
        if curv > 0 and t0 - slope / curv < t1:
            return t0 - slope / curv
    raise AssertionError("model unbounded along the path")


def model_along_path(x, g, lower, upper, b, ts):
    z = np.clip(x[None, :] - ts[:, None] * g[None, :], lower, upper) - x[None, :]
    return z @ g + 0.5 * np.einsum("ti,ij,tj->t", z, b, z)


@pytest.mark.parametrize("seed", range(6))
def test_cauchy_point_is_the_first_minimizer_along_the_projected_path(seed):
    rng = np.random.default_rng(seed)
    n = UNIT_N
    state, _ = state_with_pairs(n=n, memory=UNIT_M, num=2 + seed % 3, seed=seed + 10)
    form = _compact(state)
    b = np.asarray(form.dense())
    lower = -rng.uniform(0.0, 1.0, n)
    upper = rng.uniform(0.0, 1.0, n)
    lower[0], upper[1] = -np.inf, np.inf  # a missing bound of each kind
    x = rng.uniform(np.maximum(lower, -1.0), np.minimum(upper, 1.0))
    x[2] = lower[2]  # a variable on its bound (held if g pushes it out)
    x[3] = upper[3]
    g = 3.0 * rng.standard_normal(n)
    xc, t_star = jax.jit(cauchy_point)(*(jnp.asarray(v) for v in (x, g, lower, upper)),
                                       form)
    t_ref = brute_force_cauchy(x, g, lower, upper, b)
    np.testing.assert_allclose(float(t_star), t_ref, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(xc), np.clip(x - t_ref * g, lower, upper),
                               rtol=1e-9, atol=1e-12)
    # Independently: the model falls monotonically along the path up to t*.
    ts = np.linspace(0.0, t_ref, 201)
    q = model_along_path(x, g, lower, upper, b, ts)
    assert np.all(np.diff(q) <= 1e-12 * np.max(np.abs(q)))


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_cauchy_walk_in_chunks_passes_ties_and_many_breakpoints(chunk):
    """The chunked walk (``chunk`` breakpoints per pass) against the brute-force walk on
    a path with many breakpoints, a third of them tied (equal ``tᵢ``)."""
    rng = np.random.default_rng(chunk)
    n = 40
    state, _ = state_with_pairs(n=n, memory=UNIT_M, num=3, seed=7)
    form = _compact(state)
    b = np.asarray(form.dense())
    x = rng.uniform(-0.5, 0.5, n)
    g = rng.standard_normal(n)
    # Boxes the walk passes about half of; every third breakpoint is t = 0.05.
    reach = rng.uniform(0.001, 1.0, n)
    reach[::3] = 0.05
    lower = np.where(g > 0, x - reach * g, -np.inf)
    upper = np.where(g < 0, x - reach * g, np.inf)
    xc, t_star = jax.jit(cauchy_point, static_argnums=5)(
        *(jnp.asarray(v) for v in (x, g, lower, upper)), form, chunk)
    t_ref = brute_force_cauchy(x, g, lower, upper, b)
    passed = np.sum(reach <= t_ref)
    assert 5 < passed < n and passed > 3 * min(chunk, 5)  # (several passes, stops inside)
    np.testing.assert_allclose(float(t_star), t_ref, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(xc), np.clip(x - t_ref * g, lower, upper),
                               rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------ subspace minimization


@pytest.mark.parametrize("num_free", [0, 3, UNIT_N])
def test_subspace_step_solves_the_reduced_system(num_free):
    """``d̂`` on the free variables solves ``B_FF d = −(g + B(xᶜ − x))_F`` (dense), zero
    elsewhere (the Woodbury formula vs a dense solve)."""
    rng = np.random.default_rng(num_free)
    n = UNIT_N
    state, _ = state_with_pairs(n=n, memory=UNIT_M, num=5, seed=3)
    form = _compact(state)
    b = np.asarray(form.dense())
    x, xc, g = (rng.standard_normal(n) for _ in range(3))
    free = np.zeros(n, bool)
    free[rng.permutation(n)[:num_free]] = True
    du = jax.jit(subspace_minimizer)(*(jnp.asarray(v) for v in (x, g, xc, free)), form)
    expected = np.zeros(n)
    r = g + b @ (xc - x)
    if num_free:
        expected[free] = np.linalg.solve(b[np.ix_(free, free)], -r[free])
    np.testing.assert_allclose(np.asarray(du), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("du, projected, kind, point", [
    ([0.2, 0.1], True, SubspaceKind.PROJECTED, [0.8, 0.55]),  # inside: the full step
    ([10.0, 2.0], True, SubspaceKind.TRUNCATED, [1.0, 0.53]),  # P(xᶜ + d̂) not descent
    ([10.0, 2.0], False, SubspaceKind.TRUNCATED, [1.0, 0.53]),  # the paper's variant
    ([-10.0, 2.0], True, SubspaceKind.CAUCHY, [0.6, 0.45]),  # d̂ uphill: xᶜ
])
def test_subspace_point_falls_back_from_projection_to_truncation_to_cauchy(
        du, projected, kind, point):
    """Morales & Nocedal's projection is kept when it gives a descent direction from x;
    else the largest feasible fraction of d̂ (here α* = 0.04); else the Cauchy point."""
    from jopt.transforms.lbfgsb import subspace_point

    x, g, xc = jnp.asarray([0.5, 0.5]), jnp.asarray([-1.0, 1.0]), jnp.asarray([0.6, 0.45])
    lower, upper = jnp.zeros(2), jnp.ones(2)
    got, code = jax.jit(subspace_point, static_argnums=6)(x, g, xc, jnp.asarray(du), lower,
                                                          upper, projected)
    assert int(code) == kind
    np.testing.assert_allclose(np.asarray(got), point, rtol=1e-12)


def test_no_descent_direction_is_reported():
    from jopt.transforms.lbfgsb import subspace_point

    x = jnp.asarray([0.5, 0.5])
    got, code = subspace_point(x, jnp.zeros(2), x, jnp.zeros(2), jnp.zeros(2), jnp.ones(2),
                               True)
    assert int(code) == SubspaceKind.NONE
    np.testing.assert_array_equal(np.asarray(got), np.asarray(x))


# ------------------------------------------------------------------ full solves

ROSEN_N = 6
# The box cuts through the minimizer (1, …, 1): x₀ ends on its upper bound, x₃ on its lower.
ROSEN_LOWER = np.array([-2.0, -2.0, -2.0, 0.3, -2.0, -2.0])
ROSEN_UPPER = np.array([0.7, 2.0, 2.0, 2.0, 2.0, 2.0])
ROSEN_STARTS = {"zeros": [0.0, 0.0, 0.0, 0.3, 0.0, 0.0],
                "halves": [0.5] * ROSEN_N,
                "classic": [-1.2, 1.0, -1.2, 1.0, -1.2, 1.0]}


@pytest.mark.parametrize("start", sorted(ROSEN_STARTS))
def test_bounded_rosenbrock_matches_scipy(start):
    x0 = jnp.asarray(ROSEN_STARTS[start])
    res = jopt.minimize(rosenbrock, x0, method=LBFGSB, bounds=(ROSEN_LOWER, ROSEN_UPPER),
                        tol=1e-10)
    ref = scipy_lbfgsb(rosenbrock, x0, ROSEN_LOWER, ROSEN_UPPER)
    assert bool(res.success)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(float(res.fun), ref.fun, rtol=1e-10)
    ref_active = (ref.x <= ROSEN_LOWER) | (ref.x >= ROSEN_UPPER)
    np.testing.assert_array_equal(np.flatnonzero(ref_active), [0, 3])
    at_lower, at_upper = on_bounds(res.x, ROSEN_LOWER, ROSEN_UPPER)
    np.testing.assert_array_equal(at_lower | at_upper, ref_active)
    assert_kkt(res.x, jax.grad(rosenbrock)(res.x), ROSEN_LOWER, ROSEN_UPPER, atol=1e-9)
    # Work comparable with scipy's (see the table printed by running this file).
    assert int(res.nit) <= 1.5 * ref.nit and int(res.nfev) <= 1.5 * ref.nfev


def test_without_bounds_it_is_lbfgs():
    """No bounds (``lower = upper = None`` in every update) and ``±inf`` bounds (the
    bounded program): no breakpoints, every variable free, and the method is L-BFGS —
    it solves unbounded Rosenbrock with scipy's work."""
    x0 = jnp.asarray(ROSEN_STARTS["classic"])
    inf = np.full(ROSEN_N, np.inf)
    ref = scipy_lbfgsb(rosenbrock, x0, -inf, inf)
    for bounds in (None, (-inf, inf)):
        res = jopt.minimize(rosenbrock, x0, method=LBFGSB, bounds=bounds, tol=1e-10)
        assert bool(res.success)
        np.testing.assert_allclose(np.asarray(res.x), np.ones(ROSEN_N), rtol=1e-8)
        assert int(res.nit) <= 1.5 * ref.nit and int(res.nfev) <= 1.5 * ref.nfev


def test_missing_bounds_are_infinite_bounds():
    """``lower``/``upper`` of ``None`` become ``∓inf`` leaves shaped like the parameters
    (all the update does with them), and a number broadcasts."""
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros([], jnp.float32)}
    lower, upper = full_bounds(params, None, None)
    for lo, hi, p in zip(jax.tree.leaves(lower), jax.tree.leaves(upper),
                         jax.tree.leaves(params), strict=True):
        assert lo.shape == hi.shape == p.shape and lo.dtype == hi.dtype == p.dtype
        assert np.all(np.asarray(lo) == -np.inf) and np.all(np.asarray(hi) == np.inf)
    lower, upper = full_bounds(params, {"a": 0.0, "b": -1.0}, None)
    assert lower["a"].shape == (2, 3) and float(lower["b"]) == -1.0
    assert np.all(np.asarray(upper["a"]) == np.inf)


def active_set_solution(a: np.ndarray, b: np.ndarray, lower: np.ndarray, upper: np.ndarray
                        ) -> np.ndarray:
    """The minimizer of ``½xᵀAx − bᵀx`` on the box (A SPD): the unique KKT point, found by
    trying every assignment of the variables to lower bound / upper bound / free."""
    n = b.size
    for choice in itertools.product((0, 1, 2), repeat=n):
        choice = np.asarray(choice)
        if np.any((choice == 0) & ~np.isfinite(lower)) or np.any(
                (choice == 1) & ~np.isfinite(upper)):
            continue
        x = np.where(choice == 0, lower, np.where(choice == 1, upper, 0.0))
        free = choice == 2
        fixed = ~free
        x[~np.isfinite(x)] = 0.0
        if free.any():
            rhs = b[free] - a[np.ix_(free, fixed)] @ x[fixed]
            x[free] = np.linalg.solve(a[np.ix_(free, free)], rhs)
        g = a @ x - b
        tol = 1e-10 * (1.0 + np.abs(b).max())
        if (np.all(x >= lower - tol) and np.all(x <= upper + tol)
                and np.all(np.abs(g[free]) <= tol) and np.all(g[choice == 0] >= -tol)
                and np.all(g[choice == 1] <= tol)):
            return x
    raise AssertionError("no KKT point found")


QP_N = 4


def random_qp(seed: int, dtype=np.float64):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((QP_N, QP_N))
    a = q @ q.T + 0.1 * np.eye(QP_N)
    b = 3.0 * rng.standard_normal(QP_N)
    lower = rng.uniform(-2.0, 0.5, QP_N)
    upper = lower + rng.uniform(0.0, 2.0, QP_N)
    lower[rng.uniform(size=QP_N) < 0.25] = -np.inf
    upper[rng.uniform(size=QP_N) < 0.25] = np.inf
    x0 = np.clip(rng.standard_normal(QP_N), lower, upper)
    return tuple(np.asarray(v, dtype) for v in (a, b, lower, upper, x0))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_bounded_quadratics_reach_the_exact_solution(seed):
    """Every iterate stays in the box, and the run ends either with ``‖P(x − g) − x‖∞``
    below 1e-10 or, after two failed searches, at the rounding floor of ``f`` (the
    predicted decrease ``|gᵀd|`` within ``100 eps |f|``: jopt's loop reports PRECISION
    there; ``f = ½xᵀAx − bᵀx`` cancels, so that floor can hold ``‖g‖`` near 1e-8).
    Then ``x`` is the exact solution to ``‖P(x − g) − x‖∞ / λ_min(A)``."""
    a, b, lower, upper, x0 = random_qp(seed)
    run = solve(quadratic, x0, lower, upper, qp_args(a, b))
    assert float(run.violation) <= 0.0
    x = np.asarray(run.x)
    g = a @ x - b
    pg = np.abs(np.clip(x - g, lower, upper) - x).max()
    record = run.state.record
    at_precision = int(run.failures) == 2 and abs(float(record.slope)) <= (
        100 * np.finfo(np.float64).eps * abs(float(run.f)))
    assert pg <= 1e-10 or at_precision, (pg, int(run.failures), float(record.slope))
    exact = active_set_solution(a, b, lower, upper)
    scale = 1.0 + np.abs(exact).max()
    tol = max(pg, 1e-10) / np.linalg.eigvalsh(a)[0]  # A's smallest eigenvalue ≥ 0.1
    np.testing.assert_allclose(x, exact, atol=2 * tol * scale)
    assert_kkt(x, g, lower, upper, atol=2 * max(pg, 1e-10) * scale)
    ref = scipy_lbfgsb(quadratic, x0, lower, upper, qp_args(a, b))
    np.testing.assert_allclose(x, ref.x, atol=1e-6 * scale)
    assert_blocks_are_the_products(run.state)


def assert_blocks_are_the_products(state: LBFGSBState) -> None:
    """The state's ``YᵀZY``, ``SᵀZY``, ``SᵀZS`` (kept up to date across free-set changes
    and new pairs) equal the products made afresh, in float64 NumPy."""
    y, s = np.asarray(state.y_history), np.asarray(state.s_history)
    z = np.asarray(state.free, np.float64)
    dense = ((y * z) @ y.T, s @ (y * z).T, (s * z) @ s.T)
    for kept, ref in zip((state.zyy, state.zsy, state.zss), dense, strict=True):
        scale = 1.0 + np.abs(ref).max()
        np.testing.assert_allclose(np.asarray(kept), ref, rtol=0, atol=1e-12 * scale)


def test_vmap_over_starts_and_bounds():
    """One batched solve over starting points and boxes reaches each member's exact
    solution. (It runs the paper's backtracking variant, ``subspace_step="truncated"``;
    the other tests run the default projection.)"""
    problems = [random_qp(200 + i) for i in range(4)]
    a, b = problems[0][0], problems[0][1]
    lower, upper, x0 = (jnp.asarray(np.stack([p[k] for p in problems])) for k in (2, 3, 4))

    def one(x0, lower, upper):
        return jopt.minimize(quadratic, x0, qp_args(a, b), method=LBFGSB_TRUNCATED,
                             bounds=(lower, upper), tol=1e-10)

    batched = jax.vmap(one)(x0, lower, upper)
    assert np.all(np.asarray(batched.success))
    for i in range(len(problems)):
        exact = active_set_solution(a, b, np.asarray(lower[i]), np.asarray(upper[i]))
        x = np.asarray(batched.x[i])
        np.testing.assert_allclose(x, exact, atol=1e-8 * (1.0 + np.abs(exact).max()))
        assert np.all(x >= np.asarray(lower[i])) and np.all(x <= np.asarray(upper[i]))


def split(v):
    """A 4-vector as a pytree ``{"u": v[:3], "w": v[3]}``."""
    return {"u": v[:3], "w": v[3]}


def quadratic_tree(x, a, b, anchor):
    return quadratic(jnp.concatenate([x["u"], x["w"][None]]), a, b, anchor)


def test_float32_pytree():
    """float32 parameters in a pytree (a vector and a scalar leaf, bounds alike): the
    result keeps the dtype; the pair test and searches scale with its eps."""
    a, b, lower, upper, x0 = random_qp(7, np.float32)
    res = jopt.minimize(quadratic_tree, split(x0), qp_args(a, b), method=LBFGSB,
                        bounds=(split(lower), split(upper)), tol=1e-4)
    assert bool(res.success)
    assert res.x["u"].dtype == res.x["w"].dtype == jnp.float32
    exact = active_set_solution(*(np.asarray(v, np.float64) for v in (a, b, lower, upper)))
    x = np.append(np.asarray(res.x["u"]), np.asarray(res.x["w"]))
    np.testing.assert_allclose(x, exact, atol=1e-3)
    assert np.all(x >= lower) and np.all(x <= upper)
    pg = projected_gradient(res.x, res.jac, split(lower), split(upper))
    assert float(tree_inf_norm(pg)) <= 1e-4


def test_first_step_is_capped_at_one_with_an_empty_memory():
    """A linear objective: with an empty memory and finite bounds the search may not go
    past ``α_max = 1`` (scipy's first-iteration rule); the step ends at the box's face
    along the projected path (x − g clipped), a feasible point."""
    c = np.array([1.0, -2.0, 0.5, 0.0])
    x0, lower, upper = np.full(QP_N, 5.0), np.zeros(QP_N), np.full(QP_N, 6.0)
    run = solve(quadratic, x0, lower, upper, qp_args(np.zeros((QP_N, QP_N)), -c), tol=0.0,
                maxiter=1)
    np.testing.assert_allclose(np.asarray(run.x), [4.0, 6.0, 4.5, 5.0])
    state = run.state
    assert int(state.record.status) == StepStatus.ACCEPTED
    assert int(state.linesearch_status) == LineSearchStatus.DECREASE_ONLY
    assert int(state.subspace_kind) == SubspaceKind.PROJECTED


def test_failed_search_takes_no_step_and_restarts():
    """No finite value anywhere but at the current point: a zero update, status FAILED,
    the evaluations counted and the memory cleared (the next update restarts from
    ``B = I``); it fails again and the driver stops, as jopt's loop does."""
    a, b, lower, upper, x0 = random_qp(3)
    warm = solve(quadratic, x0, lower, upper, qp_args(a, b), tol=0.0, maxiter=3)
    assert int(warm.state.num_pairs) >= 2 and int(warm.failures) == 0
    stuck = qp_args(a, b, anchor=warm.x)
    once = solve(quadratic, warm.x, lower, upper, stuck, tol=0.0, maxiter=1,
                 state=warm.state)
    np.testing.assert_array_equal(np.asarray(once.x), np.asarray(warm.x))
    record = once.state.record
    assert int(record.status) == StepStatus.FAILED and float(record.step) == 0.0
    np.testing.assert_allclose(float(record.value), float(warm.f), rtol=1e-15)  # (f(x))
    assert int(once.state.num_pairs) == 0 and float(once.state.theta) == 1.0
    trials = int(record.work.nfev) - int(warm.state.record.work.nfev)
    assert 1 <= trials <= 20  # max_linesearch_steps
    twice = solve(quadratic, warm.x, lower, upper, stuck, tol=0.0, maxiter=10,
                  state=warm.state)
    assert int(twice.nit) == 2 and int(twice.failures) == 2


def test_search_is_capped_at_max_step():
    """``strong_wolfe_search(max_step=…)``: along a line no trial passes the cap and the
    search ends there; an infinite cap is the unbounded search."""
    trials = []

    def evaluate(a):
        jax.debug.callback(lambda v: trials.append(float(v)), a)
        return -a, -jnp.ones_like(a), jnp.zeros(1)

    one = jnp.asarray(1.0)
    args = (evaluate, jnp.asarray(0.0), -one, jnp.zeros(1), one)
    kw = {"c1": 1e-4, "c2": 0.9, "max_steps": 10, "approx_wolfe": True}
    step, value, _, status, n = strong_wolfe_search(*args, **kw, max_step=jnp.asarray(12.0))
    assert trials == [1.0, 5.0, 12.0] and float(step) == 12.0 and int(n) == 3
    assert int(status) == LineSearchStatus.DECREASE_ONLY and float(value) == -12.0
    trials.clear()
    unbounded = strong_wolfe_search(*args, **kw)
    trials_unbounded = list(trials)
    trials.clear()
    infinite = strong_wolfe_search(*args, **kw, max_step=jnp.asarray(jnp.inf))
    assert trials == trials_unbounded
    for u, v in zip(unbounded, infinite, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_compact_form_type():
    state, _ = state_with_pairs(n=UNIT_N, memory=UNIT_M, num=1, seed=0)
    form = _compact(state)
    assert isinstance(form, CompactBFGS) and form.wt.shape == (2 * UNIT_M, UNIT_N)
    assert bool(form.ok)


if __name__ == "__main__":  # the iteration / evaluation comparison with scipy
    jax.config.update("jax_enable_x64", True)  # (as tests/conftest.py does)
    for name, start in sorted(ROSEN_STARTS.items()):
        x0 = jnp.asarray(start)
        r = jopt.minimize(rosenbrock, x0, method=LBFGSB, bounds=(ROSEN_LOWER, ROSEN_UPPER),
                          tol=1e-10)
        ref = scipy_lbfgsb(rosenbrock, x0, ROSEN_LOWER, ROSEN_UPPER)
        print(f"rosenbrock {name:8s} jopt nit {int(r.nit):3d} nfev {int(r.nfev):3d}   "
              f"scipy nit {ref.nit:3d} nfev {ref.nfev:3d}")
    for seed in range(10):
        a, b, lower, upper, x0 = random_qp(seed)
        r = jopt.minimize(quadratic, x0, qp_args(a, b), method=LBFGSB,
                          bounds=(lower, upper), tol=1e-10)
        ref = scipy_lbfgsb(quadratic, x0, lower, upper, qp_args(a, b))
        print(f"qp seed {seed}       jopt nit {int(r.nit):3d} nfev {int(r.nfev):3d}   "
              f"scipy nit {ref.nit:3d} nfev {ref.nfev:3d}")
