"""Reading photos: every odd file becomes an RGB array or an ``ImageLoadError``
naming the file and the reason; nothing else escapes."""
from __future__ import annotations

import math
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..core.errors import ImageLoadError
from ..core.paths import IMAGE_EXTENSIONS, list_images  # noqa: F401  (moved to the core)

DEFAULT_MAX_PIXELS = 100_000_000  # 10k×10k; beyond that a photo is more likely a decompression bomb

# Truncated files are errors here, never silently grey-padded images.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: rescale their actual range to 8 bits.
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


# Bytes per pixel a decode takes: the decoded mode's own, plus what _to_rgb and the final
# array add (16-bit and float images pass through float64; alpha is composited on white).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
               "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}
_WORK_BYTES = {"I;16": 15, "I;16B": 15, "I;16L": 15, "I": 15, "F": 15,
               "RGBA": 18, "LA": 18, "PA": 18, "RGBa": 18, "La": 18, "P": 18, "RGB": 3}


def decode_bytes(size: tuple[int, int], mode: str) -> int:
    """About the most memory decoding an image of ``size`` in ``mode`` into RGB takes."""
    w, h = size
    return w * h * (_MODE_BYTES.get(mode, 4) + _WORK_BYTES.get(mode, 6))


def _fit_decode(im: Image.Image, path: str, max_bytes: int | None) -> float:
    """Keep the decode of ``im`` within ``max_bytes``: formats that can decode at a reduced
    size (JPEG: 1/2, 1/4, 1/8) are asked to; returns the scale it will decode at (1: full)."""
    if max_bytes is None or decode_bytes(im.size, im.mode) <= max_bytes:
        return 1.0
    w, h = im.size
    if im.format == "JPEG":
        for k in (2, 4, 8):
            target = (-(-w // k), -(-h // k))
            if decode_bytes(target, im.mode) <= max_bytes:
                im.draft(im.mode, target)
                return im.size[0] / w
    raise ImageLoadError(path, f"decoding {w}×{h} {im.mode} takes about {decode_bytes(im.size, im.mode) / 2**20:,.0f} "
                               f"MiB, over the decode limit of {max_bytes / 2**20:,.0f} MiB")


def _allow_pil_pixels(max_pixels: int) -> None:
    """PIL refuses outright any image over 2×``Image.MAX_IMAGE_PIXELS`` (~179 Mpx),
    whatever ``max_pixels`` says. Lift (never lower) that cap when the caller asks
    for more, so that "raise max_pixels to allow it" is true."""
    cap = Image.MAX_IMAGE_PIXELS
    if cap is not None and 2 * cap < max_pixels:
        Image.MAX_IMAGE_PIXELS = -(-int(max_pixels) // 2)


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
DRAFT_FACTORS = (8, 4, 2, 1)  # what a JPEG decoder can reduce by in the DCT domain


def draft_factor(width: float, height: float, long_side: int, min_side: int = 1) -> int:
    """The largest JPEG DCT-domain reduction (8, 4, 2 or 1) that keeps a ``width``×``height``
    region at least ``long_side`` pixels on its longer side and, unless the region is
    already smaller, ``min_side`` on its shorter side: what the caller resizes to is
    then never made from fewer pixels than it has."""
    long_, short = max(width, height), min(width, height)
    for k in DRAFT_FACTORS:
        if long_ / k >= long_side and short / k >= min(short, min_side):
            return k
    return 1


def _upright_region(size: tuple[int, int], orientation: int, bbox) -> tuple[float, float]:
    """Width and height, in original pixels, of what will be used of an image of stored
    ``size``: the ``bbox`` crop of the upright image, or all of it."""
    w, h = size if orientation not in _TRANSPOSED else size[::-1]
    if bbox is None:
        return float(w), float(h)
    x0, y0, x1, y1 = (float(v) for v in bbox)
    return max(0.0, min(w, x1) - max(0.0, x0)), max(0.0, min(h, y1) - max(0.0, y0))


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
               bbox: tuple[float, float, float, float] | None = None,
               reduce_to: tuple[int, int] | None = None, max_decode_bytes: int | None = None) -> np.ndarray:
    """H×W×3 uint8 RGB array of the photo at ``path``, upright by its EXIF orientation.

    Multi-frame files (animated GIF/WebP, multi-page TIFF) give their first frame.
    ``bbox`` (x0, y0, x1, y1) in pixels of the upright image crops it, as the
    revisited Oxford/Paris protocol does for queries.

    ``reduce_to`` (long side, short side): the smallest size the caller will resize
    the (cropped) image to. A JPEG is then decoded at 1/2, 1/4 or 1/8 of its size in
    the DCT domain while staying at least that large (``draft_factor``): a
    12-megapixel photo made into a 512-pixel input is not decoded at 12 megapixels.
    ``bbox`` stays in original pixels; it is scaled to the reduced image.

    ``max_decode_bytes`` bounds the memory of the decode (``decode_bytes``): a JPEG over
    it is decoded at 1/2, 1/4 or 1/8 size (``bbox`` scaled to match), any other image over
    it is refused. When the budget already reduced the decode, ``reduce_to`` adds nothing.
    """
    path = os.fspath(path)
    _allow_pil_pixels(max_pixels)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO would wait for a writer forever
            raise ImageLoadError(path, "not a regular file (a FIFO, socket or device)")
        if st.st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            # ``max_pixels`` below is the limit; PIL's own warning threshold
            # (~89 Mpx) is lower than the 100 Mpx default and would refuse photos
            # that max_pixels allows.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageLoadError(path, f"{w}×{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                                               "(possible decompression bomb; raise max_pixels to allow it)")
                if w < 1 or h < 1:
                    raise ImageLoadError(path, f"degenerate size {w}×{h}")
                scale = _fit_decode(im, path, max_decode_bytes)
                if bbox is not None and scale != 1.0:
                    bbox = tuple(float(v) * scale for v in bbox)
                im.seek(0)
                k = 1
                if reduce_to is not None and scale == 1.0 and im.format in ("JPEG", "MPO"):
                    orientation = im.getexif().get(0x0112, 1)
                    k = draft_factor(*_upright_region((w, h), orientation, bbox), *reduce_to)
                    if k > 1:
                        im.draft(None, (w // k, h // k))
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
                arr = np.array(rgb, dtype=np.uint8)
                if k > 1 and bbox is not None:
                    fy = arr.shape[0] / (h if orientation not in _TRANSPOSED else w)
                    fx = arr.shape[1] / (w if orientation not in _TRANSPOSED else h)
                    bbox = (bbox[0] * fx, bbox[1] * fy, bbox[2] * fx, bbox[3] * fy)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(path, f"over the limit of {max_pixels:,} pixels (possible decompression bomb; "
                                   f"raise max_pixels to allow it): {exc}") from None
    except OSError as exc:
        raise ImageLoadError(path, f"corrupt or truncated image ({exc})") from None
    except (ValueError, SyntaxError, MemoryError, EOFError) as exc:
        raise ImageLoadError(path, f"cannot decode ({type(exc).__name__}: {exc})") from None
    if bbox is not None:
        arr = crop(arr, bbox, path)
    return arr


def crop(arr: np.ndarray, bbox, path: str = "<image>") -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ImageLoadError(path, f"bounding box {tuple(bbox)} is not four finite numbers")
    h, w = arr.shape[:2]
    x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
    x1, y1 = min(w, int(round(x1))), min(h, int(round(y1)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ImageLoadError(path, f"bounding box {tuple(bbox)} is empty inside the {w}×{h} image")
    return arr[y0:y1, x0:x1]
