"""Small-problem layouts: L-BFGS keeps each history leaf as column chunks, BFGS its matrix as
row blocks, of at most 512 bytes (so XLA:CPU runs the loop inline); results must not depend
on the layout."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jopt
import jopt.transforms.quasi_newton as qn
from jopt.minimize import _fits_inline, _max_bytes, _resolve_method
from jopt.transforms.quasi_newton import ColumnChunks, _bfgs_block_rows


def extended_rosenbrock(x):
    pairs = x.reshape(-1, 2)
    return jnp.sum(100.0 * (pairs[:, 1] - pairs[:, 0] ** 2) ** 2 + (1.0 - pairs[:, 0]) ** 2)


def _widths(history):
    return [[c.shape[1] for c in h.chunks] if isinstance(h, ColumnChunks) else None
            for h in jax.tree.leaves(history, is_leaf=lambda n: isinstance(n, ColumnChunks))]


@pytest.mark.parametrize(
    ("params", "memory", "widths"),
    [
        (np.zeros(4), 10, [None]),  # 320-byte history: already small
        (np.zeros(10), 10, [[6, 4]]),
        (np.zeros(24), 10, [[6, 6, 6, 6]]),
        (np.zeros(30), 10, [[6, 6, 6, 6, 6]]),
        (np.zeros(36), 10, [None]),  # would need 6 chunks
        (np.zeros(10, np.float32), 10, [None]),  # 400 bytes
        (np.zeros(20, np.float32), 10, [[12, 8]]),
        (np.zeros(10), 3, [None]),  # 240 bytes
        (np.zeros(10), 20, [[3, 3, 3, 1]]),
        ({"a": np.zeros((3, 4)), "b": np.zeros(2)}, 10, [[6, 6], [2]]),
        ({"a": np.zeros(6), "b": np.zeros(5)}, 10, [None, None]),  # each leaf fits
        ({"a": np.zeros(100), "b": np.zeros(10)}, 10, [None, None]),  # a large leaf
    ],
)
def test_layout_choice_and_chunk_sizes(params, memory, widths):
    params = jax.tree.map(jnp.asarray, params)
    state = jopt.scale_by_lbfgs(memory).init(params)
    assert _widths(state.s_history) == widths
    if any(w is not None for w in widths):
        for leaf in jax.tree.leaves(state.s_history):
            assert leaf.nbytes <= qn._CHUNK_BYTES
            assert leaf.shape[0] == memory
    for h, p in zip(jax.tree.leaves(state.s_history, is_leaf=lambda n: isinstance(n, ColumnChunks)),
                    jax.tree.leaves(params), strict=True):
        dense = h.dense() if isinstance(h, ColumnChunks) else h
        assert dense.shape == (memory, *p.shape) and dense.dtype == p.dtype


def _dense_inverse_hessian(s_list, y_list, gamma, n):
    """H from γI by the BFGS update over the stored pairs, oldest first (N&W eq. 7.19)."""
    h = gamma * np.eye(n)
    for s, y in zip(s_list, y_list, strict=True):
        rho = 1.0 / (s @ y)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return h


def _random_points(n, steps, seed, quartic=False):
    """Gradient of an SPD quadratic (condition 100, plus Σx⁴ if ``quartic``) and ``steps``
    random points: material for a run of direction updates."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = jnp.asarray(q @ np.diag(np.logspace(0, 2, n)) @ q.T)
    grad = jax.grad(lambda x: 0.5 * x @ (a @ x) + (jnp.sum(x**4) if quartic else 0.0))
    return grad, [jnp.asarray(rng.standard_normal(n)) for _ in range(steps)]


def _run_updates(tx, xs, grad):
    state = tx.init(xs[0])
    update = jax.jit(tx.update)
    directions = []
    for x in xs:
        d, state = update(grad(x), state, x)
        directions.append(d)
    return directions, state


@settings(max_examples=12, deadline=None)
@given(n=st.integers(7, 30), steps=st.integers(2, 14), seed=st.integers(0, 2**16))
def test_chunked_history_equals_rows_and_dense_oracle(n, steps, seed):
    grad, xs = _random_points(n, steps, seed)
    m = 10  # chunked for 7 <= n <= 30 in float64
    chunked_d, chunked = _run_updates(jopt.scale_by_lbfgs(m), xs, grad)
    assert isinstance(chunked.s_history, ColumnChunks)
    rows_d, rows = _run_updates(jopt.scale_by_lbfgs(m, chunked_history=False), xs, grad)
    assert not isinstance(rows.s_history, ColumnChunks)
    np.testing.assert_array_equal(chunked.s_history.dense(), rows.s_history)
    np.testing.assert_array_equal(chunked.y_history.dense(), rows.y_history)
    for dc, dr in zip(chunked_d, rows_d, strict=True):
        np.testing.assert_allclose(dc, dr, rtol=1e-13, atol=1e-15)

    # Dense oracle for the last direction: the stored pairs, oldest first.
    order = [(int(rows.head) + k) % m for k in range(m)]
    used = [i for i in order if float(rows.rho[i]) != 0.0]
    s_list = [np.asarray(rows.s_history[i]) for i in used]
    y_list = [np.asarray(rows.y_history[i]) for i in used]
    if used:
        h = _dense_inverse_hessian(s_list, y_list, float(rows.gamma), n)
        np.testing.assert_allclose(chunked_d[-1], -h @ np.asarray(grad(xs[-1])),
                                   rtol=1e-9, atol=1e-12)


def test_chunked_pytree_history_writes_each_leaf():
    params = {"a": jnp.ones((3, 4)), "b": jnp.ones(2)}

    def f(p):
        return jnp.sum((p["a"] - 2.0) ** 4) + jnp.sum(p["b"] ** 2 * jnp.arange(1.0, 3.0))

    tx = jopt.scale_by_lbfgs(10)
    state = tx.init(params)
    grad = jax.grad(f)
    p2 = jax.tree.map(lambda v: v * 1.1, params)
    _, state = tx.update(grad(params), state, params)
    _, state = tx.update(grad(p2), state, p2)
    s_a = state.s_history["a"].dense()
    np.testing.assert_array_equal(s_a[0], p2["a"] - params["a"])
    np.testing.assert_array_equal(s_a[1:], 0.0)
    np.testing.assert_array_equal(state.y_history["b"].dense()[0],
                                  grad(p2)["b"] - grad(params)["b"])


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_minimize_gives_the_same_solve_with_either_layout(dtype):
    # float64 n = 12: chunks of 6 + 6 columns; float32 n = 20: 12 + 8.
    x0 = jnp.asarray(np.tile([-1.2, 1.0], 6 if dtype == jnp.float64 else 10), dtype)
    tol = 1e-6 if dtype == jnp.float64 else 1e-4
    assert isinstance(jopt.scale_by_lbfgs().init(x0).s_history, ColumnChunks)
    chunked = jopt.minimize(extended_rosenbrock, x0, method=jopt.lbfgs(), tol=tol)
    rows = jopt.minimize(extended_rosenbrock, x0, method=jopt.lbfgs(chunked_history=False),
                         tol=tol)
    assert chunked.x.dtype == dtype
    assert int(chunked.status) == 0 and int(rows.status) == 0
    assert (int(chunked.nit), int(chunked.nfev)) == (int(rows.nit), int(rows.nfev))
    np.testing.assert_allclose(chunked.x, rows.x, rtol=1e-10 if dtype == jnp.float64 else 1e-5)
    np.testing.assert_allclose(chunked.x, 1.0, atol=1e-5 if dtype == jnp.float64 else 1e-2)


def test_chunked_history_under_vmap_and_jit():
    x0s = jnp.asarray(np.tile([-1.2, 1.0], 5))[None] + 0.1 * jnp.arange(3.0)[:, None]
    solve = jax.jit(jax.vmap(lambda x0: jopt.minimize(extended_rosenbrock, x0).x))
    batched = solve(x0s)
    for i in range(3):
        single = jopt.minimize(extended_rosenbrock, x0s[i])
        np.testing.assert_allclose(batched[i], single.x, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(batched[i], 1.0, atol=1e-5)


def test_chunked_state_checkpoint_round_trip(tmp_path):
    x = jnp.asarray(np.linspace(-1.0, 1.0, 10))
    tx = jopt.scale_by_lbfgs(10)
    state = tx.init(x)
    _, state = tx.update(2.0 * x, state, x)
    _, state = tx.update(2.0 * (x + 0.5), state, x + 0.5)
    assert isinstance(state.s_history, ColumnChunks)
    path = jopt.save_checkpoint(tmp_path / "lbfgs", state)
    restored = jopt.restore_checkpoint(path, tx.init(x))
    assert isinstance(restored.s_history, ColumnChunks)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    assert math.isclose(float(restored.s_history.dense()[0, 0]), 0.5)


def test_chunked_history_false_keeps_rows_and_bad_values_are_rejected():
    state = jopt.scale_by_lbfgs(10, chunked_history=False).init(jnp.zeros(10))
    assert _widths(state.s_history) == [None]
    assert state.s_history.shape == (10, 10)
    with pytest.raises(TypeError, match="chunked_history"):
        jopt.scale_by_lbfgs(10, chunked_history=None)
    with pytest.raises(TypeError, match="chunked_history"):
        jopt.lbfgs(chunked_history="yes")


def test_minimize_many_keeps_rows_for_method_names():
    """A batch's buffers are large anyway; chunks would only add gathers (see
    scale_by_lbfgs). The named transform minimize_many uses keeps rows; minimize's chunks."""
    x = jnp.zeros(10)
    batched = _resolve_method("lbfgs", batched=True, fun=extended_rosenbrock, x=x).init(x)
    single = _resolve_method("lbfgs", fun=extended_rosenbrock, x=x).init(x)
    assert _widths(batched[0].s_history) == [None]
    assert _widths(single[0].s_history) == [[6, 4]]
    x0s = jnp.asarray(np.tile([-1.2, 1.0], 5))[None] + 0.05 * jnp.arange(2.0)[:, None]
    many = jopt.minimize_many(extended_rosenbrock, x0s)
    for i in range(2):
        np.testing.assert_allclose(many.x[i], jopt.minimize(extended_rosenbrock, x0s[i]).x,
                                   rtol=1e-8, atol=1e-10)


def _least_squares(x, t, y):
    return jnp.sum((x[0] * jnp.exp(-x[1] * t) + x[2:] @ jnp.ones(x.size - 2) - y) ** 2)


@pytest.mark.parametrize(("points", "chunked"), [(20, True), (64, True), (65, False)])
def test_minimize_chunks_only_when_the_objective_is_small_too(points, chunked):
    """64 float64 data points are 512 bytes: the program can still run inline; 65 cannot,
    and then L-BFGS by name keeps its history as one array."""
    x = jnp.full(10, 0.5)
    t = jnp.linspace(0.0, 1.0, points)
    y = 2.0 * jnp.exp(-t)
    tx = _resolve_method("lbfgs", fun=_least_squares, x=x, args=(t, y))
    assert isinstance(tx.init(x)[0].s_history, ColumnChunks) == chunked
    assert _fits_inline(_least_squares, x, (t, y)) == chunked
    res = jopt.minimize(_least_squares, x, args=(t, y), tol=1e-8)
    assert int(res.status) == 0
    np.testing.assert_allclose(res.fun, 0.0, atol=1e-12)


def test_max_bytes_sees_constants_and_inner_jaxprs():
    data = jnp.arange(100.0)  # 800 bytes, closed over by a jitted objective

    @jax.jit
    def f(x):
        return jnp.sum(x**2) + jnp.sum(jnp.sin(data)) * x[0]

    x = jnp.zeros(3)
    assert _max_bytes(jax.make_jaxpr(jax.value_and_grad(f))(x).jaxpr) >= 800
    assert not _fits_inline(f, x, ())
    assert _fits_inline(lambda x: jnp.sum(x**2), x, ())
    assert not _fits_inline(lambda x: x, x, ())  # not scalar: no answer, so no chunks


def test_fits_inline_with_a_callback_in_the_objective():
    """An equation without inputs or outputs (a debug callback) must not break the scan."""
    calls = []

    def f(x):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.sum((x - 1.0) ** 2)

    x = jnp.zeros(10)
    assert _fits_inline(f, x, ())
    res = jopt.minimize(f, x)
    assert int(res.status) == 0 and len(calls) >= int(res.nfev)


def test_fits_inline_is_cached_per_objective_and_shapes():
    """The check traces the objective (~ms): once per objective, shapes and dtypes."""
    traces = []

    def f(x, scale):
        traces.append(1)
        return scale * jnp.sum(x**2)

    x = jnp.zeros(10)
    assert _fits_inline(f, x, (2.0,)) and _fits_inline(f, x + 1.0, (3.0,))
    assert len(traces) == 1
    assert _fits_inline(f, jnp.zeros(11), (2.0,))
    assert len(traces) == 2
    assert not _fits_inline(f, jnp.zeros(100), (2.0,))
    assert len(traces) == 3


# ----------------------------------------------------------------------------- BFGS


@pytest.mark.parametrize(
    ("n", "dtype", "chunked", "rows"),
    [
        (8, np.float64, True, [8]),  # 512 bytes: one block
        (9, np.float64, True, [7, 2]),
        (10, np.float64, True, [6, 4]),
        (16, np.float64, True, [4, 4, 4, 4]),
        (17, np.float64, True, [17]),  # would need 6 blocks
        (70, np.float64, True, [70]),  # a row alone is over 512 bytes
        (10, np.float64, False, [10]),
        (12, np.float32, True, [10, 2]),
    ],
)
def test_bfgs_block_rows(n, dtype, chunked, rows):
    assert _bfgs_block_rows(n, dtype, chunked) == rows
    state = jopt.scale_by_bfgs(chunked).init(jnp.zeros(n, dtype))
    assert [b.shape for b in state.inv_hessian] == [(r, n) for r in rows]
    np.testing.assert_array_equal(jnp.concatenate(state.inv_hessian), np.eye(n))
    assert all(b.dtype == dtype for b in state.inv_hessian)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(9, 16), steps=st.integers(2, 10), seed=st.integers(0, 2**16))
def test_bfgs_blocks_equal_one_block(n, steps, seed):
    grad, xs = _random_points(n, steps, seed, quartic=True)
    blocks_d, blocks = _run_updates(jopt.scale_by_bfgs(), xs, grad)
    one_d, one = _run_updates(jopt.scale_by_bfgs(chunked_hessian=False), xs, grad)
    assert len(blocks.inv_hessian) > 1 and len(one.inv_hessian) == 1
    h = np.asarray(jnp.concatenate(blocks.inv_hessian))
    np.testing.assert_allclose(h, one.inv_hessian[0], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(h, h.T, rtol=1e-11, atol=1e-13)
    for db, do in zip(blocks_d, one_d, strict=True):
        np.testing.assert_allclose(db, do, rtol=1e-11, atol=1e-13)


def test_bfgs_by_name_chooses_blocks_like_lbfgs():
    x = jnp.zeros(10)
    blocks = _resolve_method("bfgs", fun=extended_rosenbrock, x=x).init(x)[0]
    batched = _resolve_method("bfgs", batched=True, fun=extended_rosenbrock, x=x).init(x)[0]
    t = jnp.linspace(0.0, 1.0, 65)  # 520 bytes of data: the program runs on the pool anyway
    big = _resolve_method("bfgs", fun=_least_squares, x=x, args=(t, 2.0 * t)).init(x)[0]
    assert [len(s.inv_hessian) for s in (blocks, batched, big)] == [2, 1, 1]
    with pytest.raises(TypeError, match="chunked_hessian"):
        jopt.bfgs(chunked_hessian=None)
    res = jopt.minimize(extended_rosenbrock, jnp.asarray(np.tile([-1.2, 1.0], 5)),
                        method="bfgs")
    assert int(res.status) == 0
    np.testing.assert_allclose(res.x, 1.0, atol=1e-6)


def test_no_blocks_off_the_cpu(monkeypatch):
    """The blocks are for XLA:CPU's inline limit; on a GPU they would only add launches."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = jnp.zeros(10)
    assert not isinstance(jopt.scale_by_lbfgs().init(x).s_history, ColumnChunks)
    assert len(jopt.scale_by_bfgs().init(x).inv_hessian) == 1
    assert _bfgs_block_rows(10, np.float64, True) == [10]
