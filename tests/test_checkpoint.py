"""Checkpoint/resume: bitwise-identical resumed trajectories, exact round trips, safe errors.

Oracle for resumption: the uninterrupted run itself — a run stopped after ``k`` steps,
saved, restored into a freshly built template and continued must reproduce every later
loss and the final state bit for bit (float64 on the CPU is deterministic).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.checkpoint import restore_checkpoint, save_checkpoint


def assert_trees_identical(a, b) -> None:
    """Same structure, and every leaf has the same dtype, shape and bytes."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


# ------------------------------------------------------------- resumed trajectories


def _regression_data():
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.standard_normal((64, 5)))
    targets = features @ jnp.asarray(rng.standard_normal(5)) + 0.1 * jnp.asarray(
        rng.standard_normal(64))
    return features, targets


def test_adam_training_loop_resumes_bitwise(tmp_path):
    features, targets = _regression_data()
    key = jax.random.key(42)
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      jopt.adam(optax.exponential_decay(3e-2, 10, 0.9)))
    params0 = {"w": jnp.zeros(5), "b": jnp.zeros(()),
               "scale": jnp.ones((), jnp.bfloat16)}  # a bfloat16 leaf and its moments

    def loss_fn(p, x, y):
        pred = (x @ p["w"] + p["b"]) * p["scale"].astype(x.dtype)
        return jnp.mean((pred - y) ** 2)

    @jax.jit
    def step(carry):
        params, opt_state, k = carry
        idx = jax.random.permutation(jax.random.fold_in(key, k), 64)[:16]
        loss, grads = jax.value_and_grad(loss_fn)(params, features[idx], targets[idx])
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, k + 1), loss

    def run(carry, n):
        losses = []
        for _ in range(n):
            carry, loss = step(carry)
            losses.append(loss)
        return carry, losses

    def fresh():
        return (params0, opt.init(params0), jnp.zeros([], jnp.int32))

    full, full_losses = run(fresh(), 30)

    first, first_losses = run(fresh(), 12)
    save_checkpoint(tmp_path / "adam.ckpt", first)
    del first
    resumed = restore_checkpoint(tmp_path / "adam.ckpt", fresh())
    assert int(resumed[2]) == 12
    final, rest_losses = run(resumed, 18)

    assert_trees_identical(final, full)
    assert_trees_identical(first_losses + rest_losses, full_losses)
    assert float(full_losses[-1]) < 0.5 * float(full_losses[0])  # it did train


def test_newton_cg_user_loop_resumes_bitwise(tmp_path):
    def f(x):  # extended Rosenbrock (MGH #21)
        pairs = x.reshape(-1, 2)
        return jnp.sum(100.0 * (pairs[:, 1] - pairs[:, 0] ** 2) ** 2 + (1 - pairs[:, 0]) ** 2)

    opt = jopt.newton_cg()
    x0 = jnp.tile(jnp.asarray([-1.2, 1.0]), 4)

    @jax.jit
    def step(x, state):
        value, grad = jax.value_and_grad(f)(x)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(x, updates), state

    def run(x, state, n):
        xs = []
        for _ in range(n):
            x, state = step(x, state)
            xs.append(x)
        return x, state, xs

    x_full, s_full, traj_full = run(x0, opt.init(x0), 10)

    x, s, traj_a = run(x0, opt.init(x0), 4)
    save_checkpoint(str(tmp_path / "ncg.ckpt"), {"x": x, "opt_state": s})
    like = {"x": x0, "opt_state": opt.init(x0)}
    restored = restore_checkpoint(str(tmp_path / "ncg.ckpt"), like)
    x, s, traj_b = run(restored["x"], restored["opt_state"], 6)

    assert_trees_identical((x, s), (x_full, s_full))
    assert_trees_identical(traj_a + traj_b, traj_full)
    assert int(s_full[0].work.nhvp) > 0 and float(f(x_full)) < 0.2 * float(f(x0))


def test_lbfgs_minimize_resumes_bitwise(tmp_path):
    from jopt import minimize_init, minimize_result, minimize_run

    def f(x, scale):  # extended Rosenbrock (MGH #21) with a traced argument
        pairs = x.reshape(-1, 2)
        return jnp.sum(scale * (pairs[:, 1] - pairs[:, 0] ** 2) ** 2 + (1 - pairs[:, 0]) ** 2)

    x0 = jnp.tile(jnp.asarray([-1.2, 1.0]), 3)
    args = (jnp.asarray(100.0),)
    opts = {"method": "lbfgs", "args": args, "tol": 1e-9}
    full = jopt.minimize(f, x0, **opts, history=True)
    assert int(full.status) == jopt.Status.CONVERGED and int(full.nit) > 20

    state = minimize_init(f, x0, **opts, history=True)
    state = minimize_run(f, state, **opts, num_steps=4)
    state = minimize_run(f, state, **opts, num_steps=5)
    assert int(state.nit) == 9 and int(state.status) == -1
    save_checkpoint(tmp_path / "solver.ckpt", state)
    del state
    template = minimize_init(f, jnp.zeros_like(x0), **opts, history=True)  # any x0 will do
    state = restore_checkpoint(tmp_path / "solver.ckpt", template)
    resumed = minimize_result(minimize_run(f, state, **opts))

    assert_trees_identical(resumed, full)  # x, f, gradient, counters, status, history
    # A checkpoint of another method's state does not fit an L-BFGS template.
    other = minimize_init(f, x0, method="bfgs", args=args, history=True)
    with pytest.raises(ValueError, match="different pytree structure"):
        restore_checkpoint(tmp_path / "solver.ckpt", other)


# ------------------------------------------------------------------------ round trips


def test_round_trip_keeps_dtypes_none_empty_nodes_and_leaf_kinds(tmp_path):
    tree = {
        "bf16": jnp.asarray([1.5, -2.25, 3e-3], jnp.bfloat16),
        "f16": jnp.asarray([[0.1, 2.0]], jnp.float16),
        "f32": jnp.float32(np.pi) * jnp.ones((2, 3), jnp.float32),
        "f64": jnp.asarray(np.random.default_rng(0).standard_normal((4, 1))),
        "i8": jnp.arange(-3, 3, dtype=jnp.int8),
        "u32": jnp.asarray([7], jnp.uint32),
        "bool": jnp.asarray([True, False]),
        "c128": jnp.asarray([1 + 2j]),
        "scalar": jnp.zeros((), jnp.int32),
        "empty": jnp.zeros((0, 3)),
        "none": None,
        "empty_state": optax.EmptyState(),
        "numpy": np.arange(6.0).reshape(2, 3).T,  # non-contiguous
        "np_scalar": np.float32(0.5),
        "py_int": 7,
        "py_float": 0.25,
        "special": jnp.asarray([np.nan, np.inf, -np.inf, -0.0, 5e-324]),
    }
    path = save_checkpoint(tmp_path / "all.ckpt", tree)
    assert path == tmp_path / "all.ckpt" and sorted(os.listdir(tmp_path)) == ["all.ckpt"]
    out = restore_checkpoint(path, tree)
    assert_trees_identical(out, tree)
    assert out["none"] is None and isinstance(out["empty_state"], optax.EmptyState)
    assert isinstance(out["bf16"], jax.Array) and out["bf16"].dtype == jnp.bfloat16
    assert isinstance(out["numpy"], np.ndarray) and isinstance(out["np_scalar"], np.float32)
    assert type(out["py_int"]) is int and type(out["py_float"]) is float


def test_abstract_template_and_sharding_of_template(tmp_path):
    opt = jopt.adam(1e-3)
    params = {"w": jnp.arange(4.0), "v": jnp.ones((2, 2), jnp.float32)}
    state = (params, opt.init(params))
    save_checkpoint(tmp_path / "s.ckpt", state)
    # A jax.eval_shape template (ShapeDtypeStruct leaves) gives device arrays.
    out = restore_checkpoint(tmp_path / "s.ckpt", jax.eval_shape(lambda: state))
    assert_trees_identical(out, state)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(out))
    # Array templates: the restored leaves are placed on the template's sharding.
    device = jax.devices()[0]
    like = jax.device_put(state, device)
    out = restore_checkpoint(tmp_path / "s.ckpt", like)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(like), strict=True):
        assert a.sharding == b.sharding


def test_overwrite_replaces_and_overwrite_false_refuses(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, {"a": jnp.ones(3)})
    save_checkpoint(path, {"a": jnp.full(3, 2.0)})
    assert float(restore_checkpoint(path, {"a": jnp.ones(3)})["a"][0]) == 2.0
    with pytest.raises(FileExistsError, match=r"`path`.*overwrite=False"):
        save_checkpoint(path, {"a": jnp.zeros(3)}, overwrite=False)
    assert float(restore_checkpoint(path, {"a": jnp.ones(3)})["a"][0]) == 2.0
    save_checkpoint(tmp_path / "new.ckpt", {"a": jnp.zeros(3)}, overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["c.ckpt", "new.ckpt"]
    assert (tmp_path / "new.ckpt").stat().st_mode & 0o777 == 0o600  # owner only by default


# -------------------------------------------------------------- interrupted writes


class _Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["savez", "fsync", "replace", "interrupt"])
def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, where):
    path = tmp_path / "run.ckpt"
    old = {"w": jnp.arange(5.0), "step": jnp.asarray(3)}
    save_checkpoint(path, old)
    before = path.read_bytes()
    real_savez = np.savez

    def broken_savez(file, *args, **kwds):
        file.write(b"PK\x03\x04 half an archive")  # some bytes hit the disk, then it fails
        raise (KeyboardInterrupt if where == "interrupt" else _Crash)("disk full")

    def broken(*args, **kwds):
        raise _Crash("I/O error")

    if where in ("savez", "interrupt"):
        monkeypatch.setattr(np, "savez", broken_savez)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", broken)
    else:
        monkeypatch.setattr(os, "replace", broken)
    new = {"w": jnp.full(5, -1.0), "step": jnp.asarray(4)}
    with pytest.raises(KeyboardInterrupt if where == "interrupt" else _Crash):
        save_checkpoint(path, new)
    monkeypatch.setattr(np, "savez", real_savez)

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]  # no temporary file left behind
    assert_trees_identical(restore_checkpoint(path, old), old)


# ------------------------------------------------------------------------ bad files


@pytest.fixture
def saved(tmp_path):
    tree = {"params": {"w": jnp.linspace(-1.0, 1.0, 24).reshape(4, 6), "b": jnp.ones(6)},
            "opt_state": jopt.sgd(0.1, momentum=0.9).init({"w": jnp.zeros((4, 6)),
                                                           "b": jnp.zeros(6)}),
            "step": jnp.asarray(17, jnp.int32)}
    path = tmp_path / "good.ckpt"
    save_checkpoint(path, tree)
    return path, tree


def test_missing_file_and_directory(tmp_path, saved):
    _, tree = saved
    with pytest.raises(FileNotFoundError, match=r"`path`.*no such checkpoint"):
        restore_checkpoint(tmp_path / "nope.ckpt", tree)
    with pytest.raises(FileNotFoundError, match=r"`path`.*directory.*does not exist"):
        save_checkpoint(tmp_path / "no_dir" / "x.ckpt", tree)
    with pytest.raises(IsADirectoryError, match="`path`"):
        restore_checkpoint(tmp_path, tree)


@pytest.mark.parametrize("keep", [0, 1, 10, 100, 0.5, -1])
def test_truncated_file_is_rejected(saved, keep):
    path, tree = saved
    data = path.read_bytes()
    n = int(keep * len(data)) if isinstance(keep, float) else (keep % len(data))
    path.write_bytes(data[:n])
    with pytest.raises(ValueError, match="not a valid jopt checkpoint"):
        restore_checkpoint(path, tree)


def test_every_single_byte_flip_is_detected_or_harmless(saved):
    """Flipping any byte either raises ValueError or leaves the restored data exact."""
    path, tree = saved
    data = path.read_bytes()
    detected = 0
    for pos in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            out = restore_checkpoint(path, tree)
        except ValueError:
            detected += 1
        else:  # e.g. a zip timestamp: the arrays are verified by the checksum
            assert_trees_identical(out, tree)
    assert detected > 0.8 * len(range(0, len(data), 7))


def _rewrite(path: Path, edit) -> None:
    """Re-save the archive at ``path`` after ``edit(members)`` (bypassing jopt)."""
    with np.load(path) as data:
        members = {k: data[k] for k in data.files}
    edit(members)
    with open(path, "wb") as fh:
        np.savez(fh, **members)


def test_checksum_catches_data_changed_behind_a_valid_archive(saved):
    path, tree = saved

    def flip(members):
        members["leaf_0"] = members["leaf_0"].copy()
        members["leaf_0"][3] ^= 1

    _rewrite(path, flip)
    with pytest.raises(ValueError, match="SHA-256 checksum mismatch"):
        restore_checkpoint(path, tree)


def test_newer_format_version_and_foreign_files(tmp_path, saved):
    path, tree = saved

    def bump(members):
        meta = json.loads(bytes(members["__jopt_checkpoint__"]).decode())
        meta["version"] = 99
        members["__jopt_checkpoint__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    _rewrite(path, bump)
    with pytest.raises(ValueError, match="format version 99"):
        restore_checkpoint(path, tree)

    cases = {
        "garbage.ckpt": lambda p: p.write_bytes(os.urandom(3000)),
        "empty.ckpt": lambda p: p.write_bytes(b""),
        "plain.npz": lambda p: np.savez(p, a=np.ones(3)),
        "array.npy": lambda p: np.save(p, np.ones(3)),
        "pickle.npz": lambda p: p.write_bytes(b"\x80\x04\x95" + os.urandom(50)),
    }
    for name, make in cases.items():
        make(tmp_path / name)
        with pytest.raises(ValueError, match=r"`path` .* is not a valid jopt checkpoint"):
            restore_checkpoint(tmp_path / name, tree)


def test_structure_shape_and_dtype_mismatches_name_the_leaf(saved):
    path, tree = saved
    extra = {**tree, "params": {**tree["params"], "c": jnp.zeros(2)}}
    with pytest.raises(ValueError, match=r"different pytree structure(.|\n)*in `like` but "
                                         r"not in the checkpoint: \[\"\['params'\]\['c'\]"):
        restore_checkpoint(path, extra)
    other_opt = {**tree, "opt_state": jopt.adam(0.1).init(tree["params"])}
    with pytest.raises(ValueError, match="different pytree structure"):
        restore_checkpoint(path, other_opt)
    no_momentum = {**tree, "opt_state": jopt.sgd(0.1).init(tree["params"])}  # trace=None
    with pytest.raises(ValueError, match="different pytree structure"):
        restore_checkpoint(path, no_momentum)
    wrong_shape = {**tree, "params": {**tree["params"], "w": jnp.zeros((6, 4))}}
    with pytest.raises(ValueError, match=r"leaf \['params'\]\['w'\] has shape \(6, 4\) but "
                                         r"the checkpoint .* stores shape \(4, 6\)"):
        restore_checkpoint(path, wrong_shape)
    wrong_dtype = {**tree, "step": jnp.asarray(0, jnp.int64)}
    with pytest.raises(ValueError, match=r"leaf \['step'\] has dtype int64 but the checkpoint "
                                         r".* stores int32"):
        restore_checkpoint(path, wrong_dtype)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="traced value"):
        jax.jit(lambda x: save_checkpoint(tmp_path / "t.ckpt", x) and x)(jnp.ones(2))
    with pytest.raises(TypeError, match="`overwrite` must be a bool"):
        save_checkpoint(tmp_path / "t.ckpt", jnp.ones(2), overwrite="yes")
    with pytest.raises(TypeError, match=r"`tree` leaf .* dtype <U4"):
        save_checkpoint(tmp_path / "t.ckpt", {"a": "text"})
    with pytest.raises(IsADirectoryError, match="`path`"):
        save_checkpoint(tmp_path, jnp.ones(2))
    save_checkpoint(tmp_path / "t.ckpt", {"a": jnp.ones(2)})
    with pytest.raises(TypeError, match="`like` leaf \\['a'\\] is a str"):
        restore_checkpoint(tmp_path / "t.ckpt", {"a": "template"})
    assert sorted(os.listdir(tmp_path)) == ["t.ckpt"]
