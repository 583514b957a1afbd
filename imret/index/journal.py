"""An append-only journal of extracted descriptors, so that indexing can resume.

While ``imret index`` runs, every extracted descriptor is appended to
``<index>.journal`` and flushed. If the process dies (even ``kill -9``), the next
run of the same command reads the journal, skips the images already extracted,
and goes on; the journal is deleted only after the finished index has been
renamed into place. A torn last record (the process died mid-write) is detected
by its CRC and dropped.

Layout: ``MAGIC`` | u32 header length | header JSON (preset, raw dim) | records.
Record: u32 path length | path bytes | dim×float32 | u32 CRC32 of the previous two.
"""
from __future__ import annotations

import json
import os
import struct
import time
import zlib

import numpy as np

from ..errors import IndexFileError

MAGIC = b"IMRETJN1"
_U32 = struct.Struct("<I")


class Journal:
    def __init__(self, path: str, header: dict, dim: int, fsync_every_s: float = 2.0):
        self.path = path
        self.dim = dim
        # Normalised through JSON so that it compares equal to what read() finds.
        self.header = json.loads(json.dumps({**header, "dim": dim}, sort_keys=True))
        self._f = None
        self._fsync_every = fsync_every_s
        self._last_sync = time.monotonic()

    # -- reading ------------------------------------------------------------
    def read(self) -> tuple[list[str], np.ndarray]:
        """(paths, N×dim raw descriptors) recorded so far; empty when there is no journal.
        A journal made with another configuration is an error: resuming it would mix
        descriptors of two kinds."""
        if not os.path.exists(self.path):
            return [], np.zeros((0, self.dim), np.float32)
        with open(self.path, "rb") as f:
            data = f.read()
        if data[:8] != MAGIC or len(data) < 12:
            raise IndexFileError(self.path, "not an imret journal; delete it to start over")
        (hlen,) = _U32.unpack_from(data, 8)
        try:
            header = json.loads(data[12:12 + hlen].decode("utf-8"))
        except ValueError:
            raise IndexFileError(self.path, "damaged journal header; delete it to start over") from None
        if header != self.header:
            raise IndexFileError(self.path, "this unfinished run used other settings (preset, weights or "
                                            "sources); rerun with the same options, or delete the journal")
        paths, rows = [], []
        off = 12 + hlen
        rec_vec = 4 * self.dim
        good_end = off
        while off + 4 <= len(data):
            (plen,) = _U32.unpack_from(data, off)
            end = off + 4 + plen + rec_vec + 4
            if plen > 65536 or end > len(data):
                break
            body = data[off:end - 4]
            (crc,) = _U32.unpack_from(data, end - 4)
            if zlib.crc32(body) != crc:
                break
            paths.append(os.fsdecode(body[4:4 + plen]))
            rows.append(np.frombuffer(body[4 + plen:], dtype="<f4"))
            off = good_end = end
        self._valid_bytes = good_end
        desc = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        return paths, desc

    # -- writing ------------------------------------------------------------
    def open(self) -> "Journal":
        if os.path.exists(self.path):
            valid = getattr(self, "_valid_bytes", None)
            if valid is None:
                self.read()
                valid = self._valid_bytes
            self._f = open(self.path, "r+b")
            self._f.truncate(valid)  # drop a torn last record before appending
            self._f.seek(valid)
        else:
            h = json.dumps(self.header, sort_keys=True).encode("utf-8")
            self._f = open(self.path, "wb")
            self._f.write(MAGIC + _U32.pack(len(h)) + h)
            self._f.flush()
        return self

    def append(self, path: str, raw: np.ndarray) -> None:
        p = os.fsencode(path)
        body = _U32.pack(len(p)) + p + np.asarray(raw, dtype="<f4").reshape(self.dim).tobytes()
        self._f.write(body + _U32.pack(zlib.crc32(body)))
        # A flush survives kill -9 (the data is in the kernel); fsync now and then
        # bounds what a power cut can take.
        self._f.flush()
        if time.monotonic() - self._last_sync > self._fsync_every:
            os.fsync(self._f.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
