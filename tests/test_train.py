"""Progress reporting: ``jopt.fit`` against a hand-written loop, and ``minimize(verbose=k)``.

Oracles: the same jitted step run in a plain Python loop (losses and final state must be
bitwise equal), and ``minimize(history=True)`` for the values ``verbose`` prints.
"""

from __future__ import annotations

import itertools
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.train import fit

OPT = jopt.adam(0.05)


def _batches(n: int, seed: int = 0) -> list[tuple[jax.Array, jax.Array]]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(3)
    out = []
    for _ in range(n):
        x = rng.standard_normal((8, 3))
        out.append((jnp.asarray(x), jnp.asarray(x @ w)))
    return out


@jax.jit
def _step(state, batch):
    params, opt_state = state
    x, y = batch
    loss, grads = jax.value_and_grad(lambda p: jnp.mean((x @ p - y) ** 2))(params)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss


def _init():
    params = jnp.zeros(3)
    return params, OPT.init(params)


def _hand_loop(batches):
    state, losses = _init(), []
    for batch in batches:
        state, loss = _step(state, batch)
        losses.append(float(loss))
    return state, np.asarray(losses)


def _identical(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.mark.parametrize("log_every", [1, 3, 7, 100])
def test_history_and_state_equal_a_hand_loop(log_every):
    batches = _batches(20)
    ref_state, ref_losses = _hand_loop(batches)
    state, losses = fit(_step, _init(), batches, log_every=log_every, progress=False)
    assert isinstance(losses, np.ndarray) and losses.dtype == np.float64
    np.testing.assert_array_equal(losses, ref_losses)
    _identical(state, ref_state)
    assert losses[-1] < 0.2 * losses[0]


def test_num_steps_takes_exactly_that_many_batches_from_an_iterator():
    batches = _batches(10)
    it = iter(batches)
    _, losses = fit(_step, _init(), it, num_steps=4, progress=False)
    assert losses.shape == (4,)
    assert next(it) is batches[4]  # no batch was consumed beyond the last step
    # A generator that runs out first ends the run early; the history says how far it got.
    _, losses = fit(_step, _init(), (b for b in batches[:3]), num_steps=8, progress=False)
    np.testing.assert_array_equal(losses, _hand_loop(batches[:3])[1])
    # An endless iterator with num_steps.
    _, losses = fit(_step, _init(), itertools.cycle(batches[:2]), num_steps=5,
                    progress=False)
    np.testing.assert_array_equal(losses, _hand_loop([*batches[:2]] * 2 + batches[:1])[1])
    _, losses = fit(_step, _init(), [], progress=False)
    assert losses.shape == (0,)


def test_losses_are_fetched_once_per_log_window(monkeypatch):
    calls = []
    real = jax.device_get

    def counting(x):
        calls.append(len(x))
        return real(x)

    monkeypatch.setattr(jax, "device_get", counting)
    fit(_step, _init(), _batches(23), log_every=5, progress=False)
    assert calls == [5, 5, 5, 5, 3]


def test_tqdm_bar_on_stderr_shows_the_loss(capsys):
    pytest.importorskip("tqdm")
    batches = _batches(12)
    _, losses = fit(_step, _init(), batches, desc="demo", log_every=4)
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert "demo" in err and "12/12" in err
    shown = re.findall(r"loss=([0-9.e+-]+)", err)
    assert shown and float(shown[-1]) == pytest.approx(losses[-1], rel=1e-5)


def test_plain_lines_without_tqdm(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` now raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    _, losses = fit(_step, _init(), _batches(10), log_every=4, desc="sgd")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "sgd: step 4/10", "sgd: step 8/10", "sgd: step 10/10"]
    assert float(lines[-1].split("loss ")[1]) == pytest.approx(losses[-1], rel=1e-5)
    # Unknown length (a generator): no total is shown.
    fit(_step, _init(), iter(_batches(3)), log_every=2, desc="gen")
    assert capsys.readouterr().err.splitlines()[0].startswith("gen: step 2  loss ")


def test_progress_false_is_silent(capsys):
    fit(_step, _init(), _batches(5), progress=False, log_every=1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_bad_inputs_name_the_argument():
    batches = _batches(2)
    with pytest.raises(TypeError, match="`step_fn` must be a callable"):
        fit("step", _init(), batches)
    with pytest.raises(TypeError, match="`batches` must be an iterable"):
        fit(_step, _init(), 5)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="`num_steps` must be >= 1"):
            fit(_step, _init(), batches, num_steps=bad)
    for bad in (2.5, True, "3"):
        with pytest.raises(TypeError, match="`num_steps` must be a Python int"):
            fit(_step, _init(), batches, num_steps=bad)
    with pytest.raises(ValueError, match="`log_every` must be >= 1"):
        fit(_step, _init(), batches, log_every=0)
    with pytest.raises(TypeError, match="`progress` must be a bool"):
        fit(_step, _init(), batches, progress="yes")
    with pytest.raises(TypeError, match="`desc` must be a str"):
        fit(_step, _init(), batches, desc=3)
    with pytest.raises(TypeError, match=r"`step_fn` must return a pair `\(state, loss\)`"):
        fit(lambda s, b: s[0], _init(), batches, progress=False)
    with pytest.raises(TypeError, match=r"scalar loss as the second element.*got AdamState"):
        fit(lambda s, b: s, _init(), batches, progress=False)
    with pytest.raises(TypeError, match=r"scalar loss.*shape \(8,\)"):
        fit(lambda s, b: (s, b[1]), _init(), batches, progress=False)
    with pytest.raises(TypeError, match=r"scalar loss.*dtype bool"):
        fit(lambda s, b: (s, jnp.asarray(True)), _init(), batches, progress=False)


# --------------------------------------------------------- minimize(verbose=k)


@pytest.mark.parametrize("k", [7])
def test_minimize_verbose_prints_every_k_iterations(capfd, k):
    def rosenbrock(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    res = jopt.minimize(rosenbrock, jnp.asarray([-1.2, 1.0]), verbose=k, history=True,
                        tol=1e-8)
    jax.effects_barrier()
    out = capfd.readouterr().out
    pattern = r"iter +(\d+)  f = (\S+)  \|g\|inf = (\S+)"
    rows = [(int(i), float(f), float(g)) for i, f, g in re.findall(pattern, out)]
    nit = int(res.nit)
    expected = sorted({*range(k, nit + 1, k), nit})  # every k-th iteration and the last
    assert [i for i, _, _ in rows] == expected
    for i, f, g in rows:  # printed with 7 and 4 significant digits
        assert f == pytest.approx(float(res.f_history[i]), rel=1e-6, abs=1e-300)
        assert g == pytest.approx(float(res.gnorm_history[i]), rel=1e-3, abs=1e-300)
    assert rows[-1][1] == pytest.approx(float(res.fun), rel=1e-6, abs=1e-300)


def test_minimize_is_silent_by_default(capfd):
    jopt.minimize(lambda x: jnp.sum(x**2), jnp.ones(3))
    jax.effects_barrier()
    assert capfd.readouterr().out == ""
