"""Calculus layer against dense oracles (jax.hessian / jax.jacfwd) on random pytrees."""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jopt
from tests.helpers import random_tree, ravel, shape_lists

TOL = {jnp.float32: 2e-5, jnp.float64: 1e-12}


def objective(tree):
    """Non-quadratic, couples every leaf with every other (dense Hessian)."""
    leaves = jax.tree.leaves(tree)
    local = sum(jnp.sum(jnp.sin(x) * x**2) for x in leaves)
    total = sum(jnp.sum(x) for x in leaves)
    return local + 0.1 * total**2 + jnp.exp(0.1 * total)


def dense_hvp(f, x, v):
    return np.asarray(jax.jit(jopt.hessian_matrix, static_argnums=0)(f, x)) @ ravel(v)


def jit_hvp(f, x, v):
    """jopt.hvp compiled (eager op-by-op dispatch of jvp-of-grad is slow on the CPU)."""
    return jax.jit(jopt.hvp, static_argnums=0)(f, x, v)


# ---------------------------------------------------------------------------- HVP


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_hvp_matches_dense_hessian(dtype):
    x = random_tree(0, dtype=dtype)
    v = random_tree(1, dtype=dtype)
    hv = jit_hvp(objective, x, v)
    assert jax.tree.structure(hv) == jax.tree.structure(x)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(hv))
    expected = dense_hvp(objective, jax.tree.map(lambda a: a.astype(jnp.float64), x),
                         jax.tree.map(lambda a: a.astype(jnp.float64), v))
    np.testing.assert_allclose(ravel(hv), expected, rtol=TOL[dtype], atol=TOL[dtype])


@settings(max_examples=8, deadline=None)
@given(shapes=shape_lists, seed=st.integers(0, 2**16))
def test_hvp_property_random_pytrees(shapes, seed):
    x = random_tree(seed, shapes)
    v = random_tree(seed + 1, shapes)
    np.testing.assert_allclose(
        ravel(jit_hvp(objective, x, v)), dense_hvp(objective, x, v), rtol=1e-10, atol=1e-10
    )


def test_hvp_fn_linearizes_once_and_matches_hvp():
    x = random_tree(2)
    grad, hvp_at_x = jopt.grad_and_hvp_fn(objective, x)
    np.testing.assert_allclose(ravel(grad), ravel(jax.grad(objective)(x)), rtol=1e-12)
    for seed in range(3):
        v = random_tree(10 + seed)
        np.testing.assert_allclose(
            ravel(hvp_at_x(v)), ravel(jopt.hvp(objective, x, v)), rtol=1e-12, atol=1e-12
        )
    other = jopt.hvp_fn(objective, x)
    np.testing.assert_allclose(ravel(other(v)), ravel(hvp_at_x(v)), rtol=1e-12)


def test_hvp_under_jit_and_vmap():
    x = random_tree(3)
    vs = jax.tree.map(lambda a: jnp.stack([a, 2 * a, -a]), random_tree(4))
    batched = jax.jit(jax.vmap(lambda v: jopt.hvp(objective, x, v)))(vs)
    for i, scale in enumerate([1.0, 2.0, -1.0]):
        v = jax.tree.map(lambda a, s=scale: s * a, random_tree(4))
        np.testing.assert_allclose(
            ravel(jax.tree.map(lambda a, i=i: a[i], batched)), dense_hvp(objective, x, v),
            rtol=1e-10, atol=1e-10,
        )


# --------------------------------------------------------------------- Gauss-Newton


def mlp(params, inputs):
    h = jnp.tanh(inputs @ params["w1"] + params["b1"][None, :])
    return h @ params["w2"] + params["b2"][None, :]


def cross_entropy(labels):
    def loss(logits):
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1))

    return loss


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_gnvp_matches_dense_jt_h_j(dtype):
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.standard_normal((4, 5)), dtype),
        "b1": jnp.asarray(rng.standard_normal(5), dtype),
        "w2": jnp.asarray(rng.standard_normal((5, 3)), dtype),
        "b2": jnp.asarray(rng.standard_normal(3), dtype),
    }
    inputs = jnp.asarray(rng.standard_normal((6, 4)), dtype)
    labels = jax.nn.one_hot(jnp.asarray(rng.integers(0, 3, 6)), 3, dtype=dtype)
    v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), dtype), params)
    model = lambda p: mlp(p, inputs)  # noqa: E731
    loss = cross_entropy(labels)

    got = jax.jit(lambda p, u: jopt.gnvp(model, loss, p, u))(params, v)
    assert all(g.dtype == dtype for g in jax.tree.leaves(got))

    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    flat, unravel = jax.flatten_util.ravel_pytree(p64)
    jac = jax.jit(jax.jacfwd(lambda z: model(unravel(z)).astype(jnp.float64).ravel()))(flat)
    z = model(p64)
    h_loss = jax.jit(jax.hessian(lambda zz: loss(zz.reshape(z.shape).astype(jnp.float64))))(
        z.ravel())
    expected = jac.T @ h_loss @ jac @ ravel(v).astype(np.float64)
    tol = 1e-4 if dtype == jnp.float32 else 1e-11
    np.testing.assert_allclose(ravel(got), expected, rtol=tol, atol=tol)

    # Gauss-Newton with a convex loss is positive semi-definite.
    many = jax.jit(lambda u: jopt.gnvp_fn(model, loss, p64)(u))
    for seed in range(5):
        u = random_tree(seed, [a.shape for a in jax.tree.leaves(p64)])
        u = jax.tree.unflatten(jax.tree.structure(p64), jax.tree.leaves(u))
        assert float(ravel(u) @ ravel(many(u))) >= -1e-12


# ----------------------------------------------------------------- dense derivatives


def test_jacobian_picks_mode_by_size_and_matches_jacfwd():
    x = random_tree(5, [(2,), (3,)])  # n_in = 5

    def wide(t):  # 5 -> 12 outputs: forward mode
        return jnp.outer(t["leaf0"], jnp.concatenate([t["leaf1"], t["leaf0"] ** 2, t["leaf1"]]))

    def narrow(t):  # 5 -> 2 outputs: reverse mode
        return jnp.stack([jnp.sum(t["leaf0"] * t["leaf1"][:2]), jnp.prod(t["leaf1"])])

    for f, expect_fwd in [(wide, True), (narrow, False)]:
        with mock.patch.object(jax, "jacfwd", wraps=jax.jacfwd) as fwd, \
                mock.patch.object(jax, "jacrev", wraps=jax.jacrev) as rev:
            got = jopt.jacobian(f, x)
        assert fwd.called == expect_fwd and rev.called == (not expect_fwd)
        ref = jax.jacfwd(f)(x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_hessian_matches_jax_hessian_and_matrix_is_symmetric():
    x = random_tree(6, [(2,), (2, 2)])
    got = jax.jit(jopt.hessian, static_argnums=0)(objective, x)
    ref = jax.jit(jax.hessian(objective))(x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    mat = jax.jit(jopt.hessian_matrix, static_argnums=0)(objective, x)
    assert mat.shape == (6, 6)
    np.testing.assert_allclose(mat, mat.T, atol=1e-12)


# ------------------------------------------------------------------------ Hutchinson


def quadratic_with(matrix, shapes):
    """f(x) = ½ ravel(x)ᵀ A ravel(x) on a pytree with the given leaf shapes."""
    template = random_tree(0, shapes)
    _, unravel = jax.flatten_util.ravel_pytree(template)

    def f(tree):
        z = jax.flatten_util.ravel_pytree(tree)[0]
        return 0.5 * z @ (matrix @ z)

    return f, template, unravel


def random_symmetric(n, seed):
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n, n))
    return jnp.asarray((b + b.T) / 2)


def test_hutchinson_diag_is_exact_for_diagonal_hessian():
    shapes = [(3,), (2, 2)]
    d = jnp.arange(1.0, 8.0)
    f, x, _ = quadratic_with(jnp.diag(d), shapes)
    est = jopt.hutchinson_diag(f, x, jax.random.key(0), num_samples=1)
    np.testing.assert_allclose(ravel(est), d, rtol=1e-12)


def test_hutchinson_diag_unbiased_within_statistical_bound():
    shapes = [(4,), (3, 2), (2,)]
    n = 12
    a = random_symmetric(n, 1)
    f, x, _ = quadratic_with(a, shapes)
    num_samples = 4000
    est = ravel(jopt.hutchinson_diag(f, x, jax.random.key(1), num_samples=num_samples))
    off_diag_sq = np.sum(np.asarray(a) ** 2, axis=1) - np.diag(np.asarray(a)) ** 2
    std = np.sqrt(off_diag_sq / num_samples)  # exact std of the Rademacher estimator
    z = np.abs(est - np.diag(np.asarray(a))) / std
    assert np.all(z < 4.5), z  # 12 coordinates: P(any |z| > 4.5) < 1e-4
    # The bound has power: a 20 % bias in the estimate would be rejected.
    assert np.any(np.abs(1.2 * est - np.diag(np.asarray(a))) / std >= 4.5)


def test_hutchinson_trace_unbiased_within_statistical_bound_and_batched():
    shapes = [(5,), (5,)]
    a = random_symmetric(10, 2) + 3 * jnp.eye(10)
    f, x, _ = quadratic_with(a, shapes)
    num_samples = 2000
    key = jax.random.key(3)
    est = float(jopt.hutchinson_trace(f, x, key, num_samples=num_samples))
    an = np.asarray(a)
    std = np.sqrt(2 * (np.sum(an**2) - np.sum(np.diag(an) ** 2)) / num_samples)
    assert abs(est - np.trace(an)) < 4.5 * std
    assert abs(est * 1.2 - np.trace(an)) >= 4.5 * std  # the bound can fail
    chunked = float(jopt.hutchinson_trace(f, x, key, num_samples=num_samples, batch_size=300))
    np.testing.assert_allclose(chunked, est, rtol=1e-12)


def test_hutchinson_diag_under_jit_keeps_float32():
    x = random_tree(7, dtype=jnp.float32)
    est = jax.jit(lambda k: jopt.hutchinson_diag(objective, x, k, num_samples=8))(
        jax.random.key(0)
    )
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(est))
    assert jax.tree.structure(est) == jax.tree.structure(x)


# ---------------------------------------------------------------- value and gradient


def _polynomial(x):
    return jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum((1.0 - x) ** 2)


def _stencil_pow(x):  # BROYDN7D's form: a fractional power read through shifted slices
    xp = jnp.pad(x, 1)
    return jnp.sum(jnp.abs(1.0 - xp[:-2] - 2.0 * xp[2:] + (3.0 - 2.0 * x) * x) ** (7.0 / 3.0))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("split", [True, False])
def test_value_and_grad_fn_equals_jax_value_and_grad(dtype, split):
    x = random_tree(3, dtype=dtype)
    vg = jax.jit(jopt.value_and_grad_fn(objective, x, split=split))
    value, grad = vg(x)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(objective))(x)
    assert value.dtype == dtype and value.shape == ()
    np.testing.assert_allclose(value, ref_value, rtol=TOL[dtype])
    np.testing.assert_allclose(ravel(grad), ravel(ref_grad), rtol=TOL[dtype] * 10,
                               atol=TOL[dtype])
    assert all(g.dtype == dtype for g in jax.tree.leaves(grad))
    assert jax.tree.structure(grad) == jax.tree.structure(x)


@settings(max_examples=8, deadline=None)
@given(shapes=shape_lists, seed=st.integers(0, 2**16))
def test_value_and_grad_fn_split_property_random_pytrees(shapes, seed):
    x = random_tree(seed, shapes)
    value, grad = jax.jit(jopt.value_and_grad_fn(objective, x, split=True))(x)
    ref_value, ref_grad = jax.value_and_grad(objective)(x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(ravel(grad), ravel(ref_grad), rtol=1e-10, atol=1e-12)


def test_value_and_grad_fn_split_program_and_batches():
    x = jnp.linspace(0.1, 1.0, 16)
    vg = jopt.value_and_grad_fn(_stencil_pow, x, split=True)
    text = jax.jit(vg).lower(x).compile().as_text()
    assert "conditional(" in text  # the backward pass is its own computation
    assert "conditional(" not in jax.jit(jopt.value_and_grad_fn(_polynomial, x)).lower(
        x).compile().as_text()
    np.testing.assert_allclose(vg(x)[1], jax.grad(_stencil_pow)(x), rtol=1e-12)
    xs = jnp.stack([x, 2.0 * x, -x])
    values, grads = jax.vmap(vg)(xs)  # the cond becomes a select under vmap
    np.testing.assert_allclose(grads, jax.vmap(jax.grad(_stencil_pow))(xs), rtol=1e-12)
    np.testing.assert_allclose(values, jax.vmap(_stencil_pow)(xs), rtol=1e-12)


def test_value_and_grad_fn_split_reports_nan_gradient_where_f_is_not_finite():
    def barrier(x):
        return jnp.sum(x - jnp.log(x))

    x = jnp.array([0.5, 2.0])
    vg = jax.jit(jopt.value_and_grad_fn(barrier, x, split=True))
    np.testing.assert_allclose(vg(x)[1], 1.0 - 1.0 / x)
    value, grad = vg(jnp.array([-1.0, 2.0]))
    assert np.isnan(value) and np.all(np.isnan(grad))
    # the line search shrinks away from such trials: minimize still reaches x = 1
    res = jopt.minimize(barrier, jnp.array([0.01, 30.0]))
    assert int(res.status) == 0
    np.testing.assert_allclose(res.x, 1.0, atol=1e-6)


def test_value_and_grad_fn_split_takes_custom_vjp_objectives():
    @jax.custom_vjp
    def smooth_abs(x):
        return jnp.sqrt(x * x + 1.0)

    smooth_abs.defvjp(lambda x: (smooth_abs(x), x),
                      lambda x, ct: (ct * x / jnp.sqrt(x * x + 1.0),))

    def f(x):  # jax.linearize (forward mode) would reject this objective
        return jnp.sum(smooth_abs(x - 2.0) * jnp.exp(0.1 * x))

    x = jnp.linspace(-1.0, 1.0, 5)
    value, grad = jax.jit(jopt.value_and_grad_fn(f, x, split=True))(x)
    ref_value, ref_grad = jax.value_and_grad(f)(x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)


# ------------------------------------------------------------------------- bad input


def test_non_scalar_objective_is_rejected():
    x = random_tree(0)
    with pytest.raises(ValueError, match="`f` must return a scalar"):
        jopt.hvp(lambda t: t["leaf0"] * 2, x, x)
    with pytest.raises(ValueError, match="`f` must return a scalar"):
        jopt.hutchinson_trace(lambda t: t["leaf0"], x, jax.random.key(0), 2)
    with pytest.raises(ValueError, match="`loss_fn` must return a scalar"):
        jopt.gnvp(lambda p: p["leaf0"], lambda z: z, x, x)


def test_value_and_grad_fn_rejects_bad_input():
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="`f` must return a scalar"):
        jopt.value_and_grad_fn(lambda y: jnp.exp(y), x, split=True)
    with pytest.raises(TypeError, match="real floating-point scalar"):
        jopt.value_and_grad_fn(lambda y: jnp.sum(y).astype(jnp.int32), x)
    with pytest.raises(TypeError, match="`split` must be True or False"):
        jopt.value_and_grad_fn(lambda y: jnp.sum(y), x, split="yes")
    with pytest.raises(TypeError, match="x"):
        jopt.value_and_grad_fn(lambda y: jnp.sum(y), jnp.ones(3, jnp.int32))


def test_mismatched_direction_is_rejected():
    x = random_tree(0)
    with pytest.raises(ValueError, match="`v` must have the same pytree structure"):
        jopt.hvp(objective, x, {"leaf0": x["leaf0"]})
    bad_shape = dict(x, leaf0=jnp.ones(7))
    with pytest.raises(ValueError, match=r"`v` leaf .*leaf0.* has shape"):
        jopt.hvp(objective, x, bad_shape)


@pytest.mark.parametrize(
    ("leaf", "match"),
    [(jnp.arange(3), "dtype int"), (jnp.ones(3, jnp.complex64), "complex")],
)
def test_integer_and_complex_points_are_rejected(leaf, match):
    with pytest.raises(TypeError, match=match):
        jopt.hvp(lambda t: jnp.sum(t["a"]).real, {"a": leaf}, {"a": leaf})


@pytest.mark.parametrize("num_samples", [0, -3])
def test_num_samples_below_one_is_rejected(num_samples):
    x = random_tree(0)
    with pytest.raises(ValueError, match="`num_samples` must be >= 1"):
        jopt.hutchinson_diag(objective, x, jax.random.key(0), num_samples)


def test_non_integer_num_samples_is_rejected():
    with pytest.raises(TypeError, match="`num_samples` must be a Python int"):
        jopt.hutchinson_trace(objective, random_tree(0), jax.random.key(0), 2.0)
