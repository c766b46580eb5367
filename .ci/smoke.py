"""Smoke test of an installed wheel, in an environment without jopt's extras."""

import importlib.metadata
import importlib.resources

import jax
import jax.numpy as jnp
import optax

import jopt

assert importlib.metadata.version("jopt") == jopt.__version__, jopt.__version__
assert importlib.resources.files("jopt").joinpath("py.typed").is_file()
assert "site-packages" in jopt.__file__, jopt.__file__  # the wheel, not the checkout


def f(x, c):
    return jnp.sum((x - c) ** 2) + jnp.sum(x ** 4)


for method in jopt.method_names():
    res = jopt.minimize(f, jnp.zeros(3), (0.5,), method=method, tol=1e-5)
    assert bool(res.success), (method, res.message)

opt = optax.chain(optax.clip_by_global_norm(1.0), jopt.adam(0.1))
x = jnp.zeros(3)
state = opt.init(x)
for _ in range(200):
    updates, state = opt.update(jax.grad(f)(x, 0.5), state, x)
    x = optax.apply_updates(x, updates)
assert float(jnp.max(jnp.abs(x - res.x))) < 1e-2, (x, res.x)
assert float(jnp.linalg.norm(jopt.hvp(lambda y: f(y, 0.5), x, jnp.ones(3)))) > 0
print(f"jopt {jopt.__version__} wheel: OK ({len(jopt.method_names())} methods solved)")
