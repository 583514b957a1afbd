"""Positives across photos, without labels: photos that geometric verification links.

Label-free training (each photo its own instance, augmentations as positives) teaches
a head to see through crops and colour, not through a change of viewpoint: the
positives of a photo are only ever that photo. Two photos of one building seen from
two places are what retrieval must match, and their local features say so without any
label: matched by descriptor and explained by one affine map with enough inliers, they
show the same object (Radenović et al. 2016 mined such pairs from 3D reconstructions;
Iscen et al. 2018 from the manifold of the descriptors). Here each photo is verified
against its ``shortlist`` nearest photos by global descriptor, verified pairs link, and
photos linked directly or through others form one instance.

No label is read, so training on the mined instances of the collection being indexed
(``imret index --adapt``) stays label-free, like the augmentations it adds to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .data import linked_labels


@dataclass(frozen=True)
class MineConfig:
    """``local``: the local-feature configuration whose features are verified (a
    ``LOCAL_CONFIGS`` name; its own matching and RANSAC recipe); ``shortlist``: how many
    nearest photos by global descriptor each photo is verified against; ``min_inliers``:
    fewer inliers do not link a pair (the ``sv`` step's bound: what a search calls verified)."""

    local: str = "delf-512"
    shortlist: int = 20
    min_inliers: int = 12

    def __post_init__(self):
        from ..config import ConfigError, check_ints
        from ..local.config import LOCAL_CONFIGS

        if self.local not in LOCAL_CONFIGS:
            raise ConfigError(f"mine: unknown local features {self.local!r}; known: {', '.join(LOCAL_CONFIGS)}")
        check_ints(self, ("shortlist", "min_inliers"), prefix="mine: ")


@dataclass(frozen=True)
class Mined:
    """What mining found: ``links`` verified pairs, and the instance label they left each
    photo (``labels``, in image order)."""

    links: int
    labels: tuple[int, ...]

    @classmethod
    def of(cls, bank, links: int) -> "Mined":
        """The record of a ``ViewBank`` relabelled by mining ``links`` pairs."""
        return cls(links, tuple(bank.labels[k] for k in bank.photo_items()))

    @property
    def instances(self) -> int:
        return len(set(self.labels))

    @property
    def photos(self) -> int:
        return len(self.labels)

    def __str__(self) -> str:
        return (f"verification linked {self.links} pairs of photos: {self.instances} instances in "
                f"{self.photos} photos")


def shortlist_pairs(descriptors: np.ndarray, k: int) -> np.ndarray:
    """P×2 pairs (i < j), each once, of every photo with its ``k`` most similar others;
    ``descriptors``: N×D rows, compared by inner product."""
    d = np.asarray(descriptors, np.float32)
    n = len(d)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((0, 2), np.int64)
    sims = d @ d.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    pairs = np.stack([np.repeat(np.arange(n), k), near.ravel()], 1)
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0)


def verified_links(features: Sequence, pairs: np.ndarray, cfg: MineConfig,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """The pairs of ``pairs`` whose ``features`` (``LocalFeatures``, one per photo; None for
    a photo that has none) verify with at least ``cfg.min_inliers`` inliers."""
    from ..local.config import get_local_config
    from ..local.verify import verify_many

    vcfg = get_local_config(cfg.local).verify_config
    keep = []
    for i in np.unique(pairs[:, 0]):
        mates = pairs[pairs[:, 0] == i, 1]
        mates = [j for j in mates if features[i] is not None and features[j] is not None]
        for j, v in zip(mates, verify_many(features[i], [features[j] for j in mates], vcfg)):
            if v.inliers >= cfg.min_inliers:
                keep.append((int(i), int(j)))
        if progress:
            progress(1)
    return np.asarray(keep, np.int64).reshape(-1, 2)


def local_extractor(cfg: MineConfig, device=None):
    """The local extractor ``cfg`` names, with the shipped DELF attention where it fits."""
    from ..local.config import get_local_config
    from ..local.extract import LocalExtractor
    from ..local.train import shipped_attention_state

    local = get_local_config(cfg.local)
    return LocalExtractor(local, shipped_attention_state(local), device=device)


def mine_labels(paths: Sequence[str], descriptors: np.ndarray, cfg: MineConfig = MineConfig(),
                labels: Sequence[int] | None = None, device=None, progress: bool = False,
                features: Sequence | None = None) -> tuple[list[int], int]:
    """(an instance label per photo, the number of verified pairs): photos of ``paths``
    that verification links share a label, as do photos sharing one of ``labels``.
    ``descriptors``: N×D global descriptors that pick each photo's shortlist.
    ``features``: the photos' local features when already extracted (else extracted
    here; a photo that cannot be read links to none)."""
    from ..core.errors import ImageLoadError

    pairs = shortlist_pairs(descriptors, cfg.shortlist)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths) * (features is None) + len(np.unique(pairs[:, 0])), unit="img",
                   desc="verifying pairs", dynamic_ncols=True)
    if features is None:
        ex = local_extractor(cfg, device)
        features = []
        for p in paths:
            try:
                features.append(ex.extract(p))
            except ImageLoadError:
                features.append(None)
            if bar:
                bar.update(1)
    links = verified_links(features, pairs, cfg, bar.update if bar else None)
    if bar:
        bar.close()
    return linked_labels(len(paths), links, labels), len(links)


def mine_bank(bank, head, cfg: MineConfig = MineConfig(), progress: bool = False,
              features: Sequence | None = None) -> tuple:
    """(``bank``, a ``ViewBank``, relabelled so that the photos verification links share an
    instance; the ``Mined`` record). The shortlists come from ``head``'s
    descriptors of the photos themselves (view 0), centred on their mean, as an index
    centres them. ``features``: the local features of ``bank.paths``, if already made."""
    import torch
    import torch.nn.functional as F

    photos = bank.photo_items()
    with torch.no_grad():
        d = bank.describe(head, photos)
        d = F.normalize(d - d.mean(0), dim=1).cpu().numpy()
    labels, links = mine_labels(bank.paths, d, cfg, [bank.labels[k] for k in photos],
                                device=bank.extractor.device, progress=progress, features=features)
    bank = bank.relabel(labels)
    return bank, Mined.of(bank, links)
