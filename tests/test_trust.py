"""What jopt guarantees beyond right answers: bounded memory, thread safety, and errors
that name the argument at fault."""

from __future__ import annotations

import gc
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt._platform import programs
from jopt.solve import api


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------------------- memory


def _solve_with_a_closure(i: int, method: str) -> None:
    big = jnp.asarray(np.full(16 * 2**20, float(i), np.float32))  # 64 MB captured
    res = jopt.minimize(lambda x: jnp.sum((x - big[:3]) ** 2), jnp.zeros(3, jnp.float32),
                        method=method)
    assert np.allclose(res.x, i, atol=1e-3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.filterwarnings("ignore:jopt.minimize was given")
def test_dropped_closures_do_not_stay_alive_in_the_program_store():
    """10 closures over 64 MB arrays, each solved then dropped: resident memory grows by
    at most 256 MB (the store held all 10, 640 MB, when it kept objectives strongly)."""
    _solve_with_a_closure(0, "lbfgs")
    gc.collect()
    before = _rss_mib()
    for i in range(1, 11):
        _solve_with_a_closure(i, "cg" if i % 2 else "lbfgs")
    gc.collect()
    assert _rss_mib() - before <= 256


def test_a_dropped_objective_takes_its_programs_and_fast_calls_with_it():
    def make(c):
        return lambda x: jnp.sum((x - c) ** 2)

    fun = make(2.0)
    jopt.minimize(fun, jnp.zeros(2))
    jopt.minimize(fun, jnp.zeros(2))  # (the second call goes through the fast path)
    alive = [p for ps in programs._PROXIES.values() for p in ps if p.alive]
    assert any(p._ref() is fun for p in alive)
    assert any(key[0] == programs.weakly(fun) for key in api._FAST._items)
    del fun
    gc.collect()
    assert all(p.alive for ps in programs._PROXIES.values() for p in ps)
    assert all(all(p.alive for p in programs._proxies_in(key, 1)) for key in api._FAST._items)


def test_a_bound_method_objective_is_held_weakly_but_reused_while_its_object_lives():
    class Model:
        def __init__(self, c):
            self.c = c

        def loss(self, x):
            return jnp.sum((x - self.c) ** 2)

    model = Model(3.0)
    jopt.minimize(model.loss, jnp.zeros(2))
    held = programs.held_programs()
    gc.collect()  # a bound method is a new object each access: the weak proxy must not die
    res = jopt.minimize(model.loss, jnp.zeros(2))
    assert programs.held_programs() == held
    np.testing.assert_allclose(res.x, 3.0, atol=1e-5)


def test_weak_callable_compares_as_its_function_and_a_dead_one_only_to_itself():
    def f(x):
        return x

    a, b = programs.weakly(f), programs.weakly(f)
    assert a == b and hash(a) == hash(b) and a(2) == 2
    g = lambda x: x  # noqa: E731
    c = programs.weakly(g)
    del g
    gc.collect()
    assert not c.alive and c == c and c != a
    with pytest.raises(RuntimeError, match="garbage-collected"):
        c(1)

    class Slotted:  # no __weakref__ slot: cannot be weakly referenced, so held as it is
        __slots__ = ()

        def __call__(self, x):
            return x

    h = Slotted()
    assert programs.weakly(h) is h
    assert programs.weakly(3) == 3  # not callable: unchanged


# ----------------------------------------------------------------------- threads


def _objectives():
    def quad(x, c):
        return jnp.sum((x - c) ** 2)

    def quartic(x, c):
        return jnp.sum((x - c) ** 4) + jnp.sum((x - c) ** 2)

    def shifted(x, c):
        return jnp.sum(jnp.cosh(x - c))

    return [quad, quartic, shifted]


def test_eight_threads_solving_at_once_get_right_answers_and_no_exception():
    """8 threads × 200 solves over 3 objectives × 3 shapes × 2 methods with new ``args``
    each time: every cache (fast calls, programs, per-objective facts, the closure tracker)
    is shared and hammered; each answer is checked against the closed form x* = c."""
    funs = _objectives()
    shapes = [(2,), (3,), (2, 2)]
    methods = ["lbfgs", "bfgs"]
    errors: list[BaseException] = []
    wrong: list[tuple] = []
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        rng = np.random.default_rng(t)
        barrier.wait()
        for i in range(200):
            fun = funs[(t + i) % 3]
            shape = shapes[(t * 7 + i) % 3]
            c = jnp.asarray(rng.uniform(-2, 2), jnp.float64)
            try:
                res = jopt.minimize(fun, jnp.zeros(shape), (c,), method=methods[i % 2],
                                    tol=1e-8)
                if not (bool(res.success) and np.allclose(res.x, c, atol=1e-5)):
                    wrong.append((t, i, fun.__name__, res.status))
            except BaseException as err:
                errors.append(err)
                return

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert not wrong, wrong[:5]


def test_program_store_eviction_under_threads_keeps_the_store_consistent(monkeypatch):
    """A store of 4 slots shared by 4 threads compiling 12 distinct programs: every
    eviction races with lookups; no KeyError, and the bound holds."""
    monkeypatch.setattr(programs, "MAX_PROGRAMS", 4)
    jitted = programs.BoundedJit(lambda k, x: x * k, 1)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(60):
                k = float((t + i) % 12)
                assert float(jitted(k, jnp.asarray(2.0))) == 2 * k
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert programs.held_programs() <= 4


# ------------------------------------------------------------------ clear errors


def _plus_seven(x):
    return jnp.sum(x ** 2) + 7.0


@pytest.mark.parametrize("method", jopt.method_names())
def test_zero_size_x0_is_converged_at_once_by_every_method(method):
    """Nothing to minimize: ∇f has no entries, so ‖∇f‖∞ = 0 <= tol (newton-cg and
    trust-ncg said "`maxiter` must be >= 1", newton raised an IndexError)."""
    res = jopt.minimize(_plus_seven, jnp.zeros(0), method=method)
    assert bool(res.success) and int(res.nit) == 0 and float(res.fun) == 7.0


def test_args_that_do_not_fit_the_objective_are_named():
    with pytest.raises(TypeError, match=r"`args`.*float64\[4\]") as info:
        jopt.minimize(lambda x, a: jnp.sum((x - a) ** 2), jnp.zeros(3), (jnp.ones(4),))
    assert "incompatible shapes" in str(info.value)  # the objective's own error is kept


def test_an_error_from_elsewhere_is_not_blamed_on_args():
    with pytest.raises(ValueError, match="tol") as info:
        jopt.minimize(lambda x: jnp.sum(x ** 2), jnp.zeros(3), tol=-1.0)
    assert "args" not in str(info.value)


def test_the_failed_step_status_does_not_speak_of_a_line_search():
    """trust-ncg has no line search; status 2's text covers both kinds of step."""
    assert jopt.Status.LINESEARCH_FAILED is jopt.Status.STEP_FAILED
    text = jopt.Status.MESSAGES[jopt.Status.STEP_FAILED]
    assert "trust region" in text and not text.startswith("Line search failed")


def test_half_precision_newton_decomposes_in_float32():
    """LAPACK has no float16 eigh (jopt raised NotImplementedError): the result keeps
    float16."""
    for dtype in (jnp.float16, jnp.bfloat16):
        res = jopt.minimize(lambda x: jnp.sum((x - 1.5) ** 2), jnp.zeros(2, dtype),
                            method="newton", tol=1e-2)
        assert res.x.dtype == dtype and bool(res.success)
        np.testing.assert_allclose(np.asarray(res.x, np.float32), 1.5, atol=1e-2)


def test_a_tolerance_beyond_the_dtype_range_is_inf_without_a_warning():
    res = jopt.minimize(lambda x: jnp.sum(x ** 2), jnp.ones(2, jnp.float16), tol=1e30)
    assert bool(res.success) and int(res.nit) == 0


def test_jit_over_a_concrete_nan_tolerance_is_never_success():
    f = lambda x: jnp.sum((x - 1) ** 2) + 7  # noqa: E731
    res = jax.jit(lambda t: jopt.minimize(f, jnp.full(3, 5.0), tol=t))(jnp.nan)
    assert not bool(res.success)
    np.testing.assert_allclose(float(res.fun), float(f(res.x)), rtol=1e-6)


def test_minimize_many_names_args_that_do_not_fit():
    with pytest.raises(TypeError, match=r"`x0s` and `args`.*float64\[4\]"):
        jopt.minimize_many(lambda x, c: jnp.sum(x * c), jnp.zeros((2, 3)), (jnp.ones(4),))


def test_a_custom_vjp_objective_with_a_newton_method_says_what_to_do():
    @jax.custom_vjp
    def square(x):
        return jnp.sum(x ** 2)

    square.defvjp(lambda x: (square(x), x), lambda x, g: (2 * g * x,))
    assert bool(jopt.minimize(square, jnp.ones(2), method="lbfgs").success)
    with pytest.raises(TypeError, match=r"`fun`.*custom_vjp.*custom_jvp"):
        jopt.minimize(square, jnp.ones(2), method="newton")


def _shifted_quadratic(x, c):
    return jnp.sum((x - c) ** 2) + 7.0


@pytest.mark.parametrize("method", ["cg", "lbfgs", "bfgs", "newton-cg"])
def test_reported_fun_is_f_at_the_returned_x_even_when_the_step_cancels(method):
    """From x0 = 1e30 one line-search step lands near 1e15: x + α·d cancels, and a fused
    multiply-add in the search (one rounding) against the loop's x + (α·d) (two) gave
    different points, fun = 1.77e30 reported for an x where f is 1.60e30 (found by the
    fuzz test)."""
    res = jopt.minimize(_shifted_quadratic, jnp.asarray(1e30), (1.0,), method=method,
                        tol=1e30, ftol=1e-12, xtol=1e-9, maxiter=7)
    assert float(res.fun) == float(_shifted_quadratic(res.x, 1.0))
