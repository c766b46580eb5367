"""Quantization: quantizers against a NumPy reference, STE, sizes, HAWQ vs brute force."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import compress

_CPU_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}


def jit(fn, **kw):
    return jax.jit(fn, compiler_options=_CPU_OPTIONS if jax.default_backend() == "cpu"
                   else None, **kw)


def numpy_quantize(x: np.ndarray, bits: int, symmetric: bool, axis):
    """Reference: round-half-to-even uniform quantization, per tensor or per channel."""
    reduce = None if axis is None else tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    keep = axis is not None
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        amax = np.max(np.abs(x), axis=reduce, keepdims=keep)
        scale = np.where(amax > 0, amax / qmax, 1.0)
        zp = np.zeros_like(scale)
    else:
        qmin, qmax = 0, 2**bits - 1
        lo = np.minimum(np.min(x, axis=reduce, keepdims=keep), 0)
        hi = np.maximum(np.max(x, axis=reduce, keepdims=keep), 0)
        scale = np.where(hi > lo, (hi - lo) / qmax, 1.0)
        zp = np.clip(np.round(-lo / scale), qmin, qmax)
    codes = np.clip(np.round(x / scale) + zp, qmin, qmax)
    return codes, scale, zp, scale * (codes - zp)


X = np.random.default_rng(0).standard_normal((6, 5)) * np.array([[0.1, 1, 3, 0.01, 2]])


@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_matches_numpy_reference_all_bits(symmetric):
    x = X.copy()
    x[:, 3] = 0.0  # an all-zero channel
    x[0, 0] = -x[1, 0]  # exact ties in |x|

    @jit
    def run(x):
        out = []
        for bits, axis in cases:
            codes, s, z = compress.quantize(x, bits, symmetric=symmetric, axis=axis)
            out.append((codes, s, z, compress.dequantize(codes, s, z),
                        compress.quantization_error(x, bits, symmetric=symmetric, axis=axis)))
        return out

    cases = [(b, None) for b in range(2, 9)] + [(3, 1), (8, -2)]
    for (bits, axis), (codes, s, z, deq, err) in zip(cases, run(x), strict=True):
        r_codes, r_s, r_z, r_deq = numpy_quantize(x, bits, symmetric, axis)
        assert codes.dtype == (jnp.int8 if symmetric else jnp.uint8)
        assert s.shape == r_s.shape and s.dtype == x.dtype
        np.testing.assert_array_equal(np.asarray(codes, np.int64), r_codes)
        np.testing.assert_array_equal(np.asarray(z, np.int64), r_z)
        np.testing.assert_allclose(np.asarray(s), r_s, rtol=1e-15)
        np.testing.assert_allclose(np.asarray(deq), r_deq, rtol=1e-14, atol=1e-300)
        np.testing.assert_allclose(float(err), np.sum((r_deq - x) ** 2), rtol=1e-12)
        # round to nearest: error at most half a step, zero stays exactly zero
        assert np.all(np.abs(np.asarray(deq) - x) <= 0.5 * r_s * (1 + 1e-12))
        assert np.all(np.asarray(deq)[x == 0] == 0)


def test_fake_quantize_forward_exact_and_ste_gradient():
    x = jnp.asarray(np.linspace(-2.0, 2.0, 41), jnp.float32)
    scale = jnp.asarray(0.25, jnp.float32)  # symmetric 4 bits: representable [-1.75, 1.75]

    @jit
    def run(x):
        fq = compress.fake_quantize(x, 4, scale=scale)
        codes, s, z = compress.quantize(x, 4, scale=scale)
        g_fixed = jax.grad(lambda v: jnp.sum(compress.fake_quantize(v, 4, scale=scale) * 3.0))(x)
        g_own = jax.grad(lambda v: jnp.sum(compress.fake_quantize(v, 3, axis=0) * v))(x)
        g_aff = jax.grad(lambda v: jnp.sum(compress.fake_quantize(v, 5, symmetric=False)))(x)
        return fq, compress.dequantize(codes, s, z), g_fixed, g_own, g_aff

    fq, deq, g_fixed, g_own, g_aff = run(x)
    assert fq.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(fq), np.asarray(deq))
    inside = np.abs(np.round(np.asarray(x) / 0.25)) <= 7
    np.testing.assert_array_equal(np.asarray(g_fixed), np.where(inside, 3.0, 0.0))
    # own range: nothing clipped, d/dv Σ q(v)·v = v + q(v) under the STE (dq/dv = 1)
    q3 = compress.fake_quantize(x, 3, axis=0)
    np.testing.assert_allclose(np.asarray(g_own), np.asarray(x + q3), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(g_aff), np.ones(41, np.float32))


def test_traced_bit_widths_match_static_ones():
    """Bit widths may be traced: one compiled vmap over widths equals the static results."""
    x = jnp.asarray(X)
    widths = jnp.arange(2, 9, dtype=jnp.int32)

    @jit
    def run(x):
        sym = jax.vmap(lambda b: compress.fake_quantize(x, b, axis=1))(widths)
        aff = jax.vmap(lambda b: compress.quantize(x, b, symmetric=False)[0])(widths)
        return sym, aff

    sym, aff = run(x)
    for i, b in enumerate(range(2, 9)):
        np.testing.assert_allclose(np.asarray(sym[i]), numpy_quantize(X, b, True, 1)[3],
                                   rtol=1e-15)  # XLA may fuse Δ·(q − z) differently
        np.testing.assert_array_equal(np.asarray(aff[i], np.int64),
                                      numpy_quantize(X, b, False, None)[0])


def test_fake_quantize_tree_and_sizes():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.standard_normal((7, 3)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(3), jnp.float32)}
    bits = {"w": 3, "b": 0}
    out = jit(lambda p: compress.fake_quantize_tree(p, bits, channel_axis=-1))(params)
    assert out["w"].dtype == jnp.float32 and out["b"] is not params["b"]
    np.testing.assert_array_equal(np.asarray(out["b"]), np.asarray(params["b"]))
    ref = numpy_quantize(np.asarray(params["w"]), 3, True, -1)[3]
    np.testing.assert_allclose(np.asarray(out["w"]), ref, rtol=1e-6)
    same = compress.fake_quantize_tree(params, 3, channel_axis=-1,
                                       quantizable=compress.weight_matrices)
    jax.tree.map(np.testing.assert_array_equal, same, out)

    rep = compress.quantized_size(params, bits, channel_axis=-1)
    assert rep == compress.SizeReport(total=8 + 12 + 12, codes=8, scales=12, zero_points=0,
                                      unquantized=12)  # ceil(21·3/8) = 8 code bytes
    rep = compress.quantized_size(params, 5, symmetric=False)  # per tensor, affine
    assert rep.codes == math.ceil(21 * 5 / 8) + math.ceil(3 * 5 / 8)
    assert (rep.scales, rep.zero_points, rep.unquantized) == (8, 2, 0)
    assert rep.total == sum(rep[1:])


def small_problem(seed: int):
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (6,), (3, 5), (2, 2, 2)]
    params = {f"l{i}": jnp.asarray(rng.standard_normal(s) * rng.uniform(0.1, 3), jnp.float64)
              for i, s in enumerate(shapes)}
    traces = {k: float(rng.uniform(0.01, 10)) for k in params}
    return params, traces


CANDS = (2, 3, 4, 6, 8)
SENS = jit(lambda p, t: compress.hawq_sensitivities(p, t, CANDS))


def brute_force(keys, sens, leaf_size, budget):
    """Minimum of Σ sensitivities over all assignments with Σ leaf_size ≤ budget."""
    best = (np.inf, None)
    for combo in itertools.product(range(len(CANDS)), repeat=len(keys)):
        if sum(leaf_size[k][c] for k, c in zip(keys, combo, strict=True)) <= budget:
            cost = sum(float(sens[k][c]) for k, c in zip(keys, combo, strict=True))
            best = min(best, (cost, combo), key=lambda t: t[0])
    return best


@pytest.mark.parametrize("seed", [0, 1])
def test_allocate_bits_matches_brute_force(seed):
    params, traces = small_problem(seed)
    keys = list(params)
    sens = SENS(params, traces)
    n_total = sum(p.size for p in params.values())
    uniform4 = compress.quantized_size(params, 4).total
    code_bits = {k: [params[k].size * b for b in CANDS] for k in keys}
    leaf_bytes = {k: [compress.quantized_size({k: params[k]}, b).total for b in CANDS]
                  for k in keys}
    leaf_bits = {k: [8 * v for v in leaf_bytes[k]] for k in keys}
    for budget_kw, leaf_size, budget in [
        ({"average_bits": 4.0}, code_bits, 4 * n_total),
        ({"budget_bytes": uniform4 - 1}, leaf_bytes, uniform4 - 1),
        ({"budget_bits": 8 * uniform4 + 40}, leaf_bits, 8 * uniform4 + 40),
    ]:
        alloc = compress.allocate_bits(params, traces, candidate_bits=CANDS, **budget_kw)
        cost, _ = brute_force(keys, sens, leaf_size, budget)
        picks = [CANDS.index(alloc.bits[k]) for k in keys]
        assert alloc.sensitivity == pytest.approx(cost, rel=1e-12)
        assert sum(leaf_size[k][c] for k, c in zip(keys, picks, strict=True)) <= budget
        assert alloc.size_bytes == compress.quantized_size(params, alloc.bits).total
        assert alloc.size_bytes == sum(leaf_bytes[k][c] for k, c in zip(keys, picks,
                                                                         strict=True))


def test_sensitivities_and_traces_closed_form():
    params, traces = small_problem(3)

    def sep(p):  # separable: per-leaf traces exact from the exact diagonal and one probe
        return sum(jnp.sum(jnp.exp(0.3 * x) * x**2) for x in jax.tree.leaves(p))

    @jit
    def run(p):
        return compress.hessian_traces(sep, p), compress.hessian_traces(
            sep, p, jax.random.key(0), 1)

    exact, est = run(params)
    sens = SENS(params, traces)
    for k, w in params.items():
        errs = [float(np.sum((numpy_quantize(np.asarray(w), b, True, None)[3] - w) ** 2))
                for b in CANDS]
        np.testing.assert_allclose(np.asarray(sens[k]),
                                   traces[k] / w.size * np.array(errs), rtol=1e-12)
        w = np.asarray(w)
        ref = float(np.sum(np.exp(0.3 * w) * (0.09 * w**2 + 1.2 * w + 2)))  # Σ f''(w)
        assert float(exact[k]) == pytest.approx(ref, rel=1e-12)
        assert float(est[k]) == pytest.approx(ref, rel=1e-12)


def test_min_cost_assignment_random_knapsacks():
    rng = np.random.default_rng(5)
    for _ in range(20):
        rows, cols = rng.integers(1, 5), rng.integers(1, 4)
        sizes = rng.integers(0, 10, (rows, cols))
        costs = rng.uniform(0, 1, (rows, cols))
        budget = int(sizes.min(axis=1).sum() + rng.integers(0, 15))
        picks = compress.min_cost_assignment(sizes, costs, budget)
        best = min(sum(costs[r, c] for r, c in enumerate(combo))
                   for combo in itertools.product(range(cols), repeat=rows)
                   if sum(sizes[r, c] for r, c in enumerate(combo)) <= budget)
        assert sum(sizes[r, c] for r, c in enumerate(picks)) <= budget
        assert sum(costs[r, c] for r, c in enumerate(picks)) == pytest.approx(best, rel=1e-12)


def test_bad_inputs_raise_naming_the_argument():
    x = jnp.ones((3, 2))
    params, traces = small_problem(0)
    for bad in (1, 9, 0, -3):
        with pytest.raises(ValueError, match="bits"):
            compress.quantize(x, bad)
    for bad in (4.0, True, "8"):
        with pytest.raises(TypeError, match="bits"):
            compress.fake_quantize(x, bad)
    with pytest.raises(ValueError, match="axis"):
        compress.quantize(x, 4, axis=2)
    with pytest.raises(TypeError, match="x"):
        compress.quantize(jnp.ones(3, jnp.int32), 4)
    with pytest.raises(ValueError, match="bits"):
        compress.fake_quantize_tree(params, {**{k: 4 for k in params}, "l0": 12})
    with pytest.raises(ValueError, match="bits"):
        compress.quantized_size(params, {"l0": 4})
    with pytest.raises(ValueError, match="channel_axis"):
        compress.fake_quantize_tree(params, 4, channel_axis=5)
    with pytest.raises(ValueError, match="budget_bytes"):
        compress.allocate_bits(params, traces, budget_bytes=10)
    with pytest.raises(ValueError, match="average_bits"):
        compress.allocate_bits(params, traces, average_bits=1.5)
    with pytest.raises(ValueError, match="exactly one"):
        compress.allocate_bits(params, traces)
    with pytest.raises(ValueError, match="exactly one"):
        compress.allocate_bits(params, traces, budget_bytes=100, average_bits=4)
    with pytest.raises(ValueError, match="candidate_bits"):
        compress.allocate_bits(params, traces, average_bits=4, candidate_bits=(4, 10))
    with pytest.raises(ValueError, match="candidate_bits"):
        compress.allocate_bits(params, traces, average_bits=4, candidate_bits=())
    with pytest.raises(ValueError, match="traces"):
        compress.allocate_bits(params, {"l0": 1.0}, average_bits=4)
    with pytest.raises(ValueError, match="quantizable"):
        compress.allocate_bits(params, traces, average_bits=4, quantizable={"l0": True})


# ------------------------------------------------------------ non-finite values


NAN, INF = float("nan"), float("inf")


def test_nonfinite_weights_raise_naming_the_argument_in_eager_calls():
    nonfinite = r"`x` holds NaN or inf \(1 of 3 entries non-finite, first at index \(1,\)\)"
    for bad in ([0.5, NAN, 1.0], jnp.asarray([0.5, INF, 1.0]), np.array([0.5, -INF, 1.0])):
        for symmetric in (True, False):
            with pytest.raises(ValueError, match=nonfinite + r".*jnp.nan_to_num"):
                compress.quantize(bad, 4, symmetric=symmetric)
        with pytest.raises(ValueError, match=nonfinite):
            compress.fake_quantize(jnp.asarray(bad), 3)
        with pytest.raises(ValueError, match=nonfinite):
            compress.quantization_error(jnp.asarray(bad), 3)
    with pytest.raises(ValueError, match=r"`x` holds NaN.*first at index \(0, 1\)"):
        compress.quantize(jnp.asarray([[1.0, NAN], [2.0, 3.0]]), 4, axis=1)
    params = {"a": jnp.ones(3), "b": jnp.asarray([1.0, NAN])}
    with pytest.raises(ValueError, match=r"`params` leaf \['b'\] holds NaN or inf"):
        compress.fake_quantize_tree(params, 4)
    with pytest.raises(ValueError, match=r"`params` leaf \['b'\] holds NaN or inf"):
        compress.hawq_sensitivities(params, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match=r"`traces` leaf \['a'\] holds NaN or inf"):
        compress.hawq_sensitivities({"a": jnp.ones(3)}, {"a": INF})
    # A calibrated range must be finite, with a positive step.
    x = jnp.asarray([0.5, 1.0])
    for bad in (NAN, INF):
        with pytest.raises(ValueError, match="`scale` holds NaN or inf"):
            compress.quantize(x, 4, scale=bad)
        with pytest.raises(ValueError, match="`zero_point` holds NaN or inf"):
            compress.quantize(x, 4, symmetric=False, scale=0.1, zero_point=bad)
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match="`scale` must be > 0"):
            compress.fake_quantize(x, 4, scale=bad)


def test_traced_nonfinite_weights_propagate_to_the_scale():
    """Under jit nothing can raise: NaN/inf must show in the scale, not hide as scale 1."""
    x = jnp.asarray([[0.5, 2.0], [NAN, 1.0], [1.0, -1.0]])
    cases = list(itertools.product((True, False), (None, 1)))  # (symmetric, axis)

    @jit
    def run(x):
        out = []
        for symmetric, axis in cases:
            codes, s, z = compress.quantize(x, 4, symmetric=symmetric, axis=axis)
            out.append((s, compress.dequantize(codes, s, z)))
        inf_scale = compress.quantize(jnp.where(jnp.isnan(x), INF, x), 4)[1]
        return out, inf_scale, compress.fake_quantize(x, 4, axis=1)

    out, inf_scale, fq = run(x)
    for (_, axis), (s, deq) in zip(cases, out, strict=True):
        if axis is None:  # one range for the tensor: all of it is NaN
            assert np.isnan(s) and np.all(np.isnan(deq))
        else:  # per channel: only the channel holding the NaN
            assert np.isnan(s[0, 0]) and np.isfinite(s[0, 1])
            assert np.all(np.isnan(deq[:, 0])) and np.all(np.isfinite(deq[:, 1]))
    assert np.isinf(inf_scale)
    assert np.all(np.isnan(fq[:, 0])) and np.all(np.isfinite(fq[:, 1]))


def test_allocate_bits_rejects_nonfinite_traces_weights_and_budgets():
    params, traces = small_problem(0)
    with pytest.raises(ValueError, match=r"`traces` leaf \['l1'\] holds NaN or inf"):
        compress.allocate_bits(params, {**traces, "l1": NAN}, average_bits=4)
    with pytest.raises(ValueError, match=r"`traces` leaf \['l2'\] holds NaN or inf"):
        compress.allocate_bits(params, {**traces, "l2": -INF}, budget_bytes=100)
    bad_params = {**params, "l0": params["l0"].at[1, 2].set(NAN)}
    with pytest.raises(ValueError, match=r"`params` leaf \['l0'\] holds NaN.*index \(1, 2\)"):
        compress.allocate_bits(bad_params, traces, average_bits=4)
    # ...unless that leaf is not quantized (its values are never used then).
    alloc = compress.allocate_bits(bad_params, traces, average_bits=4,
                                   quantizable={k: k != "l0" for k in params})
    assert alloc.bits["l0"] == 0
    for name in ("average_bits", "budget_bytes", "budget_bits"):
        for bad in (INF, NAN, -INF, -4.0, 0):
            with pytest.raises(ValueError, match=f"`{name}` must be a finite positive number"):
                compress.allocate_bits(params, traces, **{name: bad})
    # A huge but finite budget is no limit (it used to overflow when rounded to an int).
    for budget in ({"average_bits": 1e308}, {"budget_bytes": 10**400}, {"budget_bits": 1e300}):
        alloc = compress.allocate_bits(params, traces, **budget)
        assert set(alloc.bits.values()) == {8}
    # Finite traces whose sensitivities overflow cannot be ranked either.
    with pytest.raises(ValueError, match=r"sensitivities of leaf \['l0'\] overflow.*`traces`"):
        compress.allocate_bits({"l0": params["l0"] * 1e3}, {"l0": 1e308}, average_bits=4)


def test_min_cost_assignment_rejects_nonfinite_input():
    sizes, costs = np.array([[1, 2], [1, 3]]), np.array([[1.0, 0.5], [2.0, 0.1]])
    assert compress.min_cost_assignment(sizes, costs, INF) == [1, 1]  # unconstrained
    with pytest.raises(ValueError, match=r"`costs` holds NaN or inf.*index \(1, 0\)"):
        compress.min_cost_assignment(sizes, np.array([[1.0, 0.5], [NAN, 0.1]]), 4)
    with pytest.raises(ValueError, match="`costs` holds NaN or inf"):
        compress.min_cost_assignment(sizes, np.array([[INF, INF], [1.0, 0.1]]), 4)
    with pytest.raises(ValueError, match=r"`budget` must be a number \(not NaN\)"):
        compress.min_cost_assignment(sizes, costs, NAN)
    with pytest.raises(ValueError, match="`budget`=1 is infeasible"):
        compress.min_cost_assignment(sizes, costs, 1)
    for bad in ([[1, -2], [1, 3]], [[1, NAN], [1, 3]], [[1, 2.5], [1, 3]]):
        with pytest.raises(ValueError, match="`sizes` must be non-negative integers"):
            compress.min_cost_assignment(np.array(bad), costs, 4)
