"""Small name → component registries, so presets and configs refer to parts by name.

The registries that configs check names against live here, at the bottom, so a
config can validate a name without importing the layer that implements it. Their
built-in components are listed once, in ``BUILTINS``: the first lookup imports those
modules (which register themselves), so no caller has to import a module "for
registration" and a config never imports a layer above it.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

# Registry kind → the modules that register its built-in components.
BUILTINS: dict[str, tuple[str, ...]] = {
    "backbone": ("imret.backbones.efficientnet_lite", "imret.backbones.resnet_vgg"),
    "head": ("imret.heads",),
    "index backend": ("imret.index.backends", "imret.index.milvus"),
    "re-ranking step": ("imret.rerank.steps", "imret.local.steps"),
}


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loaded = not BUILTINS.get(kind)

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: the modules imported below look names up while they load
        try:
            for module in BUILTINS[self.kind]:
                importlib.import_module(module)
        except BaseException:
            self._loaded = False
            raise

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}") from None

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


BACKBONES: Registry = Registry("backbone")
HEADS: Registry = Registry("head")
BACKENDS: Registry = Registry("index backend")
STEPS: Registry = Registry("re-ranking step")
