"""Resumable local-feature extraction: each image's features are journaled as they are
extracted (see ``imret.index.journal``), so a killed ``imret index --local`` run
extracts only what it had not finished."""
from __future__ import annotations

import struct

import numpy as np

from ..index.journal import RecordJournal
from .features import LocalFeatures

_HEAD = struct.Struct("<IIii")  # features, descriptor width, image height, width


class LocalJournal(RecordJournal):
    """Records of one image's ``LocalFeatures`` (descriptors at the backbone's width)."""

    def encode(self, f: LocalFeatures) -> bytes:
        n, d = f.descriptors.shape
        parts = [_HEAD.pack(n, d, int(f.size[0]), int(f.size[1]))]
        for a, shape in ((f.xy, (n, 2)), (f.scales, (n,)), (f.scores, (n,)), (f.descriptors, (n, d))):
            parts.append(np.asarray(a, dtype="<f4").reshape(shape).tobytes())
        return b"".join(parts)

    def decode(self, payload: bytes) -> LocalFeatures:
        if len(payload) < _HEAD.size:
            raise ValueError("short record")
        n, d, h, w = _HEAD.unpack_from(payload)
        if len(payload) != _HEAD.size + 4 * n * (4 + d):
            raise ValueError("record size disagrees with its header")
        a = np.frombuffer(payload, dtype="<f4", offset=_HEAD.size)
        xy, rest = a[:2 * n].reshape(n, 2), a[2 * n:]
        scales, scores, desc = rest[:n], rest[n:2 * n], rest[2 * n:].reshape(n, d)
        return LocalFeatures(xy.copy(), scales.copy(), scores.copy(), desc.copy(), (h, w))
