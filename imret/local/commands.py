"""What the local-feature subcommands of ``imret`` do (the CLI only parses and prints)."""
from __future__ import annotations

import os
from typing import Callable

from ..index.indexer import build_local, local_extractor  # noqa: F401  (used by the CLI and tests)
from .config import get_local_config
from .extract import LocalExtractor
from .verify import Verification, verify_many


def verify_pair(query: str, result: str, extractor: LocalExtractor, store=None, index=None,
                model: str = "affine", bbox=None):
    """(query image, result image, Verification) of one pair, computed as ``imret search
    --rerank sv`` computes it: the step's matching settings; with ``store``, the query's
    features reduced by its PCA; with ``index`` too, a result in the index compared through
    its stored (PQ-coded) features, so both commands count the same inliers."""
    from .steps import HomographyVerification, SpatialVerification

    step = SpatialVerification() if model == "affine" else HomographyVerification()
    qi, ri = extractor.load(query, bbox), extractor.load(result)
    qf, rf = extractor.extract(qi), None
    if store is not None:
        qf = store.reduce(qf)
        pos = None if index is None else index._pos_of.get(os.path.abspath(result))
        if pos is not None and int(index.ids[pos]) in store:
            rf = store.features(int(index.ids[pos]))
    if rf is None:
        rf = extractor.extract(ri)
        rf = store.reduce(rf) if store is not None else rf
    return qi, ri, verify_many(qf, [rf], step.verify_config)[0], step


def show_matches(query: str, result: str, out: str, extractor: LocalExtractor, store=None, index=None,
                 model: str = "affine", bbox=None, height: int = 480) -> Verification:
    """Verify ``result`` against ``query`` (as ``verify_pair``) and draw the inlier matches
    to ``out``: the query on the left, the result on the right."""
    from .draw import draw_matches

    qi, ri, v, step = verify_pair(query, result, extractor, store, index, model, bbox)
    verdict = "verified" if v.inliers >= step.min_inliers else f"not verified: fewer than {step.min_inliers}"
    title = (f"query (left) → result (right): {v.inliers} inliers ({model}, {verdict}) "
             f"of {v.tentative} tentative matches; red ticks: rejected matches")
    draw_matches(qi, ri, v.inlier_points, v.outlier_points, height=height, title=title).save(out)
    return v


def show_attention(image: str, out: str, extractor: LocalExtractor, height: int = 480) -> int:
    """Draw the attention scores of ``image``'s keypoints as a heat map to ``out``; returns
    the number of keypoints."""
    from .draw import draw_attention

    img = extractor.load(image)
    f = extractor.extract(img)
    cell = extractor.backbone.stride * max(img.shape[:2]) / (extractor.config.max_size * f.scales)
    draw_attention(img, f, height=height, cell=cell).save(out)
    return len(f)


def train_local(data: str, out: str, options: dict, name: str = "delf", device=None, progress: bool = False,
                on_error: Callable[[str, str], None] | None = None):
    """Train the attention network of the named config on ``data`` (``AttentionTrainConfig``
    fields in ``options``) and write it to ``out``."""
    from .train import AttentionTrainConfig, save_attention, train_attention

    cfg = AttentionTrainConfig(**options)
    config = get_local_config(name)
    res = train_attention(data, config, cfg, device=device, progress=progress, on_error=on_error)
    save_attention(out, res.state, config, cfg, res.losses)
    return res
