"""The bounded store of compiled programs (jopt._platform.programs): solving many distinct
objectives in one process must not keep every compiled program alive (it once ended in a
segmentation fault after ~430 objectives, when XLA:CPU ran out of memory mappings)."""

from __future__ import annotations

import gc
import sys
import time
import warnings
import weakref

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jopt
from jopt._platform import FastCalls
from jopt._platform import programs as _programs
from jopt.solve import api, closures


@pytest.fixture
def small_store(monkeypatch):
    """A store of 3 programs, an empty fast-call cache of 3 entries."""
    monkeypatch.setattr(_programs, "MAX_PROGRAMS", 3)
    monkeypatch.setattr(_programs, "_PROGRAMS", {})
    monkeypatch.setattr(api, "_FAST", FastCalls(3))


def _objective(shift: float):
    return lambda x: jnp.sum((x - shift) ** 2) + 0.1 * jnp.sum(x**4)


def test_same_static_values_share_one_program_and_new_ones_compile(small_store):
    calls = []

    def fn(scale, x):
        calls.append(scale)
        return scale * x

    bounded = _programs.BoundedJit(fn, 1)
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(bounded(2.0, x), 2.0 * x)
    np.testing.assert_array_equal(bounded(2.0, x + 1), 2.0 * (x + 1))
    assert calls == [2.0]  # traced once
    np.testing.assert_array_equal(bounded(3.0, x), 3.0 * x)
    assert calls == [2.0, 3.0]
    assert bounded._cache_size() == 2 and _programs.held_programs() == 2


def test_least_recently_used_program_is_dropped_and_freed(small_store):
    bounded = _programs.BoundedJit(lambda k, x: k * x, 1)
    x = jnp.ones(2)
    first = weakref.ref(bounded.program(1.0))
    bounded(1.0, x)
    for k in (2.0, 3.0):
        bounded(k, x)
    bounded(1.0, x)  # used again: now the most recent, 2.0 the least
    bounded(4.0, x)
    keys = [key[1][0] for key in _programs._PROGRAMS]
    assert keys == [3.0, 1.0, 4.0]
    assert first() is not None  # still held
    for k in (5.0, 6.0, 7.0):
        bounded(k, x)
    gc.collect()
    assert first() is None  # dropped from the store and garbage: its programs are freed
    assert _programs.held_programs() == 3


def test_many_distinct_objectives_keep_a_bounded_number_of_programs(small_store):
    """The user's pattern that crashed: a new closure per solve. Each solve is still
    right, and only the last few programs (and objectives) stay alive."""
    refs = []
    for shift in range(8):
        fun = _objective(float(shift))
        res = jopt.minimize(fun, jnp.zeros(3))
        ref = scipy.optimize.minimize(
            lambda x, s=shift: np.sum((x - s) ** 2) + 0.1 * np.sum(x**4), np.zeros(3),
            jac=lambda x, s=shift: 2 * (x - s) + 0.4 * x**3, tol=1e-12)
        np.testing.assert_allclose(res.x, ref.x, atol=1e-5)
        refs.append(weakref.ref(fun))
        del fun
    gc.collect()
    assert _programs.held_programs() <= 3
    alive = [r() is not None for r in refs]
    assert not any(alive[:5]) and sum(alive) <= 3


def test_a_dropped_program_recompiles_to_the_same_bits(small_store):
    fun = _objective(1.5)
    x0 = jnp.asarray([0.3, -2.0, 4.0])
    first = jopt.minimize(fun, x0, method="bfgs")
    for shift in range(4):  # push fun's program out of the store and the fast-call cache
        jopt.minimize(_objective(float(shift)), x0, method="bfgs")
    again = jopt.minimize(fun, x0, method="bfgs")
    np.testing.assert_array_equal(first.x, again.x)
    assert (int(first.nit), int(first.nfev)) == (int(again.nit), int(again.nfev))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_memory_mappings_stop_growing(small_store):
    def mappings() -> int:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)

    counts = []
    for shift in range(12):
        jopt.minimize(_objective(float(shift)), jnp.zeros(2), method="cg")
        gc.collect()
        counts.append(mappings())
    # Each program maps ~100-250 regions; after the store fills, the count stays flat.
    assert counts[-1] - counts[5] < 100, counts


def test_donated_and_named_static_arguments():
    bounded = _programs.BoundedJit(lambda k, x, *, power: k * x**power, 1,
                                   static_argnames=("power",), donate_argnums=(1,))
    np.testing.assert_array_equal(bounded(2.0, jnp.arange(3.0), power=2),
                                  2.0 * jnp.arange(3.0) ** 2)
    with pytest.raises(ValueError, match="donate_argnums"):
        _programs.BoundedJit(lambda k, x: x, 1, donate_argnums=(0,))


def test_threads_share_the_store_safely(small_store, monkeypatch):
    """Threads looking up and evicting at once (a store of 3, 40 static values), made to
    interleave inside the store's updates: every result right, the store full at the end.
    (Under the GIL each dict step is atomic, so this holds without the store's lock too;
    the lock keeps the multi-step update whole where it is not, e.g. free-threaded
    builds.)"""
    import concurrent.futures

    class YieldingDict(dict):
        """Gives the GIL away inside the store's updates, so threads interleave there."""

        def __len__(self) -> int:
            time.sleep(1e-4)
            return super().__len__()

        def pop(self, *args):
            time.sleep(1e-4)
            return super().pop(*args)

    monkeypatch.setattr(_programs, "_PROGRAMS", YieldingDict())
    bounded = _programs.BoundedJit(lambda k, x: k * x, 1)
    x = jnp.ones(2)

    def work(seed: int) -> float:
        total = 0.0
        for i in range(60):
            k = float((seed * 7 + i) % 40)
            total += float(bounded(k, x)[0]) - k
        return total

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        errors = list(pool.map(work, range(6)))
    assert errors == [0.0] * 6
    assert _programs.held_programs() == 3


# ------------------------------------------------------- the warning on new closures


def _solve_all(objectives, x0):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [jopt.minimize(f, x0, method="cg") for f in objectives]
    return results, [w for w in caught if issubclass(w.category, jopt.JoptWarning)]


@pytest.fixture
def fresh_closures(monkeypatch):
    monkeypatch.setattr(closures, "_seen", {})


def _shifted(shift):
    return lambda x: jnp.sum((x - shift) ** 2)


def test_a_loop_of_new_closures_over_arrays_warns_once(fresh_closures):
    shifts = [jnp.full(2, float(i)) for i in range(7)]
    results, caught = _solve_all([_shifted(s) for s in shifts], jnp.zeros(2))
    assert len(caught) == 1  # at the 5th new objective, then not again
    assert "args=(data,)" in str(caught[0].message)
    assert __file__.rstrip("c") in str(caught[0].message)  # names where the function is
    for res, s in zip(results, shifts, strict=True):
        np.testing.assert_allclose(res.x, s, atol=1e-6)


def test_no_warning_for_one_function_with_args_or_for_changing_shapes(fresh_closures):
    def loss(x, shift):
        return jnp.sum((x - shift) ** 2)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(6):  # the advised form: one function, data as arguments
            jopt.minimize(loss, jnp.zeros(2), args=(jnp.full(2, float(i)),), method="cg")
    assert not [w for w in caught if issubclass(w.category, jopt.JoptWarning)]
    # New closures whose arrays change shape each time compile anyway: no advice to give.
    _, caught = _solve_all([_shifted(jnp.full(n, 1.0)) for n in range(1, 7)], jnp.zeros(1))
    assert not caught


def test_no_warning_for_closures_over_other_values(fresh_closures):
    def make(power: int):  # a structural value: each is a different program
        return lambda x: jnp.sum(x**power) + jnp.sum((x - 1.0) ** 2)

    _, caught = _solve_all([make(p) for p in (2, 2, 4, 4, 6, 6)], jnp.zeros(2))
    assert not caught
