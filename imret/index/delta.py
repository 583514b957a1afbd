"""Small changes to a saved index as an append-only log beside it, compacted later.

Rewriting a whole index file (and its local part) for every photo the service adds
or deletes costs time in proportion to the collection. A change is written instead as
one record appended to ``INDEX.delta`` and fsynced before it is answered: the rows,
ids and paths it added (with their local features) or the ids it removed. Loading an
index replays its log; a full save (``Index.save``: every CLI writer, and the service
once the log passes ``COMPACT_FRACTION`` of the index file) folds it in.

Which base a log belongs to is its header's ``base``: the ``generation`` a full save
writes into the index header. A full save commits a new generation, so a log left
behind by a save killed before deleting it belongs to an older base and is ignored
(and deleted by the next writer), never replayed twice. Each record carries the
SHA-256 of its arrays; the framing's CRC drops a torn last record (a writer killed
mid-append, before it answered).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

from ..core.errors import IndexFileError
from ..core.journal import RecordJournal

# the log is folded into a full save once it is this large against the index file
COMPACT_FRACTION = 0.25
COMPACT_MIN_BYTES = 4 << 20  # …and at least this large (a few small changes never rewrite)

_U32 = struct.Struct("<I")


def delta_path(index_path: str | os.PathLike) -> str:
    return os.fspath(index_path) + ".delta"


def _pack(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    layout, blobs = [], []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        layout.append({"name": name, "dtype": np.lib.format.dtype_to_descr(a.dtype), "shape": list(a.shape)})
        blobs.append(a.tobytes())
    body = b"".join(blobs)
    head = json.dumps({**meta, "arrays": layout, "sha256": hashlib.sha256(body).hexdigest()}).encode("utf-8")
    return _U32.pack(len(head)) + head + body


def _unpack(payload: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    (hlen,) = _U32.unpack_from(payload, 0)
    meta = json.loads(payload[4:4 + hlen].decode("utf-8"))
    body = payload[4 + hlen:]
    if hashlib.sha256(body).hexdigest() != meta["sha256"]:
        raise ValueError("checksum mismatch")
    arrays, off = {}, 0
    for item in meta["arrays"]:
        dt = np.lib.format.descr_to_dtype(_tuples(item["dtype"]))
        n = int(np.prod(item["shape"], dtype=np.int64)) * dt.itemsize
        arrays[item["name"]] = np.frombuffer(body[off:off + n], dt).reshape(item["shape"]).copy()
        off += n
    return meta, arrays


def _tuples(descr):
    """A dtype descr read back from JSON (lists) as numpy writes it (tuples)."""
    if not isinstance(descr, list):
        return descr
    out = []
    for name, dtype, *shape in descr:  # (name, dtype) or (name, dtype, shape)
        out.append((name, _tuples(dtype), tuple(shape[0])) if shape else (name, _tuples(dtype)))
    return out


class DeltaLog(RecordJournal):
    """The log of the index whose full save has generation ``base``; records are (op, payload)."""

    def __init__(self, path: str, base: str):
        super().__init__(path, {"kind": "imret-delta", "base": base}, fsync_every_s=0.0)

    def encode(self, value) -> bytes:
        return _pack(*value)

    def decode(self, payload: bytes):
        return _unpack(payload)

    def append(self, path: str, value) -> None:
        self.write(self.frame(path, value))

    def write(self, frame: bytes) -> None:
        """Write one framed record and fsync it (a change is answered only once it is on
        disk); errors are the OS's, for the caller to undo and report."""
        self._f.write(frame)
        self._f.flush()
        os.fsync(self._f.fileno())


def log_base(path: str) -> str | None:
    """The base generation of the log at ``path`` (None: no log, or not a readable one)."""
    header = RecordJournal.header_of(path)
    return header.get("base") if header and header.get("kind") == "imret-delta" else None


def change_record(old, new) -> tuple[str, tuple[dict, dict]] | None:
    """The record that takes ``old`` to ``new`` when ``new`` is ``old`` with images added or
    removed and nothing else changed; None when it is not (a full save is needed)."""
    same = (old.preset == new.preset and old.whitening is new.whitening and old.head_state is new.head_state
            and (old.dba is None) == (new.dba is None) and (old.gfr is None) == (new.gfr is None)
            and (old.dba is None or old.dba.step == new.dba.step) and (old.gfr is None or old.gfr.step == new.gfr.step)
            and (old.local is None) == (new.local is None) and getattr(old, "generation", None)
            and not old.backend.remote)
    if not same:
        return None
    before, after = set(old.ids.tolist()), set(new.ids.tolist())
    added, removed = sorted(after - before), sorted(before - after)
    if added and removed:
        return None
    meta = {"next_id": int(new.next_id), "roots": list(new.roots)}
    if removed:
        return "remove", (meta, {"ids": np.asarray(removed, np.int64)})
    pos = new.positions(np.asarray(added, np.int64))
    arrays = {"ids": np.asarray(added, np.int64), "rows": np.asarray(new.descriptors)[pos].astype(np.float32)}
    meta["paths"] = [new.paths[int(p)] for p in pos]
    if new.local is not None:
        stored = new.local.rows(added)
        have = [i for i in added if i in stored]
        meta["local"] = [{"id": int(i), "size": list(stored[i].size)} for i in have]
        for i in have:
            arrays[f"local/{i}"] = stored[i].rows
    return "add", (meta, arrays)


def append_change(index_path: str, old, new) -> bool:
    """Write ``new``'s change from ``old`` (the index as saved at ``index_path``, its log
    included) as one log record; False when it must be saved in full instead (another
    kind of change, or a log due for compaction)."""
    record = change_record(old, new)
    if record is None:
        return False
    path = delta_path(index_path)
    base = old.generation
    if os.path.exists(path) and log_base(path) != base:
        os.unlink(path)  # a stale log of an older base (its save was killed before deleting it)
    log = DeltaLog(path, base)
    frame = log.frame(*record)  # encoded once: its size decides, then it is written
    existed = os.path.exists(path)
    have = os.path.getsize(path) if existed else 0
    if have + len(frame) > max(COMPACT_MIN_BYTES, COMPACT_FRACTION * os.path.getsize(index_path)):
        return False
    try:
        log.open()
        log.write(frame)
    except (OSError, IndexFileError) as exc:
        log.close()
        _undo(path, have if existed else None)  # not on disk for sure: not there at all
        why = exc.reason if isinstance(exc, IndexFileError) else (exc.strerror or str(exc))
        raise IndexFileError(path, f"cannot write ({why}); the index is unchanged") from None
    finally:
        log.close()
    return True


def _undo(path: str, size: int | None) -> None:
    """Take the log back to ``size`` bytes (None: remove it)."""
    try:
        if size is None:
            os.unlink(path)
        else:
            os.truncate(path, size)
    except OSError:
        pass


def replay(index, index_path: str) -> int:
    """Apply the log of the index just loaded from ``index_path`` (its base generation
    ``index.generation``); returns the records applied."""
    path = delta_path(index_path)
    base = getattr(index, "generation", None)
    if not base or not os.path.exists(path) or log_base(path) != base:
        return 0
    ops, records = DeltaLog(path, base).records()
    for op, (meta, arrays) in zip(ops, records):
        try:
            _apply(index, op, meta, arrays)
        except (KeyError, ValueError, IndexError) as exc:
            raise IndexFileError(path, f"a change does not fit the index it belongs to ({exc})") from None
    index.delta_records = len(ops)
    return len(ops)


def _apply(index, op: str, meta: dict, arrays: dict) -> None:
    if op == "remove":
        index.remove([int(i) for i in arrays["ids"]])
    elif op == "add":
        index.append_rows(arrays["ids"], list(meta["paths"]), arrays["rows"])
        if index.local is not None:
            from ..local.codec import Stored

            index.local.put_stored({int(e["id"]): Stored(arrays[f"local/{e['id']}"], tuple(e["size"]))
                                    for e in meta.get("local", [])})
    else:
        raise ValueError(f"unknown change {op!r}")
    index.next_id = max(index.next_id, int(meta["next_id"]))
    index.roots = [str(r) for r in meta["roots"]]


def forget(index_path: str) -> None:
    """Delete the log after a full save folded it in (the save's new generation already
    makes it stale; this only frees the space)."""
    try:
        os.unlink(delta_path(index_path))
    except FileNotFoundError:
        pass
