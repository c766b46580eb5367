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


# ------------------------------------------------- NaN/Inf guard, metrics, callback, errors


def _poisoned(n: int, bad: dict[int, float], seed: int = 0) -> list:
    """``_batches(n)`` with the targets of the steps in ``bad`` (0-based) set to NaN or inf:
    that step's loss is non-finite, and so are its gradients and the updated parameters."""
    batches = _batches(n, seed)
    return [(x, jnp.full_like(y, bad[i])) if i in bad else (x, y)
            for i, (x, y) in enumerate(batches)]


def _reference(batches, on_nonfinite: str, step=_step, state=None):
    """The oracle: a plain loop that keeps an update only while the metrics are finite."""
    state, history = (_init() if state is None else state), []
    for batch in batches:
        new, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
        finite = all(np.all(np.isfinite(v)) for v in jax.tree.leaves(history[-1]))
        if finite or on_nonfinite == "continue":
            state = new
        elif on_nonfinite == "stop":
            break
    return state, history


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("log_every", [1, 3, 100])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_loss_stops_and_keeps_the_last_finite_state(log_every, bad):
    batches = _poisoned(12, {4: bad, 5: bad, 9: bad})
    ref_state, ref_history = _reference(batches, "stop")
    assert len(ref_history) == 5 and _finite(ref_state)
    it = iter(batches)
    result = fit(_step, _init(), it, log_every=log_every, progress=False)  # the default
    assert isinstance(result, jopt.train.FitResult)
    assert result.status == "nonfinite" and result.stopped_nonfinite
    assert result.steps == 5 and result.num_skipped == 0
    np.testing.assert_array_equal(result.history, np.asarray(ref_history))
    assert not np.isfinite(result.history[-1])  # the entry that stopped the run
    _identical(result.state, ref_state)
    state, losses = result  # still unpacks as before
    _identical(state, ref_state)
    assert losses is result.history
    # The guard decides on the device; the host sees it at the next fetch, by then the
    # steps of that window ran (on the kept state) and consumed their batches.
    consumed = 12 - len(list(it))
    assert consumed == min(12, -(-5 // log_every) * log_every)


def test_nonfinite_stop_is_reported_on_the_progress_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    result = fit(_step, _init(), _poisoned(6, {2: float("nan")}), log_every=2, desc="sgd")
    err = capsys.readouterr().err
    assert result.steps == 3
    assert "sgd: stopped at step 3: non-finite loss" in err


def test_skip_discards_nonfinite_updates_and_counts_them():
    batches = _poisoned(15, {1: float("nan"), 2: float("nan"), 8: float("-inf")})
    ref_state, ref_history = _reference(batches, "skip")
    result = fit(_step, _init(), batches, on_nonfinite="skip", log_every=4, progress=False)
    assert result.status == "completed" and not result.stopped_nonfinite
    assert result.steps == 15 and result.num_skipped == 3
    np.testing.assert_array_equal(result.history, np.asarray(ref_history))
    _identical(result.state, ref_state)
    assert _finite(result.state) and result.history[-1] < result.history[0]
    # Skipped steps count towards num_steps.
    assert fit(_step, _init(), batches, num_steps=5, on_nonfinite="skip",
               progress=False).steps == 5


def test_continue_trains_on_through_nan_as_before():
    batches = _poisoned(6, {1: float("nan")})
    ref_state, ref_history = _reference(batches, "continue")
    state, losses = fit(_step, _init(), batches, on_nonfinite="continue", progress=False)
    np.testing.assert_array_equal(losses, np.asarray(ref_history))  # [l0, nan, nan, ...]
    assert np.all(np.isnan(losses[1:]))
    _identical(state, ref_state)


@jax.jit
def _metrics_step(state, batch):
    params, opt_state = state
    x, y = batch
    loss, grads = jax.value_and_grad(lambda p: jnp.mean((x @ p - y) ** 2))(params)
    updates, opt_state = OPT.update(grads, opt_state, params)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "stats": (jnp.max(jnp.abs(y)), jnp.sum(y > 0).astype(jnp.int32))}
    return (optax.apply_updates(params, updates), opt_state), metrics


def test_metrics_pytree_history_stacks_every_leaf(capsys, monkeypatch):
    batches = _batches(9)
    ref_state, ref_history = _reference(batches, "continue", step=_metrics_step)
    result = fit(_metrics_step, _init(), batches, log_every=4, progress=False)
    history = result.history
    assert jax.tree.structure(history) == jax.tree.structure(ref_history[0])
    expected = jax.tree.map(lambda *xs: np.stack(xs), *ref_history)
    for got, want in zip(jax.tree.leaves(history), jax.tree.leaves(expected), strict=True):
        assert got.shape == (9,) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    _identical(result.state, ref_state)
    # The scalar-loss history is that pytree's "loss" leaf.
    np.testing.assert_array_equal(history["loss"], _hand_loop(batches)[1])
    # Progress shows every metric by name.
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    fit(_metrics_step, _init(), batches, log_every=9, desc="m")
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(r"m: step 9/9  grad_norm \S+  loss \S+  stats\.0 \S+  stats\.1 \d+",
                        line), line


def test_any_nonfinite_metric_triggers_the_guard():
    def step(w, batch):  # the loss stays finite; only the reported `aux` turns NaN
        return w + batch["dw"], {"loss": jnp.sum(w**2), "aux": batch["aux"]}

    batches = [{"dw": jnp.ones(2), "aux": jnp.asarray(0.0 if i != 3 else np.nan)}
               for i in range(6)]
    result = fit(step, jnp.zeros(2), batches, progress=False)
    assert result.stopped_nonfinite and result.steps == 4
    np.testing.assert_array_equal(result.state, [3.0, 3.0])  # the state step 4 started from
    result = fit(step, jnp.zeros(2), batches, on_nonfinite="skip", progress=False)
    assert result.num_skipped == 1
    np.testing.assert_array_equal(result.state, [5.0, 5.0])
    np.testing.assert_array_equal(result.history["loss"], [0, 2, 8, 18, 18, 32])


def test_the_guard_never_deletes_arrays_the_caller_holds():
    # A plain-Python step that returns a leaf of its input unchanged, a jitted step, and a
    # callback keeping every state it is given: all must stay alive and correct.
    def python_step(state, batch):
        (params, _), loss = _step(state, batch)
        return (params, state[1]), loss  # the optimizer state passed through as is

    for step in (python_step, _step):
        init, kept = _init(), []

        def callback(k, state, metrics, kept=kept):
            kept.append(state)

        fit(step, init, _poisoned(6, {3: float("nan")}), on_nonfinite="skip",
            progress=False, callback=callback)
        for array in jax.tree.leaves([init, kept]):
            assert not array.is_deleted()
        assert len(kept) == 6 and _finite(kept)


def test_callback_every_k_steps_sees_the_state_and_can_stop():
    batches = _batches(20)
    ref_states = []
    state = _init()
    for batch in batches:
        state, loss = _step(state, batch)
        ref_states.append((state, float(loss)))
    calls = []

    def callback(step, state, metrics):
        calls.append(step)
        _identical(state, ref_states[step - 1][0])
        assert float(metrics) == ref_states[step - 1][1]
        return step >= 9  # stop early (any true value)

    it = iter(batches)
    result = fit(_step, _init(), it, callback=callback, callback_every=3, log_every=4,
                 progress=False)
    assert calls == [3, 6, 9]
    assert result.status == "callback" and result.steps == 9
    assert next(it) is batches[9]  # no batch consumed after the stop
    np.testing.assert_array_equal(result.history, _hand_loop(batches[:9])[1])
    _identical(result.state, ref_states[8][0])
    # A callback returning None never stops the run.
    result = fit(_step, _init(), batches, callback=lambda *a: None, progress=False)
    assert result.status == "completed" and result.steps == 20


def _failing_iterator(batches, fail_at: int):
    for i, batch in enumerate(batches):
        if i == fail_at:
            raise OSError("the data loader broke")
        yield batch


@pytest.mark.parametrize("where", ["step", "iterator", "callback"])
def test_an_exception_carries_the_state_and_history_so_far(where):
    batches = _batches(10)
    ref_state, ref_losses = _hand_loop(batches[:6])

    def step(state, batch):
        if where == "step" and batch is batches[6]:
            raise FloatingPointError("step 7 blew up")
        return _step(state, batch)

    def callback(k, state, metrics):
        if where == "callback" and k == 6:
            raise RuntimeError("checkpoint disk full")

    source = _failing_iterator(batches, 6) if where == "iterator" else batches
    with pytest.raises((FloatingPointError, OSError, RuntimeError)) as info:
        fit(step, _init(), source, callback=callback, log_every=100, progress=False)
    err = info.value
    partial = err.jopt_partial
    assert isinstance(partial, jopt.train.FitResult) and partial.status == "error"
    assert partial.steps == 6  # nothing had been fetched yet (log_every=100): it is now
    np.testing.assert_array_equal(partial.history, ref_losses)
    _identical(partial.state, ref_state)
    state, _ = partial
    assert any("err.jopt_partial" in note for note in err.__notes__)
    # Resuming from it finishes the run exactly as one uninterrupted run.
    rest = fit(_step, state, batches[6:], progress=False)
    _identical(rest.state, _hand_loop(batches)[0])


def test_a_donating_step_cannot_go_back():
    import functools

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, batch):
        return _step(state, batch)

    clean = _batches(5)
    ref_state, ref_losses = _hand_loop(clean)
    for mode in ("stop", "skip", "continue"):  # no NaN: every mode runs as the hand loop
        if mode == "skip":
            continue
        state, losses = fit(step, _init(), clean, on_nonfinite=mode, progress=False)
        np.testing.assert_array_equal(losses, ref_losses)
        _identical(state, ref_state)
    batches = _poisoned(6, {2: float("nan")})
    with pytest.warns(jopt.JoptWarning, match="returns the latest state"):
        result = fit(step, _init(), batches, log_every=1, progress=False)
    assert result.stopped_nonfinite and result.steps == 3
    with pytest.raises(ValueError, match="`on_nonfinite='skip'` needs the state") as info:
        fit(step, _init(), clean, on_nonfinite="skip", progress=False)
    assert info.value.jopt_partial.status == "error"


def test_bad_guard_and_callback_arguments_name_the_argument():
    batches = _batches(2)
    with pytest.raises(ValueError, match="`on_nonfinite` must be 'stop', 'skip' or"):
        fit(_step, _init(), batches, on_nonfinite="raise")
    with pytest.raises(TypeError, match="`callback` must be None or a callable"):
        fit(_step, _init(), batches, callback=3)
    with pytest.raises(ValueError, match="`callback_every` must be >= 1"):
        fit(_step, _init(), batches, callback=print, callback_every=0)
    with pytest.raises(TypeError, match=r"pytree of scalar metrics.*got dict whose leaf "
                                        r"\['acc'\] is .*shape \(8,\)"):
        fit(lambda s, b: (s, {"loss": jnp.mean(b[1]), "acc": b[1]}), _init(), batches,
            progress=False)
