"""Multi-device checks, run by tests/test_sharding.py in a subprocess with 8 CPU devices.

Run directly with::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_ENABLE_X64=1 \\
        python tests/_sharded_script.py

or, as one process of a multi-host run on the CPU (4 devices per process; see
:func:`multihost_worker`)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_ENABLE_X64=1 \\
        python tests/_sharded_script.py --worker PROCESS_ID NUM_PROCESSES PORT TMPDIR

Each check compares a run on sharded inputs with the same run on one device (the oracle)
and checks that the shardings placed at the start are those of the results. Agreement is
to rounding, not bitwise: a sharded ``mean`` adds per-device partial sums and then
all-reduces them, a different association order from the single-device sum (relative
difference ~ n·eps per reduction).

* fixed-step training (Adam, 10 steps): ``rtol=1e-12`` — a few reductions per step, each
  off by O(eps) relative, and Adam's normalised step does not amplify them;
* solvers run to ``‖∇f‖∞ <= 1e-10`` on a strongly convex problem (L2 weight 1e-2):
  iteration counts may differ by one where a stopping or line-search test is decided by
  rounding, so the solutions are compared to the solver tolerance: ``‖x - x_ref‖∞ <= 1e-8``
  (``‖x - x*‖ <= ‖∇f‖/μ`` with μ = 2e-2) and ``f`` to ``rtol=1e-12``.

Observed differences are ~1e-16 in every case; an error in the reduction (a shard dropped
or a sum where a mean belongs) would be of order 1e-1.

Prints ``OK <check>`` per passed check; any failure raises (non-zero exit).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jopt
from jopt.checkpoint import restore_checkpoint, save_checkpoint
from jopt.distributed import replicate, shard_batch, shard_like_params
from jopt.train import fit

jax.config.update("jax_numpy_rank_promotion", "raise")

N, D, K = 64, 5, 4  # rows, features, classes
L2 = 1e-2
START = time.perf_counter()


def ok(name: str) -> None:
    print(f"OK {name} ({time.perf_counter() - START:.1f}s)", flush=True)


def loss(params, x, y):
    """Multinomial logistic regression with L2 (strongly convex: a unique minimiser)."""
    logits = x @ params["W"] + params["b"][None, :]
    nll = jax.nn.logsumexp(logits, axis=1) - jnp.sum(logits * y, axis=1)
    return jnp.mean(nll) + L2 * (jnp.sum(params["W"] ** 2) + jnp.sum(params["b"] ** 2))


def data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    w_true = np.random.default_rng(12345).standard_normal((D, K))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    y = np.eye(K)[np.argmax(x @ w_true + 0.5 * rng.standard_normal((N, K)), axis=1)]
    return x, y


def zeros() -> dict:
    return {"W": jnp.zeros((D, K)), "b": jnp.zeros(K)}


def shardings(tree):
    return jax.tree.map(lambda a: a.sharding, tree)


def assert_same_shardings(tree, placed, what: str) -> None:
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(tree),
                            jax.tree.leaves(placed), strict=True):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (
            f"{what}{jax.tree_util.keystr(path)}: sharding {a.sharding} != placed {b.sharding}")


def assert_close(a, b, rtol: float, atol: float = 0.0) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


OPT = jopt.adam(0.1)


@jax.jit
def train_step(state, batch):
    params, opt_state = state
    value, grads = jax.value_and_grad(loss)(params, *batch)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), value


def check_training(mesh, param_spec: dict, name: str, tmpdir: str) -> None:
    """Data-parallel Adam over sharded minibatches equals the single-device run."""
    batches = [data(seed) for seed in range(10)]
    device0 = jax.devices()[0]
    ref_state = jax.device_put((zeros(), OPT.init(zeros())), device0)
    ref_state, ref_losses = fit(train_step, ref_state, batches, progress=False)

    params = jax.device_put(zeros(), {k: NamedSharding(mesh, s) for k, s in param_spec.items()})
    state = (params, shard_like_params(OPT.init(params), params))
    placed = state
    sharded_batches = [shard_batch(b, mesh, "data") for b in batches]
    assert sharded_batches[0][0].sharding.spec == P("data")
    state, losses = fit(train_step, state, sharded_batches, progress=False)

    assert_same_shardings(state, placed, "state")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
    assert_close(state, ref_state, rtol=1e-12, atol=1e-15)
    assert losses[-1] < 0.8 * losses[0]

    # Checkpoint a sharded state and restore it onto the same shardings.
    path = os.path.join(tmpdir, f"{name}.ckpt")
    save_checkpoint(path, state)
    restored = restore_checkpoint(path, placed)
    assert_same_shardings(restored, placed, "restored")
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    ok(f"training-{name}")


@functools.cache
def _reference_solve(method: str) -> jopt.MinimizeResult:
    """The single-device oracle (one compilation per method, shared by the checks)."""
    device0 = jax.devices()[0]
    return jopt.minimize(loss, jax.device_put(zeros(), device0), method=method,
                         args=jax.device_put(data(100), device0), tol=1e-10)


def check_solver(mesh, param_spec: dict, method: str, name: str) -> None:
    """``minimize`` on a row-sharded data set equals the single-device solve."""
    x, y = data(100)
    ref = _reference_solve(method)
    x0 = jax.device_put(zeros(), {k: NamedSharding(mesh, s) for k, s in param_spec.items()})
    res = jopt.minimize(loss, x0, method=method, args=shard_batch((x, y), mesh), tol=1e-10)
    assert int(res.status) == int(ref.status) == jopt.Status.CONVERGED, res.message
    assert abs(int(res.nit) - int(ref.nit)) <= 1, (int(res.nit), int(ref.nit))
    assert_close(res.x, ref.x, rtol=0.0, atol=1e-8)
    np.testing.assert_allclose(float(res.fun), float(ref.fun), rtol=1e-12)
    assert_same_shardings(res.x, x0, "res.x")
    if method == "newton-cg":
        assert int(res.nhev) > 0
    ok(f"{method}-{name}")


def check_errors(mesh) -> None:
    x, y = data(0)
    try:
        shard_batch((x[:30], y[:30]), mesh, "data")
    except ValueError as err:
        msg = str(err)
        assert "`batch` leaf [0] has 30 rows" in msg and "'data' of size 8" in msg, msg
        assert "multiple of 8" in msg and "x[:24]" in msg, msg
    else:
        raise AssertionError("a batch of 30 rows on 8 devices must be rejected")
    try:
        shard_batch((x, y), mesh, "model")
    except ValueError as err:
        assert "`axis` 'model' is not an axis of `mesh`" in str(err), str(err)
    else:
        raise AssertionError("an unknown mesh axis must be rejected")
    ok("errors")


def multihost_worker(process_id: int, num_processes: int, port: int, tmpdir: str) -> None:
    """One of ``num_processes`` processes of a multi-host run (4 CPU devices each).

    Every process runs this same program (SPMD), loads only its own rows, and passes them
    to ``shard_batch`` (``jax.make_array_from_process_local_data``); the parameters are
    replicated from the same values on every process. Checks: the training losses equal a
    single-device run over the full data (computed locally on each process), and a
    checkpoint saved by process 0 restores on every process onto the global shardings.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=num_processes,
                               process_id=process_id, initialization_timeout=120)
    from jax.experimental import multihost_utils

    assert jax.process_count() == num_processes and jax.device_count() == 4 * num_processes
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    batches = [data(seed) for seed in range(4)]
    rows = N // num_processes
    mine = slice(process_id * rows, (process_id + 1) * rows)
    sharded = [shard_batch((x[mine], y[mine]), mesh, "data") for x, y in batches]
    assert sharded[0][0].shape == (N, D) and not sharded[0][0].is_fully_addressable

    params = replicate(zeros(), mesh)
    placed = (params, shard_like_params(OPT.init(params), params))
    state, losses = fit(train_step, placed, sharded, progress=False)
    assert_same_shardings(state, placed, "state")

    local = jax.local_devices()[0]
    ref_state = jax.device_put((zeros(), OPT.init(zeros())), local)
    _, ref_losses = fit(train_step, ref_state, [jax.device_put(b, local) for b in batches],
                        progress=False)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)

    path = os.path.join(tmpdir, "multihost.ckpt")
    if process_id == 0:
        save_checkpoint(path, state)
    multihost_utils.sync_global_devices("checkpoint written")
    restored = restore_checkpoint(path, placed)
    assert_same_shardings(restored, placed, "restored")
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    multihost_utils.sync_global_devices("done")
    print(f"OK multihost-process-{process_id}", flush=True)


def main() -> None:
    assert jax.device_count() == 8, f"expected 8 CPU devices, got {jax.devices()}"
    assert jax.config.jax_enable_x64, "run with JAX_ENABLE_X64=1"
    # JAX's default mesh (Explicit axes): pure data parallelism, replicated parameters.
    data_mesh = jax.make_mesh((8,), ("data",))
    replicated = {"W": P(), "b": P()}
    # A 4 x 2 mesh (Auto axes): rows over "data", classes of W and b over "model".
    mesh2d = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    model_sharded = {"W": P(None, "model"), "b": P("model")}

    check_errors(data_mesh)
    assert replicate(zeros(), data_mesh)["W"].sharding.spec == P()
    with tempfile.TemporaryDirectory(prefix="ckpt_sharded_") as tmpdir:
        check_training(data_mesh, replicated, "data-parallel", tmpdir)
        check_training(mesh2d, model_sharded, "data-and-model", tmpdir)
    check_solver(data_mesh, replicated, "lbfgs", "data-parallel")
    check_solver(mesh2d, model_sharded, "newton-cg", "data-and-model")
    print("ALL OK", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:  # --worker PROCESS_ID NUM_PROCESSES PORT TMPDIR
        pid, nproc, port = (int(a) for a in sys.argv[2:5])
        multihost_worker(pid, nproc, port, sys.argv[5])
    else:
        main()
