"""Moved to ``imret.core.errors``; kept so ``imret.errors`` names stay importable."""
from .core.errors import ConfigError, DatasetError, ImageLoadError, ImretError, IndexFileError, WeightsError

__all__ = ["ConfigError", "DatasetError", "ImageLoadError", "ImretError", "IndexFileError", "WeightsError"]
