"""What the ``imret`` command checks and prints, kept apart from its argument wiring.

Each function is plain: values in, text or a verdict out, so the wording the user reads
is tested without running a command.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

from .config import WhiteningConfig
from .descriptor.whitening import kind_of


def check_device(text: str) -> str:
    """``text`` when it names a device this PyTorch build and machine have, else ValueError
    with one line saying why (so no command starts work it cannot finish)."""
    import torch

    if text == "auto":
        return text
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {text!r}: use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{text!r}: {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{text!r}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {text!r}: use cpu, cuda, cuda:N or auto")
    return text


def backend_words(name: str) -> str:
    """'hnsw (approximate: …)': a backend's name with what it is, from the registry."""
    from .core.registry import BACKENDS

    cls = BACKENDS.get(name) if name in BACKENDS else None
    return f"{name} ({cls.words})" if cls is not None and cls.words else name


def unused_tuning(backend: str, settings: dict) -> str | None:
    """A one-line message when ``settings`` name a search setting ``backend`` does not use
    (which backend reads what: their typed ``Settings``, in the registry)."""
    from .core.registry import BACKENDS
    from .index.backends import backends_tuning

    cls = BACKENDS.get(backend)
    wrong = [k for k in settings if k not in cls.tuning]
    if not wrong:
        return None
    opts = ", ".join("--" + k.replace("_", "-") for k in wrong)
    uses = "; ".join(f"--{k.replace('_', '-')} applies to {', '.join(backends_tuning(k))}" for k in wrong)
    return f"{opts}: this index uses the {backend_words(backend)} backend, which ignores it ({uses})"


def not_matched(requested: Iterable[str], removed: Sequence[str]) -> list[str]:
    """The paths or folders of ``requested`` that matched none of the ``removed`` images."""
    out = []
    for item in requested:
        ap = os.path.abspath(item)
        prefix = ap.rstrip(os.sep) + os.sep
        if not any(p == ap or p.startswith(prefix) for p in removed):
            out.append(item)
    return out


def head_is_untrained(head, head_cfg, in_channels: int) -> bool:
    """Whether ``head`` has learnable parts still at the weights ``build_head`` starts them
    with (no checkpoint, no shipped weights): it then behaves as its base pooling, or, for
    NetVLAD, with clusters that were never fitted. Decided by the weights themselves, not
    by the preset's name, so a preset that ships trained weights is not flagged."""
    import torch

    from .heads import HEADS

    if not getattr(head, "trainable", False):
        return False
    with torch.random.fork_rng(devices=[]):  # as build_head seeds it
        torch.manual_seed(0)
        fresh = HEADS.get(head_cfg.name)(in_channels, **head_cfg.params).state_dict()
    mine = head.state_dict()
    return set(mine) == set(fresh) and all(torch.equal(mine[k].detach().cpu(), fresh[k]) for k in mine)


def whitening_note(index) -> str | None:
    """Why an index holds less than the PCA-whitening its preset asks for (or None)."""
    w = index.preset.whitening
    held = kind_of(index.whitening)
    if w.kind != "pca" or held == "pca":
        return None
    done = ("descriptors are centred on the database mean (learned from "
            f"{w.center_min_images} images on) and L2-normalised" if held == "center"
            else "descriptors are only L2-normalised")
    return (f"whitening skipped: PCA-whitening is learned from {w.min_images} images on (fewer give a noisy "
            f"transform that hurts) and this index has {len(index)}; {done}. Learn one on more photos "
            f"of the same kind with --whiten-on DIR")


def build_notes(index, extractor=None, tuning: dict | None = None) -> list[str]:
    """Warnings about what was built that a user would otherwise not notice."""
    notes = []
    wn = whitening_note(index)
    if wn:
        notes.append(wn)
    if extractor is not None and head_is_untrained(extractor.head, index.preset.head, extractor.backbone.out_channels):
        notes.append(f"head {index.preset.head.name!r} of preset {index.preset.name!r} is untrained (no checkpoint, "
                     "no shipped weights): train it with 'imret train --preset "
                     f"{index.preset.name} ...' and index with --checkpoint FILE")
    unused = unused_tuning(index.backend.name, tuning or {})
    if unused:
        notes.append(unused)
    if index.backend.name == "ivfpq" and len(index) < IVFPQ_COMFORTABLE:
        notes.append(f"ivfpq on {len(index)} images: its 4-bit codebooks are trained on fewer than "
                     f"{IVFPQ_COMFORTABLE} descriptors; results are re-scored exactly, but 'flat' is exact "
                     "and fast up to ~200k images")
    return notes


# 16 centroids per 4-bit sub-quantiser × the 39 training points per centroid faiss asks for.
IVFPQ_COMFORTABLE = 16 * 39


def info_lines(info: dict, path: str) -> list[str]:
    """``imret info``'s text: what was actually built, not what the preset planned."""
    p, w = info["preset"], info["whitening"]
    lines = [
        f"index       {path} ({info['file_bytes']:,} bytes)",
        f"images      {info['images']}",
        f"descriptor  {info['dim']}-d float32 ({info['bytes_per_image']} bytes/image)",
        f"preset      {p['name']}",
        f"backbone    {p['backbone']['name']} (weights: {p['backbone']['weights'] or 'packaged'}"
        + (f"; tuned stages: {p['backbone']['tuned']}" if p['backbone']['tuned'] else "") + ")",
        f"head        {p['head']['name']} {p['head']['params'] or ''}".rstrip()
        + {"shipped": " (the preset's shipped weights, stored in the index)",
           "own": " (weights of its own, stored in the index: from --adapt, --checkpoint or an "
                   "earlier release's shipped file)"}.get(
            info.get("head_weights"), ""),
        f"scales      {', '.join(f'{s:.3g}' for s in p['extraction']['scales'])} at max side "
        f"{p['extraction']['max_size']} px",
        f"match       from cosine {p['min_score']:g} (the preset's cut-off; "
        "'imret search --min-score' sets another)",
        f"re-ranking  {p['rerank'] or 'none'} (the preset's: searches run it unless --rerank says otherwise)",
    ]
    if w and w.get("kind", "pca") == "center":
        lines.append(f"whitening   centring only (the database mean subtracted), {w['dim']}-d"
                     + (f"; PCA is learned from {p['whitening']['min_images']} images on"
                        if p["whitening"]["kind"] == "pca" else ""))
    elif w:
        lines.append(f"whitening   PCA, {w['dim']}-d, power {w['power']:.2g}")
    elif p["whitening"]["kind"] == "pca":
        lines.append(f"whitening   none: skipped, the preset learns it from {p['whitening']['min_images']} "
                     f"images on (centring from {p['whitening'].get('center_min_images', WhiteningConfig.center_min_images)}) and the "
                     "index was built from fewer")
    elif p["whitening"]["kind"] == "center":
        lines.append(f"whitening   none: skipped, the preset centres from "
                     f"{p['whitening']['center_min_images']} images on and the index was built from fewer")
    else:
        lines.append("whitening   none (turned off)")
    lines.append(f"backend     {backend_words(info['backend'])}")
    if info.get("dba"):
        lines.append(f"dba         αDBA rows stored, k={info['dba']['k']}, alpha={info['dba']['alpha']:g}")
    if info.get("delta_records"):
        lines.append(f"changes     {info['delta_records']} added/removed batches in {os.path.basename(path)}.delta, "
                     "folded into the file by the next full save")
    if info.get("local"):
        lo = info["local"]
        lines.append(f"local       {lo['images']} images, ≤{lo['max_features']} features of {lo['backbone']} "
                     f"{lo['stage']}, {lo['dim']}-d stored as {lo['storage']} ({lo['code_bytes']} bytes each), "
                     f"scales {', '.join(f'{s:.3g}' for s in lo['scales'])} at {lo['max_size']} px")
        if lo.get("missing"):
            shown = ", ".join(map(str, lo["missing"][:10])) + (" …" if len(lo["missing"]) > 10 else "")
            lines.append(f"            {len(lo['missing'])} images lack local features (ids {shown}): "
                         "verification finds no inliers for them; 'imret add' of any photo repairs them")
    return lines


def results_table(hits, min_score: float) -> list[str]:
    """``imret search``'s table: the cosine and (after ``sv``) the inlier count as two named
    columns, and whether each result is a match (verified, or cosine ≥ ``min_score``)."""
    from .index.cutoff import is_match

    checked = any(h.inliers is not None for h in hits)
    lines = [f"{'rank':>4}  {'cosine':>6}  " + (f"{'inliers':>9}  " if checked else "") + f"{'match':<5}  path"]
    for h in hits:
        inl = ""
        if checked:
            inl = f"{'-':>9}  " if h.inliers is None else f"{h.inliers:>5} {'ok ' if h.verified else 'low'}  "
        lines.append(f"{h.rank:>4}  {h.cosine:6.3f}  {inl}{'yes' if is_match(h, min_score) else 'no':<5}  {h.path}")
    return lines
