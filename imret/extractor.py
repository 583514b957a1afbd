"""Image → global descriptor: backbone → head → multi-scale average → L2.

Whitening is not applied here: it is learned on a collection and belongs to the
index (``imret.index.store``), which applies it to database and query alike.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones import build_backbone
from .config import Preset
from .errors import ImageLoadError
from .heads import build_head
from .io.images import DEFAULT_MAX_PIXELS, load_image
from .presets import get_preset


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class ExtractionResult:
    """``descriptors``: N×D float32 rows for ``paths`` (same order); ``failures``: (path, reason)."""

    descriptors: np.ndarray
    paths: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)


def _prefetch(paths: Sequence[str], load: Callable[[str], np.ndarray], depth: int = 4
              ) -> Iterator[tuple[str, np.ndarray | ImageLoadError]]:
    """Decode the next images in a thread while the network runs (PIL releases the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        for p in paths:
            if stop.is_set():
                return
            try:
                item = load(p)
            except ImageLoadError as exc:
                item = exc
            except Exception as exc:  # an image must never take the run down
                item = ImageLoadError(p, f"unexpected {type(exc).__name__}: {exc}")
            q.put((p, item))
        q.put(None)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while (got := q.get()) is not None:
            yield got
    finally:
        stop.set()


class Extractor:
    """Global descriptors for images, built from a ``Preset``.

    >>> ex = Extractor.from_preset("default")
    >>> d = ex.extract("photo.jpg")          # (D,) float32, unit norm
    """

    def __init__(self, preset: Preset, device: str | torch.device | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, head_state: dict | None = None):
        self.preset = preset
        self.device = resolve_device(device)
        self.max_pixels = max_pixels
        self.backbone = build_backbone(preset.backbone)
        self.head = build_head(preset.head, self.backbone.out_channels)
        # A preset whose head ships trained (imret/heads/weights) gets those weights unless
        # the caller brings its own (a checkpoint, an index's stored head).
        self.trained = None
        if head_state is None and getattr(self.head, "trainable", False):
            from .heads.trained import shipped_for

            self.trained = shipped_for(preset)
            head_state = self.trained.float_state() if self.trained is not None else None
        if head_state is not None:
            self.head.load_state_dict(head_state)
        self.backbone.to(self.device).eval()
        self.head.to(self.device).eval()

    @classmethod
    def from_preset(cls, name_or_preset: str | Preset, **kwargs) -> "Extractor":
        preset = get_preset(name_or_preset) if isinstance(name_or_preset, str) else name_or_preset
        return cls(preset, **kwargs)

    @property
    def dim(self) -> int:
        return int(self.head.out_dim)

    def head_digest(self) -> str:
        """Fingerprint of the head's weights (trained heads differ under one preset)."""
        from .index.journal import state_digest

        return state_digest(self.head.state_dict())

    def image_tensor(self, img: np.ndarray, scale: float = 1.0) -> torch.Tensor:
        """1×3×h×w float tensor (values 0–255, on the CPU) of an H×W×3 uint8 image
        resized for ``scale``: what the backbone sees."""
        cfg = self.preset.extraction
        h, w = img.shape[:2]
        f = cfg.max_size * scale / max(h, w)
        nh, nw = max(cfg.min_size, round(h * f)), max(cfg.min_size, round(w * f))
        if (nh, nw) != (h, w):
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float()[None]

    @torch.inference_mode()
    def feature_map(self, img: np.ndarray, scale: float = 1.0) -> torch.Tensor:
        """1×C×h×w backbone map of an H×W×3 uint8 image at one scale."""
        return self.backbone(self.image_tensor(img, scale).to(self.device))

    @torch.inference_mode()
    def extract_array(self, img: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 RGB → (D,) float32 unit-norm descriptor."""
        acc = None
        for s in self.preset.extraction.scales:
            v = self.head(self.feature_map(img, s))[0].float()
            v = v / (v.norm() + 1e-12)
            acc = v if acc is None else acc + v
        acc = acc / (acc.norm() + 1e-12)
        return acc.cpu().numpy().astype(np.float32)

    def load(self, path: str | os.PathLike, bbox=None) -> np.ndarray:
        return load_image(path, max_pixels=self.max_pixels, bbox=bbox)

    def extract(self, image, bbox=None) -> np.ndarray:
        """A path or an H×W×3 uint8 array (optionally cropped to ``bbox``) → (D,) descriptor."""
        if isinstance(image, (str, os.PathLike)):
            return self.extract_array(self.load(image, bbox))
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, 2)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB array, got shape {arr.shape} dtype {arr.dtype}")
        if bbox is not None:
            from .io.images import crop

            arr = crop(arr, bbox)
        return self.extract_array(arr)

    def extract_paths(self, paths: Iterable[str], progress: bool = False,
                      on_error: Callable[[str, str], None] | None = None,
                      on_result: Callable[[str, np.ndarray], None] | None = None) -> ExtractionResult:
        """Descriptors of many files; a file that fails is reported and skipped."""
        paths = list(paths)
        rows, ok, failures = [], [], []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), unit="img", desc="extracting", dynamic_ncols=True)
        for p, item in _prefetch(paths, self.load):
            if isinstance(item, ImageLoadError):
                failures.append((p, item.reason))
                if on_error:
                    on_error(p, item.reason)
            else:
                v = self.extract_array(item)
                rows.append(v)
                ok.append(p)
                if on_result:
                    on_result(p, v)
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        desc = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        return ExtractionResult(desc, ok, failures)
