"""Append-only journals of extracted features, so that indexing can resume.

While ``imret index`` runs, every extracted descriptor (and, with ``--local``, every
image's local features) is appended to ``<index>.journal`` (``<index>.local.journal``)
and flushed. If the process dies (even ``kill -9``), the next run of the same
command reads the journal, skips the images already extracted, and goes on; the
journal is deleted only after the finished index has been renamed into place. A
torn last record (the process died mid-write) is detected by its CRC and dropped.

Layout: ``MAGIC`` | u32 header length | header JSON (settings) | records.
Record: u32 path length | path bytes | u32 payload length | payload | u32 CRC32 of
what precedes it in the record.
"""
from __future__ import annotations

import json
import os
import struct
import time
import zlib
from typing import Any

from .errors import IndexFileError

MAGIC = b"IMRETJN2"
_U32 = struct.Struct("<I")


def _write_error(path: str, exc: OSError) -> IndexFileError:
    return IndexFileError(path, f"cannot write the journal ({exc.strerror or exc}); free some space and rerun "
                                "the same command: it resumes from what was journaled")


def _torn_header(data: bytes) -> bool:
    """A journal cut short inside its magic bytes or header (0 bytes after a full disk):
    nothing was recorded, so it is as good as none."""
    if len(data) < 12:
        return MAGIC.startswith(data[:8])
    (hlen,) = _U32.unpack_from(data, 8)
    return data[:8] == MAGIC and len(data) < 12 + hlen


class RecordJournal:
    """(path, bytes) records; subclasses say how their values become bytes and back."""

    def __init__(self, path: str, header: dict, fsync_every_s: float = 2.0):
        self.path = path
        # Normalised through JSON so that it compares equal to what read() finds.
        self.header = json.loads(json.dumps(header, sort_keys=True))
        self._f = None
        self._fsync_every = fsync_every_s
        self._last_sync = time.monotonic()
        self._valid_bytes: int | None = None

    def encode(self, value: Any) -> bytes:
        return bytes(value)

    def decode(self, payload: bytes) -> Any:
        return payload

    # -- reading ------------------------------------------------------------
    def records(self) -> tuple[list[str], list[Any]]:
        """(paths, values) recorded so far; empty when there is no journal. A journal
        made with other settings is an error: resuming it would mix features of two kinds."""
        self._valid_bytes = None
        if not os.path.exists(self.path):
            return [], []
        with open(self.path, "rb") as f:
            data = f.read()
        if _torn_header(data):  # the run died (or the disk filled) while writing the header
            self._valid_bytes = 0
            return [], []
        if data[:8] != MAGIC or len(data) < 12:
            raise IndexFileError(self.path, "not an imret journal (or one from an older version); "
                                            "delete it to start over")
        (hlen,) = _U32.unpack_from(data, 8)
        try:
            header = json.loads(data[12:12 + hlen].decode("utf-8"))
        except ValueError:
            raise IndexFileError(self.path, "damaged journal header; delete it to start over") from None
        if header != self.header:
            raise IndexFileError(self.path, "this unfinished run used other settings (preset, weights or "
                                            "sources); rerun with the same options, or delete the journal")
        paths, values = [], []
        off = good_end = 12 + hlen
        while off + 8 <= len(data):
            (plen,) = _U32.unpack_from(data, off)
            if plen > 65536 or off + 8 + plen > len(data):
                break
            (vlen,) = _U32.unpack_from(data, off + 4 + plen)
            end = off + 8 + plen + vlen + 4
            if end > len(data):
                break
            body = data[off:end - 4]
            (crc,) = _U32.unpack_from(data, end - 4)
            if zlib.crc32(body) != crc:
                break
            try:
                value = self.decode(body[8 + plen:])
            except ValueError:  # a payload that passed the CRC but does not fit these settings
                break
            paths.append(os.fsdecode(body[4:4 + plen]))
            values.append(value)
            off = good_end = end
        self._valid_bytes = good_end
        return paths, values

    @staticmethod
    def header_of(path: str) -> dict | None:
        """The header of the journal at ``path`` ({} when it was cut short inside it; None
        when there is none or it is not a journal)."""
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 16)
            if _torn_header(head):
                return {}
            if head[:8] != MAGIC:
                return None
            (hlen,) = _U32.unpack_from(head, 8)
            return json.loads(head[12:12 + hlen].decode("utf-8"))
        except (OSError, ValueError, struct.error):
            return None

    @staticmethod
    def paths_in(path: str) -> list[str] | None:
        """The image paths recorded in the journal at ``path``, whatever its settings (None
        when there is none or it is unreadable)."""
        header = RecordJournal.header_of(path)
        if not header:
            return None if header is None else []
        try:
            plain = RecordJournal(path, header)  # checks only the framing
            return [p for p in plain.records()[0] if not p.startswith("\0")]  # NUL-led keys: not images
        except (OSError, ValueError, struct.error, IndexFileError):
            return None

    @staticmethod
    def count(path: str) -> int:
        """Images recorded in the journal at ``path``, whatever its settings (0 when
        there is none or it is unreadable): what a resumed run will take from it."""
        return len(RecordJournal.paths_in(path) or [])

    # -- writing ------------------------------------------------------------
    def open(self) -> "RecordJournal":
        if os.path.exists(self.path) and self._valid_bytes is None:
            self.records()
        try:
            if os.path.exists(self.path) and self._valid_bytes:
                self._f = open(self.path, "r+b")
                self._f.truncate(self._valid_bytes)  # drop a torn last record before appending
                self._f.seek(self._valid_bytes)
            else:
                h = json.dumps(self.header, sort_keys=True).encode("utf-8")
                self._f = open(self.path, "wb")
                self._f.write(MAGIC + _U32.pack(len(h)) + h)
                self._f.flush()
        except OSError as exc:
            self.close()
            raise _write_error(self.path, exc) from None
        return self

    def frame(self, path: str, value: Any) -> bytes:
        """The bytes of one record (path, value), its CRC last."""
        p, v = os.fsencode(path), self.encode(value)
        body = _U32.pack(len(p)) + p + _U32.pack(len(v)) + v
        return body + _U32.pack(zlib.crc32(body))

    def append(self, path: str, value: Any) -> None:
        try:
            self._f.write(self.frame(path, value))
            # A flush survives kill -9 (the data is in the kernel); fsync now and then
            # bounds what a power cut can take.
            self._f.flush()
            if time.monotonic() - self._last_sync > self._fsync_every:
                os.fsync(self._f.fileno())
                self._last_sync = time.monotonic()
        except OSError as exc:  # a torn last record is dropped on resuming
            raise _write_error(self.path, exc) from None

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            try:
                f.close()
            except OSError:  # its buffer could not be flushed (full disk): a torn record at most
                pass

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
