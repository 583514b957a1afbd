"""Milvus backend: the same ``Index`` with its vectors in Milvus, for collections that
outgrow one machine.

``uri`` is a Milvus Lite file (``./vectors.db``, embedded, no server) or a server
(``http://host:19530``). Milvus holds the vectors under the images' stable ids; the
index file keeps ids, paths and the config, as with every backend. pymilvus is
imported only when a Milvus backend is made, so it stays an optional extra.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..core.errors import ConfigError
from .backends import BACKENDS, RESCORE_HELP, Backend, Settings, setting

_BATCH = 1000


@dataclass(frozen=True)
class MilvusSettings(Settings):
    milvus_uri: str | None = setting(None, "a Milvus Lite file or http://host:19530", minimum=None)
    milvus_collection: str = setting("imret", "the collection holding the vectors", minimum=None)
    rescore: int | None = setting(None, RESCORE_HELP, tunable=True)

    def __post_init__(self):
        super().__post_init__()
        if not self.milvus_uri:
            raise ConfigError("index kind 'milvus' needs milvus_uri (a Milvus Lite file or http://host:19530)")


@BACKENDS.register("milvus")
class MilvusBackend(Backend):
    name = "milvus"
    words = "vectors kept in Milvus, shortlist re-scored exactly"
    Settings = MilvusSettings
    remote = True  # its collection changes as the index does: no delta log replays into it
    approximate = True  # Milvus's own index proposes; the rows are re-scored exactly here

    def _make(self, dim, cfg):
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise ImportError("the milvus backend needs pymilvus: pip install 'imret[milvus]'") from None
        self.collection = cfg.milvus_collection
        self.client = MilvusClient(uri=cfg.milvus_uri)
        if not self.client.has_collection(self.collection):
            self._create()
        else:  # a collection from an earlier process starts released
            self.client.load_collection(self.collection)
        return self.client

    def _create(self):
        # Strong consistency: a search right after an insert sees it, as with the local backends.
        self.client.create_collection(self.collection, dimension=self.dim, metric_type="IP", auto_id=False,
                                      id_type="int", primary_field_name="id", vector_field_name="vec",
                                      consistency_level="Strong")

    @property
    def ntotal(self) -> int:
        res = self.client.query(self.collection, filter="id >= 0", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def add(self, ids, rows):
        rows = np.asarray(rows, np.float32)
        for s in range(0, len(rows), _BATCH):
            self.client.insert(self.collection, [{"id": int(i), "vec": r.tolist()}
                                                 for i, r in zip(ids[s:s + _BATCH], rows[s:s + _BATCH])])
        self._seal()

    def _seal(self):
        # Rows just inserted sit in a growing segment that is searched by brute force
        # without the index: sealing it made searches ~17× faster (Milvus Lite, 30k rows).
        self.client.flush(self.collection)

    def remove(self, ids) -> None:
        ids = [int(i) for i in ids]
        for s in range(0, len(ids), _BATCH):
            self.client.delete(self.collection, ids=ids[s:s + _BATCH])
        self._seal()

    def search(self, queries, k):
        """Q×D queries → (Q×k scores, Q×k image ids); −1 pads missing results."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        res = self.client.search(self.collection, data=queries.tolist(), limit=max(1, k),
                                 search_params={"metric_type": "IP"})
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for qi, hits in enumerate(res):
            for j, h in enumerate(list(hits)[:k]):
                scores[qi, j] = h["distance"]
                ids[qi, j] = h["id"]
        return scores, ids

    def tune(self, cfg) -> None:
        self.cfg = self.Settings.of(cfg)

    def clone(self, source=None) -> "MilvusBackend":
        # the vectors live in the service: a copy shares them (as the original did before)
        other = copy.copy(self)
        other.source = source
        return other

    def to_bytes(self):
        raise NotImplementedError("Milvus keeps its own data")

    @classmethod
    def restore(cls, dim, cfg, ids, rows, blob=None, source=None) -> "MilvusBackend":
        # the vectors live in the service: re-sync only if it lost them
        obj = cls(dim, cfg, source)
        if obj.ntotal != len(ids):
            obj.client.drop_collection(obj.collection)
            obj._create()
            if len(ids):
                obj.add(ids, rows)
        return obj
