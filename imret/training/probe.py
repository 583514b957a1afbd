"""Retrieval figures of a head on feature maps computed once.

With a frozen backbone, the maps of a dataset's images do not change while a head
trains, so a held-apart check before and after training (or across the heads of
an ablation) costs the backbone once. Figures follow the dataset's protocol as
``imret eval`` scores it (``imret.evaluation.evaluate.evaluate_descriptors``), at
the scales the maps were made at, the per-scale descriptors averaged as
``Extractor.extract_array`` averages them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import nn

from ..evaluation.datasets import Dataset
from ..evaluation.evaluate import evaluate_descriptors
from .bank import describe


@dataclass
class DatasetMaps:
    """``db[i]`` / ``queries[q]``: one 1×C×h×w map per scale of ``scales``."""

    dataset: Dataset
    db: list[list[torch.Tensor]]
    queries: list[list[torch.Tensor]]
    scales: tuple[float, ...] = (1.0,)


def _covers(bbox, shape) -> bool:
    h, w = shape[:2]
    return bbox[0] <= 0 and bbox[1] <= 0 and bbox[2] >= w and bbox[3] >= h


def dataset_maps(extractor, dataset: Dataset, db: list[torch.Tensor] | None = None,
                 scales: Sequence[float] = (1.0,), dtype: torch.dtype = torch.float32) -> DatasetMaps:
    """Backbone maps of the database and query images at ``scales`` (of
    ``extractor``'s preset size). ``db``: single-scale maps of the database images
    already computed (in order; only with ``scales=(1.0,)``). A query that is a
    database image, or a box covering all of one, reuses that image's maps."""
    scales = tuple(scales)

    def maps_of(img) -> list[torch.Tensor]:
        return [extractor.feature_map(img, s).to(dtype, copy=True) for s in scales]

    if db is not None:
        if scales != (1.0,):
            raise ValueError("precomputed database maps are single-scale; pass scales=(1.0,)")
        db_maps = [[m] for m in db]
    else:
        db_maps = [maps_of(extractor.load(p)) for p in dataset.db]
    where = {p: i for i, p in enumerate(dataset.db)}
    queries = []
    for path, bbox, dbi in zip(dataset.queries, dataset.bboxes, dataset.query_db_index):
        dbi = dbi if dbi is not None else where.get(path)
        if dbi is not None and bbox is None:
            queries.append(db_maps[dbi])
            continue
        img = extractor.load(path)
        if dbi is not None and _covers(bbox, img.shape):
            queries.append(db_maps[dbi])
        else:
            queries.append(maps_of(extractor.load(path, bbox) if bbox is not None else img))
    return DatasetMaps(dataset, db_maps, queries, scales)


def subset(maps: DatasetMaps, keep: Sequence[int]) -> DatasetMaps:
    """The same database searched by the queries ``keep`` only (e.g. one landmark's)."""
    ds = maps.dataset
    keep = list(keep)
    sub = replace(ds, queries=[ds.queries[q] for q in keep], gnd=[ds.gnd[q] for q in keep],
                  bboxes=[ds.bboxes[q] for q in keep], query_db_index=[ds.query_db_index[q] for q in keep])
    return DatasetMaps(sub, maps.db, [maps.queries[q] for q in keep], maps.scales)


@torch.no_grad()
def multiscale_describe(head: nn.Module, per_image: list[list[torch.Tensor]]) -> torch.Tensor:
    """N×D: each image's per-scale descriptors (L2-normalised) summed and L2-normalised."""
    n_scales = len(per_image[0])
    acc = sum(describe(head, [m[s] for m in per_image]) for s in range(n_scales))
    return torch.nn.functional.normalize(acc, dim=1)


@torch.no_grad()
def descriptors(head: nn.Module, maps: DatasetMaps):
    was_training = head.training
    head.eval()
    db = multiscale_describe(head, maps.db).cpu().numpy()
    q = multiscale_describe(head, maps.queries).cpu().numpy()
    head.train(was_training)
    return db, q


def figures(head: nn.Module, maps: DatasetMaps, whitening=None, rerank: str | None = None) -> dict:
    """The protocol's figures of ``head``; ``whitening``: a ``WhiteningConfig`` learned
    on the database as the index learns it, or None; ``rerank``: re-ranking steps (text as
    ``--rerank`` takes it) run on each query's search, or None."""
    db, q = descriptors(head, maps)
    return evaluate_descriptors(maps.dataset, db, q, whitening, rerank)["figures"]
