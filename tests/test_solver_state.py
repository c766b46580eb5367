"""The resumable solver-state API: minimize_init / minimize_run / minimize_result.

Oracle: ``jopt.minimize`` itself — a solve cut into segments must reproduce it bit for bit
(float64, CPU), counters and status included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import SolverState, minimize_init, minimize_result, minimize_run
from jopt import _platform as platform
from jopt._platform import options
from jopt.solve import api


def extended_rosenbrock(x):
    pairs = x.reshape(-1, 2)
    return jnp.sum(100.0 * (pairs[:, 1] - pairs[:, 0] ** 2) ** 2 + (1.0 - pairs[:, 0]) ** 2)


def logistic(w, features, labels, lam):
    return jnp.mean(jnp.logaddexp(0.0, -labels * (features @ w))) + 0.5 * lam * w @ w


_rng = np.random.default_rng(0)
FEATURES = jnp.asarray(_rng.standard_normal((60, 5)))
LABELS = jnp.asarray(np.where(_rng.standard_normal(60) > 0, 1.0, -1.0))
ROSEN_X0 = jnp.asarray([-1.2, 1.0, -1.2, 1.0])


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y, equal_nan=True), (x, y)


def segmented(fun, x0, segments, **kw):
    init_kw = {k: kw[k] for k in ("method", "args", "tol", "history") if k in kw}
    state = minimize_init(fun, x0, **init_kw)
    run_kw = {k: v for k, v in kw.items() if k != "history"}
    for k in segments:
        state = minimize_run(fun, state, num_steps=k, **run_kw)
    return state


@pytest.mark.parametrize("method", ["lbfgs", "bfgs", "cg", "newton-cg", "trust-ncg"])
def test_segmented_run_is_bitwise_minimize(method):
    problems = [
        (extended_rosenbrock, ROSEN_X0, ()),
        (logistic, jnp.zeros(5), (FEATURES, LABELS, 1e-2)),
    ]
    for fun, x0, args in problems:
        ref = jopt.minimize(fun, x0, method=method, args=args, tol=1e-9, history=True,
                            implicit_diff=False)
        assert int(ref.status) == jopt.Status.CONVERGED and int(ref.nit) > 3
        for segments in [(3, 5, None), (1, 1, 2, 100, None), (None,)]:
            state = segmented(fun, x0, segments, method=method, args=args, tol=1e-9,
                              history=True)
            assert_bitwise(minimize_result(state), ref)


@pytest.mark.parametrize("method", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("size, profile", [("SMALL", "cpu-mid"), ("MID", "cpu")])
def test_segmented_run_is_bitwise_minimize_above_the_small_size(method, size, profile,
                                                                monkeypatch):
    # Above `_SMALL` (and `_MID`) elements the programs compile with other option profiles;
    # the three pieces must still share one (x0 and state.x have the same size). The
    # profiles are chosen as without jopt.enable_small_loop_kernels (which maps mid sizes to
    # cpu-small), so this also runs in a process started with that setting.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    n = getattr(options, size) + 2
    x0 = jnp.tile(ROSEN_X0, n // 4 + 1)[:n]

    def profile_of(x):
        return options.profile_for(x.size, batched=False, outline=False, small_loops=None)

    assert profile_of(x0) == profile
    assert profile_of(x0[:-2]) == ("cpu-small" if size == "SMALL" else "cpu-mid")
    assert platform.plan(extended_rosenbrock, ROSEN_X0, (), nested=True).profile is None
    res = jopt.minimize(extended_rosenbrock, x0, method=method, maxiter=12)
    assert_bitwise(minimize_result(segmented(extended_rosenbrock, x0, [5, 7], method=method,
                                             maxiter=12)), res)


def test_history_off_state_is_all_arrays_and_result_has_no_history():
    state = minimize_init(extended_rosenbrock, ROSEN_X0)
    assert isinstance(state, SolverState)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
    assert state.f_hist.shape == state.g_hist.shape == (0,)
    res = minimize_result(minimize_run(extended_rosenbrock, state))
    assert res.f_history is None and res.gnorm_history is None
    assert_bitwise(res, jopt.minimize(extended_rosenbrock, ROSEN_X0))


def test_init_status_and_counters():
    state = minimize_init(extended_rosenbrock, ROSEN_X0)
    assert int(state.status) == -1 and int(state.nit) == 0 and int(state.nfev) == 1
    np.testing.assert_allclose(state.g, jax.grad(extended_rosenbrock)(ROSEN_X0), rtol=1e-14)
    at_optimum = minimize_init(extended_rosenbrock, jnp.ones(4))
    assert int(at_optimum.status) == jopt.Status.CONVERGED
    nan = minimize_init(lambda x: jnp.sum(jnp.log(x)), jnp.asarray([-1.0, 1.0]))
    assert int(nan.status) == jopt.Status.NONFINITE
    res = minimize_result(nan)
    assert not bool(res.success) and "Non-finite" in res.message


def test_finished_state_is_returned_unchanged():
    done = segmented(extended_rosenbrock, ROSEN_X0, [None])
    assert int(done.status) == jopt.Status.CONVERGED
    for steps in (None, 5):
        again = minimize_run(extended_rosenbrock, done, num_steps=steps, tol=1e-14)
        assert_bitwise(again, done)


def test_num_steps_and_total_maxiter():
    state = minimize_init(extended_rosenbrock, ROSEN_X0)
    state = minimize_run(extended_rosenbrock, state, num_steps=3)
    assert int(state.nit) == 3 and int(state.status) == -1
    state = minimize_run(extended_rosenbrock, state, num_steps=4, maxiter=5)
    assert int(state.nit) == 5 and int(state.status) == jopt.Status.MAXITER
    ref = jopt.minimize(extended_rosenbrock, ROSEN_X0, maxiter=5)
    assert_bitwise(minimize_result(state), ref)
    # A running state already at the limit stops without iterating.
    state = minimize_run(extended_rosenbrock,
                         minimize_run(extended_rosenbrock,
                                      minimize_init(extended_rosenbrock, ROSEN_X0),
                                      num_steps=4),
                         maxiter=2)
    assert int(state.nit) == 4 and int(state.status) == jopt.Status.MAXITER


def test_numpy_checkpoint_round_trip(tmp_path):
    state = minimize_run(extended_rosenbrock, minimize_init(extended_rosenbrock, ROSEN_X0),
                         num_steps=7)
    leaves, treedef = jax.tree.flatten(state)
    np.savez(tmp_path / "ckpt.npz", *[np.asarray(leaf) for leaf in leaves])
    with np.load(tmp_path / "ckpt.npz") as data:
        loaded = [data[f"arr_{i}"] for i in range(len(leaves))]
    restored = jax.tree.unflatten(treedef, loaded)
    final = minimize_run(extended_rosenbrock, restored)
    assert_bitwise(minimize_result(final), jopt.minimize(extended_rosenbrock, ROSEN_X0))


def test_vmap_over_a_batch_of_states():
    starts = jnp.asarray([[-1.2, 1.0, -1.2, 1.0], [2.0, 2.0, 0.5, 0.5],
                          [0.0, 0.0, 1.0, 1.0], [-0.5, 3.0, 1.5, 2.0]])
    states = jax.vmap(lambda x: minimize_init(extended_rosenbrock, x))(starts)
    assert states.nit.shape == (4,)
    states = jax.vmap(lambda s: minimize_run(extended_rosenbrock, s, num_steps=6))(states)
    assert np.all(np.asarray(states.nit) <= 6)
    states = jax.vmap(lambda s: minimize_run(extended_rosenbrock, s, tol=1e-9))(states)
    batched = minimize_result(states)
    assert batched.x.shape == (4, 4) and batched.nhev.shape == (4,)
    assert list(batched.message) == [jopt.Status.MESSAGES[0]] * 4
    for i in range(4):
        single = jopt.minimize(extended_rosenbrock, starts[i], tol=1e-9)
        # A vmapped program is a different XLA program: equal to rounding, same path.
        np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-12, atol=1e-12)
        assert int(batched.nit[i]) == int(single.nit)
        assert int(batched.nfev[i]) == int(single.nfev)
        assert int(batched.njev[i]) == int(single.njev)


def test_inside_user_jit():
    @jax.jit
    def solve(x0):
        state = minimize_init(extended_rosenbrock, x0)
        state = minimize_run(extended_rosenbrock, state, num_steps=3)
        return minimize_run(extended_rosenbrock, state)

    state = solve(ROSEN_X0)
    np.testing.assert_allclose(state.x, jnp.ones(4), atol=1e-6)
    assert int(state.status) == jopt.Status.CONVERGED


def test_pieces_are_compiled_once_for_new_values():
    traces = []

    def f(x, scale):
        traces.append(1)
        return jnp.sum(scale * (x - 1.0) ** 2) + jnp.sum(x**4)

    # The jitted programs of this problem's options profile (3 elements: not the default's;
    # "cpu-outlined" on the CPU, where the program is compiled as one function).
    x = jnp.zeros(3)
    profile = platform.plan(f, x, (3.0,), nested=False).profile
    jitted = [platform.compiled(program, 3, profile) for program in
              (api._init_program, api._segment_program, api._minimize_program)]

    def solve(k):
        state = minimize_init(f, jnp.full(3, float(k)), args=(3.0 + k,), method="bfgs",
                              tol=10.0 ** (-6 - k))
        state = minimize_run(f, state, args=(3.0 + k,), method="bfgs", num_steps=k + 1,
                             tol=10.0 ** (-6 - k), xtol=1e-30 * (k + 1))  # 0: compiled out
        state = minimize_run(f, state, args=(3.0 + k,), method="bfgs", tol=10.0 ** (-6 - k))
        ref = jopt.minimize(f, jnp.full(3, float(k)), args=(3.0 + k,), method="bfgs",
                            tol=10.0 ** (-6 - k))
        assert int(state.status) == jopt.Status.CONVERGED
        assert_bitwise(minimize_result(state), ref)

    solve(0)
    n_traces, sizes = len(traces), [fn._cache_size() for fn in jitted]
    assert all(sizes)  # the programs checked below are the ones this problem used
    for k in range(1, 4):
        solve(k)
    assert len(traces) == n_traces  # neither re-traced ...
    assert [fn._cache_size() for fn in jitted] == sizes  # ... nor recompiled


# ------------------------------------------------------------------------- bad input


def test_bad_inputs_are_named():
    state = minimize_init(extended_rosenbrock, ROSEN_X0)
    with pytest.raises(TypeError, match=r"`state` must be a jopt\.SolverState"):
        minimize_run(extended_rosenbrock, tuple(state))
    with pytest.raises(TypeError, match=r"`state` must be a jopt\.SolverState"):
        minimize_result({"x": ROSEN_X0})
    with pytest.raises(ValueError, match=r"`state.opt_state` does not match `method`"):
        minimize_run(extended_rosenbrock, state, method="bfgs")
    with pytest.raises(ValueError, match="`num_steps` must be >= 1"):
        minimize_run(extended_rosenbrock, state, num_steps=0)
    with pytest.raises(TypeError, match="`num_steps` must be a Python int"):
        minimize_run(extended_rosenbrock, state, num_steps=2.5)
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        minimize_run(extended_rosenbrock, state, tol=0.0)
    with pytest.raises(ValueError, match="`ftol` must be >= 0"):
        minimize_run(extended_rosenbrock, state, ftol=-1.0)
    with pytest.raises(ValueError, match="`maxiter` must be >= 1"):
        minimize_run(extended_rosenbrock, state, maxiter=0)
    with pytest.raises(TypeError, match="`args` must be a tuple"):
        minimize_run(extended_rosenbrock, state, args=[1.0])
    with pytest.raises(ValueError, match=r"Unknown `method` 'newton-raphson'"):
        minimize_init(extended_rosenbrock, ROSEN_X0, method="newton-raphson")
    with pytest.raises(TypeError, match=r"`x0` leaf .* has dtype int"):
        minimize_init(extended_rosenbrock, jnp.asarray([1, 2]))
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        minimize_init(extended_rosenbrock, ROSEN_X0, tol=-1.0)
    with pytest.raises(ValueError, match="`fun` must return a scalar"):
        minimize_init(lambda x: x**2, ROSEN_X0)


def test_minimize_inside_an_aot_compiled_vmap():
    # Regression: no device-array constant may leak into a caller's trace (AOT-compiled
    # programs are called without hoisted constants).
    def solve(x0, features, labels):
        return jopt.minimize(logistic, x0, args=(features, labels, 1e-2), implicit_diff=False)

    batch = (jnp.zeros((2, 5)), jnp.stack([FEATURES] * 2), jnp.stack([LABELS] * 2))
    compiled = jax.jit(jax.vmap(solve)).lower(*batch).compile()
    res = compiled(*batch)
    ref = jopt.minimize(logistic, jnp.zeros(5), args=(FEATURES, LABELS, 1e-2))
    np.testing.assert_allclose(res.x[1], ref.x, rtol=1e-10, atol=1e-12)
