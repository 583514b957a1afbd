"""Image files from files and folders, in a stable order."""
from __future__ import annotations

import os
from typing import Iterable, Iterator

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def list_images(root: str | os.PathLike, extensions=IMAGE_EXTENSIONS,
                on_error=None) -> Iterator[str]:
    """Image files under ``root`` by extension, sorted, symlink loops skipped.

    ``on_error(path, reason)`` hears about folders that could not be read.
    """
    root = os.fspath(root)
    if os.path.isfile(root):
        yield root
        return
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such file or folder")
    seen: set[tuple[int, int]] = set()

    def walk(folder: str) -> Iterator[str]:
        try:
            st = os.stat(folder)
        except OSError as exc:
            if on_error:
                on_error(folder, f"cannot read folder ({exc.strerror})")
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            if on_error:
                on_error(folder, "symlink loop, folder already visited")
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            if on_error:
                on_error(folder, f"cannot list folder ({exc.strerror})")
            return
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                yield from walk(e.path)
            elif e.name.lower().endswith(tuple(extensions)):
                yield e.path

    yield from walk(root)


def collect_paths(sources: Iterable[str | os.PathLike], on_error=None) -> list[str]:
    """Absolute image paths from files and folders, in order, without duplicates."""
    seen, out = set(), []
    for src in sources:
        for p in list_images(src, on_error=on_error):
            ap = os.path.abspath(p)
            if ap not in seen:
                seen.add(ap)
                out.append(ap)
    return out


def package_file(package: str, filename: str) -> str | None:
    """The path of ``filename`` shipped inside ``package`` (package data), if it is there."""
    from importlib import resources

    try:
        f = resources.files(package).joinpath(filename)
    except ModuleNotFoundError:
        return None
    return str(f) if f.is_file() else None
