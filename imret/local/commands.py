"""What the local-feature subcommands of ``imret`` do (the CLI only parses and prints)."""
from __future__ import annotations

from typing import Callable

from .config import get_local_config
from .extract import LocalExtractor
from .verify import Verification, VerifyConfig, verify


def local_extractor(name: str = "delf", attention: str | None = None, index: str | None = None, device=None):
    """(extractor, store or None): an index's local features (their config, attention and
    PCA), else a trained attention file's config and weights, else the named config with
    the attention the package ships trained for it (if any)."""
    if index is not None:
        from ..index.store import Index

        store = Index.load(index).local_store()
        return store.extractor(device), store
    from .train import load_attention, shipped_attention

    if attention is None and shipped_attention(name) is not None:
        shipped_cfg, state = load_attention(shipped_attention(name))
        if shipped_cfg == get_local_config(name):
            return LocalExtractor(shipped_cfg, state, device=device), None
    if attention is not None:
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


def show_matches(query: str, result: str, out: str, extractor: LocalExtractor, store=None,
                 model: str = "affine", bbox=None, height: int = 480) -> Verification:
    """Verify ``result`` against ``query`` and draw the inlier matches to ``out``."""
    from .draw import draw_matches

    qi, ri = extractor.load(query, bbox), extractor.load(result)
    qf, rf = extractor.extract(qi), extractor.extract(ri)
    if store is not None:  # the index's PCA, as its searches compare them
        qf, rf = store.reduce(qf), store.reduce(rf)
    v = verify(qf, rf, VerifyConfig(model=model))
    title = f"{v.inliers} inliers ({model}) of {v.tentative} tentative matches"
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
