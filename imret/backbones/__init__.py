"""Backbones: image batch → dense feature map from a convolutional stage.

Each registered name is a ``BackboneSpec`` (``base.py``: the protocol a network file
follows); calling it with a ``BackboneConfig`` gives a ``Backbone``, an ``nn.Module``
whose forward maps B×3×H×W images with pixel values in [0, 255] to a B×C×h×w map, and
which knows its channels, stride, receptive-field geometry and parameter groups.
Normalisation lives in the backbone because it belongs to the weights.
"""
from __future__ import annotations

from ..core.registry import BACKBONES
from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneSpec, Stage, load_weights, read_state_dict

__all__ = ["BACKBONES", "IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "BackboneSpec", "Stage", "build_backbone",
           "load_weights", "local_stage", "read_state_dict"]


def build_backbone(cfg) -> Backbone:
    return BACKBONES.get(cfg.name)(cfg).eval()


def local_stage(name: str) -> str:
    """The stride-16 stage that DELF local features of backbone ``name`` come from."""
    return BACKBONES.get(name).local_stage
