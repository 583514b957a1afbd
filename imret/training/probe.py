"""Retrieval figures of a head on feature maps computed once.

With a frozen backbone, the maps of a dataset's images do not change while a head
trains, so a held-apart check before and after training (or across the heads of
an ablation) costs the backbone once. Figures follow the dataset's protocol as
``imret eval`` scores it, without whitening, at one scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..evaluation.datasets import Dataset
from ..evaluation.evaluate import rank_all, score
from .bank import describe


@dataclass
class DatasetMaps:
    dataset: Dataset
    db: list[torch.Tensor]
    queries: list[torch.Tensor]


def dataset_maps(extractor, dataset: Dataset, db: list[torch.Tensor] | None = None) -> DatasetMaps:
    """Backbone maps (scale 1 of ``extractor``'s preset) of the database and query
    images. ``db``: maps of the database images already computed (in order)."""
    if db is None:
        db = [extractor.feature_map(extractor.load(p)) for p in dataset.db]
    queries = []
    for path, bbox, dbi in zip(dataset.queries, dataset.bboxes, dataset.query_db_index):
        queries.append(db[dbi] if dbi is not None and bbox is None
                       else extractor.feature_map(extractor.load(path, bbox)))
    return DatasetMaps(dataset, db, queries)


@torch.no_grad()
def figures(head: nn.Module, maps: DatasetMaps) -> dict:
    was_training = head.training
    head.eval()
    db = describe(head, maps.db).cpu().numpy()
    q = describe(head, maps.queries).cpu().numpy()
    head.train(was_training)
    return score(maps.dataset, rank_all(q, db))
