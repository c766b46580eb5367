"""Distillation loss against the closed form; gradients; the train step with optax and jopt."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jopt import compress

_CPU_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}


def jit(fn, **kw):
    return jax.jit(fn, compiler_options=_CPU_OPTIONS if jax.default_backend() == "cpu"
                   else None, **kw)


RNG = np.random.default_rng(0)
S = RNG.standard_normal((7, 4)) * 3
T = RNG.standard_normal((7, 4)) * 3
LABELS = RNG.integers(0, 4, 7)


def numpy_loss(s, t, labels, temp, alpha):
    """Direct formula with float64 softmaxes: α T² KL(p_t ‖ p_s) + (1 − α) CE, batch mean."""
    def softmax(z):
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    pt, ps = softmax(t / temp), softmax(s / temp)
    kl = np.sum(pt * np.log(pt / ps), axis=-1)
    ce = -np.log(softmax(s)[np.arange(len(labels)), labels])
    return np.mean(alpha * temp**2 * kl + (1 - alpha) * ce)


LOSS = jit(lambda s, t, y, temp, alpha: compress.distillation_loss(
    s, t, y, temperature=temp, alpha=alpha))


@pytest.mark.parametrize("temp,alpha", [(1.0, 0.5), (4.0, 0.9), (0.5, 0.0), (10.0, 1.0)])
def test_loss_matches_closed_form(temp, alpha):
    got = float(LOSS(S, T, LABELS, temp, alpha))
    assert got == pytest.approx(numpy_loss(S, T, LABELS, temp, alpha), rel=1e-12)


def test_soft_labels_pure_distillation_and_stability():
    onehot = np.eye(4)[LABELS]

    @jit
    def run(s, t):
        kw = {"temperature": 3.0, "alpha": 0.3}
        return (compress.distillation_loss(s, t, LABELS, **kw),
                compress.distillation_loss(s, t, onehot, **kw),
                compress.distillation_loss(s, t, temperature=3.0, alpha=1.0),
                compress.distillation_loss(t, t, temperature=2.0, alpha=1.0),
                # huge logits: the log-softmax form stays finite and shift-invariant
                compress.distillation_loss(s * 1e4, t * 1e4, LABELS, temperature=2.0),
                compress.distillation_loss(s * 1e4 + 5e5, t * 1e4 - 3e5, LABELS,
                                           temperature=2.0),
                compress.distillation_loss(s.astype(jnp.float32), t, LABELS))

    hard, soft_labels, pure, zero, big, shifted, f32 = run(S, T)
    assert float(hard) == pytest.approx(float(soft_labels), rel=1e-14)
    assert float(pure) == pytest.approx(numpy_loss(S, T, LABELS, 3.0, 1.0), rel=1e-12)
    assert float(zero) == pytest.approx(0.0, abs=1e-14)
    assert np.isfinite(float(big)) and float(big) == pytest.approx(float(shifted), rel=1e-9)
    assert f32.dtype == jnp.float32


def test_gradient_closed_form_and_no_teacher_gradient():
    """d/ds [α T² KL + (1−α) CE] = [α T (p_s^T − p_t^T) + (1−α)(p_s − y)] / batch."""
    temp, alpha = 3.0, 0.7

    @jit
    def grads(s, t):
        return jax.grad(lambda s, t: compress.distillation_loss(
            s, t, LABELS, temperature=temp, alpha=alpha), argnums=(0, 1))(s, t)

    gs, gt = grads(S, T)
    sm = jax.nn.softmax
    onehot = np.eye(4)[LABELS]
    ref = (alpha * temp * (sm(S / temp) - sm(T / temp)) + (1 - alpha) * (sm(S) - onehot)) / 7
    np.testing.assert_allclose(np.asarray(gs), np.asarray(ref), rtol=1e-11, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(gt), 0.0)


def make_data():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((32, 5)))
    teacher_w = jnp.asarray(rng.standard_normal((5, 3)) * 2)
    y = jnp.argmax(x @ teacher_w, axis=1)
    return x, y, teacher_w


def student(p, x):
    return x @ p["w"] + p["b"][None]


def test_distillation_step_matches_manual_and_passes_value_fn():
    x, y, teacher_w = make_data()
    params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros(3)}
    kw = {"temperature": 2.0, "alpha": 0.8}
    sgd = optax.sgd(0.5)
    step = compress.distillation_step(student, lambda xb: xb @ teacher_w, sgd, **kw)

    def manual(p):
        return compress.distillation_loss(student(p, x), x @ teacher_w, y, **kw)

    @jit
    def run(p):
        new, _, value = step(p, sgd.init(p), (x, y))
        ref = jax.tree.map(lambda a, g: a - 0.5 * g, p, jax.grad(manual)(p))
        return new, ref, value, manual(p)

    new, ref, value, ref_value = run(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14), new, ref)
    assert float(value) == pytest.approx(float(ref_value), rel=1e-14)

    # the transform receives params, value and value_fn (what line searches and jopt's
    # second-order transforms read): a probe transform records value_fn(params) and value
    def probe_update(updates, state, params=None, *, value=None, value_fn=None, **extra):
        del state, extra
        return jax.tree.map(lambda g: -0.5 * g, updates), (value, value_fn(params))

    probe = optax.GradientTransformationExtraArgs(lambda p: (jnp.zeros(()), jnp.zeros(())),
                                                  probe_update)
    step2 = compress.distillation_step(student, lambda xb: xb @ teacher_w, probe, **kw)
    new2, (seen_value, seen_fn_value), value2 = jit(lambda p: step2(p, probe.init(p),
                                                                    (x, y)))(params)
    assert float(seen_value) == float(value2) == pytest.approx(float(ref_value), rel=1e-14)
    assert float(seen_fn_value) == pytest.approx(float(ref_value), rel=1e-14)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14), new2, ref)


def test_bad_inputs_raise_naming_the_argument():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            compress.distillation_loss(S, T, LABELS, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            compress.distillation_step(student, lambda x: x, optax.sgd(0.1), temperature=bad)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            compress.distillation_loss(S, T, LABELS, alpha=bad)
        with pytest.raises(ValueError, match="alpha"):
            compress.distillation_step(student, lambda x: x, optax.sgd(0.1), alpha=bad)
    with pytest.raises(ValueError, match=r"alpha=1\.0"):
        compress.distillation_loss(S, T, alpha=0.5)
    with pytest.raises(ValueError, match="teacher_logits"):
        compress.distillation_loss(S, T[:, :3], LABELS)
    with pytest.raises(ValueError, match="labels"):
        compress.distillation_loss(S, T, LABELS[:3])
    with pytest.raises(ValueError, match="labels"):
        compress.distillation_loss(S, T, np.ones((7, 3)))
    with pytest.raises(TypeError, match="optimizer"):
        compress.distillation_step(student, lambda x: x, "adam")
    with pytest.raises(TypeError, match="teacher_fn"):
        compress.distillation_step(student, None, optax.sgd(0.1))
