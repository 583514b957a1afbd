"""Fingerprints of weights, so work done with other weights is never mixed with this run's.

One digest: sha256 over each tensor's name, dtype, shape and bytes, in name order.
``weights_digest`` is the full hex (stored in trained-model files and checked on load);
``state_digest`` its first 16 characters (journal and shard headers).
"""
from __future__ import annotations

import hashlib


def weights_digest(state: dict | None) -> str:
    """sha256 hex of a module's weights (``state_dict()``: torch tensors by name)."""
    import torch

    h = hashlib.sha256()
    for k in sorted(state or {}):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_digest(state: dict | None) -> str:
    """A short fingerprint of a module's weights: ``weights_digest``'s first 16 characters."""
    return weights_digest(state)[:16]

