"""Search by local features alone (``imret search --mode local|asmk``): no global descriptor.

``local`` (the DELF paper's retrieval): every database descriptor (PCA-40) is in a faiss
product-quantisation index made from the PQ codes the store already holds (``IndexPQ``
with the store's codebooks; no re-encoding) or, for a store kept as floats, an IVF-PQ
learned on them. Each query descriptor's ``knn`` nearest database descriptors closer
than the recipe's ``distance`` vote for their images (one vote per query descriptor
and image); the ``shortlist`` images with the most votes are verified geometrically by
the features' recipe and ranked by inliers (then votes).

``asmk`` (Tolias et al.; the PyPI package ``asmk``, used as it is): a codebook learned
by k-means on the indexed images' descriptors, binary aggregated selective match
kernel (α=3, threshold 0), multiple assignment 5 for queries, as their HOW setup.
Only arrays are saved: the codebook centroids (``INDEX.asmk.npz``, with the ids it
was made for); the inverted file is rebuilt from the store when loaded.

Both structures are made on the first search and kept with the index object; they
are made again when the indexed images change.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core.atomic import atomic_write
from ..core.registry import Registry
from .features import LocalFeatures
from .store import LocalStore
from .verify import verify_many

MODES: Registry = Registry("search mode")


@dataclass(frozen=True)
class LocalHit:
    """``position``: the image's row in the store's id order; ``score``: inliers (local)
    or ASMK similarity; ``votes``: the descriptor votes (local)."""

    image_id: int
    score: float
    inliers: int | None = None
    votes: int = 0
    matches: np.ndarray | None = None


def _all_rows(store: LocalStore) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(codes or floats of every stored descriptor, the image id of each, the ids)."""
    ids = store.ids
    rows = store.rows(ids)
    codes = np.concatenate([rows[i].rows["code"] for i in ids]) if ids else np.zeros((0,) + store.codec.code_shape)
    owner = np.concatenate([np.full(len(rows[i].rows), i, np.int64) for i in ids]) if ids else np.zeros(0, np.int64)
    return codes, owner, ids


class DescriptorIndex:
    """Every database descriptor of a ``LocalStore`` in one faiss index (see the module docstring)."""

    def __init__(self, store: LocalStore):
        import faiss

        codes, self.owner, self.ids = _all_rows(store)
        codec = store.codec
        if codec.kind == "pq":
            self.index = faiss.IndexPQ(codec.dim, codec.centroids.shape[0], 8)
            faiss.copy_array_to_vector(np.ascontiguousarray(codec.centroids, np.float32).ravel(),
                                       self.index.pq.centroids)
            self.index.is_trained = True
            faiss.copy_array_to_vector(np.ascontiguousarray(codes, np.uint8).ravel(), self.index.codes)
            self.index.ntotal = len(codes)
        else:
            x = np.ascontiguousarray(codec.decode(codes), np.float32)
            nlist = max(1, min(1024, int(4 * np.sqrt(max(len(x), 1)))))
            m = next(m for m in (20, 10, 8, 5, 4, 2, 1) if codec.dim % m == 0)
            self.index = faiss.IndexIVFPQ(faiss.IndexFlatL2(codec.dim), codec.dim, min(nlist, max(len(x) // 39, 1)),
                                          m, 8)
            # faiss warns once per sub-quantiser below 39 points per centroid (small collections)
            self.index.cp.min_points_per_centroid = 1
            self.index.pq.cp.min_points_per_centroid = 1
            self.index.train(x)
            self.index.add(x)
            self.index.nprobe = 16

    def vote(self, query: LocalFeatures, knn: int, distance: float) -> dict[int, int]:
        """Image id → number of query descriptors with a neighbour in it closer than ``distance``."""
        if not len(query) or not self.index.ntotal:
            return {}
        d2, nn = self.index.search(np.ascontiguousarray(query.descriptors, np.float32), min(knn, self.index.ntotal))
        ok = (nn >= 0) & (d2 < distance * distance)
        qi = np.repeat(np.arange(len(nn)), nn.shape[1])[ok.ravel()]
        img = self.owner[nn[ok]]
        pairs = np.unique(np.stack([qi, img], 1), axis=0)  # one vote per query descriptor and image
        got, counts = np.unique(pairs[:, 1], return_counts=True)
        return dict(zip(got.tolist(), counts.tolist()))


def rank_by_votes(votes: dict[int, int], n: int) -> list[int]:
    """The ``n`` image ids with the most votes (ties: the lower id)."""
    return [i for i, _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def verify_candidates(store: LocalStore, query: LocalFeatures, candidates: list[int], votes: dict[int, int],
                      model: str = "affine") -> list[LocalHit]:
    """Verify ``candidates`` by the features' recipe → hits by inliers, then votes, then id."""
    cfg = store.config.verify_config.replace(model=model)
    feats = store.many(candidates)
    ks = [i for i in candidates if i in feats]
    vs = verify_many(query, [feats[i] for i in ks], cfg)
    hits = [LocalHit(i, float(v.inliers), v.inliers, votes.get(i, 0), v.inlier_points) for i, v in zip(ks, vs)]
    return sorted(hits, key=lambda h: (-h.inliers, -h.votes, h.image_id))


@MODES.register("local")
def search_local(state: "LocalSearch", query: LocalFeatures, top: int, shortlist: int = 100, knn: int = 10,
                 model: str = "affine") -> list[LocalHit]:
    """Descriptor votes, then verification of the ``shortlist`` most-voted images."""
    votes = state.descriptor_index().vote(query, knn, state.store.config.verify_config.distance)
    return verify_candidates(state.store, query, rank_by_votes(votes, max(shortlist, top)), votes, model)[:top]


# The HOW+ASMK settings of the asmk repository (binary kernel, α=3, threshold 0), with a
# codebook sized to the collection (their 65k words assume millions of descriptors).
ASMK_PARAMS = {
    "index": {"gpu_id": None},
    "train_codebook": {"codebook": {"size": 1024}},
    "build_ivf": {"kernel": {"binary": True}, "ivf": {"use_idf": False},
                  "quantize": {"multiple_assignment": 1}, "aggregate": {}},
    "query_ivf": {"quantize": {"multiple_assignment": 5}, "aggregate": {},
                  "search": {"topk": None}, "similarity": {"similarity_threshold": 0.0, "alpha": 3.0}},
}


def asmk_codebook_size(n_descriptors: int) -> int:
    """Words for ``n_descriptors``: about 100 descriptors per word, 64 to 65536."""
    return int(min(65536, max(64, 2 ** round(np.log2(max(n_descriptors, 1) / 100)))))


class AsmkIndex:
    """The ``asmk`` package's method over a store's descriptors (see the module docstring)."""

    def __init__(self, store: LocalStore, centroids: np.ndarray | None = None, seed: int = 0):
        from asmk import asmk_method

        codes, owner, self.ids = _all_rows(store)
        x = np.ascontiguousarray(store.codec.decode(codes), np.float32)
        self.pos_of = {i: k for k, i in enumerate(self.ids)}
        params = {**ASMK_PARAMS, "train_codebook": {"codebook": {"size": len(centroids) if centroids is not None
                                                                  else asmk_codebook_size(len(x))}}}
        method = asmk_method.ASMKMethod.initialize_untrained(params)
        if centroids is None:
            np.random.seed(seed)  # faiss k-means inside asmk seeds itself; numpy for any sampling
            method = method.train_codebook(x)
        else:
            from asmk import codebook as cdb_pkg, index as idx_pkg

            cdb = cdb_pkg.Codebook(idx_pkg.initialize_index(None), size=len(centroids))
            cdb.index(np.ascontiguousarray(centroids, np.float32))
            method = asmk_method.ASMKMethod(params, {}, codebook=cdb)
        self.centroids = method.codebook.centroids
        image_rows = np.array([self.pos_of[int(i)] for i in owner], np.int64)
        self.method = method.build_ivf(x, image_rows)

    def scores(self, query: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """(image ids best first, ASMK similarities)."""
        if not len(query):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        _, _, ranks, scores = self.method.query_ivf(np.ascontiguousarray(query.descriptors, np.float32),
                                                    np.zeros(len(query), np.int64))
        return np.asarray(self.ids, np.int64)[ranks[0]], scores[0].astype(np.float32)

    def save(self, path: str, owner: str) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would add '.npz' to a bare name
                np.savez(f, centroids=self.centroids, ids=np.asarray(self.ids, np.int64), owner=np.array(owner))

        atomic_write(path, write)

    @staticmethod
    def saved_centroids(path: str, owner: str, ids: list[int]) -> np.ndarray | None:
        """The centroids saved at ``path`` when made for these ids of this index, else None."""
        if not os.path.isfile(path):
            return None
        with np.load(path, allow_pickle=False) as z:
            if str(z["owner"]) != owner or z["ids"].tolist() != list(ids):
                return None
            return np.array(z["centroids"], np.float32)


@MODES.register("asmk")
def search_asmk(state: "LocalSearch", query: LocalFeatures, top: int, **_) -> list[LocalHit]:
    ids, scores = state.asmk_index().scores(query)
    return [LocalHit(int(i), float(s)) for i, s in zip(ids[:top], scores[:top])]


class LocalSearch:
    """The local-only search structures of one index's ``LocalStore``, made on first use.
    ``asmk_path``: where the ASMK codebook is saved (None: not saved); ``owner``: what it
    belongs to (the index's creation time)."""

    def __init__(self, store: LocalStore, asmk_path: str | None = None, owner: str = ""):
        self.store, self.asmk_path, self.owner = store, asmk_path, owner
        self._descriptors: DescriptorIndex | None = None
        self._asmk: AsmkIndex | None = None

    def _fresh(self, built) -> bool:
        return built is not None and built.ids == self.store.ids

    def descriptor_index(self) -> DescriptorIndex:
        if not self._fresh(self._descriptors):
            self._descriptors = DescriptorIndex(self.store)
        return self._descriptors

    def asmk_index(self) -> AsmkIndex:
        if not self._fresh(self._asmk):
            ids = self.store.ids
            saved = AsmkIndex.saved_centroids(self.asmk_path, self.owner, ids) if self.asmk_path else None
            self._asmk = AsmkIndex(self.store, saved)
            if saved is None and self.asmk_path:
                self._asmk.save(self.asmk_path, self.owner)
        return self._asmk

    def search(self, mode: str, query: LocalFeatures, top: int = 10, **options) -> list[LocalHit]:
        fn: Callable = MODES.get(mode)
        return fn(self, query, top, **options)

    def most_voted(self, query: LocalFeatures, n: int, knn: int = 10) -> list[int]:
        """The ``n`` image ids whose descriptors ``query``'s vote for most (``search_local``'s
        candidates, before verification)."""
        votes = self.descriptor_index().vote(query, knn, self.store.config.verify_config.distance)
        return rank_by_votes(votes, n)


def local_search_of(holder, store: LocalStore, **options) -> LocalSearch:
    """The ``LocalSearch`` kept on ``holder`` (an index) for ``store``, made when missing or
    when the store is another one (its structures are made on first use, then kept)."""
    state = getattr(holder, "_local_search", None)
    if state is None or state.store is not store:
        state = LocalSearch(store, **options)
        holder._local_search = state
    return state


def asmk_path(index_path: str | os.PathLike) -> str:
    return os.fspath(index_path) + ".asmk.npz"
