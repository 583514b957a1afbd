"""Errors that name the file and the reason, so a user can act on them."""
from __future__ import annotations

import os


class ImretError(Exception):
    """Base of every error imret raises on purpose."""


class ImageLoadError(ImretError):
    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(ImretError):
    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        where = self.path if self.path is not None else "weights"
        super().__init__(f"{where}: {reason}")


class IndexFileError(ImretError):
    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(ImretError):
    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(ImretError, ValueError):
    """A configuration value (or a spec's text) that cannot be used, with the reason."""
