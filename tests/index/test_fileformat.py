"""imret.index.fileformat: round trips, damage detection, atomic writes."""
from __future__ import annotations

import io
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from imret.errors import IndexFileError
from imret.index import fileformat
from imret.index.fileformat import (FORMAT_VERSION, MAGIC, decode_paths, encode_paths, read_container,
                                    write_container)

_PREFIX = struct.Struct("<8sIQ")


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "descriptors": rng.standard_normal((37, 16)).astype(np.float32),
        "ids": rng.integers(-2**40, 2**40, 37, dtype=np.int64),
        "blob": rng.integers(0, 256, 1001, dtype=np.uint8),
        "empty": np.zeros((0, 16), np.float32),
        "doubles": rng.standard_normal(5),
        "small": np.array([1, -2, 3], np.int32),
        "big": np.array([0, 2**64 - 1], np.uint64),
        "scalar": np.array(7.5, np.float64),
    }


_META = {"name": "test", "n": 37, "nested": {"a": [1, 2.5, None, True]}, "text": "café ✓"}


def _layout(path):
    """(data_start, header dict) of a container file."""
    with open(path, "rb") as f:
        magic, version, hlen = _PREFIX.unpack(f.read(_PREFIX.size))
        header = json.loads(f.read(hlen))
    digest = 32 if version >= 2 else 0  # the header's SHA-256 follows it from format 2 on
    return -(-(_PREFIX.size + hlen + digest) // 64) * 64, header


def _assert_same(got: dict, want: dict):
    assert set(got) == set(want)
    for k, a in want.items():
        b = got[k]
        assert b.dtype == a.dtype, k
        assert b.shape == a.shape, k
        np.testing.assert_array_equal(b, a)


def _raises(path, *words, **kw) -> IndexFileError:
    with pytest.raises(IndexFileError) as info:
        read_container(path, **kw)
    err = info.value
    assert err.path == os.fspath(path)
    for w in words:
        assert w.lower() in err.reason.lower(), (w, err.reason)
    return err


@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip(tmp_path, mmap):
    p = tmp_path / "idx.imret"
    arrays = _arrays()
    write_container(p, _META, arrays)
    meta, got = read_container(p, mmap=mmap)
    assert meta == _META
    _assert_same(got, arrays)
    if mmap:
        assert isinstance(got["descriptors"], np.memmap)
        assert not got["descriptors"].flags.writeable
        with pytest.raises((ValueError, TypeError)):
            got["descriptors"][0, 0] = 1.0


def test_round_trip_str_path_and_no_sections(tmp_path):
    p = str(tmp_path / "meta-only.imret")
    write_container(p, {"k": "v"}, {})
    assert read_container(p) == ({"k": "v"}, {})


def test_layout_is_aligned_with_magic_and_version(tmp_path):
    p = tmp_path / "idx.imret"
    write_container(p, _META, _arrays())
    with open(p, "rb") as f:
        magic, version, _ = _PREFIX.unpack(f.read(_PREFIX.size))
    assert magic == MAGIC and version == FORMAT_VERSION
    data_start, header = _layout(p)
    assert data_start % 64 == 0
    for s in header["sections"].values():
        assert s["offset"] % 64 == 0
    # No pickle anywhere: the header is plain JSON.
    assert header["meta"] == _META


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    p = tmp_path / "idx.imret"
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    strided = base[:, ::3]
    big = np.arange(5, dtype=">i8") * 1000
    write_container(p, {}, {"strided": strided, "big": big})
    _, got = read_container(p)
    np.testing.assert_array_equal(got["strided"], strided)
    np.testing.assert_array_equal(got["big"], big)
    assert got["big"].dtype == np.dtype("<i8")


def test_unstorable_dtype_refused_without_leftovers(tmp_path):
    p = tmp_path / "idx.imret"
    with pytest.raises(TypeError, match="flags"):
        write_container(p, {}, {"flags": np.array([True, False])})
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- paths

def test_paths_round_trip_with_non_utf8_names(tmp_path):
    weird = os.fsdecode(b"photos/caf\xe9.jpg")  # surrogateescape
    assert "\udce9" in weird
    paths = ["a/b.jpg", "caf\u00e9/\u00fc\u00df.png", weird, "with space.jpg", "x", "\u65e5\u672c/\u5199\u771f.JPG"]
    buf = encode_paths(paths)
    assert buf.dtype == np.uint8
    p = tmp_path / "idx.imret"
    write_container(p, {"n": len(paths)}, {"paths": buf})
    meta, arrays = read_container(p)
    back = decode_paths(arrays["paths"], meta["n"])
    assert back == paths
    assert os.fsencode(back[2]) == b"photos/caf\xe9.jpg"
    _, mapped = read_container(p, mmap=True)
    assert decode_paths(mapped["paths"], len(paths)) == paths


def test_paths_empty_and_count_mismatch():
    assert decode_paths(encode_paths([]), 0) == []
    assert decode_paths(encode_paths(["only.jpg"]), 1) == ["only.jpg"]
    with pytest.raises(ValueError, match="expected 3 paths"):
        decode_paths(encode_paths(["a", "b"]), 3)


# ----------------------------------------------------------------------------- damage

def _flip(path, pos):
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("section", ["descriptors", "ids", "blob"])
def test_flipped_byte_in_section_fails_checksum(tmp_path, mmap, section):
    p = tmp_path / "idx.imret"
    arrays = _arrays()
    write_container(p, _META, arrays)
    data_start, header = _layout(p)
    s = header["sections"][section]
    _flip(p, data_start + s["offset"] + s["nbytes"] // 2)
    err = _raises(p, "checksum", mmap=mmap)
    assert section in err.reason
    # The flip really changed the data: unverified reading shows it.
    _, got = read_container(p, mmap=mmap, verify=False)
    assert not np.array_equal(got[section], arrays[section])


def test_flipped_byte_in_padding_is_harmless(tmp_path):
    p = tmp_path / "idx.imret"
    arrays = {"blob": np.arange(10, dtype=np.uint8), "after": np.arange(3, dtype=np.int64)}
    write_container(p, {}, arrays)
    data_start, _ = _layout(p)
    _flip(p, data_start + 30)  # in the alignment padding after "blob"
    _assert_same(read_container(p)[1], arrays)


def test_damaged_header(tmp_path):
    p = tmp_path / "idx.imret"
    write_container(p, _META, _arrays())
    _flip(p, _PREFIX.size)  # the opening brace of the JSON header
    _raises(p, "damaged")


@pytest.mark.parametrize("keep", [0.5, 0.9, "header"])
def test_truncated_file(tmp_path, keep):
    p = tmp_path / "idx.imret"
    write_container(p, _META, _arrays())
    data = p.read_bytes()
    n = _PREFIX.size + 10 if keep == "header" else int(len(data) * keep)
    p.write_bytes(data[:n])
    _raises(p, "truncated")


@pytest.mark.parametrize("kind", ["png", "random", "empty", "short", "json"])
def test_foreign_file(tmp_path, kind):
    p = tmp_path / "foreign.imret"
    if kind == "png":
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
        data = buf.getvalue()
    elif kind == "random":
        data = np.random.default_rng(0).bytes(500)
    elif kind == "empty":
        data = b""
    elif kind == "short":
        data = MAGIC[:5]
    else:
        data = json.dumps({"meta": {}, "sections": {}}).encode()
    p.write_bytes(data)
    _raises(p, "not an imret index")


def test_newer_format_version(tmp_path):
    p = tmp_path / "idx.imret"
    write_container(p, _META, _arrays())
    with open(p, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", FORMAT_VERSION + 1))
    err = _raises(p, "newer")
    assert str(FORMAT_VERSION + 1) in err.reason


def test_folder_path(tmp_path):
    d = tmp_path / "idx.imret"
    d.mkdir()
    _raises(d, "folder")
    # Writing onto a folder fails too, and leaves the folder and no temporary file.
    with pytest.raises(IndexFileError, match="cannot write"):
        write_container(d, {}, {"a": np.arange(3, dtype=np.int64)})
    assert d.is_dir() and os.listdir(d) == []
    assert os.listdir(tmp_path) == ["idx.imret"]


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.imret", "no such")


# ----------------------------------------------------------------------------- atomic writes

def test_overwrite_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "idx.imret"
    write_container(p, {"v": 1}, {"a": np.arange(3, dtype=np.int64)})
    write_container(p, {"v": 2}, {"b": np.ones((2, 2), np.float32)})
    meta, arrays = read_container(p)
    assert meta == {"v": 2} and set(arrays) == {"b"}
    assert os.listdir(tmp_path) == ["idx.imret"]


@pytest.mark.parametrize("crash", [OSError(5, "simulated crash"), KeyboardInterrupt()])
def test_crash_during_overwrite_keeps_old_file(tmp_path, monkeypatch, crash):
    p = tmp_path / "idx.imret"
    old_arrays = _arrays()
    write_container(p, _META, old_arrays)
    before = p.read_bytes()
    calls = []

    def replace(src, dst, *a, **k):
        calls.append((src, dst))
        assert os.path.exists(src)  # the new file was fully written beside the old one
        assert os.path.dirname(os.path.abspath(src)) == str(tmp_path)
        raise crash

    monkeypatch.setattr(fileformat.os, "replace", replace)
    with pytest.raises(IndexFileError if isinstance(crash, OSError) else type(crash)):
        write_container(p, {"v": "new"}, {"x": np.arange(1000, dtype=np.float64)})
    monkeypatch.undo()
    assert len(calls) == 1
    assert p.read_bytes() == before
    meta, got = read_container(p)
    assert meta == _META
    _assert_same(got, old_arrays)
    assert os.listdir(tmp_path) == ["idx.imret"]


def test_crash_while_writing_first_file_leaves_nothing(tmp_path, monkeypatch):
    p = tmp_path / "idx.imret"

    def fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileformat.os, "fsync", fsync)
    with pytest.raises(IndexFileError, match="No space left on device"):
        write_container(p, _META, _arrays())
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- header digest, modes

@pytest.mark.parametrize("edit", [(b'"n": 37', b'"n": 38'), (b'"a": [1, 2.5', b'"a": [1, 3.5'),
                                  (b'"name": "test"', b'"name": "tesT"')])
def test_an_edited_header_value_fails_the_header_checksum(tmp_path, edit):
    p = tmp_path / "idx.imret"
    write_container(p, _META, _arrays())
    data = p.read_bytes()
    assert data.count(edit[0]) == 1
    p.write_bytes(data.replace(*edit))  # same length: only the digest can tell
    _raises(p, "checksum mismatch in the index header")


def test_a_format_1_file_still_loads_and_a_version_flip_to_1_is_refused(tmp_path):
    p = tmp_path / "old.imret"
    arrays = {"a": np.arange(5, dtype=np.int64)}
    header = json.dumps({"meta": {"v": 1}, "sections": {"a": {
        "offset": 0, "nbytes": 40, "dtype": "<i8", "shape": [5],
        "sha256": fileformat._sha256(arrays["a"])}}}).encode()
    start = -(-(_PREFIX.size + len(header)) // 64) * 64
    p.write_bytes(_PREFIX.pack(MAGIC, 1, len(header)) + header + b"\0" * (start - _PREFIX.size - len(header))
                  + arrays["a"].tobytes() + b"\0" * 24)
    meta, got = read_container(p)
    assert meta == {"v": 1}
    _assert_same(got, arrays)
    q = tmp_path / "new.imret"
    write_container(q, {"v": 2}, arrays)
    with open(q, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 1))
    _raises(q, "format 1 file with data after its header")


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    p = tmp_path / "idx.imret"
    write_container(p, {"v": 1}, {})
    os.chmod(p, 0o644)
    write_container(p, {"v": 2}, {})
    assert os.stat(p).st_mode & 0o777 == 0o644
    os.chmod(p, 0o640)
    write_container(p, {"v": 3}, {})
    assert os.stat(p).st_mode & 0o777 == 0o640
    umask = os.umask(0o022)
    try:
        q = tmp_path / "fresh.imret"
        write_container(q, {}, {})
        assert os.stat(q).st_mode & 0o777 == 0o644  # what umask gives any new file, not mkstemp's 0600
    finally:
        os.umask(umask)
