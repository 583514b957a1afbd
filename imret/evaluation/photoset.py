"""A Copydays-style retrieval set built from real photographs that PyPI packages ship.

Originals come from scikit-image (and scikit-learn's two sample photos when it is
installed); distractors are real face photos from scikit-image's LFW subset.
Queries are made from each original by crop, rotation, scale, JPEG re-encoding,
occlusion and pasting onto another photo; one query is a genuine second
viewpoint (the right image of scikit-image's stereo pair).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

TRANSFORMS = ("crop", "rotate", "scale", "jpeg", "occlude", "paste")

_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                   "retina", "camera", "brick", "grass", "gravel", "moon", "cell", "clock", "coins", "page", "text")


def real_photos() -> dict[str, np.ndarray]:
    """Name → H×W×3 uint8 photo, from the packages installed here."""
    from skimage import data

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _SKIMAGE_PHOTOS:
            try:
                im = np.asarray(getattr(data, name)())
            except Exception:  # a photo that needs a download is simply not used
                continue
            if im.ndim == 2:
                im = np.repeat(im[..., None], 3, 2)
            out[name] = np.ascontiguousarray(im[..., :3]).astype(np.uint8)
        left, _, _ = data.stereo_motorcycle()
        out["motorcycle"] = np.asarray(left, np.uint8)
    try:
        from sklearn.datasets import load_sample_images

        for fn, im in zip(load_sample_images().filenames, load_sample_images().images):
            out[os.path.splitext(os.path.basename(fn))[0]] = np.asarray(im, np.uint8)
    except Exception:
        pass
    return out


def distractor_photos(n: int = 60) -> list[np.ndarray]:
    from skimage import data

    faces = data.lfw_subset()[:n]
    out = []
    for f in faces:
        im = Image.fromarray((f * 255).astype(np.uint8)).resize((128, 128), Image.BICUBIC).convert("RGB")
        out.append(np.asarray(im))
    return out


def transform(img: np.ndarray, kind: str, rng: np.random.Generator, other: np.ndarray) -> np.ndarray:
    """One Copydays-style attack on an H×W×3 uint8 photo."""
    im = Image.fromarray(img)
    w, h = im.size
    if kind == "crop":  # keep 50–70% of each side, anywhere
        fw, fh = rng.uniform(0.5, 0.7, 2)
        cw, ch = int(w * fw), int(h * fh)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return np.asarray(im.crop((x0, y0, x0 + cw, y0 + ch)))
    if kind == "rotate":
        angle = float(rng.choice([-1, 1]) * rng.uniform(10, 25))
        return np.asarray(im.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=(0, 0, 0)))
    if kind == "scale":
        f = rng.uniform(0.3, 0.5)
        return np.asarray(im.resize((max(16, int(w * f)), max(16, int(h * f))), Image.BILINEAR))
    if kind == "jpeg":
        import io

        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(8, 15)))
        return np.asarray(Image.open(buf).convert("RGB"))
    if kind == "occlude":  # cover a third of the area with a block of another photo
        out = img.copy()
        bw, bh = int(w * 0.58), int(h * 0.58)
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        patch = np.asarray(Image.fromarray(other).resize((bw, bh), Image.BILINEAR))
        out[y0:y0 + bh, x0:x0 + bw] = patch
        return out
    if kind == "paste":  # the photo, shrunk, pasted onto another photo
        bg = Image.fromarray(other).resize((640, 480), Image.BILINEAR)
        f = 0.55 * min(640 / w, 480 / h)
        small = im.resize((max(16, int(w * f)), max(16, int(h * f))), Image.BILINEAR)
        x0 = int(rng.integers(0, 640 - small.size[0] + 1))
        y0 = int(rng.integers(0, 480 - small.size[1] + 1))
        bg.paste(small, (x0, y0))
        return np.asarray(bg)
    raise ValueError(f"unknown transform {kind!r}; known: {TRANSFORMS}")


@dataclass
class PhotoSet:
    """``db``: database image paths; ``queries``: query paths; ``positives[q]``: db paths that match."""

    root: str
    db: list[str]
    queries: list[str]
    positives: dict[str, list[str]]

    @classmethod
    def load(cls, root: str) -> "PhotoSet":
        with open(os.path.join(root, "ground_truth.json")) as f:
            g = json.load(f)
        j = lambda p: os.path.join(root, p)  # noqa: E731
        return cls(root, [j(p) for p in g["db"]], [j(q) for q in g["queries"]],
                   {j(q): [j(p) for p in ps] for q, ps in g["positives"].items()})


def make_photoset(root: str, seed: int = 0, n_distractors: int = 60,
                  transforms=TRANSFORMS) -> PhotoSet:
    """Write ``root/db/`` (originals + distractors), ``root/queries/`` and ``ground_truth.json``."""
    rng = np.random.default_rng(seed)
    photos = real_photos()
    names = sorted(photos)
    os.makedirs(os.path.join(root, "db"), exist_ok=True)
    os.makedirs(os.path.join(root, "queries"), exist_ok=True)
    db, queries, positives = [], [], {}
    for name in names:
        rel = f"db/{name}.png"
        Image.fromarray(photos[name]).save(os.path.join(root, rel))
        db.append(rel)
    for i, im in enumerate(distractor_photos(n_distractors)):
        rel = f"db/distractor_{i:03d}.jpg"
        Image.fromarray(im).save(os.path.join(root, rel), quality=90)
        db.append(rel)
    for k, name in enumerate(names):
        for t in transforms:
            other = photos[names[(k + 1 + int(rng.integers(0, len(names) - 1))) % len(names)]]
            q = transform(photos[name], t, rng, other)
            rel = f"queries/{name}__{t}.jpg"
            Image.fromarray(q).save(os.path.join(root, rel), quality=92)
            queries.append(rel)
            positives[rel] = [f"db/{name}.png"]
    if "motorcycle" in photos:
        from skimage import data

        _, right, _ = data.stereo_motorcycle()
        rel = "queries/motorcycle__viewpoint.jpg"
        Image.fromarray(np.asarray(right, np.uint8)).save(os.path.join(root, rel), quality=92)
        queries.append(rel)
        positives[rel] = ["db/motorcycle.png"]
    with open(os.path.join(root, "ground_truth.json"), "w") as f:
        json.dump({"db": db, "queries": queries, "positives": positives}, f, indent=1)
    return PhotoSet.load(root)
