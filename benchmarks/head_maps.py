"""Backbone feature maps of the heads' training photos and benchmark datasets, made once.

The backbone is frozen while heads train, so the maps of every training view and
of every evaluation image are computed once per backbone and size and kept on disk
(``--cache``); ``train_shipped.py`` and ``ablation.py`` then train and score heads
on them in minutes. A cache file is named by a digest of what made it (paths, the
photos' bytes, sizes, views, seed, scales), so a change of any of them makes a new one:
another collection laid out under the same names (held-out photos) never reads the
maps of this one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import torch

from imret.config import ExtractionConfig, Preset, WhiteningConfig
from imret.evaluation.datasets import load_dataset
from imret.extractor import Extractor
from imret.core.paths import collect_paths
from imret.local.features import LocalFeatures
from imret.training.bank import ViewBank
from imret.training.mine import MineConfig, local_extractor
from imret.training.probe import DatasetMaps, dataset_maps

SCALES = (1.0, 2 ** -0.5, 0.5)  # the 'default' preset's


def whitening_words(cfg: WhiteningConfig, images: int) -> str:
    """How descriptors of a database of ``images`` are scored under ``cfg``, for table titles."""
    return {"pca": "PCA-whitened", "center": "centred on the database mean",
            "none": "no whitening"}[cfg.learned_from(images)]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def files_digest(paths) -> str:
    """sha256 over the photos' bytes, in order (what the maps were made from)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def backbone_key(cfg) -> dict:
    """What names a backbone's maps: its config and, with tuned stages, their digest
    (a file regenerated under the same name makes new maps)."""
    out = cfg.to_dict()
    if cfg.tuned:
        from imret.backbones.tuned import load_tuned

        out["tuned_digest"] = load_tuned(cfg.tuned).digest
    return out


def extractor(max_size: int, backbone=None, device: str = "cpu") -> Extractor:
    """The backbone (default: Lite0's last stage, ImageNet weights) at ``max_size``, one scale."""
    preset = Preset(name="maps", extraction=ExtractionConfig(max_size=max_size, scales=(1.0,)),
                    whitening=WhiteningConfig(kind="none"))
    if backbone is not None:
        preset = preset.replace(backbone=backbone)
    return Extractor(preset, device=device)


def with_tuned(preset: Preset, tuned: str | None) -> Preset:
    """``preset`` with its tuned backbone stages replaced by the file ``tuned`` (when it has
    tuned stages and a file is named)."""
    if not (tuned and preset.backbone.tuned):
        return preset
    return preset.replace(backbone=preset.backbone.replace(tuned=os.path.abspath(tuned)))


def _cached(cache: str | None, name: str, key: str, make):
    if cache is None:
        return make()
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"{name}-{key}.pt")
    if os.path.exists(path):
        return torch.load(path, weights_only=True)
    t = time.time()
    obj = make()
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)
    print(f"  cached {name} in {time.time() - t:.0f} s ({path})", flush=True)
    return obj


def view_bank(ex: Extractor, folders: list[str], views: int, seed: int, cache: str | None) -> ViewBank:
    """Every photo under ``folders`` as its own instance (labels: image index), with
    ``views``-1 strong augmentations; maps at ``ex``'s size, float16."""
    paths = collect_paths(folders)
    key = _key(paths, files_digest(paths), ex.preset.extraction.max_size, views, seed,
               backbone_key(ex.preset.backbone))
    state = _cached(cache, "views", key, lambda: ViewBank(
        ex, paths, list(range(len(paths))), views, seed, dtype=torch.float16).state())
    return ViewBank.from_state(ex, state)


def local_features(paths: list[str], cfg: MineConfig, cache: str | None) -> list[LocalFeatures]:
    """The local features ``cfg`` verifies, of each photo of ``paths`` (all must load)."""
    key = _key(paths, files_digest(paths), cfg.local)

    def make():
        ex = local_extractor(cfg)
        return [{"xy": torch.from_numpy(f.xy), "scales": torch.from_numpy(f.scales),
                 "scores": torch.from_numpy(f.scores), "descriptors": torch.from_numpy(f.descriptors),
                 "size": list(f.size)} for f in map(ex.extract, paths)]

    return [LocalFeatures(f["xy"].numpy(), f["scales"].numpy(), f["scores"].numpy(), f["descriptors"].numpy(),
                          tuple(f["size"])) for f in _cached(cache, "local", key, make)]


def eval_maps(ex: Extractor, root: str, cache: str | None, scales=SCALES) -> DatasetMaps:
    ds = load_dataset(root)
    key = _key([os.path.relpath(p, root) for p in ds.db], [os.path.relpath(p, root) for p in ds.queries], ds.bboxes,
               files_digest(ds.db + sorted(set(ds.queries) - set(ds.db))), ex.preset.extraction.max_size, scales,
               backbone_key(ex.preset.backbone))

    def make():
        m = dataset_maps(ex, ds, scales=scales, dtype=torch.float16)
        return {"db": m.db, "queries": m.queries}

    got = _cached(cache, f"eval-{ds.name}", key, make)
    return DatasetMaps(ds, got["db"], got["queries"], tuple(scales))
