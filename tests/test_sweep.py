"""jopt.sweep against separate runs (the oracle), chunking, caching, selection, bad input."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jopt import adam, minimize
from jopt._checks import JoptWarning
from jopt.sweep import SweepResult, _compiled, grid, sweep

STEPS = 40
RTOL = 1e-12  # float64, relative to each leaf's largest entry: a batched matrix product
# rounds differently from the single run's matrix-vector product, so bitwise equality is
# not promised (observed: ~1e-13 after 40 Adam steps).

_rng = np.random.default_rng(0)
A = jnp.asarray(_rng.standard_normal((12, 4)), jnp.float64)
B = jnp.asarray(_rng.standard_normal(12), jnp.float64)


def loss(params: dict) -> jax.Array:
    """A smooth non-quadratic loss over a two-leaf pytree."""
    r = A @ params["w"] + params["b"] - B
    return jnp.mean(jnp.log(jnp.cosh(r))) + 0.05 * jnp.sum(params["w"] ** 2)


def _train(opt: optax.GradientTransformation, key: jax.Array) -> dict:
    params = {"w": 0.3 * jax.random.normal(key, (4,), jnp.float64),
              "b": jnp.zeros((), jnp.float64)}

    def step(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=STEPS)
    return {"params": params, "loss": loss(params), "first_loss": losses[0]}


def train_adam(config: dict, key: jax.Array) -> dict:
    return _train(adam(config["lr"], b1=config["b1"]), key)


def train_optax(config: dict, key: jax.Array) -> dict:
    return _train(optax.sgd(config["lr"], momentum=config["momentum"]), key)


def _separate(fn, configs: dict, keys: list) -> dict:
    """The oracle: one jitted run per (config, key), stacked [configs, seeds]."""
    run = jax.jit(fn)
    num = len(jax.tree.leaves(configs)[0])
    rows = []
    for i in range(num):
        config = jax.tree.map(lambda a, i=i: a[i], configs)
        rows.append([run(config, k) for k in keys])
    return jax.tree.map(lambda *xs: jnp.stack(xs), *[jax.tree.map(
        lambda *ys: jnp.stack(ys), *row) for row in rows])


def max_rel_diff(a, b) -> float:
    """max over leaves of max|a - b| / max|b| (norm-wise relative difference)."""
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / max(np.max(np.abs(y)), 1e-300))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# ----------------------------------------------------------------------------- grid


def test_grid_is_the_cartesian_product_with_zipped_groups():
    g = grid(lr=[0.1, 0.01], momentum=np.array([0.0, 0.5, 0.9]),
             betas={"b1": [0.9, 0.8], "b2": [0.99, 0.999]})
    expected = list(itertools.product([0.1, 0.01], [0.0, 0.5, 0.9],
                                      [(0.9, 0.99), (0.8, 0.999)]))
    assert len(g["lr"]) == len(expected) == 12
    got = list(zip(g["lr"].tolist(), g["momentum"].tolist(),
                   zip(g["betas"]["b1"].tolist(), g["betas"]["b2"].tolist(), strict=True),
                   strict=True))
    assert got == expected
    assert grid(n=[1, 2])["n"].dtype == jnp.int64  # the values' own dtype


# --------------------------------------------------------------- equal to separate runs


# 10 configurations x 3 seeds, shared by several tests (one compiled program for all).
ADAM_CONFIGS = {"lr": jnp.logspace(-3, -1, 10), "b1": jnp.linspace(0.0, 0.9, 10)}


def test_sweep_jopt_adam_equals_separate_runs():
    res = sweep(train_adam, ADAM_CONFIGS, seeds=3, metric="loss")
    ref = _separate(train_adam, ADAM_CONFIGS, [jax.random.key(s) for s in range(3)])
    assert res.outputs["params"]["w"].shape == (10, 3, 4)
    assert res.outputs["loss"].shape == (10, 3)
    assert max_rel_diff(res.outputs, ref) <= RTOL
    np.testing.assert_allclose(res.metrics, jnp.mean(ref["loss"], axis=1), rtol=RTOL)
    assert res.best_index == jnp.argmin(jnp.mean(ref["loss"], axis=1))


def test_without_metric_there_is_no_selection():
    res = sweep(lambda c: c["x"] * 2.0, {"x": jnp.arange(3.0)})
    np.testing.assert_array_equal(res.outputs, [0.0, 2.0, 4.0])
    assert res.metrics is None and res.best_index is None and res.best_config is None


def test_sweep_optax_transform_equals_separate_runs():
    configs = {"lr": jnp.array([0.01, 0.05, 0.2]), "momentum": jnp.array([0.0, 0.9, 0.5])}
    keys = jax.random.split(jax.random.key(7), 2)  # typed keys are used as given
    res = sweep(train_optax, configs, seeds=keys)
    ref = _separate(train_optax, configs, list(keys))
    assert max_rel_diff(res.outputs, ref) <= RTOL
    assert res.outputs["loss"].shape == (3, 2)


def test_sweep_minimize_equals_separate_solves_and_closed_form():
    def ridge(x, lam):
        return 0.5 * jnp.mean((A @ x - B) ** 2) + 0.5 * lam * jnp.sum(x ** 2)

    def solve(config):
        return minimize(ridge, jnp.zeros(4, jnp.float64), args=(config["lam"],), tol=1e-10)

    lams = jnp.array([1e-3, 1e-2, 1e-1, 1.0])
    res = sweep(solve, {"lam": lams}, metric="fun")  # a MinimizeResult field
    out = {"x": res.outputs.x, "status": res.outputs.status}
    assert int(res.best_index) == 0  # less shrinkage, lower objective
    for i, lam in enumerate(lams):
        single = minimize(ridge, jnp.zeros(4, jnp.float64), args=(lam,), tol=1e-10)
        np.testing.assert_allclose(out["x"][i], single.x, rtol=1e-10, atol=1e-12)
        exact = np.linalg.solve(A.T @ A / A.shape[0] + lam * np.eye(4), A.T @ B / A.shape[0])
        np.testing.assert_allclose(out["x"][i], exact, rtol=1e-8, atol=1e-10)
    assert np.all(np.asarray(out["status"]) == 0)


# ------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_chunked_equals_unchunked(chunk_size):
    # 10 configs (x 3 seeds): chunks of 1; of 4 (3 chunks of 4, the last padded); all.
    full = sweep(train_adam, ADAM_CONFIGS, seeds=3, metric="loss")
    cached = _compiled()._cache_size()
    part = sweep(train_adam, ADAM_CONFIGS, seeds=3, metric="loss", chunk_size=chunk_size)
    assert _compiled()._cache_size() == cached + (chunk_size < 10)  # >= 10: same program
    assert max_rel_diff(part.outputs, full.outputs) <= RTOL
    np.testing.assert_allclose(part.run_metrics, full.run_metrics, rtol=RTOL)
    assert int(part.best_index) == int(full.best_index)


# ---------------------------------------------------------------------- compilation


def test_new_values_do_not_recompile():
    traces = []

    def fn(config, key):
        traces.append(1)  # runs at trace time only
        opt = adam(config["lr"])
        x = jax.random.normal(key, (3,))
        updates, _ = opt.update(2 * x, opt.init(x), x)  # one Adam step on |x|²
        return jnp.sum((x + updates) ** 2)

    def metric(out):
        return out

    before = _compiled()._cache_size()
    first = sweep(fn, {"lr": jnp.array([1e-3, 1e-2, 1e-1])}, seeds=2, metric=metric)
    again = sweep(fn, {"lr": [3e-3, 3e-2, 0.3]}, seeds=np.array([5, 9]), metric=metric)
    assert len(traces) == 1
    assert _compiled()._cache_size() == before + 1
    assert not np.allclose(first.outputs, again.outputs)
    sweep(fn, {"lr": jnp.array([1e-3, 1e-2])}, seeds=2)  # a new shape does recompile
    assert len(traces) == 2


# ------------------------------------------------------------------------ selection


def test_best_configuration_by_metric_and_mode():
    target = 0.37

    def fn(config):
        return {"err": (config["x"] - target) ** 2, "neg": -((config["x"] - target) ** 2)}

    xs = jnp.linspace(0.0, 1.0, 21)
    res = sweep(fn, {"x": xs}, metric="err")
    assert int(res.best_index) == 7 and float(res.best_config["x"]) == pytest.approx(0.35)
    assert float(res.best_metric) == pytest.approx(0.02 ** 2)
    np.testing.assert_allclose(res.metrics, (xs - target) ** 2)
    res_max = sweep(fn, {"x": xs}, metric=lambda out: out["neg"], mode="max")
    assert int(res_max.best_index) == 7


def test_metric_is_averaged_over_seeds_and_nan_never_wins():
    def fn(config, key):
        noise = jax.random.normal(key, ())
        value = config["c"] + noise
        return jnp.where(config["c"] < 0, jnp.nan, value)  # c < 0 "diverges"

    cs = jnp.array([-5.0, 2.0, 1.0, 3.0])
    res = sweep(fn, {"c": cs}, seeds=4, metric=lambda out: out)
    noise = jnp.stack([jax.random.normal(jax.random.key(s), ()) for s in range(4)])
    np.testing.assert_allclose(res.metrics[1:], cs[1:] + jnp.mean(noise), rtol=1e-12)
    assert np.isnan(res.metrics[0])
    assert int(res.best_index) == 2 and float(res.best_config["c"]) == 1.0
    assert res.run_metrics.shape == (4, 4)
    with pytest.warns(JoptWarning, match="NaN"):
        sweep(fn, {"c": jnp.array([-1.0, -2.0])}, seeds=2, metric=lambda out: out)


def test_seed_s_is_key_s_and_result_is_a_pytree():
    def fn(config, key):
        return config["a"] * jax.random.uniform(key, (2,))

    res = sweep(fn, {"a": jnp.array([1.0, 2.0])}, seeds=[3, 11])
    assert res.outputs.shape == (2, 2, 2)
    np.testing.assert_array_equal(res.outputs[1, 1], fn({"a": 2.0}, jax.random.key(11)))
    assert isinstance(res, SweepResult)
    assert jax.tree.structure(jax.tree.map(lambda x: x, res)) == jax.tree.structure(res)


def test_sweep_inside_jit_with_traced_configs():
    def fn(config):
        return {"v": (config["x"] - 2.0) ** 2}

    @jax.jit
    def best(xs):
        return sweep(fn, {"x": xs}, metric="v").best_config["x"]

    assert float(best(jnp.array([0.0, 1.5, 3.0]))) == 1.5


# ------------------------------------------------------------------------ bad input


def _fn(config):
    return config["lr"]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: grid(), ValueError, "at least one axis"),
        (lambda: grid(lr=[]), ValueError, "axis `lr` is empty"),
        (lambda: grid(lr=[[1.0, 2.0]]), ValueError, "axis `lr` must be 1-D"),
        (lambda: grid(opt=["adam", "sgd"]), TypeError, "axis `opt` must hold numbers"),
        (lambda: grid(g={"a": [1.0], "b": [1.0, 2.0]}), ValueError, "axis `g` zips"),
        (lambda: sweep(_fn, {"lr": [1.0, 2.0], "b": [1.0]}), ValueError,
         r"`configs` leaves must all have the same leading length.*\['b'\]"),
        (lambda: sweep(_fn, {}), ValueError, "`configs` has no leaves"),
        (lambda: sweep(_fn, {"lr": jnp.zeros(0)}), ValueError, "`configs` is empty"),
        (lambda: sweep(_fn, {"lr": 0.1}), ValueError, r"`configs` leaf \['lr'\] is a scalar"),
        (lambda: sweep(_fn, {"lr": [1.0]}, chunk_size=0), ValueError, "`chunk_size` must be >= 1"),
        (lambda: sweep(_fn, {"lr": [1.0]}, chunk_size=2.5), TypeError, "`chunk_size`"),
        (lambda: sweep(_fn, {"lr": [1.0]}, mode="median"), ValueError, "`mode` must be"),
        (lambda: sweep("train", {"lr": [1.0]}), TypeError, "`fn` must be callable"),
        (lambda: sweep(_fn, {"lr": [1.0]}, metric=3), TypeError, "`metric` must be"),
        (lambda: sweep(_fn, {"lr": [1.0]}, seeds=0), ValueError, "`seeds` must be >= 1"),
        (lambda: sweep(_fn, {"lr": [1.0]}, seeds=[[1, 2]]), ValueError, "`seeds` must be"),
        (lambda: sweep(_fn, {"lr": [1.0]}, seeds=[-1]), ValueError, r"seeds.*\[0, 2\*\*32\)"),
        (lambda: sweep(lambda c: {"v": jnp.ones(3) * c["lr"]}, {"lr": [1.0, 2.0]},
                       metric="v"), ValueError, "`metric` must give one scalar per run"),
        (lambda: sweep(lambda c: {"v": c["lr"]}, {"lr": [1.0]}, metric="loss"), ValueError,
         "`metric` 'loss' is not a key"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("mode", ["min", "max"])
def test_nonfinite_metric_never_wins_in_either_mode(mode):
    # A diverged run reports -inf under "min" or +inf under "max": the "best" value there.
    sign = 1.0 if mode == "min" else -1.0

    def fn(config):
        value = sign * config["c"]
        return jnp.where(config["bad"] == 1, -sign * jnp.inf,
                         jnp.where(config["bad"] == 2, jnp.nan, value))

    cs = jnp.array([5.0, 1.0, 3.0, 0.5, 2.0])
    res = sweep(fn, {"c": cs, "bad": jnp.array([0, 0, 1, 2, 0])}, metric=lambda out: out,
                mode=mode)
    assert int(res.best_index) == 1 and float(res.best_config["c"]) == 1.0
    assert float(res.best_metric) == sign * 1.0
    # One diverged seed (seed 1 of 0, 1) makes its configuration's mean non-finite too.
    def per_seed(config, key):
        seed_one = jax.random.key_data(key)[-1] == 1
        return fn({"c": config["c"], "bad": jnp.where(seed_one, config["bad"], 0)})

    res = sweep(per_seed, {"c": cs, "bad": jnp.array([0, 1, 0, 2, 0])}, seeds=2,
                metric=lambda out: out, mode=mode)
    assert np.isfinite(res.run_metrics[1, 0]) and not np.isfinite(res.run_metrics[1, 1])
    assert int(res.best_index) == 4 and float(res.best_metric) == sign * 2.0
    # Every configuration non-finite: reported as for all-NaN (index 0 and a warning).
    with pytest.warns(JoptWarning, match="NaN or inf"):
        res = sweep(fn, {"c": cs[:3], "bad": jnp.array([2, 1, 1])}, metric=lambda out: out,
                    mode=mode)
    assert int(res.best_index) == 0 and np.isnan(res.best_metric)
    with pytest.warns(JoptWarning, match="NaN or inf"):
        res = sweep(fn, {"c": cs[:2], "bad": jnp.array([1, 1])}, metric=lambda out: out,
                    mode=mode)
    assert int(res.best_index) == 0 and float(res.best_metric) == -sign * np.inf
