"""DELF-style local features and spatial verification.

image → pyramid (0.25…2.0 by √2) → dense features of a stride-16 stage → attention
scores (``attention``) → the best keypoints across scales (``extract``) → L2 → PCA
learned on the database → L2, stored product-quantised per image id (``store``) →
matching and RANSAC verification of a global search's shortlist (``verify``, and the
``sv``/``svh`` re-ranking steps in ``steps``) → pictures (``draw``). Attention
training by the DELF recipe is in ``train``.

>>> from imret.local import LocalExtractor, LocalStore
>>> store = LocalStore.build(paths, ids, LocalExtractor())
"""
from __future__ import annotations

import os

from .features import LocalFeatures
from .steps import HomographyVerification, SpatialVerification, bind_pipeline, needs_local
from .verify import Verification, VerifyConfig, match, verify

# Heavy modules (torch, faiss, h5py) load on first use.
_LAZY = {
    "LocalConfig": "config",
    "LocalExtractor": "extract",
    "Attention": "attention",
    "LocalCodec": "store",
    "LocalStore": "store",
    "train_attention": "train",
}

__all__ = ["HomographyVerification", "LocalFeatures", "SpatialVerification", "Verification", "VerifyConfig",
           "bind_pipeline", "local_path", "match", "needs_local", "verify", *_LAZY]


def local_path(index_path: str | os.PathLike) -> str:
    """Where the local features of the index at ``index_path`` live."""
    return os.fspath(index_path) + ".local.h5"


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
