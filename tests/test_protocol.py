"""The step protocol (jopt.step): a method written outside jopt, in the 40 lines below,
runs under ``jopt.minimize`` with honest counters and statuses, and the loop reads
nothing but the record."""

from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import mgh_problems

import jopt

# Every test here runs under both platform policies (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_platform_policy")

# --- the new method: steepest descent with Armijo backtracking, filling its own record ---
# (begin new method)


def steepest_descent_armijo(c1=1e-4, shrink=0.5, max_steps=50):
    def init(params):
        return jopt.StepRecord.initial(params)

    def update(grads, record, params, *, value, value_fn, **extra):
        slope = -sum(jnp.vdot(g, g) for g in jax.tree.leaves(grads))
        value_and_grad = jax.value_and_grad(value_fn)

        def trial(carry):
            alpha, _, _, k = carry
            f, g = value_and_grad(jax.tree.map(lambda x, d: x - alpha * d, params, grads))
            ok = jnp.isfinite(f) & (f <= value + c1 * alpha * slope)
            return jnp.where(ok, alpha, shrink * alpha), f, g, jnp.where(ok, -k - 1, k + 1)

        def searching(carry):
            return (carry[3] >= 0) & (carry[3] < max_steps)

        alpha, f, g, k = jax.lax.while_loop(
            searching, trial, (jnp.ones_like(value), value, grads, jnp.int32(0)))
        found = k < 0
        step = jnp.where(found, alpha, 0.0)
        record = jopt.StepRecord(
            value=jnp.where(found, f, value),
            grad=jax.tree.map(lambda a, b: jnp.where(found, a, b), g, grads), step=step,
            slope=slope, status=jnp.where(found, 0, 1).astype(jnp.int32),
            reset=jnp.zeros([], bool), work=record.work.add(nfev=jnp.abs(k)))
        return jax.tree.map(lambda d: -step * d, grads), record

    return optax.GradientTransformationExtraArgs(init, update)


# (end new method)


def test_the_new_method_fits_in_40_lines():
    source = pathlib.Path(__file__).read_text().splitlines()
    start = source.index("# (begin new method)")
    end = source.index("# (end new method)")
    code = [line for line in source[start + 1:end] if line.strip()]
    assert len(code) <= 40
    ast.parse("\n".join(source[start + 1:end]))


PROBLEMS = [p for p in mgh_problems() if p.name in (
    "ROSENBROCK-2", "BEALE-2", "HELICAL_VALLEY-3", "WOOD-4", "BROWN_DENNIS-4")]


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_new_method_solves_with_honest_counters(problem):
    calls = []

    def f(x):
        jax.debug.callback(lambda: calls.append(1))
        return problem.fun(x)

    res = jopt.minimize(f, jnp.asarray(problem.x0), method=steepest_descent_armijo(),
                        tol=1e-3, maxiter=200_000)
    jax.effects_barrier()
    assert len(calls) == int(res.nfev) == int(res.njev)
    assert int(res.nhev) == 0
    if bool(res.success):
        g = jax.grad(problem.fun)(res.x)
        assert float(jnp.max(jnp.abs(g))) <= 1e-3
        assert float(res.fun) == pytest.approx(float(problem.fun(res.x)))
        if problem.f_star is not None:
            assert float(res.fun) == pytest.approx(problem.f_star, rel=1e-3, abs=1e-3)
    else:
        assert int(res.status) in (jopt.Status.MAXITER, jopt.Status.PRECISION,
                                   jopt.Status.LINESEARCH_FAILED)
    assert int(res.status) != jopt.Status.NONFINITE


def test_record_accessor_sums_the_work_of_a_chain():
    tx = jopt.newton_cg()
    state = tx.init(jnp.zeros(3))
    record = jopt.step_record(state)
    assert isinstance(record, jopt.StepRecord)
    assert record.work == jopt.Work.zeros()
    assert jopt.step_record(optax.adam(0.1).init(jnp.zeros(3))) is None
    f = lambda x: jnp.sum((x - 1.0) ** 4 + x**2)  # noqa: E731
    x = jnp.zeros(3)
    value, grad = jax.value_and_grad(f)(x)
    _, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=f)
    record = jopt.step_record(state)
    assert int(record.work.nhvp) > 0 and int(record.work.njev) == 1
    assert int(record.work.nfev) == int(state[1].num_trials)
    assert float(record.value) < float(value)


def test_a_failed_step_twice_ends_the_run():
    """A method whose steps always fail: the first failure lets it restart, the second
    ends the run with LINESEARCH_FAILED (or PRECISION at the rounding floor)."""

    def init(params):
        return jopt.StepRecord.initial(params)

    def update(grads, record, params, *, value, **extra):
        failed = record._replace(value=value, grad=grads, status=jnp.int32(1),
                                 slope=-jnp.ones_like(value))
        return jax.tree.map(jnp.zeros_like, grads), failed

    res = jopt.minimize(lambda x: jnp.sum(x**2), jnp.ones(2),
                        method=optax.GradientTransformationExtraArgs(init, update))
    assert int(res.status) == jopt.Status.LINESEARCH_FAILED and int(res.nit) == 2
    np.testing.assert_array_equal(res.x, np.ones(2))
