"""Resumable local-feature extraction: each image's features are journaled as they are
extracted (see ``imret.core.journal``), so a killed ``imret index --local`` run
extracts only what it had not finished.

Until the store has learned its codec (PCA + PQ, from the first images), features are
journaled raw: ~450 KiB per image at 1,000 features of 112 floats. The codec is then
journaled once, and every later image in the compact stored form (~31 KiB), so the
journal of a large folder stays about as big as the finished store.
"""
from __future__ import annotations

import io
import struct

import numpy as np

from ..core.journal import RecordJournal
from .features import LocalFeatures
from .codec import LocalCodec, Stored, row_dtype

CODEC_KEY = "\0codec"  # a record key no file path can take
_RAW, _STORED, _CODEC = 0, 1, 2
_HEAD = struct.Struct("<IIii")  # features, descriptor width (0 when stored), image height, width


class LocalJournal(RecordJournal):
    """Records of one image's ``LocalFeatures`` (raw, descriptors at the backbone's width)
    or ``Stored`` rows (encoded with the codec), and the codec itself under ``CODEC_KEY``."""

    def __init__(self, path: str, header: dict, codec: LocalCodec | None = None, fsync_every_s: float = 2.0):
        super().__init__(path, header, fsync_every_s)
        # the layout of stored rows: from the store's codec, or from the codec record when read back
        self.row_dtype = None if codec is None else row_dtype(codec)

    def encode(self, value) -> bytes:
        if isinstance(value, LocalFeatures):
            n, d = value.descriptors.shape
            parts = [bytes([_RAW]), _HEAD.pack(n, d, int(value.size[0]), int(value.size[1]))]
            for a, shape in ((value.xy, (n, 2)), (value.scales, (n,)), (value.scores, (n,)),
                             (value.descriptors, (n, d))):
                parts.append(np.asarray(a, dtype="<f4").reshape(shape).tobytes())
            return b"".join(parts)
        if isinstance(value, Stored):
            return (bytes([_STORED]) + _HEAD.pack(len(value.rows), 0, int(value.size[0]), int(value.size[1]))
                    + value.rows.tobytes())
        if isinstance(value, LocalCodec):
            buf = io.BytesIO()
            np.savez(buf, kind=np.array(value.kind), **value.arrays())
            self.row_dtype = row_dtype(value)
            return bytes([_CODEC]) + buf.getvalue()
        raise TypeError(f"cannot journal a {type(value).__name__}")

    def decode(self, payload: bytes):
        kind, body = payload[:1], payload[1:]
        if kind == bytes([_CODEC]):
            with np.load(io.BytesIO(body), allow_pickle=False) as z:
                codec = LocalCodec.from_arrays(str(z["kind"]), {k: z[k] for k in z.files if k != "kind"})
            self.row_dtype = row_dtype(codec)
            return codec
        if len(body) < _HEAD.size or kind not in (bytes([_RAW]), bytes([_STORED])):
            raise ValueError("unknown record")
        n, d, h, w = _HEAD.unpack_from(body)
        if kind == bytes([_STORED]):
            if self.row_dtype is None or len(body) != _HEAD.size + n * self.row_dtype.itemsize:
                raise ValueError("stored rows without a codec, or of another size")
            return Stored(np.frombuffer(body, self.row_dtype, count=n, offset=_HEAD.size).copy(), (h, w))
        if len(body) != _HEAD.size + 4 * n * (4 + d):
            raise ValueError("record size disagrees with its header")
        a = np.frombuffer(body, dtype="<f4", offset=_HEAD.size)
        xy, rest = a[:2 * n].reshape(n, 2), a[2 * n:]
        scales, scores, desc = rest[:n], rest[n:2 * n], rest[2 * n:].reshape(n, d)
        return LocalFeatures(xy.copy(), scales.copy(), scores.copy(), desc.copy(), (h, w))
