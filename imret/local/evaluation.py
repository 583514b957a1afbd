"""Spatial verification in ``evaluate``: local features of a dataset's database and
queries, and a re-ranking pipeline bound to them."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.errors import ImageLoadError
from .extract import LocalExtractor
from .features import LocalFeatures
from .steps import bind_pipeline
from .store import LocalStore


def describe_local(extractor: LocalExtractor, dataset, progress: bool = False,
                   on_error: Callable[[str, str], None] | None = None) -> tuple[LocalStore, list[LocalFeatures | None]]:
    """(a store of the database's features keyed by db position, each query's reduced
    features — None where it could not be read). The codec is learned on the database."""
    store = LocalStore.build(dataset.db, range(len(dataset.db)), extractor, progress=progress, on_error=on_error)
    queries: list[LocalFeatures | None] = []
    for path, bbox, dbi in zip(dataset.queries, dataset.bboxes, dataset.query_db_index):
        if dbi is not None and bbox is None and dbi in store:
            queries.append(store.features(dbi))  # a database image as query: its stored features
            continue
        try:
            queries.append(store.reduce(extractor.extract(path, bbox=bbox)))
        except ImageLoadError as exc:
            if on_error:
                on_error(path, exc.reason)
            queries.append(None)
    return store, queries


def bind_dataset(pipeline, store: LocalStore, queries: list[LocalFeatures | None]):
    """``pipeline`` (a ``Pipeline`` or its text) with its verification steps bound to the
    features of ``describe_local``."""
    from ..rerank import Pipeline

    from .search import LocalSearch

    def lookup(positions: np.ndarray) -> dict[int, LocalFeatures]:
        return store.many([int(p) for p in positions])

    search = LocalSearch(store)  # its vote structure is made on the first 'widen'

    def voter(query: LocalFeatures, n: int) -> np.ndarray:
        return np.asarray(search.most_voted(query, n), np.int64)  # the store's ids are database positions

    return bind_pipeline(Pipeline.parse(pipeline), queries, lookup, store.config.verify, voter)[0]
