"""Typed configuration: what builds an extractor and an index.

Every config is a frozen dataclass validated once, in ``__post_init__``; it
round-trips through plain dicts (``to_dict``/``from_dict``) so that the exact
config is saved beside every index and checkpoint.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .core.errors import ConfigError
from .core.registry import BACKBONES, BACKENDS, HEADS
from .core.steptext import check_order, parse_steps

# The cosine from which a result counts as a match, for the 'default' preset's descriptors
# (imret.index.cutoff says how it was chosen).
DEFAULT_MIN_SCORE = 0.75

__all__ = ["BackboneConfig", "DEFAULT_MIN_SCORE", "ConfigError", "ExtractionConfig", "HeadConfig", "IndexConfig",
           "Preset", "WhiteningConfig", "check_ints", "check_params"]


def check_ints(cfg, names, least: int = 1, prefix: str = "") -> None:
    """ConfigError naming the first of ``names`` whose value on ``cfg`` is not an integer
    of at least ``least`` (True and False are not integers here: a flag given for a count
    is an error, not 1 or 0)."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            what = {0: "a non-negative integer", 1: "a positive integer"}.get(least, f"an integer >= {least}")
            raise ConfigError(f"{prefix}{name} must be {what}, got {v!r}")


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """ConfigError unless ``params`` are keyword parameters the head ``name`` accepts (and
    its ``validate``, where it has one, accepts their values)."""
    head = HEADS.get(name)
    sig = inspect.signature(head.__init__)
    allowed = [p for p in sig.parameters if p not in ("self", "in_channels")]
    unknown = set(params) - set(allowed)
    if unknown:
        raise ConfigError(f"head {name!r}: unknown parameters {sorted(unknown)}; allowed: {allowed}")
    validate = getattr(head, "validate", None)
    if validate is not None:
        try:
            validate(**params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"head {name!r}: {exc}") from None


class _Config:
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, _Config):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(fields)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {sorted(unknown)}; allowed: {sorted(fields)}")
        kwargs = {}
        for name, value in data.items():
            sub = _NESTED.get((cls.__name__, name))
            if sub is not None and isinstance(value, Mapping):
                value = sub.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class BackboneConfig(_Config):
    """``weights``: None takes the weights a registry package ships for this net
    (an error where none does), 'random' an untrained net (baselines only), else a
    local checkpoint path. ``stage``: None takes the last convolutional stage.
    ``tuned``: fine-tuned last stages laid over those weights (``imret.backbones.tuned``:
    the name of a file the package ships, or a path), None for the weights as they are."""

    name: str = "efficientnet-lite0"
    weights: str | None = None
    stage: str | None = None
    tuned: str | None = None

    def __post_init__(self):
        if self.name not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.name!r}; known: {', '.join(BACKBONES.names())}")
        if self.tuned is not None and (not isinstance(self.tuned, str) or not self.tuned):
            raise ConfigError(f"backbone tuned must be a non-empty file name or path, got {self.tuned!r}")
        if self.tuned is not None and self.weights == "random":
            raise ConfigError("backbone tuned stages were trained over the shipped weights, not over "
                              "weights='random'")

    def with_weights(self, weights: str) -> "BackboneConfig":
        """This backbone from another weights file. Tuned stages are dropped: they were
        trained over the shipped weights, and a checkpoint of a whole backbone holds its own."""
        return self.replace(weights=weights, tuned=None)


@dataclass(frozen=True)
class HeadConfig(_Config):
    """A pooling or attention head by registered name, with its keyword parameters."""

    name: str = "gem"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in HEADS:
            raise ConfigError(f"unknown head {self.name!r}; known: {', '.join(HEADS.names())}")
        object.__setattr__(self, "params", dict(self.params))
        check_params(self.name, self.params)


@dataclass(frozen=True)
class ExtractionConfig(_Config):
    """``max_size``: longest image side in pixels at scale 1. ``scales``: the image
    is resized by each factor and the per-scale descriptors are averaged."""

    max_size: int = 512
    scales: tuple[float, ...] = (1.0, 1 / math.sqrt(2), 0.5)
    min_size: int = 32

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales or any(not (0 < s <= 4) for s in self.scales):
            raise ConfigError(f"scales must be non-empty and in (0, 4], got {self.scales}")
        if not (32 <= int(self.max_size) <= 4096):
            raise ConfigError(f"max_size must be in [32, 4096], got {self.max_size}")
        if not (8 <= self.min_size <= self.max_size):
            raise ConfigError(f"min_size must be in [8, max_size], got {self.min_size}")


@dataclass(frozen=True)
class WhiteningConfig(_Config):
    """What the index learns on the indexed images at build time to map descriptors.

    ``kind``: 'pca' (PCA-whitening from ``min_images`` images on; from
    ``center_min_images`` up to that, centring only: the database mean is subtracted),
    'center' (centring only, from ``center_min_images`` images on) or 'none'. ``dim``:
    output dimension of PCA (None keeps all that the data supports). ``power``:
    eigenvalue exponent, 0.5 is full whitening, 0 a plain PCA rotation. Below
    ``min_images`` a covariance is too noisy to whiten by (it hurts), while the mean is
    already stable; below ``center_min_images`` the mean is mostly the photos themselves."""

    kind: str = "pca"
    dim: int | None = None
    power: float = 0.5
    min_images: int = 500
    center_min_images: int = 10

    def __post_init__(self):
        if self.kind not in ("none", "pca", "center"):
            raise ConfigError(f"whitening kind must be 'none', 'pca' or 'center', got {self.kind!r}")
        if self.dim is not None and self.dim < 1:
            raise ConfigError(f"whitening dim must be positive, got {self.dim}")
        if not (0 <= self.power <= 1):
            raise ConfigError(f"whitening power must be in [0, 1], got {self.power}")
        for name in ("min_images", "center_min_images"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 2):
                raise ConfigError(f"whitening {name} must be an integer >= 2, got {v!r}")

    def learned_from(self, n: int) -> str:
        """What is learned from ``n`` images: 'pca', 'center' or 'none'."""
        if self.kind == "pca" and n >= self.min_images:
            return "pca"
        if self.kind in ("pca", "center") and n >= self.center_min_images:
            return "center"
        return "none"


@dataclass(frozen=True)
class IndexConfig(_Config):
    """``kind``: 'flat' (exact inner product), 'hnsw', 'ivfpq', or 'auto' (by size)."""

    kind: str = "flat"
    hnsw_m: int = 32
    ef_search: int = 128
    ivf_lists: int | None = None
    pq_m: int | None = None
    nprobe: int = 16
    rescore: int | None = None  # candidates proposed for exact re-scoring (None: the backend's default)
    milvus_uri: str | None = None  # 'milvus': a Milvus Lite file or http://host:19530
    milvus_collection: str = "imret"

    def __post_init__(self):
        if self.kind != "auto" and self.kind not in BACKENDS:
            raise ConfigError(f"unknown index kind {self.kind!r}; known: auto, {', '.join(BACKENDS.names())}")
        # each backend checks the fields it reads (its typed Settings): the chosen one in full
        # ('auto' may pick any local one), every other one its bounds, so that a value no
        # backend could use is refused whichever reads it later (a tune after a change of kind)
        kinds = [self.kind] if self.kind != "auto" else [n for n, cls in BACKENDS.items() if not cls.remote]
        for name, cls in BACKENDS.items():
            if name in kinds:
                cls.Settings.of(self)
            else:
                cls.Settings.check_bounds(self)


@dataclass(frozen=True)
class Preset(_Config):
    """A named bundle: backbone + head + extraction + whitening + index, ``rerank``: the
    re-ranking steps a search runs unless told others (text as ``--rerank`` takes it,
    stored with every parameter spelt out; "" for none), and ``min_score``: the score from
    which a search calls a result a match ("no good match" below it), calibrated for the
    preset's descriptors and re-ranking (``benchmarks/bench_min_score.py``): a backbone or
    head trained for retrieval spreads cosines differently."""

    name: str = "default"
    description: str = ""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    whitening: WhiteningConfig = field(default_factory=WhiteningConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    min_score: float = DEFAULT_MIN_SCORE
    rerank: str = ""

    def __post_init__(self):
        if not isinstance(self.rerank, str):
            raise ConfigError(f"rerank is a re-ranking spec such as 'gfr' or 'dba,aqe' ('' for none), "
                              f"got {self.rerank!r}")
        steps = parse_steps(self.rerank) if self.rerank.strip() else ()
        check_order(steps)
        object.__setattr__(self, "rerank", ",".join(s.spec() for s in steps))
        if isinstance(self.min_score, bool) or not isinstance(self.min_score, (int, float)) \
                or not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"min_score is a cosine cut-off between 0 and 1, got {self.min_score!r}")
        object.__setattr__(self, "min_score", float(self.min_score))


_NESTED = {
    ("Preset", "backbone"): BackboneConfig,
    ("Preset", "head"): HeadConfig,
    ("Preset", "extraction"): ExtractionConfig,
    ("Preset", "whitening"): WhiteningConfig,
    ("Preset", "index"): IndexConfig,
}
