"""Where training images and their instance labels come from.

Each source maps a path to ``(paths, labels)``: images with equal labels show the
same instance. Registered by the name ``imret train --mode`` takes.
"""
from __future__ import annotations

import os

from ..core.errors import DatasetError
from ..core.paths import IMAGE_EXTENSIONS, collect_paths
from ..core.registry import Registry

SOURCES: Registry = Registry("training mode")


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
    parent: dict[str, str] = {}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = [os.path.normpath(os.path.join(base, c.strip())) for c in line.split("\t") if c.strip()]
            if len(cols) < 2:
                raise DatasetError(path, f"line {n}: expected a query and at least one positive, tab-separated")
            for c in cols:
                parent.setdefault(c, c)
            for c in cols[1:]:
                parent[find(c)] = find(cols[0])
    if not parent:
        raise DatasetError(path, "no pairs")
    paths = list(parent)
    roots: dict[str, int] = {}
    labels = [roots.setdefault(find(p), len(roots)) for p in paths]
    return paths, labels
