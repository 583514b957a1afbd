"""An index searched by its local features alone (``imret search --mode local|asmk``):
the index's images and paths around ``imret.local.search.LocalSearch``."""
from __future__ import annotations

from ..local.search import asmk_path, local_search_of
from ..local.steps import SpatialVerification
from .store import Hit


def search_index(index, image, mode: str, top: int = 10, path: str | None = None, bbox=None, **options):
    """``Index`` search by local features alone → ``imret.index.store.Hit`` list (inliers set
    for 'local'). ``path``: where the index lives (the ASMK codebook is saved beside it)."""
    state = local_search_of(index, index.local_store(), asmk_path=asmk_path(path) if path else None,
                            owner=repr(index.created))
    query = state.store.query(image, bbox=bbox)
    hits = state.search(mode, query, top, **options)
    pos = {int(i): k for k, i in enumerate(index.ids)}
    least = SpatialVerification().min_inliers  # what verifies a hit: sv's bound, as 'search --rerank sv' prints it
    return [Hit(r + 1, h.score, h.image_id, index.paths[pos[h.image_id]], h.inliers, h.matches,
                verified=None if h.inliers is None else h.inliers >= least)
            for r, h in enumerate(hits) if h.image_id in pos]
