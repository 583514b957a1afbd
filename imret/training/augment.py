"""Strong augmentations: what a photo of the same thing may look like as a query.

Positives of the unsupervised mode are made here, so the set of changes follows
the ones retrieval has to survive: crop, scale (loss of resolution), rotation,
colour, perspective, occlusion by another photo, clutter (the photo shrunk into
another), JPEG. Every random choice comes
from the generator passed in, so a view is fixed by its seed.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance


def _crop(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    area = rng.uniform(0.3, 1.0) * w * h
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))) * w / h
    cw = int(round(min(w, np.sqrt(area * aspect))))
    ch = int(round(min(h, np.sqrt(area / aspect))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x0, y0, x0 + max(cw, 1), y0 + max(ch, 1)))


def _perspective_coefficients(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """The 8 coefficients PIL maps output points ``dst`` to input points ``src`` with."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float)).tolist()


def _patch(size: tuple[int, int], rng: np.random.Generator, other: np.ndarray | None) -> Image.Image:
    """Another photo resized to ``size``, or noise when there is none."""
    if other is None:
        return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return Image.fromarray(other).resize(size, Image.BILINEAR)


def perspective(im: Image.Image, rng: np.random.Generator, other=None, strength: float = 0.15) -> Image.Image:
    w, h = im.size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    moved = corners + rng.uniform(-strength, strength, (4, 2)) * [w, h]
    return im.transform((w, h), Image.PERSPECTIVE, _perspective_coefficients(moved, corners), Image.BILINEAR)


def rotate(im: Image.Image, rng: np.random.Generator, other=None) -> Image.Image:
    angle = float(rng.choice([-1, 1]) * rng.uniform(5, 25))
    return im.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=(0, 0, 0))


def colour(im: Image.Image, rng: np.random.Generator, other=None) -> Image.Image:
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.4))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.6, 1.4))
    return ImageEnhance.Color(im).enhance(rng.uniform(0.3, 1.6))


def occlude(im: Image.Image, rng: np.random.Generator, other: np.ndarray | None = None) -> Image.Image:
    """A block of another photo over 10–35% of the area."""
    w, h = im.size
    frac = rng.uniform(0.1, 0.35)
    bw = min(w, max(1, int(w * np.sqrt(frac) * rng.uniform(0.7, 1.3))))
    bh = max(1, min(h, int(w * h * frac / bw)))
    out = im.copy()
    out.paste(_patch((bw, bh), rng, other), (int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))))
    return out


def downscale(im: Image.Image, rng: np.random.Generator, other=None) -> Image.Image:
    """Loss of resolution: the view is later resized back up to the training size."""
    w, h = im.size
    f = rng.uniform(0.25, 0.6)
    return im.resize((max(16, int(w * f)), max(16, int(h * f))), Image.BILINEAR)


def clutter(im: Image.Image, rng: np.random.Generator, other: np.ndarray | None = None) -> Image.Image:
    """The photo shrunk into a scene: pasted at 40–80% of the frame onto another photo."""
    w, h = im.size
    bg = _patch((w, h), rng, other)
    f = rng.uniform(0.4, 0.8)
    small = im.resize((max(1, int(w * f)), max(1, int(h * f))), Image.BILINEAR)
    bg.paste(small, (int(rng.integers(0, w - small.size[0] + 1)), int(rng.integers(0, h - small.size[1] + 1))))
    return bg


def jpeg(im: Image.Image, rng: np.random.Generator, other=None) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(10, 60)))
    return Image.open(buf).convert("RGB")


CHANGES = (perspective, rotate, colour, occlude, downscale, clutter, jpeg)


def strong_view(img: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None,
                changes: int = 2) -> np.ndarray:
    """An altered copy of an H×W×3 uint8 photo: a random crop, then ``changes`` of
    ``CHANGES`` drawn at random. ``other``: a different photo whose piece may occlude
    or surround this one (random noise when None). Two changes, not all of them at
    once: with every change stacked, most views no longer look like their photo to
    any descriptor, and a head learns to match noise."""
    im = _crop(Image.fromarray(img), rng)
    for k in rng.choice(len(CHANGES), size=changes, replace=False):
        im = CHANGES[k](im, rng, other)
    return np.asarray(im.convert("RGB"))
