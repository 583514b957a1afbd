"""What the local-feature subcommands of ``imret`` do (the CLI only parses and prints)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .config import get_local_config
from .extract import LocalExtractor
from .verify import Verification, verify


def local_extractor(name: str = "delf", attention: str | None = None, index: str | None = None, device=None):
    """(extractor, store or None): an index's local features (their config, attention and
    PCA), else a trained attention file's config and weights, else the named config."""
    if index is not None:
        from ..index.store import Index

        store = Index.load(index).local_store()
        return store.extractor(device), store
    if attention is not None:
        from .train import load_attention

        cfg, state = load_attention(attention)
        return LocalExtractor(cfg, state, device=device), None
    return LocalExtractor(get_local_config(name), device=device), None


def build_local(index, name: str = "delf", attention: str | None = None, device=None, progress: bool = False,
                on_error: Callable[[str, str], None] | None = None, journal_path: str | None = None) -> None:
    """Extract and attach local features for every image of ``index`` (saved with it);
    with ``journal_path``, resumable after a crash (``Index.local_journal_path``)."""
    from .store import LocalStore

    ex, _ = local_extractor(name, attention, device=device)
    index.local = LocalStore.build(index.paths, index.ids, ex, progress=progress, on_error=on_error,
                                   journal_path=journal_path, journal_header={"mode": "build"})


def match_pair(first, second, extractor: LocalExtractor, store=None, model: str = "affine") -> Verification:
    """Match and verify two images (paths or arrays) by ``extractor``'s recipe
    (``LocalConfig.verify``). Descriptors are reduced by ``store``'s PCA (an index's, as
    its searches compare them), else by a PCA learned on the pair: DELF's distance
    threshold is set for the PCA space."""
    from .store import LocalCodec

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


def show_matches(query: str, result: str, out: str, extractor: LocalExtractor, store=None,
                 model: str = "affine", bbox=None, height: int = 480) -> Verification:
    """Verify ``result`` against ``query`` and draw the inlier matches to ``out``."""
    from .draw import draw_matches

    qi, ri = extractor.load(query, bbox), extractor.load(result)
    v = match_pair(qi, ri, extractor, store, model)
    title = f"{v.inliers} inliers ({model}) of {v.tentative} tentative matches"
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
