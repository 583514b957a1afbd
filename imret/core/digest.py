"""Fingerprints of weights, so work done with other weights is never mixed with this run's."""
from __future__ import annotations

import hashlib

import numpy as np


def state_digest(state: dict | None) -> str:
    """A short fingerprint of a module's weights (``state_dict()``: tensors by name)."""
    h = hashlib.sha256()
    for k in sorted(state or {}):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k].detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]
