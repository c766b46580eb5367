"""Multi-device training and solving on ``jax.sharding``, on 8 simulated CPU devices.

The device count is fixed when JAX starts, so the 8-device checks run in a subprocess
(``tests/_sharded_script.py``, which documents its tolerances) and the rest of the suite
keeps one device. The helpers' argument checks run here, on one device.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jopt
from jopt.distributed import replicate, shard_batch, shard_like_params

SCRIPT = Path(__file__).with_name("_sharded_script.py")
CHECKS = ["errors", "training-data-parallel", "training-data-and-model",
          "lbfgs-data-parallel", "newton-cg-data-and-model"]


ROOT = str(SCRIPT.parent.parent)


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
    env["JAX_ENABLE_X64"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def test_sharded_runs_equal_single_device_runs_on_8_devices():
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=_env(8), cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, report
    for check in CHECKS:
        assert f"OK {check} " in proc.stdout, report
    assert "ALL OK" in proc.stdout, report


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_process_run_with_process_local_batches(tmp_path):
    """Two processes x 4 CPU devices: ``jax.distributed`` with each process's own rows."""
    port, num = _free_port(), 2
    logs = [(tmp_path / f"out{i}.txt", tmp_path / f"err{i}.txt") for i in range(num)]
    procs = []
    try:
        for i, (out, err) in enumerate(logs):  # files, not pipes: no process blocks on output
            with open(out, "w") as fo, open(err, "w") as fe:
                procs.append(subprocess.Popen(
                    [sys.executable, str(SCRIPT), "--worker", str(i), str(num), str(port),
                     str(tmp_path)], env=_env(4), cwd=ROOT, stdout=fo, stderr=fe))
        codes = [proc.wait(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for i, (code, (out, err)) in enumerate(zip(codes, logs, strict=True)):
        stdout, stderr = out.read_text(), err.read_text()
        report = f"process {i} exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr[-6000:]}"
        assert code == 0 and f"OK multihost-process-{i}" in stdout, report


# ------------------------------------------------------ helpers on a one-device mesh


@pytest.fixture
def mesh():
    return jax.make_mesh((1,), ("data",))


def test_shard_batch_and_replicate_place_on_the_mesh(mesh):
    batch = {"x": np.ones((6, 2)), "y": jnp.arange(6.0)}
    out = shard_batch(batch, mesh)
    assert all(a.sharding == NamedSharding(mesh, P("data")) for a in jax.tree.leaves(out))
    np.testing.assert_array_equal(out["x"], batch["x"])
    # The multi-host path (each process passes its rows) gives the same global array.
    local = shard_batch(batch, mesh, process_local=True)
    np.testing.assert_array_equal(local["y"], batch["y"])
    assert local["y"].sharding.spec == P("data")
    rep = replicate({"w": np.zeros(3)}, mesh)
    assert rep["w"].sharding == NamedSharding(mesh, P())


def test_shard_like_params_places_moments_histories_and_counters(mesh):
    params = jax.device_put({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)},
                            NamedSharding(mesh, P("data")))
    for opt in (jopt.adam(0.1), jopt.lbfgs(memory_size=4), jopt.newton_cg()):
        state = shard_like_params(opt.init(params), params)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state):
            spec = leaf.sharding.spec
            if leaf.shape in {(3, 2), (2,)}:
                assert spec == P("data"), jax.tree_util.keystr(path)
            elif leaf.shape in {(4, 3, 2), (4, 2)} and "history" in jax.tree_util.keystr(path):
                assert spec == P(None, "data"), jax.tree_util.keystr(path)
            else:
                assert spec == P(), jax.tree_util.keystr(path)
    # Parameters on one device without a mesh: everything goes to that device.
    single = jax.device_put(jnp.ones(3), jax.devices()[0])
    state = shard_like_params(jopt.adam(0.1).init(single), single)
    assert {leaf.sharding for leaf in jax.tree.leaves(state)} == {single.sharding}


def test_bad_arguments_name_the_problem(mesh):
    with pytest.raises(TypeError, match=r"`mesh` must be a `jax.sharding.Mesh`"):
        shard_batch(np.ones((4, 2)), "data")
    with pytest.raises(TypeError, match=r"`mesh` must be a `jax.sharding.Mesh`"):
        replicate(np.ones(2), None)
    with pytest.raises(ValueError, match=r"`axis` 'batch' is not an axis of `mesh`.*\('data',\)"):
        shard_batch(np.ones((4, 2)), mesh, "batch")
    with pytest.raises(TypeError, match="`axis` must be a mesh axis name"):
        shard_batch(np.ones((4, 2)), mesh, 0)
    with pytest.raises(ValueError, match=r"`batch` leaf \['n'\] is a scalar"):
        shard_batch({"x": np.ones((4, 2)), "n": np.float64(4.0)}, mesh)
    with pytest.raises(TypeError, match=r"`batch` leaf \[1\] is a str"):
        shard_batch((np.ones((4, 2)), "labels"), mesh)
    with pytest.raises(TypeError, match="`params` must be a non-empty pytree of placed"):
        shard_like_params(jopt.adam(0.1).init(np.ones(2)), np.ones(2))
