"""Checkpoint hardening: bounded reads of crafted files, file modes, symbolic links, the
``overwrite=False`` race, and metadata validation.

Crafted files are built byte by byte here (not with jopt), so each test exercises what a
reader meets on disk, whoever wrote it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jopt.checkpoint import restore_checkpoint, save_checkpoint

META = "__jopt_checkpoint__"
MiB = 1 << 20


# ------------------------------------------------------------------- crafted files


def _npy_header(nbytes: int) -> bytes:
    """The ``.npy`` header of a 1-d ``uint8`` array of ``nbytes`` elements."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": "|u1", "fortran_order": False, "shape": (nbytes,)})
    return out.getvalue()


def _npy(data: bytes) -> bytes:
    return _npy_header(len(data)) + data


def _zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip archive of ``(name, method, stored_bytes, crc32, uncompressed_size)`` entries."""
    body, central = b"", b""
    for name, method, data, crc, size in entries:
        raw = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 33, crc,
                               len(data), size, len(raw), 0, 0, 0, 0, 0, len(body)) + raw
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc, len(data),
                            size, len(raw), 0) + raw + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(central), len(body), 0)
    return body + central + end


def _stored(name: str, content: bytes) -> tuple[str, int, bytes, int, int]:
    return (name, zipfile.ZIP_STORED, content, zlib.crc32(content), len(content))


def _deflated_zeros(name: str, prefix: bytes, mib: int) -> tuple[str, int, bytes, int, int]:
    """An entry of ``prefix`` then ``mib`` MiB of zeros, deflated to a few hundred KB."""
    zeros = bytes(MiB)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(prefix + zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)  # the same after each flush
    data = first + block * (mib - 1) + comp.flush()
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return (name, zipfile.ZIP_DEFLATED, data, crc, len(prefix) + mib * MiB)


def _checksum(meta: dict, blobs: list[bytes]) -> str:
    """The documented checksum: SHA-256 of the sorted-key JSON body, then each leaf."""
    body = {k: v for k, v in meta.items() if k != "sha256"}
    h = hashlib.sha256(json.dumps(body, sort_keys=True).encode())
    for blob in blobs:
        h.update(len(blob).to_bytes(8, "little") + blob)
    return h.hexdigest()


def _meta(leaf_shape: list[int]) -> dict:
    """Metadata of one float32 leaf; the checksum is never reached by these files."""
    return {"format": "jopt-checkpoint", "version": 1, "treedef": "PyTreeDef(*)",
            "leaves": [{"path": "<root>", "shape": leaf_shape, "dtype": "float32"}],
            "sha256": "0" * 64}


def _refusal(path: Path, like) -> tuple[int, str]:
    """Peak memory traced (NumPy buffers included) while ``restore_checkpoint`` refuses
    ``path`` with a ``ValueError``, and that error's message."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            restore_checkpoint(path, like)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, str(info.value)


def _restore_raises(path: Path, like, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        restore_checkpoint(path, like)


# ------------------------------------------------------------- bounded reads (bombs)


def test_deflate_bomb_is_refused_before_inflating(tmp_path):
    """A ~0.4 MB file whose leaf inflates to 400 MiB while the metadata declares 16 bytes."""
    meta = json.dumps(_meta([4])).encode()
    bomb = _deflated_zeros("leaf_0.npy", _npy_header(400 * MiB), 400)
    path = tmp_path / "bomb.ckpt"
    path.write_bytes(_zip([_stored(f"{META}.npy", _npy(meta)), bomb]))
    assert path.stat().st_size < MiB

    peak, message = _refusal(path, jnp.zeros(4))
    assert peak < 8 * MiB, f"peak {peak / MiB:.0f} MiB while refusing a 0.4 MB file"
    assert "record 'leaf_0' is compressed" in message


@pytest.mark.parametrize("lie", ["record_bigger_than_metadata", "npy_header_bigger"])
def test_stored_record_bigger_than_its_metadata_is_refused_unread(tmp_path, lie):
    """The zip directory or the ``.npy`` header declares more than the metadata: refused
    before the leaf's data is read (so a large record never reaches memory)."""
    meta = json.dumps(_meta([4])).encode()
    if lie == "record_bigger_than_metadata":
        leaf = _npy(bytes(64 * MiB))
    else:  # a short record whose header claims 64 MiB
        leaf = _npy_header(64 * MiB) + bytes(16)
    path = tmp_path / "big.ckpt"
    path.write_bytes(_zip([_stored(f"{META}.npy", _npy(meta)), _stored("leaf_0.npy", leaf)]))

    peak, message = _refusal(path, jnp.zeros(4))
    assert peak < 8 * MiB, f"peak {peak / MiB:.0f} MiB while refusing a 16-byte leaf"
    assert "record 'leaf_0'" in message and ("declares" in message or "more than" in message)


def test_metadata_declaring_more_data_than_the_file_holds_is_refused(tmp_path):
    meta = _meta([1 << 40])  # 4 TiB of float32 "in" a file of a few hundred bytes
    leaf = _npy(bytes(16))
    path = tmp_path / "huge.ckpt"
    path.write_bytes(_zip([_stored(f"{META}.npy", _npy(json.dumps(meta).encode())),
                           _stored("leaf_0.npy", leaf)]))
    _restore_raises(path, jnp.zeros(4), r"declares \d+ bytes of leaves in a \d+-byte file")


def test_crafted_but_well_formed_file_still_loads(tmp_path):
    """The byte-built archive is a valid checkpoint when it tells the truth (oracle for the
    helpers above)."""
    data = np.arange(4, dtype=np.float32)
    meta = {"format": "jopt-checkpoint", "version": 1, "treedef": "PyTreeDef(*)",
            "leaves": [{"path": "<root>", "shape": [4], "dtype": "float32"}]}
    meta["sha256"] = _checksum(meta, [data.tobytes()])
    path = tmp_path / "ok.ckpt"
    path.write_bytes(_zip([_stored(f"{META}.npy", _npy(json.dumps(meta).encode())),
                           _stored("leaf_0.npy", _npy(data.tobytes()))]))
    np.testing.assert_array_equal(restore_checkpoint(path, np.zeros(4, np.float32)), data)


# --------------------------------------------------------------------------- modes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_checkpoint_is_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        save_checkpoint(tmp_path / "a.ckpt", jnp.ones(2))
        save_checkpoint(tmp_path / "b.ckpt", jnp.ones(2), overwrite=False)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.ckpt") == 0o600
    assert _mode(tmp_path / "b.ckpt") == 0o600


@pytest.mark.parametrize("existing", [0o600, 0o640, 0o400])
def test_replacing_keeps_the_existing_mode(tmp_path, existing):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, jnp.ones(2))
    path.chmod(existing)
    save_checkpoint(path, jnp.full(2, 3.0))
    assert _mode(path) == existing
    assert float(restore_checkpoint(path, jnp.ones(2))[0]) == 3.0


def test_mode_argument_sets_the_mode_exactly(tmp_path):
    old = os.umask(0o077)  # an explicit mode is not narrowed by the umask
    try:
        save_checkpoint(tmp_path / "new.ckpt", jnp.ones(2), mode=0o644)
        path = tmp_path / "old.ckpt"
        save_checkpoint(path, jnp.ones(2))
        save_checkpoint(path, jnp.ones(2), mode=0o640)  # an explicit mode wins over the old
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new.ckpt") == 0o644
    assert _mode(path) == 0o640
    with pytest.raises(TypeError, match="`mode` must be None or an int"):
        save_checkpoint(path, jnp.ones(2), mode="0o600")
    with pytest.raises(ValueError, match="`mode` must be permission bits"):
        save_checkpoint(path, jnp.ones(2), mode=0o10000)


# ------------------------------------------------------------------ symbolic links


def _symlink_or_skip(link: Path, target: str) -> None:
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError) as err:  # e.g. Windows without the privilege
        pytest.skip(f"symbolic links unavailable: {err}")


def test_symlink_is_written_through_to_its_target(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    real = store / "real.ckpt"
    save_checkpoint(real, jnp.ones(3))
    real.chmod(0o640)
    link = tmp_path / "run.ckpt"
    _symlink_or_skip(link, os.path.join("store", "real.ckpt"))

    assert save_checkpoint(link, jnp.full(3, 7.0)) == link
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "real.ckpt")
    assert float(restore_checkpoint(real, jnp.ones(3))[0]) == 7.0
    assert _mode(real) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt", "store"]  # no temporary files
    assert os.listdir(store) == ["real.ckpt"]

    with pytest.raises(FileExistsError, match=r"`path` .*run\.ckpt.*overwrite=False"):
        save_checkpoint(link, jnp.zeros(3), overwrite=False)
    assert float(restore_checkpoint(link, jnp.ones(3))[0]) == 7.0


def test_dangling_symlink_creates_its_target_and_loops_are_refused(tmp_path):
    link = tmp_path / "run.ckpt"
    _symlink_or_skip(link, "target.ckpt")
    save_checkpoint(link, jnp.ones(2), overwrite=False)
    assert link.is_symlink() and (tmp_path / "target.ckpt").is_file()
    assert _mode(tmp_path / "target.ckpt") == 0o600

    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(OSError, match="loop of symbolic links") as info:
        save_checkpoint(tmp_path / "a", jnp.ones(2))
    assert info.value.errno == errno.ELOOP
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()


# --------------------------------------------------------- overwrite=False is atomic


OTHER = b"another writer's checkpoint"


def _race(monkeypatch, dest: Path) -> None:
    """Another writer creates ``dest`` just after every existence check has said no: the
    checks are blinded and the file appears once the temporary file is synced."""
    real_dest = os.path.realpath(dest)
    real_path_exists, real_exists, real_fsync = Path.exists, os.path.exists, os.fsync

    def blind(check):
        return lambda p, *a, **k: False if os.path.realpath(p) == real_dest else check(p, *a,
                                                                                        **k)

    def fsync_then_race(fd):
        real_fsync(fd)
        if stat.S_ISREG(os.fstat(fd).st_mode) and not real_exists(real_dest):
            with open(real_dest, "wb") as fh:
                fh.write(OTHER)

    monkeypatch.setattr(Path, "exists", blind(real_path_exists))
    monkeypatch.setattr(os.path, "exists", blind(real_exists))
    monkeypatch.setattr(os, "fsync", fsync_then_race)


def test_overwrite_false_never_replaces_a_file_created_during_the_write(tmp_path,
                                                                        monkeypatch):
    dest = tmp_path / "run.ckpt"
    _race(monkeypatch, dest)
    with pytest.raises(FileExistsError, match=r"`path` .*run\.ckpt.*overwrite=False"):
        save_checkpoint(dest, jnp.ones(3), overwrite=False)
    monkeypatch.undo()
    assert dest.read_bytes() == OTHER
    assert os.listdir(tmp_path) == ["run.ckpt"]  # the temporary file is gone


def _no_hard_links(monkeypatch) -> None:
    def link(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted", str(src))

    monkeypatch.setattr(os, "link", link)


def test_overwrite_false_without_hard_links_still_refuses_atomically(tmp_path, monkeypatch):
    _no_hard_links(monkeypatch)
    fresh = tmp_path / "fresh.ckpt"
    save_checkpoint(fresh, jnp.full(2, 5.0), overwrite=False)
    assert float(restore_checkpoint(fresh, jnp.ones(2))[0]) == 5.0 and _mode(fresh) == 0o600

    dest = tmp_path / "run.ckpt"
    _race(monkeypatch, dest)
    with pytest.raises(FileExistsError, match=r"`path` .*run\.ckpt.*overwrite=False"):
        save_checkpoint(dest, jnp.ones(3), overwrite=False)
    monkeypatch.undo()
    assert dest.read_bytes() == OTHER
    assert sorted(os.listdir(tmp_path)) == ["fresh.ckpt", "run.ckpt"]


# --------------------------------------------------------------- metadata validation


def _with_meta(path: Path, edit) -> None:
    """Rewrite the checkpoint at ``path`` with ``edit(meta)`` applied and the checksum
    recomputed, so only the metadata's shape is wrong."""
    with zipfile.ZipFile(path) as zf:
        records = {n[:-4]: np.load(io.BytesIO(zf.read(n))) for n in zf.namelist()}
    meta = json.loads(bytes(records.pop(META)).decode())
    blobs = [records[f"leaf_{i}"].tobytes() for i in range(len(records))]
    meta = edit(meta)
    if isinstance(meta, dict) and isinstance(meta.get("sha256"), str):
        listed = meta.get("leaves")
        meta["sha256"] = _checksum(meta, blobs[:len(listed)] if isinstance(listed, list)
                                   else blobs)
    records[META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **records)


def _drop(*keys):
    def edit(meta):
        record = meta
        for key in keys[:-1]:
            record = record[key]
        del record[keys[-1]]
        return meta
    return edit


def _set(value, *keys):
    def edit(meta):
        record = meta
        for key in keys[:-1]:
            record = record[key]
        record[keys[-1]] = value
        return meta
    return edit


MALFORMED = {
    "no format": (_drop("format"), "'format' is missing"),
    "no version": (_drop("version"), "'version' is missing"),
    "no treedef": (_drop("treedef"), "'treedef' is missing"),
    "no leaves": (_drop("leaves"), "'leaves' is missing"),
    "no sha256": (_drop("sha256"), "'sha256' is missing"),
    "no leaf path": (_drop("leaves", 0, "path"), r"'leaves\[0\]\.path' is missing"),
    "no leaf shape": (_drop("leaves", 1, "shape"), r"'leaves\[1\]\.shape' is missing"),
    "no leaf dtype": (_drop("leaves", 0, "dtype"), r"'leaves\[0\]\.dtype' is missing"),
    "format int": (_set(1, "format"), "'format' has type int, expected str"),
    "version str": (_set("1", "version"), "'version' has type str, expected int"),
    "version bool": (_set(True, "version"), "'version' has type bool, expected int"),
    "treedef int": (_set(3, "treedef"), "'treedef' has type int, expected str"),
    "leaves dict": (_set({"0": {}}, "leaves"), "'leaves' has type dict, expected list"),
    "sha256 list": (_set([], "sha256"), "'sha256' has type list, expected str"),
    "leaf str": (_set("x", "leaves", 0), r"'leaves\[0\]' has type str, expected dict"),
    "path int": (_set(0, "leaves", 0, "path"), r"'leaves\[0\]\.path' has type int, expected"),
    "shape str": (_set("4,6", "leaves", 0, "shape"),
                  r"'leaves\[0\]\.shape' has type str, expected list"),
    "shape float": (_set([4, 6.0], "leaves", 0, "shape"),
                    r"'leaves\[0\]\.shape\[1\]' has type float, expected int"),
    "shape negative": (_set([-4, -6], "leaves", 0, "shape"),
                       r"'leaves\[0\]\.shape\[0\]' is -4, expected a size >= 0"),
    "dtype int": (_set(4, "leaves", 0, "dtype"), r"'leaves\[0\]\.dtype' has type int"),
    "dtype unknown": (_set("float7", "leaves", 0, "dtype"),
                      r"'leaves\[0\]\.dtype' is 'float7', not a numeric dtype"),
    "dtype object": (_set("object", "leaves", 0, "dtype"),
                     r"'leaves\[0\]\.dtype' is 'object', not a numeric dtype"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_metadata_with_a_valid_checksum_names_the_field(tmp_path, case):
    edit, message = MALFORMED[case]
    tree = {"w": jnp.ones((4, 6), jnp.float32), "b": jnp.zeros(6, jnp.float32)}
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, tree)
    _with_meta(path, edit)
    _restore_raises(path, tree, f"checkpoint metadata field {message}")


def test_metadata_that_is_not_an_object_or_lists_too_few_leaves(tmp_path):
    tree = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, tree)
    _with_meta(path, lambda meta: dict(meta, leaves=meta["leaves"][:1]))
    _restore_raises(path, tree, "lists 1 leaves for a tree structure with 2")
    _with_meta(path, lambda meta: [meta])
    _restore_raises(path, tree, "checkpoint metadata is a list, not an object")
