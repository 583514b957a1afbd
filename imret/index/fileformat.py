"""One-file container for an index: a JSON header and raw array sections.

Layout: ``MAGIC`` (8 bytes) | format version (u32 LE) | header length (u64 LE) |
header (UTF-8 JSON) | SHA-256 of the header (32 bytes; format 2 on) | sections, each
64-byte aligned. The header lists each section's offset, dtype, shape and SHA-256,
so a damaged or foreign file is refused with a clear error and sections can be
memory-mapped. No pickle. The header's own digest matters as much as the sections':
a changed ``max_size``, GeM ``p`` or ``next_id`` changes every score, or duplicates
ids, without any section changing. Format 1 files (no header digest) still load;
their padding after the header must be zeros, so a format-2 file whose version
field was damaged into 1 is refused rather than read unchecked.
Writes go to a temporary file in the same folder, then ``os.replace``: a crash
leaves either the old file or the new one, never half of one. The new file keeps
the old one's permissions.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any

import numpy as np

from ..core.atomic import atomic_write
from ..core.errors import IndexFileError

MAGIC = b"IMRETIDX"
FORMAT_VERSION = 2
_DIGEST = 32  # bytes of the header's SHA-256, from format 2 on
_PREFIX = struct.Struct("<8sIQ")
_ALIGN = 64
_DTYPES = {"<f4", "<f8", "<i8", "<i4", "|u1", "<u8"}


def _sha256(buf) -> str:
    return hashlib.sha256(memoryview(buf).cast("B")).hexdigest()


def write_container(path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    path = os.fspath(path)
    prepared = {}
    for name, a in arrays.items():
        shape = np.shape(a)
        a = np.ascontiguousarray(a).reshape(shape)  # ascontiguousarray makes 0-d arrays 1-d
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype.str not in _DTYPES:
            raise TypeError(f"section {name!r}: dtype {a.dtype} is not storable")
        prepared[name] = a
    sections = {}
    offset = 0
    for name, a in prepared.items():
        sections[name] = {"offset": offset, "nbytes": int(a.nbytes), "dtype": a.dtype.str,
                          "shape": list(a.shape), "sha256": _sha256(a) if a.nbytes else ""}
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"meta": meta, "sections": sections}, ensure_ascii=True).encode("ascii")
    digest = hashlib.sha256(header).digest()
    data_start = _data_start(len(header), FORMAT_VERSION)

    def write(f):
        f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)))
        f.write(header)
        f.write(digest)
        f.write(b"\0" * (data_start - _PREFIX.size - len(header) - _DIGEST))
        for name, a in prepared.items():
            f.write(memoryview(a).cast("B") if a.nbytes else b"")
            pad = -(-a.nbytes // _ALIGN) * _ALIGN - a.nbytes
            f.write(b"\0" * pad)

    replace_atomically(path, write)


def _data_start(hlen: int, version: int) -> int:
    return -(-(_PREFIX.size + hlen + (_DIGEST if version >= 2 else 0)) // _ALIGN) * _ALIGN


def replace_atomically(path: str | os.PathLike, write) -> None:
    """Write ``path`` through ``write(binary file)`` with the one atomic write of
    ``imret.core.atomic`` (temporary file named after the index, so its lock holder knows
    its own leftovers). A failure (a full disk …) leaves the old file untouched and is an
    ``IndexFileError`` naming ``path``."""
    from .lock import temp_prefix

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    try:
        atomic_write(path, fill, prefix=temp_prefix(path))
    except OSError as exc:
        raise IndexFileError(os.fspath(path), f"cannot write ({exc.strerror or exc}); the file there before "
                                              "is unchanged") from None


def read_container(path: str | os.PathLike, mmap: bool = False, verify: bool = True
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays). ``mmap`` maps sections read-only instead of reading them."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise IndexFileError(path, "no such index file")
    if os.path.isdir(path):
        raise IndexFileError(path, "is a folder, not an imret index file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
                raise IndexFileError(path, "not an imret index file (bad magic bytes)")
            _, version, hlen = _PREFIX.unpack(prefix)
            if version < 1:
                raise IndexFileError(path, f"damaged index file (format version {version})")
            if version > FORMAT_VERSION:
                raise IndexFileError(path, f"index format {version} is newer than this imret supports "
                                           f"({FORMAT_VERSION}); upgrade imret")
            if hlen > size - _PREFIX.size:
                raise IndexFileError(path, "truncated index file (header runs past the end)")
            data_start = _data_start(hlen, version)
            raw_header = f.read(hlen)
            after = f.read(data_start - _PREFIX.size - hlen)
            if version >= 2:
                if hashlib.sha256(raw_header).digest() != after[:_DIGEST]:
                    raise IndexFileError(path, "checksum mismatch in the index header: the file is damaged")
            elif after.strip(b"\0"):
                raise IndexFileError(path, "damaged index header (format 1 file with data after its header)")
            try:
                header = json.loads(raw_header.decode("ascii"))
                meta, sections = header["meta"], header["sections"]
            except (ValueError, KeyError, TypeError) as exc:
                raise IndexFileError(path, f"damaged index header ({exc})") from None
            arrays = {}
            for name, s in sections.items():
                try:
                    dtype, shape, off, nbytes = np.dtype(s["dtype"]), tuple(s["shape"]), int(s["offset"]), int(s["nbytes"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise IndexFileError(path, f"damaged section entry {name!r} ({exc})") from None
                if s["dtype"] not in _DTYPES or int(np.prod(shape)) * dtype.itemsize != nbytes:
                    raise IndexFileError(path, f"damaged section entry {name!r}")
                if data_start + off + nbytes > size:
                    raise IndexFileError(path, f"truncated index file (section {name!r} runs past the end)")
                if nbytes == 0:
                    arrays[name] = np.zeros(shape, dtype)
                    continue
                if mmap:
                    a = np.memmap(path, dtype=dtype, mode="r", offset=data_start + off, shape=shape)
                else:
                    f.seek(data_start + off)
                    a = np.frombuffer(f.read(nbytes), dtype=dtype).reshape(shape)
                if verify and _sha256(a) != s["sha256"]:
                    raise IndexFileError(path, f"checksum mismatch in section {name!r}: the file is damaged")
                arrays[name] = a
    except OSError as exc:
        raise IndexFileError(path, f"cannot read ({exc.strerror or exc})") from None
    return meta, arrays


def encode_paths(paths: list[str]) -> np.ndarray:
    """Paths as NUL-separated bytes (NUL cannot occur in a path); non-UTF-8 names survive."""
    return np.frombuffer(b"\0".join(os.fsencode(p) for p in paths), dtype=np.uint8)


def decode_paths(buf: np.ndarray, n: int) -> list[str]:
    if n == 0:
        return []
    out = [os.fsdecode(b) for b in bytes(np.asarray(buf, np.uint8)).split(b"\0")]
    if len(out) != n:
        raise ValueError(f"expected {n} paths, found {len(out)}")
    return out
