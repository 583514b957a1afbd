"""Where uploaded photos are kept: one folder per request, named by a random UUID.

Requests never share a folder, so none can overwrite or delete another's photos
(names made of the clock and a thread id collided within a second). A file's name
holds its position in the request and the start of its SHA-256, so two uploads of
the same name in one request stay apart too. A request that fails removes its own
folder, and nothing else.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid

from ..io.images import IMAGE_EXTENSIONS


def uploads_dir(index_path: str) -> str:
    return os.path.abspath(index_path) + ".uploads"


def safe_name(filename: str | None) -> tuple[str, str]:
    """(stem, extension) of an uploaded file's name, reduced to letters, digits, ``-_.``; an
    extension that is not an image's becomes ``.jpg`` (the decoder reads the content anyway)."""
    base = os.path.basename((filename or "upload").replace("\\", "/")) or "upload"
    stem, ext = os.path.splitext(base)
    if ext.lower() not in IMAGE_EXTENSIONS:
        ext = ".jpg"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80].lstrip(".") or "upload", ext


class UploadBatch:
    """The photos of one request, in a folder of their own under ``root``."""

    def __init__(self, root: str):
        self.root = root
        self.folder = os.path.join(root, uuid.uuid4().hex)
        self.paths: list[str] = []

    def save(self, filename: str | None, data: bytes) -> str:
        """Write one photo; returns its path. A write that fails (a full disk) leaves no file."""
        if not self.paths and not os.path.isdir(self.folder):
            os.makedirs(self.folder)
        stem, ext = safe_name(filename)
        dest = os.path.join(self.folder, f"{len(self.paths):04d}-{hashlib.sha256(data).hexdigest()[:12]}-{stem}{ext}")
        try:
            with open(dest, "xb") as out:  # x: never over an existing file
                out.write(data)
        except BaseException:
            try:
                os.unlink(dest)
            except OSError:
                pass
            raise
        self.paths.append(dest)
        return dest

    def discard(self) -> None:
        """Remove this request's folder (only ever its own)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.paths = []
