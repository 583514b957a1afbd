"""What ``imret demo`` finds and how it reports it: every altered query searched, a
found/total table per alteration, the failures beside the successes, and what to run next."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .photoset import TRANSFORMS, PhotoSet


@dataclass(frozen=True)
class Outcome:
    """One query: its alteration, whether the first result is its original, what came first."""

    query: str
    alteration: str
    found: bool
    first: str | None
    cosine: float | None


def alteration_of(query: str) -> str:
    """'coffee__crop.jpg' → 'crop'."""
    return os.path.basename(query).split("__", 1)[1].rsplit(".", 1)[0]


def run_demo(index, photos: PhotoSet, progress: bool = False, top: int = 3) -> list[Outcome]:
    """Search ``index`` with every query of ``photos`` (extracted as one batch, with a
    progress bar when ``progress``)."""
    res = index.extractor().extract_paths(photos.queries, progress=progress)
    found = dict(zip(res.paths, index.search(res.descriptors, top=top))) if len(res.paths) else {}
    out = []
    for q in photos.queries:
        hits = found.get(q, [])
        want = {os.path.abspath(p) for p in photos.positives[q]}
        first = hits[0] if hits else None
        out.append(Outcome(q, alteration_of(q), bool(first) and first.path in want,
                           first.path if first else None, first.cosine if first else None))
    return out


def alteration_table(outcomes: list[Outcome]) -> list[str]:
    """Found at rank 1 / total, one line per alteration (in the photo set's order), and all."""
    order = [t for t in (*TRANSFORMS, "viewpoint") if any(o.alteration == t for o in outcomes)]
    order += sorted({o.alteration for o in outcomes} - set(order))
    lines = [f"{'alteration':<11} {'found':>5} / total"]
    for t in order:
        mine = [o for o in outcomes if o.alteration == t]
        lines.append(f"{t:<11} {sum(o.found for o in mine):>5} / {len(mine)}")
    lines.append(f"{'all':<11} {sum(o.found for o in outcomes):>5} / {len(outcomes)}")
    return lines


def report_lines(outcomes: list[Outcome], root: str, index_path: str, failures_shown: int = 12) -> list[str]:
    """The demo's report: the table, the failures (what came first instead), one success
    per alteration, and the next commands to try on the demo's own files."""
    rel = lambda p: os.path.relpath(p, root) if p else "nothing"  # noqa: E731
    lines = ["rank-1 results by alteration (the original photo first = found):", *alteration_table(outcomes)]
    missed = [o for o in outcomes if not o.found]
    if missed:
        lines.append(f"not found ({len(missed)}), with what came first instead:")
        for o in missed[:failures_shown]:
            lines.append(f"  {rel(o.query)} → {rel(o.first)} (cosine {o.cosine:.3f})" if o.cosine is not None
                         else f"  {rel(o.query)} → nothing")
        if len(missed) > failures_shown:
            lines.append(f"  … and {len(missed) - failures_shown} more")
    shown = {}
    for o in outcomes:
        if o.found and o.alteration not in shown:
            shown[o.alteration] = o
    if shown:
        lines.append("found, one per alteration:")
        lines += [f"  {rel(o.query)} → {rel(o.first)} (cosine {o.cosine:.3f})" for o in shown.values()]
    example = next((o.query for o in missed), None) or (outcomes[0].query if outcomes else "PHOTO.jpg")
    lines += ["next:",
              f"  imret search {index_path} {example}  # the ranked results of one query",
              f"  imret serve {index_path}  # the search page at http://127.0.0.1:8000/",
              f"  imret eval --dataset {root}  # mAP and rank-1 of this photo set"]
    return lines
