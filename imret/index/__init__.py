"""The persistent index: descriptors, image paths and the config that built them."""
from .backends import BACKENDS, choose_kind, make_backend

__all__ = ["BACKENDS", "choose_kind", "make_backend"]
