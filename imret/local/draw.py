"""Pictures of local features: matches between two images, attention over one."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .features import LocalFeatures

# Anchor colours of a perceptually ordered map (dark blue → teal → yellow → red).
_HEAT = np.array([[0, 0, 0], [40, 20, 120], [20, 120, 170], [60, 190, 110], [240, 220, 40], [250, 90, 20],
                  [255, 255, 255]], np.float32)


def colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → RGB uint8 (…×3)."""
    v = np.clip(np.asarray(v, np.float32), 0, 1) * (len(_HEAT) - 1)
    lo = np.minimum(v.astype(int), len(_HEAT) - 2)
    t = (v - lo)[..., None]
    return ((1 - t) * _HEAT[lo] + t * _HEAT[lo + 1]).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _fit(img: np.ndarray, height: int) -> tuple[Image.Image, float]:
    h, w = img.shape[:2]
    f = height / h
    return Image.fromarray(img).resize((max(1, round(w * f)), height), Image.BILINEAR), f


def _caption(canvas: Image.Image, text: str) -> Image.Image:
    font = _font(max(14, canvas.height // 30))
    bar = font.getbbox(text)[3] + 12
    out = Image.new("RGB", (canvas.width, canvas.height + bar), (255, 255, 255))
    out.paste(canvas, (0, bar))
    ImageDraw.Draw(out).text((8, 6), text, fill=(0, 0, 0), font=font)
    return out


def draw_matches(query: np.ndarray, result: np.ndarray, points: np.ndarray, outliers: np.ndarray | None = None,
                 height: int = 480, title: str | None = None) -> Image.Image:
    """Both images side by side at ``height`` pixels, a line per inlier match. ``points``:
    K×4 (query x, y, result x, y) in original pixels; ``outliers``: tentative matches
    RANSAC rejected, drawn as short red ticks at their query and result keypoints."""
    a, fa = _fit(query, height)
    b, fb = _fit(result, height)
    gap = 16
    canvas = Image.new("RGB", (a.width + gap + b.width, height), (255, 255, 255))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + gap, 0))
    d = ImageDraw.Draw(canvas)
    off = a.width + gap
    r = max(2, height // 160)
    if outliers is not None:
        for x0, y0, x1, y1 in np.asarray(outliers, np.float32):
            for x, y in ((x0 * fa, y0 * fa), (x1 * fb + off, y1 * fb)):
                d.line([(x - r, y - r), (x + r, y + r)], fill=(230, 40, 40), width=1)
    pts = np.asarray(points, np.float32)
    hue = colormap(np.linspace(0.25, 0.85, max(len(pts), 1)))
    order = np.argsort(pts[:, 1]) if len(pts) else []
    for k, i in enumerate(order):
        x0, y0, x1, y1 = pts[i]
        p, q = (x0 * fa, y0 * fa), (x1 * fb + off, y1 * fb)
        c = tuple(int(v) for v in hue[k])
        d.line([p, q], fill=c, width=max(1, height // 400))
        for x, y in (p, q):
            d.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), fill=c)
    return _caption(canvas, title if title is not None else f"{len(pts)} inlier matches")


def attention_heat(features: LocalFeatures, shape: tuple[int, int], cell: np.ndarray | None = None) -> np.ndarray:
    """An H×W map in [0, 1]: each keypoint a Gaussian blob of σ = its cell (its map
    location's footprint in original pixels; default: that of a stride-16 map of the image
    resized to 512 px) and of height its score rescaled from [lowest, highest] to [0.05, 1];
    blobs overlap by max."""
    h, w = shape
    heat = np.zeros((h, w), np.float32)
    if not len(features):
        return heat
    sy, sx = h / features.size[0], w / features.size[1]
    lo, hi = float(features.scores.min()), float(features.scores.max())
    level = 0.05 + 0.95 * (features.scores - lo) / (hi - lo) if hi > lo else np.ones(len(features))
    sigma = (cell if cell is not None else max(features.size) / 32 / features.scales) * max(sx, sy)
    for (x, y), s, sd in sorted(zip(features.xy * [sx, sy], level, sigma), key=lambda t: t[1]):
        rad = int(np.ceil(2.5 * sd))
        x0, x1 = max(0, int(x) - rad), min(w, int(x) + rad + 1)
        y0, y1 = max(0, int(y) - rad), min(h, int(y) + rad + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        gy = np.exp(-((np.arange(y0, y1) - y) ** 2) / (2 * sd * sd))
        gx = np.exp(-((np.arange(x0, x1) - x) ** 2) / (2 * sd * sd))
        np.maximum(heat[y0:y1, x0:x1], s * gy[:, None] * gx[None], out=heat[y0:y1, x0:x1])
    return heat


def _colour_bar(img: Image.Image, lo: float, hi: float) -> Image.Image:
    """``img`` with a strip below it: the colour scale from the lowest to the highest score."""
    font = _font(max(12, img.height // 36))
    bar_h = max(10, img.height // 40)
    text_h = font.getbbox("0")[3] + 8
    out = Image.new("RGB", (img.width, img.height + bar_h + text_h + 8), (255, 255, 255))
    out.paste(img, (0, 0))
    ramp = colormap(0.15 + 0.85 * np.linspace(0, 1, img.width))[None].repeat(bar_h, 0)
    out.paste(Image.fromarray(ramp), (0, img.height + 4))
    d = ImageDraw.Draw(out)
    y = img.height + bar_h + 6
    d.text((4, y), f"lowest {lo:.3g}", fill=(0, 0, 0), font=font)
    right = f"attention score, highest {hi:.3g}"
    d.text((img.width - font.getbbox(right)[2] - 4, y), right, fill=(0, 0, 0), font=font)
    return out


def draw_attention(img: np.ndarray, features: LocalFeatures, height: int = 480, cell: np.ndarray | None = None,
                   title: str | None = None, keypoints: bool = True) -> Image.Image:
    """The image, greyed, with the keypoint scores as a heat map over it, a dot at each
    keypoint (coloured by its score), and the colour scale below."""
    base, f = _fit(img, height)
    heat = attention_heat(features, (base.height, base.width), cell)
    grey = np.asarray(base.convert("L").convert("RGB"), np.float32) * 0.8
    alpha = (0.75 * heat)[..., None]
    out = Image.fromarray((grey * (1 - alpha) + colormap(0.15 + 0.85 * heat).astype(np.float32) * alpha)
                          .astype(np.uint8))
    lo = float(features.scores.min()) if len(features) else 0.0
    hi = float(features.scores.max()) if len(features) else 0.0
    if keypoints and len(features):
        d = ImageDraw.Draw(out)
        r = max(2, height // 200)
        level = (features.scores - lo) / (hi - lo) if hi > lo else np.ones(len(features))
        sx, sy = base.width / features.size[1], base.height / features.size[0]
        for (x, y), v in zip(features.xy * [sx, sy], level):
            c = tuple(int(t) for t in colormap(0.15 + 0.85 * v))
            d.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), fill=c)
    if title is None:
        title = f"{len(features)} keypoints (dots); colour: attention score" if len(features) else "no keypoints"
    return _caption(_colour_bar(out, lo, hi) if len(features) else out, title)
