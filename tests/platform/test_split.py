"""The split-backward heuristic of the platform layer (jopt._platform.split)."""

import jax
import jax.numpy as jnp

from jopt._platform.split import split_backward_pays as _pays


def split_backward_pays(f, x):
    return _pays(jax.make_jaxpr(jax.value_and_grad(f))(x).jaxpr)


def _polynomial(x):
    return jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum((1.0 - x) ** 2)


def _stencil_pow(x):  # BROYDN7D's form: a fractional power read through shifted slices
    xp = jnp.pad(x, 1)
    return jnp.sum(jnp.abs(1.0 - xp[:-2] - 2.0 * xp[2:] + (3.0 - 2.0 * x) * x) ** (7.0 / 3.0))


def test_split_backward_pays_for_transcendentals_without_matrix_products():
    x = jnp.linspace(0.1, 1.0, 8)
    a = jnp.ones((4, 8))
    assert split_backward_pays(_stencil_pow, x)
    assert split_backward_pays(lambda y: jnp.sum(jnp.cos(y[1:] - y[:-1] ** 2)), x)
    assert not split_backward_pays(_polynomial, x)  # integer powers are not transcendental
    assert not split_backward_pays(lambda y: jnp.sum(jnp.exp(a @ y)), x)  # a matrix product
    # found inside nested jits and custom derivatives (softplus is a custom_jvp)
    assert split_backward_pays(jax.jit(lambda y: jnp.sum(jax.nn.softplus(y))), x)
    assert not split_backward_pays(jax.jit(lambda y: jnp.sum(jax.nn.relu(y) ** 2)), x)
