"""``LocalConfig``: how local features are extracted, reduced and stored (saved with them)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config import BackboneConfig, ConfigError, _Config, check_ints

# The scale pyramid of DELF: 0.25 to 2.0 by factors of √2.
DELF_SCALES = tuple(round(2 ** (k / 2), 4) for k in range(-4, 3))

@dataclass(frozen=True)
class LocalConfig(_Config):
    """``backbone``: the net and the stage the dense features come from (stage None: the
    stride-16 stage its ``BackboneSpec`` declares as ``local_stage``). ``max_size``: longest side of the image at
    scale 1 (``upscale`` False: scale 1 is the photo's own resolution, reduced to
    ``max_size`` only when larger, as DELF does); ``scales``: the pyramid. ``max_features``: features kept per image, the
    highest attention scores first; ``score_threshold``: none below it is kept.
    ``nms_iou``: a feature is dropped as a duplicate when its cell (its map location's
    stride-sized footprint in the image) overlaps a better one's, at another scale, by
    more than this IoU (1 keeps all). ``pca_dim``: descriptors are L2-normalised, reduced
    by PCA learned on the database to this size, and L2-normalised again.
    ``storage``: 'pq' (product quantisation, ``pq_m`` bytes per descriptor), 'float16'
    or 'float32'. ``attention_hidden``: width of the attention network's first layer.
    ``verify``: the matching and verification recipe of these features
    (``imret.local.verify.VERIFY_CONFIGS``: 'delf' or 'ratio')."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    max_size: int = 512
    scales: tuple[float, ...] = DELF_SCALES
    max_features: int = 1000
    score_threshold: float = 0.0
    nms_iou: float = 0.45
    pca_dim: int = 40
    pca_images: int = 200
    storage: str = "pq"
    pq_m: int = 20
    attention_hidden: int = 512
    # defaults of the two fields below keep files saved before they existed as they were
    upscale: bool = True
    verify: str = "ratio"

    def __post_init__(self):
        if self.backbone.stage is None:
            from ..backbones import local_stage

            try:
                stage = local_stage(self.backbone.name)
            except KeyError as exc:
                raise ConfigError(f"local features: {exc.args[0]}") from None
            object.__setattr__(self, "backbone", self.backbone.replace(stage=stage))
        object.__setattr__(self, "scales", tuple(sorted(float(s) for s in self.scales)))
        if not self.scales or any(not (0 < s <= 4) or not math.isfinite(s) for s in self.scales):
            raise ConfigError(f"scales must be non-empty and in (0, 4], got {self.scales}")
        if not (32 <= int(self.max_size) <= 4096):
            raise ConfigError(f"max_size must be in [32, 4096], got {self.max_size}")
        check_ints(self, ("max_features",))
        if not (0 < self.nms_iou <= 1):
            raise ConfigError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        check_ints(self, ("pca_dim",), least=2)
        check_ints(self, ("pca_images",))
        if self.storage not in ("pq", "float16", "float32"):
            raise ConfigError(f"storage must be 'pq', 'float16' or 'float32', got {self.storage!r}")
        if self.storage == "pq" and not (isinstance(self.pq_m, int) and self.pq_m >= 1 and self.pca_dim % self.pq_m == 0):
            raise ConfigError(f"pq_m must divide pca_dim={self.pca_dim}, got {self.pq_m!r}")
        if not (isinstance(self.attention_hidden, int) and self.attention_hidden >= 2):
            raise ConfigError(f"attention_hidden must be an integer >= 2, got {self.attention_hidden!r}")
        if not isinstance(self.upscale, bool):
            raise ConfigError(f"upscale must be true or false, got {self.upscale!r}")
        from .verify import VERIFY_CONFIGS

        if self.verify not in VERIFY_CONFIGS:
            raise ConfigError(f"verify must be one of {', '.join(VERIFY_CONFIGS)}, got {self.verify!r}")

    def base_scale(self, size: tuple[int, int]) -> float:
        """The factor from an image of ``size`` (h, w) to its pyramid's scale 1."""
        from .verify import frame_scale

        return frame_scale(size, self.max_size, self.upscale)

    @property
    def verify_config(self):
        """The ``VerifyConfig`` these features are matched and verified by."""
        from .verify import get_verify_config

        return get_verify_config(self.verify)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LocalConfig":
        data = dict(data) if isinstance(data, Mapping) else data
        if isinstance(data, dict) and isinstance(data.get("backbone"), Mapping):
            data["backbone"] = BackboneConfig.from_dict(data["backbone"])
        return super().from_dict(data)


# Named local-feature configurations (``--local NAME``): DELF as the paper runs it (scale 1 =
# the photo's own pixels up to 1024 px, distance matching, affine RANSAC, score = inliers);
# 'delf-512', the same pyramid at a fixed 512 px with imret's ratio + mutual matching (what
# 'delf' was before); and a lighter one (3 scales at 384 px: 8× fewer pixels through the
# backbone than 'delf-512') for CPU-bound collections. 'delf-96': 'delf' with its descriptors
# reduced to 96 of Lite0's 112 channels instead of the paper's 40 (the paper's 40 were of
# ResNet-50's 1024), stored as float16: on paris6k-sub it lifted --mode local from 35.1 to
# 50.8 Hard mAP and global + sv from 42.1 to 48.7 (benchmarks/bench_local.py; README), at
# 198 KiB of features per image instead of 30.
LOCAL_CONFIGS = {
    "delf": LocalConfig(max_size=1024, upscale=False, verify="delf"),
    "delf-512": LocalConfig(),
    "fast": LocalConfig(max_size=384, scales=(0.5, 0.7071, 1.0)),
    "delf-96": LocalConfig(max_size=1024, upscale=False, verify="delf", pca_dim=96, storage="float16"),
}


def get_local_config(name: str) -> LocalConfig:
    if name not in LOCAL_CONFIGS:
        raise ConfigError(f"unknown local-feature configuration {name!r}; known: {', '.join(LOCAL_CONFIGS)}")
    return LOCAL_CONFIGS[name]
