"""Image → DELF-style local features: pyramid, dense features, attention, selection.

Every location of the dense map at every pyramid scale is a candidate: its keypoint
is the centre of its receptive field mapped back to the original image, its score the
attention network's. The best-scoring candidates are kept, a candidate whose cell
(the stride-sized footprint of its location) overlaps a better one's at another scale
by more than ``nms_iou`` being dropped as a duplicate. Descriptors leave here
L2-normalised at the backbone's width; the PCA to ``pca_dim`` belongs to a database
(``imret.local.store``) because it is learned on one.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..backbones import Backbone, build_backbone
from ..descriptor.whitening import l2_normalize
from ..io.images import DEFAULT_MAX_PIXELS, load_image
from .attention import Attention
from .config import LocalConfig
from .features import LocalFeatures


# ---------------------------------------------------------------------------
# Receptive-field centres
# ---------------------------------------------------------------------------

def _axis_centres(layers, n_in: int, n_out: int) -> np.ndarray:
    """Input-pixel centres of the n_out output positions along one axis."""
    sizes = [n_in]
    for k, s, _ in layers:
        sizes.append(-(-sizes[-1] // s))
    c = np.arange(n_out, dtype=np.float64)
    for (k, s, pad), n in zip(reversed(layers), reversed(sizes[:-1])):
        if pad is None:  # 'SAME': total padding max((ceil(n/s)−1)·s + k − n, 0), the smaller half before
            pad = max((-(-n // s) - 1) * s + k - n, 0) // 2
        c = s * c + (k - 1) / 2 - pad
    return c


def receptive_field_centres(backbone: Backbone, in_hw: tuple[int, int], out_hw: tuple[int, int]
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs): input-pixel coordinates of the receptive-field centres of the rows and
    columns of an out_hw map computed from an in_hw image."""
    layers = backbone.strided_layers()
    return _axis_centres(layers, in_hw[0], out_hw[0]), _axis_centres(layers, in_hw[1], out_hw[1])


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------

def cross_scale_nms(xy: np.ndarray, cell: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` features, best score first, none of whose square
    cells (centre ``xy``, side ``cell``) overlaps a kept one's by IoU > ``iou``."""
    order = np.argsort(-scores, kind="stable")
    if iou >= 1.0:
        return order[:limit]
    half = cell[:, None] / 2
    boxes = np.concatenate([xy - half, xy + half], 1)[order]
    areas = cell[order] ** 2
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == limit:
            break
        rest = slice(i + 1, None)
        w = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        h = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        suppressed[rest] |= inter > iou * (areas[i] + areas[rest] - inter)
    return order[np.asarray(keep, np.int64)]


# ---------------------------------------------------------------------------
# Extractor
# ---------------------------------------------------------------------------

class LocalExtractor:
    """Local features of images by ``LocalConfig``, with an attention network (untrained:
    scores are feature norms; or a trained state)."""

    def __init__(self, config: LocalConfig | None = None, attention_state: dict | None = None,
                 device: str | torch.device | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 backbone: Backbone | None = None):
        from ..extractor import resolve_device

        self.config = config or LocalConfig()
        self.device = resolve_device(device)
        self.max_pixels = max_pixels
        self.backbone = (backbone or build_backbone(self.config.backbone)).to(self.device).eval()
        self.attention = Attention(self.backbone.out_channels, self.config.attention_hidden)
        if attention_state is not None:
            self.attention.load_state_dict(attention_state)
        self.attention.to(self.device).eval()
        self._layers = self.backbone.strided_layers()

    @property
    def dim(self) -> int:
        return int(self.backbone.out_channels)

    def attention_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.attention.state_dict().items()}

    def pyramid(self, img: np.ndarray):
        """(scale, 1×3×h×w tensor of 0–255 values) for each pyramid scale that gives a map."""
        h, w = img.shape[:2]
        base = self.config.base_scale((h, w))
        pil = Image.fromarray(img)
        min_side = 2 ** len(self._layers)  # smaller inputs give maps of one pixel or none
        for s in self.config.scales:
            nh, nw = round(h * base * s), round(w * base * s)
            if min(nh, nw) < min_side:
                continue
            arr = np.asarray(pil.resize((nw, nh), Image.BILINEAR)) if (nh, nw) != (h, w) else img
            yield s, torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float()[None]

    @torch.inference_mode()
    def dense(self, img: np.ndarray):
        """Per pyramid scale: (scale, C×h×w features, h×w scores, (ys, xs) centres in the
        original image's pixels) — every candidate before selection."""
        h, w = img.shape[:2]
        for s, x in self.pyramid(img):
            fmap = self.backbone(x.to(self.device)).float()
            att = self.attention(fmap)[0, 0]
            ys, xs = _axis_centres(self._layers, x.shape[2], fmap.shape[2]), _axis_centres(self._layers, x.shape[3], fmap.shape[3])
            # resized-pixel centres → original pixels (pixel i covers [i, i+1) around i + ½)
            ys = (ys + 0.5) * h / x.shape[2] - 0.5
            xs = (xs + 0.5) * w / x.shape[3] - 0.5
            yield s, fmap[0], att, (ys, xs)

    def extract_array(self, img: np.ndarray) -> LocalFeatures:
        """H×W×3 uint8 RGB → its selected local features (descriptors at the backbone's width)."""
        cfg = self.config
        h, w = img.shape[:2]
        base = cfg.base_scale((h, w))
        descs, scores, xys, scales, cells = [], [], [], [], []
        for s, fmap, att, (ys, xs) in self.dense(img):
            c = fmap.shape[0]
            sc = att.flatten()
            keep = torch.nonzero(sc >= cfg.score_threshold).flatten()
            if len(keep) > 4 * cfg.max_features:  # no scale can contribute more than the total
                keep = keep[torch.topk(sc[keep], 4 * cfg.max_features).indices]
            keep_np = keep.cpu().numpy()
            gy, gx = np.divmod(keep_np, fmap.shape[2])
            descs.append(fmap.reshape(c, -1)[:, keep].T.cpu().numpy())
            scores.append(sc[keep].cpu().numpy())
            xys.append(np.stack([xs[gx], ys[gy]], 1))
            scales.append(np.full(len(keep_np), s, np.float32))
            cells.append(np.full(len(keep_np), self.backbone.stride / (base * s), np.float32))
        if not descs:
            return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                                 np.zeros((0, self.dim), np.float32), (h, w))
        xy = np.concatenate(xys).astype(np.float32)
        score = np.concatenate(scores).astype(np.float32)
        keep = cross_scale_nms(xy, np.concatenate(cells), score, cfg.nms_iou, cfg.max_features)
        return LocalFeatures(xy[keep], np.concatenate(scales)[keep], score[keep],
                             l2_normalize(np.concatenate(descs)[keep]), (h, w))

    def load(self, path: str | os.PathLike, bbox=None) -> np.ndarray:
        return load_image(path, max_pixels=self.max_pixels, bbox=bbox)

    def extract(self, image, bbox=None) -> LocalFeatures:
        """A path or an H×W×3 uint8 array (optionally cropped to ``bbox`` x0,y0,x1,y1)
        → its local features. Keypoints are in the pixels of the (cropped) image."""
        from ..extractor import Extractor

        return Extractor.extract(self, image, bbox)  # the same inputs, through this load/extract_array
