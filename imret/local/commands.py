"""What the local-feature subcommands of ``imret`` do (the CLI only parses and prints)."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ..index.indexer import build_local, local_extractor  # noqa: F401  (used by the CLI and tests)
from .config import get_local_config
from .extract import LocalExtractor
from .verify import Verification, verify, verify_many


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
    return qi, ri, verify_many(qf, [rf], step.verify_config(extractor.config.verify))[0], step


def match_pair(first, second, extractor: LocalExtractor, store=None, model: str = "affine") -> Verification:
    """Match and verify two images (paths or arrays) by ``extractor``'s recipe
    (``LocalConfig.verify``). Descriptors are reduced by ``store``'s PCA (an index's, as
    its searches compare them), else by a PCA learned on the pair: DELF's distance
    threshold is set for the PCA space."""
    from .codec import LocalCodec

    a, b = extractor.extract(first), extractor.extract(second)
    if store is not None:
        a, b = store.reduce(a), store.reduce(b)
    elif len(a) + len(b) >= 2:
        cfg = extractor.config
        codec = LocalCodec.fit(np.concatenate([a.descriptors, b.descriptors]),
                               cfg.replace(storage="float32", pca_dim=min(cfg.pca_dim, extractor.dim)))
        a, b = a.replace_descriptors(codec.reduce(a.descriptors)), b.replace_descriptors(codec.reduce(b.descriptors))
    return verify(a, b, extractor.config.verify_config.replace(model=model))


def transform_3x3(v: Verification) -> np.ndarray | None:
    """The fitted model as a 3×3 matrix (an affine map gets the row 0 0 1)."""
    if v.model is None:
        return None
    return np.vstack([v.model, [0, 0, 1]]) if v.model.shape == (2, 3) else np.asarray(v.model)


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
    cell = extractor.backbone.stride / (extractor.config.base_scale(img.shape[:2]) * f.scales)
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
