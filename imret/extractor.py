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
from .core.errors import ImageLoadError
from .heads import build_head
from .io.images import DEFAULT_MAX_PIXELS, load_image
from .presets import get_preset
from .core.threads import limit_threads

# Backbone inputs of one call hold at most this many pixels (batch × h × w): measured on
# 2 cores, batching the small scales of same-size photos saves per-call overhead, while
# a batch of full 512-px inputs runs slower per photo than one at a time (its activations
# outgrow the caches).
BATCH_PIXELS = 200_000

# A JPEG is decoded reduced (1/2, 1/4, 1/8 in the DCT domain) only while it stays this
# many times the largest input side, so that the input is still made by a real
# downscale whose antialiasing, not the DCT reduction, shapes it. Measured (default
# preset): 12-Mpx phone photos decoded at 1/4 give descriptors at cosine ≥ 0.9995 of
# a full decode; 1024-px photos decoded at 1/2 (no margin) only at 0.991.
DECODE_MARGIN = 1.5

RUNTIMES = ("torch", "onnx")


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
                 max_pixels: int = DEFAULT_MAX_PIXELS, head_state: dict | None = None,
                 threads: int | str | None = None, batch: int = 4, batch_pixels: int = BATCH_PIXELS,
                 channels_last: bool | None = None, runtime: str = "torch"):
        """``threads``: torch intra-op threads while this extractor runs (an int, 'auto' for
        ``imret.core.threads.plan_threads``'s choice, None to leave torch's setting alone);
        ``batch``: consecutive photos of one size run through the backbone together, in
        calls of at most ``batch_pixels`` input pixels; ``channels_last`` (default: on the
        CPU) runs the backbone in NHWC layout, measured ~14% less CPU time per photo
        for EfficientNet-Lite0 on one thread (benchmarks/bench_extract.py); ``runtime``:
        'torch', or 'onnx' to run the backbone in ONNX Runtime (CPU only; descriptors
        within 1e-4 of torch's; ``imret.backbones.onnx``)."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if batch < 1 or batch_pixels < 1:
            raise ValueError(f"batch and batch_pixels must be positive, got {batch} and {batch_pixels}")
        self.preset = preset
        self.device = resolve_device(device)
        self.max_pixels = max_pixels
        self.threads = threads
        self.batch = batch
        self.batch_pixels = batch_pixels
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
        # the head weights this extractor runs (given or shipped; None: the head as built), which
        # an index keeps so that photos added later get the same head after the package changes
        self.loaded_state = head_state
        self.backbone.to(self.device).eval()
        self.head.to(self.device).eval()
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        self._layout = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.runtime = runtime
        self._forward = self.backbone
        if runtime == "onnx":
            if self.device.type != "cpu":
                raise ValueError(f"runtime 'onnx' runs on the CPU, not on {self.device}")
            from .backbones.onnx import OnnxBackbone

            self._forward = OnnxBackbone(self.backbone)

    @classmethod
    def from_preset(cls, name_or_preset: str | Preset, **kwargs) -> "Extractor":
        preset = get_preset(name_or_preset) if isinstance(name_or_preset, str) else name_or_preset
        return cls(preset, **kwargs)

    @property
    def dim(self) -> int:
        return int(self.head.out_dim)

    def head_digest(self) -> str:
        """Fingerprint of the head's weights (trained heads differ under one preset)."""
        from .core.digest import state_digest

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

    def prepare(self, img: np.ndarray) -> list[torch.Tensor]:
        """The backbone inputs of an image, one 1×3×h×w tensor per scale (done by the
        decode thread, beside the network: PIL's resize releases the GIL)."""
        return [self.image_tensor(img, s) for s in self.preset.extraction.scales]

    @torch.inference_mode()
    def describe(self, inputs: Sequence[Sequence[torch.Tensor]]) -> np.ndarray:
        """N×D descriptors of N photos given by ``prepare``. Photos whose inputs have the
        same sizes share backbone calls (at most ``batch_pixels`` pixels each); a photo's
        descriptor is the L2-normalised sum of its L2-normalised per-scale descriptors."""
        out = np.zeros((len(inputs), self.dim), np.float32)
        i = 0
        while i < len(inputs):
            shapes = [tuple(t.shape) for t in inputs[i]]
            j = i + 1
            while j < len(inputs) and j - i < self.batch and [tuple(t.shape) for t in inputs[j]] == shapes:
                j += 1
            acc = None
            for k, (_, _, h, w) in enumerate(shapes):
                step = max(1, self.batch_pixels // (h * w))
                parts = []
                for a in range(i, j, step):
                    x = torch.cat([inputs[n][k] for n in range(a, min(j, a + step))]).to(self.device)
                    x = x.contiguous(memory_format=self._layout)
                    parts.append(self.head(self._forward(x)).float())
                v = torch.cat(parts)
                v = v / (v.norm(dim=1, keepdim=True) + 1e-12)
                acc = v if acc is None else acc + v
            acc = acc / (acc.norm(dim=1, keepdim=True) + 1e-12)
            out[i:j] = acc.cpu().numpy()
            i = j
        return out

    def extract_array(self, img: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 RGB → (D,) float32 unit-norm descriptor."""
        with limit_threads(self.threads):
            return self.describe([self.prepare(img)])[0]

    def load(self, path: str | os.PathLike, bbox=None) -> np.ndarray:
        cfg = self.preset.extraction
        need = int(np.ceil(cfg.max_size * max(cfg.scales) * DECODE_MARGIN))
        return load_image(path, max_pixels=self.max_pixels, bbox=bbox, reduce_to=(need, cfg.min_size))

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
        pending: list[tuple[str, list[torch.Tensor]]] = []

        def flush():
            for (p, _), v in zip(pending, self.describe([t for _, t in pending])):
                rows.append(v)
                ok.append(p)
                if on_result:
                    on_result(p, v)
                if bar:
                    bar.update(1)
            pending.clear()

        with limit_threads(self.threads):
            for p, item in _prefetch(paths, lambda p: self.prepare(self.load(p))):
                if isinstance(item, ImageLoadError):
                    failures.append((p, item.reason))
                    if on_error:
                        on_error(p, item.reason)
                    if bar:
                        bar.update(1)
                    continue
                if pending and (len(pending) >= self.batch or
                                [t.shape for t in item] != [t.shape for t in pending[0][1]]):
                    flush()
                pending.append((p, item))
            flush()
        if bar:
            bar.close()
        desc = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        return ExtractionResult(desc, ok, failures)
