"""Training the attention network by the DELF recipe (Noh et al. 2017).

Features of a frozen backbone are L2-normalised, pooled by an attention-weighted mean
over locations, and classified by a linear layer into instance labels; cross-entropy
trains the attention network (and the classifier, which is then thrown away). The
data options are those of ``imret train``: ``unsupervised`` (every photo is its own
instance, seen through strong augmentations), ``instances`` (a folder per instance)
or ``pairs``. Training views and their feature maps come from
``imret.training.bank.ViewBank``, made once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ExtractionConfig, HeadConfig, Preset, WhiteningConfig, _Config, check_ints
from ..core.errors import ImretError
from .attention import Attention
from .config import LocalConfig

FORMAT = "imret-attention/1"


@dataclass(frozen=True)
class AttentionTrainConfig(_Config):
    """``mode``: how the data is read (``imret.training.data.SOURCES``). ``views``: per image,
    the photo and views−1 strong augmentations. ``max_size``: longest side of the views."""

    mode: str = "unsupervised"
    steps: int = 200
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    views: int = 4
    max_size: int = 384
    seed: int = 0

    def __post_init__(self):
        from ..training.data import SOURCES

        if self.mode not in SOURCES:
            raise ConfigError(f"unknown training mode {self.mode!r}; known: {', '.join(SOURCES.names())}")
        check_ints(self, ("steps", "batch"))
        check_ints(self, ("views",), least=2)
        if not (isinstance(self.max_size, int) and 32 <= self.max_size <= 4096):
            raise ConfigError(f"max_size must be an integer in [32, 4096], got {self.max_size!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ConfigError(f"lr must be positive and weight_decay non-negative, got {self.lr}, {self.weight_decay}")


@dataclass
class AttentionTraining:
    """What ``train_attention`` returns: the attention state, the mean loss and accuracy of
    every step, and the files skipped."""

    state: dict[str, torch.Tensor]
    losses: list[float]
    accuracies: list[float]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def attention_pool(att: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    """1×C×h×w features → C: the attention-weighted mean of the L2-normalised features."""
    return (att(fmap) * F.normalize(fmap, dim=1)).mean((2, 3))[0]


def view_bank(config: LocalConfig, cfg: AttentionTrainConfig, data: str, device=None, progress: bool = False,
              on_error: Callable[[str, str], None] | None = None):
    """The training views of ``data`` and their feature maps at ``config``'s stage."""
    from ..extractor import Extractor
    from ..training.bank import ViewBank
    from ..training.data import SOURCES

    paths, labels = SOURCES.get(cfg.mode)(data)
    preset = Preset(name="local-attention", backbone=config.backbone, head=HeadConfig("gem"),
                    extraction=ExtractionConfig(max_size=cfg.max_size, scales=(1.0,)),
                    whitening=WhiteningConfig(kind="none"))
    return ViewBank(Extractor(preset, device=device), paths, labels, cfg.views, cfg.seed, cache=True,
                    progress=progress, on_error=on_error)


def train_attention(data: str, config: LocalConfig | None = None, cfg: AttentionTrainConfig | None = None,
                    device=None, progress: bool = False, bank=None,
                    on_error: Callable[[str, str], None] | None = None) -> AttentionTraining:
    """Train the attention network of ``config`` on ``data`` (backbone frozen), starting
    from its feature-norm initialisation."""
    config = config or LocalConfig()
    cfg = cfg or AttentionTrainConfig()
    torch.manual_seed(cfg.seed)
    bank = bank if bank is not None else view_bank(config, cfg, data, device, progress, on_error)
    if bank.n_labels < 2:
        raise ImretError(f"{data}: training needs at least two instances, found {bank.n_labels}")
    dev = bank.extractor.device
    att = Attention(bank.extractor.backbone.out_channels, config.attention_hidden).to(dev)
    classifier = nn.Linear(att.conv1.in_channels, bank.n_labels).to(dev)
    opt = torch.optim.Adam(list(att.parameters()) + list(classifier.parameters()), lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    labels = torch.as_tensor(bank.labels, device=dev)
    losses, accs = [], []
    rng = np.random.default_rng(cfg.seed)
    it = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="attention", unit="step", dynamic_ncols=True)
    att.train()
    for _ in it:
        ks = rng.choice(len(bank), size=min(cfg.batch, len(bank)), replace=False)
        pooled = torch.stack([attention_pool(att, m) for m in bank.maps(ks)])
        logits = classifier(pooled)
        target = labels[torch.as_tensor(ks, device=dev)]
        loss = F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        accs.append(float((logits.argmax(1) == target).float().mean()))
    state = {k: v.detach().cpu() for k, v in att.state_dict().items()}
    return AttentionTraining(state, losses, accs, list(bank.skipped))


def save_attention(path: str | os.PathLike, state: dict[str, torch.Tensor], config: LocalConfig,
                   cfg: AttentionTrainConfig, losses: list[float], data: dict | None = None,
                   half: bool = False) -> None:
    """Write a trained attention network (tensors and JSON-able values only: no pickle of code),
    atomically, with the digest of its weights and, when given, what it was trained on;
    ``half``: float16 weights (the shipped file)."""
    from ..io.torchfile import save_weights_file

    fields = {"local": config.to_dict(), "train": cfg.to_dict(), "data": dict(data or {}),
              "losses": [float(v) for v in losses]}
    save_weights_file(path, FORMAT, state, fields, half)


def shipped_attention(name: str) -> str | None:
    """The package's trained attention file for the local config named so, if it ships one
    (``imret/local/weights/NAME-attention.pt``, made by ``benchmarks/train_shipped.py``)."""
    from ..core.paths import package_file

    return package_file("imret.local.weights", f"{name}-attention.pt")


SHIPPED_ATTENTION = "delf"  # the one attention the package trains and ships


def shipped_attention_state(config: LocalConfig) -> dict[str, torch.Tensor] | None:
    """The shipped trained attention when it fits ``config``: it scores the features of one
    backbone stage at one width, so it serves any pyramid and matching recipe on them."""
    path = shipped_attention(SHIPPED_ATTENTION)
    if path is None:
        return None
    trained_for, state = load_attention(path)
    same = (trained_for.backbone, trained_for.attention_hidden) == (config.backbone, config.attention_hidden)
    return state if same else None


def load_attention(path: str | os.PathLike) -> tuple[LocalConfig, dict[str, torch.Tensor]]:
    """(the local config it was trained for, the attention state) of a file ``save_attention``
    wrote; a foreign, broken or altered one is a ``WeightsError``. Files written before
    attention files carried a digest (2026-12-01) are read without one."""
    from ..core.errors import WeightsError
    from ..io.torchfile import load_weights_file

    path = os.fspath(path)
    obj = load_weights_file(path, FORMAT, "attention", "imret attention file",
                            f"not an imret attention file (format {FORMAT})", required=("local",),
                            digest_required=False)
    try:
        return LocalConfig.from_dict(obj["local"]), dict(obj["state"])
    except ConfigError as exc:
        raise WeightsError(path, f"imret attention file for a local configuration this imret cannot build: {exc}") from None
