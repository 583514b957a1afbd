"""imret: instance-level image retrieval with attention over CNN feature maps.

>>> import imret
>>> index, report = imret.Index.build(["photos/"], imret.get_preset("default"))
>>> index.save("my.index")
>>> imret.Index.load("my.index").search_image("query.jpg", top=10)
"""
from __future__ import annotations

from .core import __version__

# Heavy modules (torch, faiss) load on first use, so 'imret --help' stays quick.
_LAZY = {
    "Extractor": ("imret.extractor", "Extractor"),
    "ExtractionResult": ("imret.extractor", "ExtractionResult"),
    "Index": ("imret.index.store", "Index"),
    "Hit": ("imret.index.store", "Hit"),
    "IndexReport": ("imret.index.store", "IndexReport"),
    "Preset": ("imret.config", "Preset"),
    "get_preset": ("imret.presets", "get_preset"),
    "list_presets": ("imret.presets", "list_presets"),
    "load_image": ("imret.io.images", "load_image"),
    "limit_threads": ("imret.core.threads", "limit_threads"),
    "plan_threads": ("imret.core.threads", "plan_threads"),
    "load_dataset": ("imret.evaluation.datasets", "load_dataset"),
    "evaluate": ("imret.evaluation.evaluate", "evaluate"),
    "ImretError": ("imret.core.errors", "ImretError"),
    "ImageLoadError": ("imret.core.errors", "ImageLoadError"),
    "IndexFileError": ("imret.core.errors", "IndexFileError"),
    "WeightsError": ("imret.core.errors", "WeightsError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'imret' has no attribute {name!r}")
