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

Format (version 1): a NumPy ``.npz`` archive (``numpy.savez``: every record is stored,
never compressed) holding

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
  previous checkpoint intact and no partial file under the target name. With
  ``overwrite=False`` the temporary file is hard-linked to the target name instead, which
  fails if any other writer created that name in the meantime (no check-then-rename race).
* **Permissions.** A replaced checkpoint keeps its mode; a new one is created ``0o600``
  (owner only), unless ``mode=`` says otherwise.
* **Symbolic links.** A ``path`` that is a symbolic link is written through: the link is
  kept and its target (``os.path.realpath``) is replaced atomically in the target's
  directory.
* **Verified reads.** A missing file raises ``FileNotFoundError``; a truncated, bit-flipped
  or foreign file, one with malformed metadata, or one whose tree structure, shapes or
  dtypes differ from the template, raises ``ValueError`` saying what differs. Nothing is
  returned unless the checksum matches. Every record is read in bounded chunks and hashed
  as it streams; a compressed record (jopt never writes one) or a record larger than its
  metadata declares is refused before it is read, so a small crafted file cannot make the
  reader inflate gigabytes.
* **Corruption, not tampering.** The SHA-256 checksum detects accidental damage
  (truncation, bit flips, a half-copied file); it is not a signature. Anyone who can write
  the file can also write a matching checksum, so load only checkpoints you trust. Loading
  never unpickles and never executes anything from the file: a hostile file can at worst
  make ``restore_checkpoint`` return wrong numbers or raise.

Limits: arrays are gathered to the host to be written, so every leaf must be fully
addressable from this process (one host, any number of local devices) or replicated
across processes (multi-host data parallelism: save from process 0 only). For states
sharded across hosts use orbax, or gather first with
``jax.experimental.multihost_utils.process_allgather``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import stat
import sys
import zipfile
from pathlib import Path
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

__all__ = ["restore_checkpoint", "save_checkpoint"]

_FORMAT = "jopt-checkpoint"
_VERSION = 1
_META_KEY = "__jopt_checkpoint__"
_NEW_FILE_MODE = 0o600  # checkpoints can hold private model weights: owner only by default
_CHUNK = 1 << 20  # records are hashed and copied in 1 MiB pieces, never inflated whole
_NPY_HEADER_MAX = 4096  # numpy.savez writes 128-byte headers for 1-d uint8 records
# os.link errors that mean "this file system has no hard links", not "the name is taken".
_NO_HARD_LINKS = frozenset(
    code for code in (getattr(errno, n, None) for n in ("EPERM", "ENOTSUP", "EOPNOTSUPP",
                                                         "ENOSYS")) if code is not None)


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


def _body_hasher(meta_body: dict) -> Any:
    """A SHA-256 object fed the canonical JSON of the metadata (without the checksum)."""
    return hashlib.sha256(json.dumps(meta_body, sort_keys=True).encode())


def _digest(meta_body: dict, blobs: list[bytes]) -> str:
    """SHA-256 over the canonical JSON of the metadata (without the checksum) and the leaves."""
    h = _body_hasher(meta_body)
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


def _check_save_flags(overwrite: bool, mode: int | None) -> None:
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool, got {overwrite!r}.")
    if mode is None:
        return
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"`mode` must be None or an int such as 0o600, got {mode!r}.")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"`mode` must be permission bits between 0 and 0o7777, got "
                         f"{oct(mode)}.")


def _write_target(path: Path) -> Path:
    """The regular file to replace for ``path``: a symbolic link's target, resolved."""
    target = Path(os.path.realpath(path))
    if target.is_symlink():  # realpath stops inside a loop of links
        raise OSError(errno.ELOOP, f"`path` {str(path)!r} is a loop of symbolic links.")
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"`path` {str(path)!r}: directory {str(target.parent)!r} does not exist; create "
            f"it first (e.g. `os.makedirs(dirname, exist_ok=True)`)."
        )
    if target.is_dir():
        raise IsADirectoryError(f"`path` {str(path)!r} is a directory; give a file name.")
    return target


def _exists_error(path: Path, why: str) -> FileExistsError:
    return FileExistsError(
        f"`path` {str(path)!r} {why} and `overwrite=False`; pass `overwrite=True` to replace "
        f"it or choose another name."
    )


def _final_mode(target: Path, mode: int | None) -> int:
    """``mode`` if given, else the mode of the file being replaced, else owner-only."""
    if mode is not None:
        return mode
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return _NEW_FILE_MODE


def _encode(tree: PyTree) -> dict[str, np.ndarray]:
    """The ``numpy.savez`` records of ``tree``: its leaves' bytes and the metadata."""
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
    return payload


def _create_temp(target: Path) -> tuple[Path, int]:
    """A new, empty, owner-only file beside ``target`` and its descriptor."""
    # Same directory, so the final rename or link stays on one file system and is atomic;
    # owner-only, so the data is never readable by others before its mode is set.
    tmp_name = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return tmp_name, os.open(tmp_name, flags, _NEW_FILE_MODE)


def _write_temp(fd: int, tmp_name: Path, payload: dict[str, np.ndarray], mode: int) -> None:
    """Write the archive to the temporary file ``fd``, give it ``mode``, sync it to disk."""
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, **payload)
        fh.flush()
        if hasattr(os, "fchmod"):  # an explicit chmod ignores the umask, as `mode` should
            os.fchmod(fh.fileno(), mode)
        else:
            os.chmod(tmp_name, mode)
        os.fsync(fh.fileno())


def _claim_and_replace(tmp_name: Path, target: Path, path: Path) -> None:
    """Publish ``tmp_name`` as the new file ``target`` without hard links.

    An ``O_EXCL`` placeholder reserves the name (fails if it exists), then ``os.replace``
    swaps the complete file in; the placeholder is removed again if that fails.
    """
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
    except FileExistsError:
        raise _exists_error(path, "exists (it was created while this checkpoint was "
                                  "written)") from None
    try:
        placeholder = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(target), placeholder):  # never remove another's file
                os.unlink(target)
        raise


def _publish_new(tmp_name: Path, target: Path, path: Path) -> None:
    """Give ``tmp_name`` the name ``target`` only if no file has it: one atomic step."""
    try:
        os.link(tmp_name, target)  # fails with FileExistsError if `target` exists
    except FileExistsError:
        raise _exists_error(path, "exists (it was created while this checkpoint was "
                                  "written)") from None
    except OSError as err:
        if err.errno not in _NO_HARD_LINKS:
            raise
        _claim_and_replace(tmp_name, target, path)
    else:
        os.unlink(tmp_name)


def save_checkpoint(path: str | os.PathLike, tree: PyTree, *, overwrite: bool = True,
                    mode: int | None = None) -> Path:
    """Write the pytree of arrays ``tree`` to the file ``path``, atomically.

    Args:
      path: target file (used exactly as given; no suffix is added). Its directory must
        exist. A symbolic link is written through: the link stays and its target (resolved
        with ``os.path.realpath``) is replaced, atomically, in the target's directory.
      tree: a pytree whose leaves are arrays (JAX or NumPy, any dtype including
        ``bfloat16``) or Python/NumPy scalars, e.g. ``(params, opt_state, step)``. ``None``
        and empty nodes are kept in the structure.
      overwrite: replace an existing file (default). With ``False`` an existing ``path``
        raises ``FileExistsError``, also when another writer creates it while this
        checkpoint is being written (the final step fails atomically instead of replacing
        the other file).
      mode: permission bits of the written file, e.g. ``0o640`` (set exactly, the umask is
        not applied). ``None`` (default) keeps the mode of the file being replaced, and
        gives a new file ``0o600`` (readable and writable by its owner only).

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    The file appears under ``path`` only once it is complete and synced to disk (written to
    a temporary file in the same directory, ``fsync``, then ``os.replace``, or ``os.link``
    with ``overwrite=False``); on any error the previous file at ``path`` is left untouched
    and the temporary file is removed.
    """
    _check_save_flags(overwrite, mode)
    path = Path(os.fspath(path))
    target = _write_target(path)
    if not overwrite and target.exists():  # early and cheap; `_publish_new` is the real check
        raise _exists_error(path, "exists")
    payload = _encode(tree)
    file_mode = _final_mode(target, mode)

    tmp_name, fd = _create_temp(target)
    try:
        _write_temp(fd, tmp_name, payload, file_mode)
        if overwrite:
            os.replace(tmp_name, target)
        else:
            _publish_new(tmp_name, target, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return path


class _Foreign(ValueError):
    """A readable file that is not (this version of) a jopt checkpoint."""


def _corrupt(path: Path, why: str) -> ValueError:
    return _Foreign(
        f"`path` {str(path)!r} is not a valid jopt checkpoint ({why}). The file is corrupted, "
        f"truncated or was not written by `jopt.save_checkpoint`."
    )


def _typed(value: Any, kind: type, where: str, path: Path) -> Any:
    """``value`` of the metadata field ``where``, checked to be of JSON type ``kind``."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _corrupt(path, f"checkpoint metadata field {where!r} has type "
                             f"{type(value).__name__}, expected {kind.__name__}")
    return value


def _field(record: dict, key: str, kind: type, where: str, path: Path) -> Any:
    """``record[key]`` (the metadata field ``where``), checked present and of type ``kind``."""
    if key not in record:
        raise _corrupt(path, f"checkpoint metadata field {where!r} is missing")
    return _typed(record[key], kind, where, path)


def _leaf_nbytes(leaf: Any, where: str, path: Path) -> int:
    """The byte count the metadata entry ``where`` (``leaves[i]``) declares, validated."""
    leaf = _typed(leaf, dict, where, path)
    _field(leaf, "path", str, f"{where}.path", path)
    shape = _field(leaf, "shape", list, f"{where}.shape", path)
    for j, size in enumerate(shape):
        if _typed(size, int, f"{where}.shape[{j}]", path) < 0:
            raise _corrupt(path, f"checkpoint metadata field '{where}.shape[{j}]' is {size}, "
                                 f"expected a size >= 0")
    name = _field(leaf, "dtype", str, f"{where}.dtype", path)
    try:
        dtype = _dtype_from_name(name)
    except (TypeError, ValueError):
        dtype = np.dtype(object)
    if not _is_numeric(dtype):
        raise _corrupt(path, f"checkpoint metadata field '{where}.dtype' is {name!r}, not a "
                             f"numeric dtype")
    return dtype.itemsize * math.prod(shape)


def _check_meta(meta: Any, path: Path) -> list[int]:
    """Validate every metadata field (a ``ValueError`` names a bad one); the leaf sizes."""
    if not isinstance(meta, dict):
        raise _corrupt(path, f"checkpoint metadata is a {type(meta).__name__}, not an object")
    if _field(meta, "format", str, "format", path) != _FORMAT:
        raise _corrupt(path, "unknown metadata format")
    version = _field(meta, "version", int, "version", path)
    if version != _VERSION:  # before the other fields: another version may have other ones
        raise _Foreign(f"`path` {str(path)!r} has checkpoint format version {version!r}; "
                       f"this jopt reads version {_VERSION}.")
    _field(meta, "treedef", str, "treedef", path)
    _field(meta, "sha256", str, "sha256", path)
    leaves = _field(meta, "leaves", list, "leaves", path)
    return [_leaf_nbytes(leaf, f"leaves[{i}]", path) for i, leaf in enumerate(leaves)]


def _open_record(archive: zipfile.ZipFile, key: str, max_bytes: int,
                 path: Path) -> tuple[IO[bytes], int]:
    """The stored ``.npy`` record ``key`` opened past its header, and its byte count.

    Refuses, before reading its data, a compressed record or one whose zip directory entry
    or ``.npy`` header declares more than ``max_bytes`` of ``uint8`` data.
    """
    try:
        info = archive.getinfo(f"{key}.npy")
    except KeyError:
        raise _corrupt(path, f"no record {key!r}; no jopt metadata or missing leaf") from None
    if info.compress_type != zipfile.ZIP_STORED:  # jopt never compresses: a possible bomb
        raise _corrupt(path, f"record {key!r} is compressed; jopt writes stored records only")
    if info.file_size > max_bytes + _NPY_HEADER_MAX:
        raise _corrupt(path, f"record {key!r} is {info.file_size} bytes, more than the "
                             f"{max_bytes} bytes of data its metadata allows")
    fh = archive.open(info)
    try:
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise _corrupt(path, f"record {key!r} has .npy format version {version}")
        shape, _, dtype = read_header(fh, max_header_size=_NPY_HEADER_MAX)
        if dtype != np.uint8 or len(shape) != 1:
            raise _corrupt(path, f"record {key!r} holds {dtype} {shape}, not bytes")
        if shape[0] > max_bytes or fh.tell() + shape[0] != info.file_size:
            raise _corrupt(path, f"record {key!r} declares {shape[0]} bytes of data in a "
                                 f"{info.file_size}-byte record; at most {max_bytes} allowed")
    except BaseException:
        fh.close()
        raise
    return fh, shape[0]


def _stream_into(fh: IO[bytes], buf: bytearray, key: str, path: Path,
                 hasher: Any = None) -> None:
    """Fill ``buf`` from ``fh`` in chunks, hashing each; the record must end exactly there."""
    view = memoryview(buf)
    done = 0
    while done < len(buf):
        chunk = fh.read(min(_CHUNK, len(buf) - done))
        if not chunk:
            raise _corrupt(path, f"record {key!r} ends after {done} of {len(buf)} bytes")
        view[done:done + len(chunk)] = chunk
        if hasher is not None:
            hasher.update(chunk)
        done += len(chunk)
    if fh.read(1):  # reading to the end also makes zipfile check the record's CRC-32
        raise _corrupt(path, f"record {key!r} holds more than {len(buf)} bytes")


def _read_meta(archive: zipfile.ZipFile, archive_size: int, path: Path) -> Any:
    """The decoded JSON metadata record (a stored record cannot exceed the file's size)."""
    fh, nbytes = _open_record(archive, _META_KEY, archive_size, path)
    with fh:
        buf = bytearray(nbytes)
        _stream_into(fh, buf, _META_KEY, path)
    return json.loads(buf.decode())


def _read_leaf(archive: zipfile.ZipFile, i: int, nbytes: int, hasher: Any,
               path: Path) -> bytearray:
    """The bytes of leaf ``i``, exactly ``nbytes`` as the metadata declares, hashed."""
    fh, found = _open_record(archive, _leaf_key(i), nbytes, path)
    with fh:
        if found != nbytes:
            raise _corrupt(path, f"leaf {i} has {found} bytes, its metadata declares {nbytes}")
        hasher.update(nbytes.to_bytes(8, "little"))
        buf = bytearray(nbytes)
        _stream_into(fh, buf, _leaf_key(i), path, hasher)
    return buf


def _read(path: Path) -> tuple[dict, list[bytearray]]:
    """Metadata and leaf bytes of the checkpoint at ``path``, every field and the checksum
    verified.

    Memory use stays within the file's size whatever the file declares: records are stored,
    never inflated, and each is read in chunks up to the size its metadata declares.
    """
    if not path.exists():
        raise FileNotFoundError(f"`path` {str(path)!r}: no such checkpoint file.")
    if path.is_dir():
        raise IsADirectoryError(f"`path` {str(path)!r} is a directory, not a checkpoint file.")
    try:
        with open(path, "rb") as raw, zipfile.ZipFile(raw) as archive:
            archive_size = os.fstat(raw.fileno()).st_size
            meta = _read_meta(archive, archive_size, path)
            sizes = _check_meta(meta, path)
            if sum(sizes) > archive_size:  # stored records: the data must fit in the file
                raise _corrupt(path, f"the metadata declares {sum(sizes)} bytes of leaves in "
                                     f"a {archive_size}-byte file")
            hasher = _body_hasher({k: v for k, v in meta.items() if k != "sha256"})
            blobs = [_read_leaf(archive, i, n, hasher, path) for i, n in enumerate(sizes)]
    except _Foreign:
        raise
    except Exception as err:  # zip/CRC/npy-header/JSON errors of a damaged file
        raise _corrupt(path, f"{type(err).__name__}: {err}") from err
    if hasher.hexdigest() != meta["sha256"]:
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

    Only load files you trust. The SHA-256 checksum detects corruption (truncation, bit
    flips, a half-copied file), not tampering: anyone who can write the file can also write
    a matching checksum. Loading never unpickles or executes anything from the file, and
    its memory use is bounded by the file's size (compressed or oversized records are
    refused before they are read).

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
        format error), has a missing or mistyped metadata field (the message names it),
        or its structure, a shape or a dtype differs from ``like``; the message says which
        leaf and what differs.
    """
    path = Path(os.fspath(path))
    meta, blobs = _read(path)
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    like_paths = [_path_str(p) for p, _ in flat]
    if meta["treedef"] != str(treedef):
        raise ValueError(_structure_mismatch(path, meta, like_paths, treedef))
    if len(meta["leaves"]) != len(flat):
        raise _corrupt(path, f"its metadata lists {len(meta['leaves'])} leaves for a tree "
                             f"structure with {len(flat)}")
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
        stored = _dtype_from_name(saved["dtype"]).newbyteorder("<")  # `_read` checked sizes
        arr = np.frombuffer(blob, stored).reshape(saved_shape).astype(dtype, copy=True)
        out.append(_place(arr, leaf))
    return jax.tree.unflatten(treedef, out)
