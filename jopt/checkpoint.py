"""Checkpoint and resume: save a pytree of arrays to one file and restore it exactly.

Every jopt state is a pytree of arrays — optimizer states (``NamedTuple`` s), solver states,
``(params, opt_state, step)`` tuples of a training loop — so one pair of functions covers
them all::

    jopt.save_checkpoint("run.ckpt", (params, opt_state, step))
    ...                                               # later, in a new process
    like = (params0, opt.init(params0), 0)            # a template of the same structure
    params, opt_state, step = jopt.restore_checkpoint("run.ckpt", like)

A run resumed from a checkpoint continues **bitwise** like the run that was never stopped:
the bytes of every leaf are stored as they are, whatever the dtype (``bfloat16`` and the
other ``ml_dtypes`` included).

Format (version 1): a NumPy ``.npz`` archive (``numpy.savez``, uncompressed) holding

* ``leaf_<i>``: the raw little-endian bytes of leaf ``i`` (in ``jax.tree`` order) as a
  ``uint8`` array, so any dtype round-trips without pickling;
* ``__jopt_checkpoint__``: UTF-8 JSON metadata: a format tag and version, the tree
  structure (``str(treedef)``), each leaf's path, shape and dtype name, and a SHA-256
  checksum over the metadata and all leaf bytes.

``None`` and empty nodes (optax's ``EmptyState``) are part of the tree structure and have no
leaves, so they round-trip through the structure check.

Why ``numpy.savez`` and not orbax: it adds no runtime dependency (NumPy is already one of
JAX's), writes exactly the bytes of each array into a single ordinary file that any NumPy
can open without jopt or pickles, and is small enough to reason about for atomicity. orbax
is the right tool for multi-host checkpoints of sharded arrays too large for one host (it
writes each process's shards in parallel, asynchronously); it is a much heavier dependency
(tensorstore, many files per checkpoint) than optimizer and solver states need.

Safety:

* **Atomic writes.** The archive is written to a temporary file in the target's directory,
  flushed and ``fsync`` ed, then moved over the target with ``os.replace`` (atomic on POSIX
  and Windows) and the directory is ``fsync`` ed. A crash or an error mid-write leaves the
  previous checkpoint intact and no partial file under the target name.
* **Verified reads.** A missing file raises ``FileNotFoundError``; a truncated, bit-flipped
  or foreign file, or one whose tree structure, shapes or dtypes differ from the template,
  raises ``ValueError`` saying what differs. Nothing is returned unless the checksum matches.

Limits: arrays are gathered to the host to be written, so every leaf must be fully
addressable from this process (one host, any number of local devices) or replicated
across processes (multi-host data parallelism: save from process 0 only). For states
sharded across hosts use orbax, or gather first with
``jax.experimental.multihost_utils.process_allgather``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

__all__ = ["restore_checkpoint", "save_checkpoint"]

_FORMAT = "jopt-checkpoint"
_VERSION = 1
_META_KEY = "__jopt_checkpoint__"


def _leaf_key(i: int) -> str:
    return f"leaf_{i}"


def _path_str(path: tuple) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _dtype_from_name(name: str) -> np.dtype:
    """The NumPy dtype called ``name`` (``ml_dtypes`` names such as bfloat16 included)."""
    return np.dtype(jnp.dtype(name))


def _is_numeric(dtype: np.dtype) -> bool:
    """Bool, integer, float or complex dtypes, the ``ml_dtypes`` ones (bfloat16, …) included."""
    return dtype.kind in "biufc" or (
        dtype.kind == "V" and dtype.type.__module__.split(".")[0] == "ml_dtypes")


def _host_array(path: tuple, leaf: Any) -> np.ndarray:
    """``leaf`` as a little-endian host array."""
    if isinstance(leaf, jax.core.Tracer):
        raise TypeError(
            f"`tree` leaf {_path_str(path)} is a traced value: save_checkpoint runs on the "
            f"host, outside `jit`/`vmap`. Return the state from the compiled function and "
            f"save it afterwards."
        )
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if not leaf.is_fully_replicated:
            raise ValueError(
                f"`tree` leaf {_path_str(path)} is sharded across processes (not fully "
                f"addressable); save_checkpoint writes from one process. Gather it first "
                f"with `jax.experimental.multihost_utils.process_allgather`, or use orbax "
                f"for multi-host checkpoints."
            )
        leaf = leaf.addressable_data(0)  # replicated over processes: the local copy
    arr = np.asarray(jax.device_get(leaf))
    if not _is_numeric(arr.dtype):
        raise TypeError(
            f"`tree` leaf {_path_str(path)} has dtype {arr.dtype} ({type(leaf).__name__}); "
            f"checkpoints hold numeric and boolean arrays only. Keep other data (strings, "
            f"objects) out of the saved tree."
        )
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr  # `tobytes()` below writes C order whatever the layout


def _digest(meta_body: dict, blobs: list[bytes]) -> str:
    """SHA-256 over the canonical JSON of the metadata (without the checksum) and the leaves."""
    h = hashlib.sha256(json.dumps(meta_body, sort_keys=True).encode())
    for blob in blobs:
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    if sys.platform == "win32":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, tree: PyTree, *, overwrite: bool = True) -> Path:
    """Write the pytree of arrays ``tree`` to the file ``path``, atomically.

    Args:
      path: target file (used exactly as given; no suffix is added). Its directory must
        exist.
      tree: a pytree whose leaves are arrays (JAX or NumPy, any dtype including
        ``bfloat16``) or Python/NumPy scalars, e.g. ``(params, opt_state, step)``. ``None``
        and empty nodes are kept in the structure.
      overwrite: replace an existing file (default). With ``False`` an existing ``path``
        raises ``FileExistsError``.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    The file appears under ``path`` only once it is complete and synced to disk (written to
    a temporary file in the same directory, ``fsync``, ``os.replace``); on any error the
    previous file at ``path`` is left untouched and the temporary file is removed.
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool, got {overwrite!r}.")
    path = Path(os.fspath(path))
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(
            f"`path` {str(path)!r}: directory {str(directory)!r} does not exist; create it "
            f"first (e.g. `os.makedirs(dirname, exist_ok=True)`)."
        )
    if path.is_dir():
        raise IsADirectoryError(f"`path` {str(path)!r} is a directory; give a file name.")
    if not overwrite and path.exists():
        raise FileExistsError(
            f"`path` {str(path)!r} exists and `overwrite=False`; pass `overwrite=True` to "
            f"replace it or choose another name."
        )

    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays = [_host_array(p, leaf) for p, leaf in flat]
    blobs = [a.tobytes() for a in arrays]
    body = {
        "format": _FORMAT,
        "version": _VERSION,
        "treedef": str(treedef),
        "leaves": [
            {"path": _path_str(p), "shape": list(a.shape), "dtype": a.dtype.name}
            for (p, _), a in zip(flat, arrays, strict=True)
        ],
    }
    meta = dict(body, sha256=_digest(body, blobs))
    payload = {_leaf_key(i): np.frombuffer(b, np.uint8) for i, b in enumerate(blobs)}
    payload[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    # A fresh name beside the target (same file system, so os.replace is atomic), created
    # with the default permissions (umask applies, as for any new file).
    tmp_name = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        if not overwrite and path.exists():
            raise FileExistsError(
                f"`path` {str(path)!r} was created while writing and `overwrite=False`.")
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


class _Foreign(ValueError):
    """A readable file that is not (this version of) a jopt checkpoint."""


def _corrupt(path: Path, why: str) -> ValueError:
    return _Foreign(
        f"`path` {str(path)!r} is not a valid jopt checkpoint ({why}). The file is corrupted, "
        f"truncated or was not written by `jopt.save_checkpoint`."
    )


def _read(path: Path) -> tuple[dict, list[bytes]]:
    """Metadata and leaf bytes of the checkpoint at ``path``, checksum verified."""
    if not path.exists():
        raise FileNotFoundError(f"`path` {str(path)!r}: no such checkpoint file.")
    if path.is_dir():
        raise IsADirectoryError(f"`path` {str(path)!r} is a directory, not a checkpoint file.")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise _corrupt(path, "a single .npy array, not an .npz archive")
        with data:
            if _META_KEY not in data.files:
                raise _corrupt(path, "no jopt metadata record")
            meta = json.loads(bytes(data[_META_KEY]).decode())
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise _corrupt(path, "unknown metadata format")
            if meta.get("version") != _VERSION:
                raise _Foreign(
                    f"`path` {str(path)!r} has checkpoint format version "
                    f"{meta.get('version')!r}; this jopt reads version {_VERSION}."
                )
            blobs = [bytes(data[_leaf_key(i)]) for i in range(len(meta["leaves"]))]
    except _Foreign:
        raise
    except Exception as err:  # zip/CRC/npy-header/JSON errors of a damaged file
        raise _corrupt(path, f"{type(err).__name__}: {err}") from err
    body = {k: v for k, v in meta.items() if k != "sha256"}
    if _digest(body, blobs) != meta.get("sha256"):
        raise _corrupt(path, "SHA-256 checksum mismatch")
    return meta, blobs


def _template_shape_dtype(path: tuple, leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(leaf, jax.core.Tracer):
        raise TypeError(
            f"`like` leaf {_path_str(path)} is a traced value: restore_checkpoint runs on "
            f"the host, outside `jit`/`vmap`."
        )
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct | np.ndarray | np.generic):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    arr = np.asarray(leaf)
    if not _is_numeric(arr.dtype):
        raise TypeError(
            f"`like` leaf {_path_str(path)} is a {type(leaf).__name__}; template leaves must "
            f"be arrays, `jax.ShapeDtypeStruct` s or numbers."
        )
    return arr.shape, arr.dtype


def _place(arr: np.ndarray, leaf: Any) -> Any:
    """``arr`` in the kind of container (and on the sharding) of the template ``leaf``."""
    if isinstance(leaf, jax.Array):
        return jax.device_put(arr, leaf.sharding)
    if isinstance(leaf, jax.ShapeDtypeStruct):
        sharding = getattr(leaf, "sharding", None)
        return jax.device_put(arr, sharding) if sharding is not None else jnp.asarray(arr)
    if isinstance(leaf, np.ndarray):
        return arr
    if isinstance(leaf, np.generic):
        return arr[()]
    return type(leaf)(arr.item())  # Python bool / int / float / complex


def _structure_mismatch(path: Path, meta: dict, like_paths: list[str], treedef: Any) -> str:
    saved_paths = [leaf["path"] for leaf in meta["leaves"]]
    missing = [p for p in saved_paths if p not in set(like_paths)]
    extra = [p for p in like_paths if p not in set(saved_paths)]
    lines = [f"`like` has a different pytree structure from the checkpoint at `path` "
             f"{str(path)!r}."]
    if missing:
        lines.append(f"  leaves in the checkpoint but not in `like`: {missing[:5]}")
    if extra:
        lines.append(f"  leaves in `like` but not in the checkpoint: {extra[:5]}")

    def short(s: str) -> str:
        return s if len(s) <= 400 else s[:400] + "…"

    lines.append(f"  checkpoint: {short(meta['treedef'])}")
    lines.append(f"  like:       {short(str(treedef))}")
    lines.append("Build `like` exactly as the saved tree was built (same optimizer chain, "
                 "same parameter names), e.g. `(params0, opt.init(params0), 0)`.")
    return "\n".join(lines)


def restore_checkpoint(path: str | os.PathLike, like: PyTree) -> PyTree:
    """Read the checkpoint at ``path`` into a pytree shaped like the template ``like``.

    Args:
      path: a file written by :func:`save_checkpoint`.
      like: a template with the same tree structure, leaf shapes and dtypes as the saved
        tree — typically a freshly initialised state, e.g. ``(params0, opt.init(params0),
        0)``, or ``jax.eval_shape`` of it (``jax.ShapeDtypeStruct`` leaves). Only shapes,
        dtypes and shardings of the template are used, never its values.

    Returns:
      The saved tree with ``like``'s structure. Each leaf comes back as the kind of the
      template leaf: a ``jax.Array`` on the template's sharding (``jax.device_put`` onto
      ``leaf.sharding``; a ``ShapeDtypeStruct`` with a ``sharding`` also places its leaf),
      a NumPy array, or a Python number.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is not a jopt checkpoint, is corrupted (checksum, zip CRC or
        format error) or its structure, a shape or a dtype differs from ``like``; the
        message says which leaf and what differs.
    """
    path = Path(os.fspath(path))
    meta, blobs = _read(path)
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    like_paths = [_path_str(p) for p, _ in flat]
    if meta["treedef"] != str(treedef):
        raise ValueError(_structure_mismatch(path, meta, like_paths, treedef))
    out = []
    for (p, leaf), saved, blob in zip(flat, meta["leaves"], blobs, strict=True):
        shape, dtype = _template_shape_dtype(p, leaf)
        saved_shape = tuple(saved["shape"])
        if saved_shape != shape:
            raise ValueError(
                f"`like` leaf {_path_str(p)} has shape {shape} but the checkpoint at `path` "
                f"{str(path)!r} stores shape {saved_shape} for it."
            )
        if saved["dtype"] != dtype.name:
            raise ValueError(
                f"`like` leaf {_path_str(p)} has dtype {dtype.name} but the checkpoint at "
                f"`path` {str(path)!r} stores {saved['dtype']} for it. (Was the checkpoint "
                f"written with a different `jax_enable_x64` setting or parameter dtype?)"
            )
        stored = _dtype_from_name(saved["dtype"]).newbyteorder("<")
        if len(blob) != stored.itemsize * int(np.prod(saved_shape, dtype=np.int64)):
            raise _corrupt(path, f"leaf {saved['path']} has the wrong number of bytes")
        arr = np.frombuffer(blob, stored).reshape(saved_shape).astype(dtype, copy=True)
        out.append(_place(arr, leaf))
    return jax.tree.unflatten(treedef, out)
