"""The bottom of imret: errors, registries, digests, atomic writes, bbox parsing and
image-path collection. It imports nothing else of imret (tests/test_layers.py checks),
so every other module may use it."""
from .errors import ConfigError, DatasetError, ImageLoadError, ImretError, IndexFileError, WeightsError
from .registry import Registry

__version__ = "0.1.0"

__all__ = ["ConfigError", "DatasetError", "ImageLoadError", "ImretError", "IndexFileError", "Registry",
           "WeightsError", "__version__"]
