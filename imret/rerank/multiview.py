"""A multi-view variant of the embedded photo set, the setting re-ranking is made for.

The embedded set (``imret.evaluation.photoset``) has one positive per query, and its
queries are either found at rank 1 already (crop, rotation, scale, JPEG) or lost
under another photo (paste, occlusion): query expansion and database augmentation
have nothing to gather there. Landmark and object sets (revisited Oxford, Holidays,
UKBench) look different: a query shows a detail of a scene, and the database holds
several photos of that scene, some of which share little with the query directly.
This set is built that way from the same real photographs: the database holds each
original, several altered copies of it (other crops, a rotation, a rescaling: views
that overlap in part) and the face distractors; the queries are close-ups (a window
of 30–45 % of each side) of the originals. The folder is in the photo-set layout
(``ground_truth.json``), so ``load_dataset`` and ``imret eval`` read it.
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from ..evaluation.photoset import PhotoSet, make_photoset, transform

COPIES = ("crop", "rotate", "scale")


def close_up(img: np.ndarray, rng: np.random.Generator, side=(0.3, 0.45)) -> np.ndarray:
    """A window of ``side`` (fraction of each side, drawn uniformly) anywhere in the photo."""
    h, w = img.shape[:2]
    fw, fh = rng.uniform(*side, 2)
    cw, ch = max(16, int(w * fw)), max(16, int(h * fh))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])


def make_multiview_set(root: str, base: PhotoSet | None = None, copies=COPIES, close_ups: int = 2,
                       distractors: int | None = None, seed: int = 1) -> PhotoSet:
    """Write ``root/copies/``, ``root/queries/`` and ``root/ground_truth.json``. ``base``: an
    embedded photo set to build on (its originals and distractors are referred to, not
    copied); default: a new one in ``root/base``. ``distractors``: how many of its
    distractors to keep (default all). Each close-up query's positives are its original
    and the original's copies."""
    if base is None:
        base = make_photoset(os.path.join(root, "base"))
    if not copies or close_ups < 1:
        raise ValueError("make_multiview_set needs at least one kind of copy and one close-up per original")
    rng = np.random.default_rng(seed)
    originals = sorted({p for ps in base.positives.values() for p in ps})
    others = [p for p in base.db if p not in set(originals)][:distractors]
    photos = {p: np.asarray(Image.open(p).convert("RGB")) for p in originals}
    for folder in ("copies", "queries"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)

    def write(rel, img):
        path = os.path.join(root, rel)
        Image.fromarray(img).save(path, quality=92)
        return os.path.abspath(path)

    added, queries, positives = [], [], {}
    for k, orig in enumerate(originals):
        stem = os.path.splitext(os.path.basename(orig))[0]
        views = [os.path.abspath(orig)]
        for j, kind in enumerate(copies):
            other = photos[originals[(k + 1 + int(rng.integers(0, len(originals) - 1))) % len(originals)]]
            views.append(write(f"copies/{stem}__{j}_{kind}.jpg", transform(photos[orig], kind, rng, other)))
        added += views[1:]
        for j in range(close_ups):
            q = write(f"queries/{stem}__closeup{j}.jpg", close_up(photos[orig], rng))
            queries.append(q)
            positives[q] = views
    with open(os.path.join(root, "ground_truth.json"), "w") as f:
        # absolute paths: PhotoSet.load joins them with root, which leaves them as they are
        json.dump({"db": [os.path.abspath(p) for p in originals + others] + added, "queries": queries,
                   "positives": positives},
                  f, indent=1)
    return PhotoSet.load(root)
