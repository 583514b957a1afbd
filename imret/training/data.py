"""Where training images and their instance labels come from.

Each source maps a path to ``(paths, labels)``: images with equal labels show the
same instance. Registered by the name ``imret train --mode`` takes.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..core.errors import DatasetError
from ..core.paths import IMAGE_EXTENSIONS, collect_paths
from ..core.registry import Registry

SOURCES: Registry = Registry("training mode")


def linked_labels(n: int, links: np.ndarray | Sequence[tuple[int, int]],
                  labels: Sequence[int] | None = None) -> list[int]:
    """An instance label per item 0…n-1: items joined by a link, directly or through
    others, or sharing a label of ``labels`` (default: each its own), get one label;
    labels are numbered by first appearance."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    if labels is not None:
        first: dict[int, int] = {}
        for i, lab in enumerate(labels):
            join(first.setdefault(int(lab), i), i)
    for a, b in np.asarray(links, np.int64).reshape(-1, 2):
        join(int(a), int(b))
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(n)]


@SOURCES.register("unsupervised")
def unlabeled_folder(root: str) -> tuple[list[str], list[int]]:
    """Every photo under ``root`` is its own instance: its positives are strong
    augmentations of it, its negatives the other photos."""
    paths = collect_paths([root])
    return paths, list(range(len(paths)))


@SOURCES.register("instances")
def instance_folders(root: str) -> tuple[list[str], list[int]]:
    """One sub-folder per instance (searched recursively). Photos lying directly in
    ``root`` carry no label: each is its own instance, as in ``unsupervised``, so labelled
    photos of other places and the unlabelled photos of the collection to be searched
    train together (what ``benchmarks/ablation.py`` calls LOLO + unlabelled)."""
    if not os.path.isdir(root):
        raise DatasetError(root, "no such folder")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    groups = [collect_paths([e.path]) for e in entries if e.is_dir()]
    groups += [[p] for p in collect_paths([e.path for e in entries
                                           if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)])]
    groups = [g for g in groups if g]
    return [p for g in groups for p in g], [k for k, g in enumerate(groups) for _ in g]


@SOURCES.register("pairs")
def pairs_file(path: str) -> tuple[list[str], list[int]]:
    """A text file, a line per query: ``query<TAB>positive[<TAB>positive…]``; paths
    relative to the file's folder; '#' starts a comment line. Images linked by
    pairs, directly or through others, form one instance."""
    if not os.path.isfile(path):
        raise DatasetError(path, "no such pairs file")
    base = os.path.dirname(os.path.abspath(path))
    seen: dict[str, int] = {}
    links: list[tuple[int, int]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = [os.path.normpath(os.path.join(base, c.strip())) for c in line.split("\t") if c.strip()]
            if len(cols) < 2:
                raise DatasetError(path, f"line {n}: expected a query and at least one positive, tab-separated")
            ids = [seen.setdefault(c, len(seen)) for c in cols]
            links += [(ids[0], i) for i in ids[1:]]
    if not seen:
        raise DatasetError(path, "no pairs")
    paths = list(seen)
    labels = linked_labels(len(paths), links)
    return paths, labels
