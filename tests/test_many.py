"""jopt.minimize_many against separate jopt.minimize solves (the oracle), plus scheduling.

A member of the batch follows the same path as its separate solve (same iterations,
evaluations and status), but the batched program is a different XLA program (vmapped
reductions and dot products may be summed in another order), so iterates agree to
rounding, not bit for bit — as for ``jax.vmap(jopt.minimize)``.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import _platform as platform
from jopt.solve.many import _minimize_many, minimize_many

_many_module = sys.modules["jopt.solve.many"]


def extended_rosenbrock(x):
    pairs = x.reshape(-1, 2)
    return jnp.sum(100.0 * (pairs[:, 1] - pairs[:, 0] ** 2) ** 2 + (1.0 - pairs[:, 0]) ** 2)


def scaled_quadratic(x, diag, shift):
    """0.5 Σ d_i (x_i - s)² + 0.01 Σ x_i⁴: conditioning (iterations) set by ``diag``."""
    return 0.5 * jnp.sum(diag * (x - shift) ** 2) + 0.01 * jnp.sum(x**4)


def with_stats(fun, x0s, **kw):
    options = dict(method="lbfgs", args=(), args_axes=None, tol=1e-8, ftol=0.0, xtol=0.0,
                   maxiter=2000, maxfev=None, history=False, history_size=None, segment=5,
                   bucket_sizes=None)
    options.update(kw)
    return _minimize_many(fun, x0s, **options)


def assert_member_matches(res, i, ref, exact=True):
    """Member ``i`` of a batch solve against its own ``minimize`` run.

    ``exact=False`` for ill-conditioned members: a vmapped reduction can round its last
    bit differently from the unbatched one, and near the rounding floor such a bit can
    move the final iteration count by one or two.
    """
    assert int(res.status[i]) == int(ref.status), (i, res.message[i], ref.message)
    if exact:
        assert int(res.nit[i]) == int(ref.nit)
        assert int(res.nfev[i]) == int(ref.nfev) and int(res.njev[i]) == int(ref.njev)
        np.testing.assert_allclose(res.x[i], ref.x, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.fun[i], ref.fun, rtol=1e-10, atol=1e-14)
    else:
        assert abs(int(res.nit[i]) - int(ref.nit)) <= 2, (i, int(res.nit[i]), int(ref.nit))
        assert abs(int(res.nfev[i]) - int(ref.nfev)) <= 4, (i, int(res.nfev[i]), int(ref.nfev))
        np.testing.assert_allclose(res.x[i], ref.x, rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.fun[i], ref.fun, rtol=1e-12, atol=1e-14)


def test_equals_separate_solves_across_rebatching():
    rng = np.random.default_rng(1)
    x0s = jnp.asarray(rng.uniform(-2.0, 2.0, (12, 4)))
    res, stats = with_stats(extended_rosenbrock, x0s, bucket_sizes=(4,))
    assert res.x.shape == (12, 4) and res.nit.shape == (12,)
    assert len(set(stats.buckets)) > 1  # members were re-batched into smaller buckets
    for i in range(12):
        ref = jopt.minimize(extended_rosenbrock, x0s[i], tol=1e-8, maxiter=2000)
        assert_member_matches(res, i, ref)
    assert bool(jnp.all(res.success)) and list(res.message) == [jopt.Status.MESSAGES[0]] * 12


def quadratic_batch(members: int = 16, n: int = 6):
    """Per-member conditioning from 1 to 1e7 (iterations 4 to ~80); one shared shift."""
    conds = np.logspace(0, 7, members)
    diags = jnp.asarray(np.stack([np.logspace(0, np.log10(c), n) for c in conds]))
    return jnp.zeros((members, n)), diags, jnp.asarray(0.5)


def test_very_different_iteration_counts_cost_the_sum_not_batch_times_slowest():
    # Per-member args (diag) and a shared one (shift).
    x0s, diags, shift = quadratic_batch()
    members = x0s.shape[0]
    res, stats = with_stats(scaled_quadratic, x0s, args=(diags, shift), args_axes=(0, None),
                            tol=1e-9, segment=4, bucket_sizes=(4, 8))
    nit = np.asarray(res.nit)
    assert nit.max() >= 10 * nit.min()
    batch_times_slowest = members * nit.max()
    assert stats.lane_iterations < 0.7 * batch_times_slowest
    assert stats.buckets[0] == members and stats.buckets[-1] == 4
    for i in range(members):
        ref = jopt.minimize(scaled_quadratic, x0s[i], args=(diags[i], shift), tol=1e-9,
                            maxiter=2000)
        assert_member_matches(res, i, ref, exact=i < 8)  # conditioning up to ~1e3
    grad = jax.vmap(jax.grad(scaled_quadratic), in_axes=(0, 0, None))(res.x, diags, shift)
    assert float(jnp.max(jnp.abs(grad))) <= 1e-9


def test_nan_members_do_not_fail_the_batch():
    x0s, diags, shift = quadratic_batch()
    x0s = x0s.at[3, 2].set(jnp.nan)  # NaN start
    diags = diags.at[9, 0].set(-1e300)  # unbounded: trial steps overflow to -inf / NaN
    res, _ = with_stats(scaled_quadratic, x0s, args=(diags, shift), args_axes=(0, None),
                        tol=1e-9, segment=4, bucket_sizes=(4, 8))
    status = np.asarray(res.status)
    assert status[3] == jopt.Status.NONFINITE
    assert int(res.nit[3]) == 0 and "Non-finite" in res.message[3]
    # The search backs off from non-finite trials, then reports its failure.
    assert status[9] == jopt.Status.LINESEARCH_FAILED and not bool(res.success[9])
    assert bool(jnp.all(jnp.isfinite(res.x[9])))  # the last finite point is kept
    good = np.setdiff1d(np.arange(16), [3, 9])
    assert np.all(status[good] == jopt.Status.CONVERGED)
    for i in [9, *good[::5]]:
        ref = jopt.minimize(scaled_quadratic, x0s[i], args=(diags[i], shift), tol=1e-9,
                            maxiter=2000)
        assert_member_matches(res, i, ref, exact=i < 8)


def test_compiled_once_per_bucket_size_and_reused():
    traces = []

    def f(x, c):
        traces.append(1)
        return jnp.sum((x - c) ** 2) + jnp.sum(x**4)

    def solve(seed):
        rng = np.random.default_rng(seed)
        x0s = jnp.asarray(rng.uniform(-3.0, 3.0, (10, 3)))
        c = jnp.asarray(rng.uniform(-1.0, 1.0, (10, 3)))
        _, stats = with_stats(f, x0s, args=(c,), args_axes=0, segment=2, bucket_sizes=(8,),
                              tol=10.0 ** -(6 + seed % 3))
        assert set(stats.buckets) == {10, 8}
        assert len(stats.buckets) > 2  # buckets are reused across segments

    segment_jit = platform.compiled(_many_module._segment_many, 3, "cpu-small",
                                    donate_argnums=(3,))  # 3 elements per member
    before = segment_jit._cache_size()
    solve(0)
    n_traces = len(traces)
    assert segment_jit._cache_size() == before + 2  # one program per bucket size
    for seed in (1, 2, 3):
        solve(seed)
    assert len(traces) == n_traces  # new x0s / args / tol: neither re-traced ...
    assert segment_jit._cache_size() == before + 2  # ... nor recompiled


# ------------------------------------------------------------------------- bad input


def test_bad_inputs_are_named():
    x0s = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="`x0s` must hold a batch"):
        minimize_many(extended_rosenbrock, jnp.asarray(1.0))
    with pytest.raises(ValueError, match="same leading"):
        minimize_many(lambda p: jnp.sum(p["a"]) + jnp.sum(p["b"]),
                      {"a": jnp.zeros((3, 2)), "b": jnp.zeros((4, 2))})
    with pytest.raises(ValueError, match=r"`args\[0\]` is batched .* batch size 4"):
        minimize_many(lambda x, c: jnp.sum((x - c) ** 2), x0s, args=(jnp.zeros((3, 2)),),
                      args_axes=0)
    with pytest.raises(ValueError, match="`args_axes` needs one entry per argument"):
        minimize_many(lambda x, c: jnp.sum((x - c) ** 2), x0s, args=(jnp.zeros((4, 2)),),
                      args_axes=(0, None))
    with pytest.raises(ValueError, match=r"`args_axes\[0\]` must be 0"):
        minimize_many(lambda x, c: jnp.sum((x - c) ** 2), x0s, args=(jnp.zeros((4, 2)),),
                      args_axes=(1,))
    with pytest.raises(ValueError, match="`segment` must be >= 1"):
        minimize_many(extended_rosenbrock, x0s, segment=0)
    with pytest.raises(TypeError, match="`segment` must be a Python int"):
        minimize_many(extended_rosenbrock, x0s, segment=2.5)
    with pytest.raises(ValueError, match="`tol` must be a scalar shared"):
        minimize_many(extended_rosenbrock, x0s, tol=jnp.full(4, 1e-6))
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        minimize_many(extended_rosenbrock, x0s, tol=0.0)
    with pytest.raises(TypeError, match=r"`x0s` leaf .* has dtype int"):
        minimize_many(extended_rosenbrock, jnp.zeros((4, 2), jnp.int32))
    with pytest.raises(TypeError, match="cannot be traced"):
        jax.jit(lambda x: minimize_many(extended_rosenbrock, x).x)(x0s)
