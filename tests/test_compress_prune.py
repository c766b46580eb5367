"""Pruning: scores against dense derivatives, exact sparsity, masked fine-tuning, schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt import compress

# XLA:CPU compile time dominates these tests; the options jopt.minimize uses halve it.
_CPU_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}


def jit(fn, **kw):
    return jax.jit(fn, compiler_options=_CPU_OPTIONS if jax.default_backend() == "cpu"
                   else None, **kw)


RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((12, 5)))
Y = jnp.asarray(RNG.integers(0, 3, 12))


def make_params(dtype=jnp.float64, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.standard_normal((5, 4)), dtype),
        "b1": jnp.asarray(0.1 * rng.standard_normal(4), dtype),
        "w2": jnp.asarray(rng.standard_normal((4, 3)), dtype),
    }


def model(p: dict) -> jax.Array:
    return jnp.tanh(X @ p["w1"] + p["b1"][None]) @ p["w2"]


def loss_z(z: jax.Array) -> jax.Array:
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), Y[:, None], axis=1))


def loss(p: dict) -> jax.Array:
    return loss_z(model(p))


def assert_tree_allclose(a, b, **kw) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


# ---------------------------------------------------------------------------- scores


def test_scores_closed_forms():
    p = jax.tree.map(np.asarray, make_params())
    g = jax.tree.map(lambda x: 2.0 * x + 1.0, p)
    h = jax.tree.map(lambda x: -3.0 * np.ones_like(x), p)
    batched = jax.tree.map(lambda d: np.stack([d, -2 * d, 0 * d]), g)

    @jit
    def scores(p, g, h, batched):
        return (compress.magnitude_scores(p), compress.taylor_scores(p, g),
                compress.taylor_scores(p, batched, batched=True), compress.obd_scores(p, h),
                compress.obd_scores(p, h, abs_curvature=False))

    mag, tay, tay_b, obd, obd_signed = scores(p, g, h, batched)
    assert_tree_allclose(mag, jax.tree.map(np.abs, p), rtol=0)
    taylor = jax.tree.map(lambda w, d: np.abs(w * d), p, g)
    assert_tree_allclose(tay, taylor, rtol=1e-15)
    assert_tree_allclose(tay_b, taylor, rtol=1e-15)
    assert_tree_allclose(obd, jax.tree.map(lambda w: 1.5 * w**2, p), rtol=1e-15)
    assert_tree_allclose(obd_signed, jax.tree.map(lambda w: -1.5 * w**2, p), rtol=1e-15)


def test_obd_with_exact_hessian_diag_matches_jax_hessian():
    p = make_params()
    flat, unravel = jax.flatten_util.ravel_pytree(p)

    @jit
    def run(q):
        diag = compress.hessian_diag(loss, q, batch_size=7)   # 36 = 5 chunks of 7 + padding
        dense = jax.hessian(lambda f: loss(unravel(f)))(flat)
        return jnp.diagonal(dense), diag, compress.obd_scores(q, diag, abs_curvature=False)

    dense_diag_flat, diag, scores = run(p)
    ref = unravel(dense_diag_flat)
    assert_tree_allclose(diag, ref, rtol=1e-12, atol=1e-15)
    assert_tree_allclose(scores, jax.tree.map(lambda w, d: 0.5 * d * w**2, p, ref),
                         rtol=1e-12, atol=1e-15)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    """Separable loss Σ f(w_i), elementwise model: every Rademacher probe is exact."""
    p = make_params()

    def sep(q):  # f(w) = cosh(w) + w⁴, f''(w) = cosh(w) + 12 w²
        return sum(jnp.sum(jnp.cosh(x) + x**4) for x in jax.tree.leaves(q))

    def elementwise(q):
        return jax.tree.map(jnp.sin, q)

    @jit
    def run(q):
        return (compress.hessian_diag(sep, q, jax.random.key(3), num_samples=1),
                compress.gauss_newton_diag(elementwise, sep, q, jax.random.key(4), 2),
                compress.gauss_newton_diag(elementwise, sep, q))

    est, est_gn, exact_gn = run(p)
    assert_tree_allclose(est, jax.tree.map(lambda w: np.cosh(w) + 12 * w**2, p), rtol=1e-13)
    assert_tree_allclose(est_gn, exact_gn, rtol=1e-13)
    # G = Jᵀ H_L J with J = diag(cos w), H_L = diag(f''(sin w))
    assert_tree_allclose(exact_gn, jax.tree.map(
        lambda w: np.cos(w) ** 2 * (np.cosh(np.sin(w)) + 12 * np.sin(w) ** 2), p), rtol=1e-13)


def test_gauss_newton_diag_matches_dense_jt_h_j():
    p = make_params()
    flat, unravel = jax.flatten_util.ravel_pytree(p)

    @jit
    def run(f):
        q = unravel(f)
        jac = jax.jacobian(lambda g: model(unravel(g)).ravel())(f)              # (m, n)
        h_l = jax.hessian(lambda z: loss_z(z.reshape(12, 3)))(model(q).ravel())  # (m, m)
        return (jnp.einsum("ai,ab,bi->i", jac, h_l, jac),
                compress.gauss_newton_diag(model, loss_z, q, batch_size=16))

    ref, exact = run(flat)
    assert_tree_allclose(exact, unravel(ref), rtol=1e-12, atol=1e-15)
    assert all(np.all(np.asarray(d) >= 0) for d in jax.tree.leaves(exact))  # PSD diagonal


# ----------------------------------------------------------------------------- masks


def numpy_keep(scores: np.ndarray, k: int) -> np.ndarray:
    keep = np.ones(scores.size, bool)
    keep[np.argsort(scores, kind="stable")[:k]] = False
    return keep


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.9, 0.99])
def test_global_mask_exact_sparsity_and_reference(sparsity):
    p = make_params()
    scores = compress.magnitude_scores(p)
    mask = compress.compute_mask(scores, sparsity, prunable=compress.weight_matrices)
    assert np.all(np.asarray(mask["b1"]))
    n = p["w1"].size + p["w2"].size
    k = round(sparsity * n)
    assert sum(int((~m).sum()) for m in (mask["w1"], mask["w2"])) == k
    ref = numpy_keep(np.concatenate([np.ravel(scores["w1"]), np.ravel(scores["w2"])]), k)
    got = np.concatenate([np.ravel(mask["w1"]), np.ravel(mask["w2"])])
    np.testing.assert_array_equal(got, ref)
    assert compress.mask_sparsity(mask, prunable=compress.weight_matrices) == k / n


def test_per_leaf_targets_and_traced_sparsity():
    p = make_params()
    scores = compress.magnitude_scores(p)
    targets = {"w1": 0.5, "b1": 0.25, "w2": 0.75}

    @jit
    def run(sc, s):
        return (compress.compute_mask(sc, targets, scope="per_leaf"),
                compress.compute_mask(sc, s, scope="per_leaf"),   # traced sparsity
                compress.compute_mask(sc, s, scope="global"))

    mask, traced_leaf, traced_global = run(scores, 0.6)
    for name, s in targets.items():
        assert int((~mask[name]).sum()) == round(s * p[name].size)
        np.testing.assert_array_equal(
            np.ravel(mask[name]),
            numpy_keep(np.ravel(scores[name]), round(s * p[name].size)))
    for name in targets:
        np.testing.assert_array_equal(
            np.ravel(traced_leaf[name]), numpy_keep(np.ravel(scores[name]),
                                                    round(0.6 * p[name].size)))
    flat = np.concatenate([np.ravel(scores[k]) for k in ("b1", "w1", "w2")])  # leaf order
    got = np.concatenate([np.ravel(traced_global[k]) for k in ("b1", "w1", "w2")])
    np.testing.assert_array_equal(got, numpy_keep(flat, round(0.6 * flat.size)))


def test_ties_are_deterministic_and_exact():
    ones = {"a": jnp.ones((3, 3)), "b": jnp.ones(5)}
    nan_scores = {"a": jnp.full((3, 3), jnp.nan), "b": jnp.zeros(5)}
    run = jit(lambda sc: compress.compute_mask(sc, 0.5))
    mask = run(ones)
    flat = np.concatenate([np.ravel(mask["a"]), np.ravel(mask["b"])])
    np.testing.assert_array_equal(flat, np.arange(14) >= 7)  # earlier positions first
    mask = run(nan_scores)
    assert np.all(~np.asarray(mask["b"])) and int((~mask["a"]).sum()) == 2


def test_apply_mask_keeps_structure_dtype_and_never_nan():
    p = make_params(jnp.float32)
    p["w1"] = p["w1"].at[0, 0].set(jnp.inf).at[0, 1].set(jnp.nan)
    mask = jax.tree.map(lambda x: jnp.ones(x.shape, bool), p)
    mask["w1"] = mask["w1"].at[0, :2].set(False)
    out = jax.jit(compress.apply_mask)(p, mask)
    assert jax.tree.structure(out) == jax.tree.structure(p)
    assert all(a.dtype == b.dtype and a.shape == b.shape
               for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(p), strict=True))
    assert np.all(np.isfinite(np.asarray(out["w1"]))) and float(out["w1"][0, 0]) == 0.0
    pruned, m = jit(lambda q: compress.prune(q, compress.magnitude_scores(q), 0.5))(
        make_params())
    assert compress.mask_sparsity(m) == 0.5
    assert all(np.all(np.asarray(x)[~np.asarray(k)] == 0)
               for x, k in zip(jax.tree.leaves(pruned), jax.tree.leaves(m), strict=True))


# ------------------------------------------------------------------------ transforms


def test_keep_pruned_in_chain_keeps_zeros_and_passes_kept_updates():
    p = make_params()
    mask = compress.compute_mask(compress.magnitude_scores(p), 0.6,
                                 prunable=compress.weight_matrices)
    # params deliberately NOT zeroed first: one step must land pruned weights on exact 0
    inner = jopt.adamw(1e-2, weight_decay=0.1)
    tx = optax.chain(inner, compress.keep_pruned(mask))

    def step(carry, _):
        q, s, qr, sr = carry
        g, gr = jax.grad(loss)(q), jax.grad(loss)(qr)
        u, s = tx.update(g, s, q, value=loss(q), value_fn=loss)  # extra args accepted
        ur, sr = inner.update(gr, sr, qr)
        return (optax.apply_updates(q, u), s, optax.apply_updates(qr, ur), sr), (u, ur)

    @jit
    def run(q):
        carry, (us, urs) = jax.lax.scan(step, (q, tx.init(q), q, inner.init(q)), None,
                                        length=30)
        no_params, _ = compress.keep_pruned(mask).update(q, optax.EmptyState())
        return carry[0], jax.tree.map(lambda u: u[0], us), jax.tree.map(lambda u: u[0], urs), \
            no_params, loss(carry[0]), loss(compress.apply_mask(q, mask))

    final, first_u, ref_u, no_params, final_loss, pruned_loss = run(p)
    for u, r, m, x in zip(*(jax.tree.leaves(t) for t in (first_u, ref_u, mask, p)),
                          strict=True):
        m = np.asarray(m)
        np.testing.assert_array_equal(np.asarray(u)[m], np.asarray(r)[m])
        np.testing.assert_array_equal(np.asarray(u)[~m], -np.asarray(x)[~m])
    for x, y, m in zip(jax.tree.leaves(final), jax.tree.leaves(no_params),
                       jax.tree.leaves(mask), strict=True):
        assert np.all(np.asarray(x)[~np.asarray(m)] == 0.0)
        assert np.all(np.asarray(y)[~np.asarray(m)] == 0.0)
    assert float(final_loss) < float(pruned_loss)


def test_polynomial_schedule_closed_form():
    s_i, s_f, t0, n, dt = 0.1, 0.9, 3, 4, 2
    sched = compress.polynomial_sparsity_schedule(s_f, n, initial_sparsity=s_i, begin_step=t0,
                                                  update_every=dt)
    for t in range(0, 20):
        tk = t0 + dt * min(max((t - t0) // dt, 0), n)
        expect = s_f + (s_i - s_f) * (1 - (tk - t0) / (n * dt)) ** 3
        assert float(sched(t)) == pytest.approx(expect, rel=1e-14)
    assert float(sched(0)) == pytest.approx(s_i) and float(sched(100)) == pytest.approx(s_f)


def test_gradual_pruning_reaches_exact_target_monotonically():
    p = make_params()
    sched = compress.polynomial_sparsity_schedule(0.8, 5, begin_step=2, update_every=3)
    tx = optax.chain(jopt.adam(1e-2), compress.gradual_pruning(
        sched, prunable=compress.weight_matrices))

    def step(carry, _):
        q, s = carry
        u, s = tx.update(jax.grad(loss)(q), s, q)
        q = optax.apply_updates(q, u)
        return (q, s), s[1].mask

    (final, state), masks = jax.jit(lambda c: jax.lax.scan(step, c, None, length=25))(
        (p, tx.init(p)))
    n = p["w1"].size + p["w2"].size
    pruned = [int((~masks["w1"][t]).sum() + (~masks["w2"][t]).sum()) for t in range(25)]
    assert pruned == [round(float(sched(t)) * n) for t in range(25)]
    assert all(np.all(masks[k][t + 1] <= masks[k][t]) for k in ("w1", "w2") for t in range(24))
    assert np.all(np.asarray(masks["b1"]))
    for x, m in zip(jax.tree.leaves(final), jax.tree.leaves(state[1].mask), strict=True):
        assert np.all(np.asarray(x)[~np.asarray(m)] == 0.0)


# ------------------------------------------------------------------------ bad inputs


def test_bad_inputs_raise_naming_the_argument():
    p = make_params()
    scores = jax.tree.map(np.abs, p)
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="sparsity"):
            compress.compute_mask(scores, bad)
    with pytest.raises(ValueError, match="scope"):
        compress.compute_mask(scores, 0.5, scope="layer")
    with pytest.raises(ValueError, match="scope='per_leaf'"):
        compress.compute_mask(scores, {"w1": 0.5, "b1": 0.5, "w2": 0.5})
    with pytest.raises(ValueError, match="prunable"):
        compress.compute_mask(scores, 0.5, prunable={"w1": True})
    with pytest.raises(TypeError, match="prunable"):
        compress.compute_mask(scores, 0.5, prunable={"w1": True, "b1": "no", "w2": True})
    mask = jax.tree.map(lambda x: np.asarray(x) > 0.5, scores)
    with pytest.raises(ValueError, match="mask"):
        compress.apply_mask(p, {"w1": mask["w1"], "w2": mask["w2"]})
    with pytest.raises(ValueError, match="mask"):
        compress.apply_mask(p, {**mask, "w1": mask["w1"].T})
    with pytest.raises(TypeError, match="mask"):
        compress.apply_mask(p, jax.tree.map(lambda m: m.astype(jnp.float32), mask))
    with pytest.raises(ValueError, match="mask"):
        compress.keep_pruned({"w1": mask["w1"]}).init(p)
    with pytest.raises(ValueError, match="grads"):
        compress.taylor_scores(p, {"w1": p["w1"]})
    with pytest.raises(ValueError, match="hess_diag"):
        compress.obd_scores(p, {"w1": p["w1"]})
    with pytest.raises(ValueError, match="initial_sparsity"):
        compress.polynomial_sparsity_schedule(0.5, 3, initial_sparsity=0.7)
    with pytest.raises(ValueError, match="final_sparsity"):
        compress.polynomial_sparsity_schedule(1.0, 3)
    with pytest.raises(ValueError, match="num_updates"):
        compress.polynomial_sparsity_schedule(0.5, 0)
    with pytest.raises(TypeError, match="params"):
        compress.magnitude_scores({"w": jnp.arange(3)})
