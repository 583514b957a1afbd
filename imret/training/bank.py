"""Training views of every image, and their feature maps.

View 0 of an image is the photo itself, resized as extraction resizes it; views
1…V-1 are strong augmentations (``augment.strong_view``), each fixed by
(seed, image, view). The bank holds the views' maps out of the backbone's frozen
part, computed once: with a frozen backbone the feature maps themselves, so that a
training step costs only the head; with its last ``train_blocks`` parameter groups
training, the maps entering them, so that a step runs those groups alone (with
gradients). A bank made with ``cache=False`` holds the resized view images instead.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core.errors import ImageLoadError
from .augment import strong_view


def _group_by_shape(tensors: Sequence[torch.Tensor]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    return groups


def describe(head: nn.Module, maps: Sequence[torch.Tensor], chunk: int = 64) -> torch.Tensor:
    """N×D L2-normalised float32 descriptors of N 1×C×h×w maps, as single-scale
    extraction gives them; maps of equal size go through the head together."""
    rows: list[torch.Tensor | None] = [None] * len(maps)
    for idx in _group_by_shape(maps).values():
        for start in range(0, len(idx), chunk):
            part = idx[start:start + chunk]
            d = F.normalize(head(torch.cat([maps[i] for i in part]).float()).float(), dim=1)
            for i, row in zip(part, d):
                rows[i] = row
    return torch.stack(rows)  # type: ignore[arg-type]


def _shrink(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= side:
        return img
    f = side / max(h, w)
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR))


class ViewBank:
    """``items[k]`` = (image, view); ``labels[k]`` its instance label; ``maps(ks)``
    the feature maps of items ``ks`` (with gradients when the backbone trains).

    ``extractor``: an ``Extractor`` whose preset extracts at one scale, the
    training size. ``cache``: hold, in ``dtype``, the maps entering the backbone's last
    ``train_blocks`` parameter groups (0: its feature maps), else hold the view images."""

    def __init__(self, extractor, paths: Sequence[str], labels: Sequence[int], views: int, seed: int,
                 cache: bool = True, dtype: torch.dtype = torch.float16, progress: bool = False,
                 on_error: Callable[[str, str], None] | None = None, train_blocks: int = 0):
        self.extractor = extractor
        self.cache = cache
        self.train_blocks = train_blocks if cache else 0
        self.views, self.seed = views, seed
        self.items: list[tuple[int, int]] = []
        self.labels: list[int] = []
        self.paths: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self._store: list[torch.Tensor] = []
        side = 2 * extractor.preset.extraction.max_size
        previous = None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), unit="img", desc="views", dynamic_ncols=True)
        for i, (path, label) in enumerate(zip(paths, labels)):
            try:
                img = extractor.load(path)
            except ImageLoadError as exc:
                self.skipped.append((path, exc.reason))
                if on_error:
                    on_error(path, exc.reason)
                continue
            finally:
                if bar:
                    bar.update(1)
            small = _shrink(img, side)
            image = len(self.paths)
            self.paths.append(path)
            for v in range(views):
                view = img if v == 0 else strong_view(small, np.random.default_rng([seed, 0, i, v]), previous)
                image_tensor = extractor.image_tensor(view)
                self._store.append(self._frozen_map(image_tensor, dtype) if cache else image_tensor.to(torch.uint8))
                self.items.append((image, v))
                self.labels.append(int(label))
            previous = small
        if bar:
            bar.close()
        # labels renumbered 0…L-1 over the images that loaded
        order = {lab: k for k, lab in enumerate(sorted(set(self.labels)))}
        self.labels = [order[lab] for lab in self.labels]

    def _frozen_map(self, image_tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        backbone, x = self.extractor.backbone, image_tensor.to(self.extractor.device)
        with torch.inference_mode():  # a backbone that cannot train (ONNX) need not know frozen_part
            fmap = backbone.frozen_part(x, self.train_blocks) if self.train_blocks else backbone(x)
        # a copy made outside inference mode is an ordinary tensor that autograd may save
        return fmap.to(dtype, copy=True)

    def cached(self, train_blocks: int = 0, dtype: torch.dtype = torch.float16) -> "ViewBank":
        """This bank of view images as a bank of the maps entering the last
        ``train_blocks`` parameter groups of its extractor's backbone (the same views)."""
        if self.cache:
            raise ValueError("cached(): this bank holds maps already; make it with cache=False")
        bank = ViewBank.from_state(self.extractor, self.state())
        bank.cache, bank.train_blocks = True, train_blocks
        bank._store = [bank._frozen_map(im.float(), dtype) for im in self._store]
        return bank

    def state(self) -> dict:
        """What ``from_state`` rebuilds the bank from (tensors and plain values)."""
        return {"items": self.items, "labels": self.labels, "paths": self.paths, "skipped": self.skipped,
                "store": self._store, "views": self.views, "seed": self.seed, "cache": self.cache,
                "train_blocks": self.train_blocks}

    @classmethod
    def from_state(cls, extractor, state: dict) -> "ViewBank":
        """A bank made earlier (``state()``) for the same extractor, without recomputing it."""
        bank = cls.__new__(cls)
        bank.extractor = extractor
        bank.items = [tuple(i) for i in state["items"]]
        bank.labels, bank.paths = list(state["labels"]), list(state["paths"])
        bank.skipped = [tuple(s) for s in state["skipped"]]
        bank._store = list(state["store"])
        bank.views, bank.seed, bank.cache = state["views"], state["seed"], state["cache"]
        bank.train_blocks = state.get("train_blocks", 0)  # states saved before it existed held feature maps
        return bank

    def relabel(self, labels_of_image: Sequence[int], keep: Sequence[int] | None = None) -> "ViewBank":
        """The same views with instance labels given per image (index into ``paths``),
        restricted to the images ``keep`` (default: all): labelled training from views
        made once."""
        keep_set = set(range(len(self.paths)) if keep is None else keep)
        bank = ViewBank.from_state(self.extractor, self.state())
        ks = [k for k, (i, _) in enumerate(self.items) if i in keep_set]
        remap = {i: n for n, i in enumerate(sorted(keep_set))}
        bank.items = [(remap[self.items[k][0]], self.items[k][1]) for k in ks]
        bank._store = [self._store[k] for k in ks]
        bank.paths = [self.paths[i] for i in sorted(keep_set)]
        raw = [int(labels_of_image[self.items[k][0]]) for k in ks]
        order = {lab: n for n, lab in enumerate(sorted(set(raw)))}
        bank.labels = [order[lab] for lab in raw]
        return bank

    def describe(self, head: nn.Module, ks: Sequence[int], chunk: int = 128) -> torch.Tensor:
        """N×D descriptors by ``head`` of items ``ks``, their maps made ``chunk`` items at a
        time (with trained backbone stages, a map costs a forward pass)."""
        return torch.cat([describe(head, self.maps(ks[i:i + chunk])) for i in range(0, len(ks), chunk)])

    def photo_items(self) -> list[int]:
        """Where each image's photo itself (view 0) lies in ``items``, in image order."""
        return [k for k, (_, v) in enumerate(self.items) if v == 0]

    @property
    def n_labels(self) -> int:
        return len(set(self.labels))

    def __len__(self) -> int:
        return len(self.items)

    def maps(self, ks: Sequence[int]) -> list[torch.Tensor]:
        device = self.extractor.device
        stored = [self._store[k] for k in ks]
        if self.cache and not self.train_blocks:
            return [m.to(device, torch.float32) for m in stored]
        backbone = self.extractor.backbone
        out: list[torch.Tensor | None] = [None] * len(ks)
        for idx in _group_by_shape(stored).values():
            x = torch.cat([stored[i] for i in idx]).to(device, torch.float32)
            fmap = backbone.trained_part(x, self.train_blocks) if self.cache else backbone(x)
            for i, m in zip(idx, fmap.split(1)):
                out[i] = m
        return out  # type: ignore[return-value]
