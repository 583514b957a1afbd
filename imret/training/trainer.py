"""The training loop of ``imret train``.

Each step draws ``batch`` anchors among the augmented training views, a positive
for each (the photo of an image of the same instance) and its hardest negatives
(the photos of ``negatives`` other instances most similar to it in a pool of
descriptors of every view, recomputed every ``refresh_every`` steps), and takes
one Adam step on the loss.
All randomness of step s comes from (seed, s), and the checkpoint holds the pool,
so a resumed run repeats the steps an uninterrupted one takes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..config import ConfigError, Preset
from ..core.errors import ImretError
from ..extractor import Extractor
from ..heads import build_head
from .bank import ViewBank, describe
from .checkpoint import Checkpoint, load_checkpoint, make_meta, save_checkpoint
from .config import TrainConfig
from .data import SOURCES
from .losses import LOSSES
from .mine import Mined, mine_bank
from .unfreeze import unfreeze_last

# Config fields a resumed run may change: they do not alter the steps taken.
_RESUMABLE_CHANGES = ("steps", "checkpoint_every")


@dataclass
class TrainResult:
    preset: Preset
    head_state: dict[str, torch.Tensor]
    losses: list[float]
    step: int
    path: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mined: Mined | None = None
    # the head before its first step (its untrained or given start); None for a resumed run,
    # whose checkpoint does not keep it
    start_state: dict[str, torch.Tensor] | None = None


def data_start(head: torch.nn.Module, bank: ViewBank, seed: int, cluster_photos: Sequence[int] | None = None) -> None:
    """Set ``head``'s data-dependent start (``init_from_features``: NetVLAD's PCA and k-means)
    from each of ``bank``'s photos itself (view 0); ``cluster_photos``: the images (indices
    into ``bank.paths``) whose photos alone fit the clusters."""
    with torch.no_grad():
        maps = bank.maps(bank.photo_items())
        if cluster_photos is None:
            head.init_from_features(maps, seed=seed)
        else:
            head.init_from_features(maps, seed=seed, cluster_maps=[maps[i] for i in cluster_photos])


def make_optimizer(cfg: TrainConfig, head: torch.nn.Module, others: Sequence[torch.nn.Parameter]) -> torch.optim.Adam:
    """Adam over ``head``'s trainable parameters and ``others`` at ``cfg.lr``; with
    ``cfg.attention_lr``, the head's input-independent weights in a group of their own at
    that rate."""
    params = [p for p in head.parameters() if p.requires_grad]
    own = [p for p in getattr(head, "input_independent_parameters", list)() if p.requires_grad]
    if cfg.attention_lr is None or not own:
        groups = [{"params": params + list(others)}]
    else:
        rest = [p for p in params if all(p is not q for q in own)]
        groups = [{"params": rest + list(others)}, {"params": own, "lr": cfg.attention_lr}]
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def state_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU copy of a model's ``state``, unchanged by the steps that follow."""
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def training_extractor(preset: Preset, cfg: TrainConfig, device=None) -> Extractor:
    """An extractor for ``preset``'s backbone at the training size, one scale."""
    ex = preset.extraction.replace(max_size=cfg.max_size, scales=(1.0,), min_size=min(preset.extraction.min_size,
                                                                                     cfg.max_size))
    return Extractor(preset.replace(extraction=ex), device=device)


def build_bank(preset: Preset, cfg: TrainConfig, data: str, device=None, progress: bool = False,
               dtype: torch.dtype = torch.float16, on_error: Callable[[str, str], None] | None = None) -> ViewBank:
    """The training views of ``data`` read as ``cfg.mode`` says."""
    paths, labels = SOURCES.get(cfg.mode)(data)
    return ViewBank(training_extractor(preset, cfg, device), paths, labels, cfg.views, cfg.seed,
                    train_blocks=cfg.train_blocks, dtype=dtype, progress=progress, on_error=on_error)


def _check_resume(ck: Checkpoint, preset: Preset, cfg: TrainConfig, data: str | None, path: str) -> None:
    def strip(d):
        return {k: v for k, v in d.items() if k not in _RESUMABLE_CHANGES}

    if Preset.from_dict(ck.meta["preset"]) != preset:
        raise ImretError(f"{path}: was trained with preset {ck.meta['preset']['name']!r} "
                         f"({ck.meta['preset']['head']}); resume with the same preset")
    then = TrainConfig.from_dict(ck.meta["train"]).to_dict()  # fields added since: their defaults
    if strip(then) != strip(cfg.to_dict()):
        diff = {k: (then.get(k), v) for k, v in strip(cfg.to_dict()).items() if then.get(k) != v}
        raise ImretError(f"{path}: training settings differ from the checkpoint's (checkpoint, now): {diff}")
    where = data and os.path.abspath(data)
    if ck.meta["data"] != where:
        raise ImretError(f"{path}: was trained on {ck.meta['data']}, not {where}")


class _Miner:
    """Tuples (anchor, positive, hard negatives…) shaped like a search: the anchor is
    an augmented view (a query), the positive the photo itself of an image of the
    same instance, the negatives the photos (view 0) of other instances that the
    anchor's pool descriptor finds most similar, one per instance."""

    def __init__(self, items: list[tuple[int, int]], labels: list[int], negatives: int):
        self.labels = np.asarray(labels)
        views = np.asarray([v for _, v in items])
        self.anchors = np.flatnonzero(views > 0)
        self.photos = np.flatnonzero(views == 0)
        self.negatives = min(negatives, len(set(labels)) - 1)

    def tuples(self, pool: torch.Tensor, rng: np.random.Generator, batch: int) -> list[list[int]]:
        anchors = rng.choice(self.anchors, size=min(batch, len(self.anchors)), replace=False)
        photo_labels = self.labels[self.photos]
        sims = (pool[torch.as_tensor(anchors, device=pool.device)] @ pool[torch.as_tensor(
            self.photos, device=pool.device)].T).cpu().numpy()
        out = []
        for a, s in zip(anchors, sims):
            same = photo_labels == self.labels[a]
            positive = int(rng.choice(self.photos[same]))
            order = np.argsort(-s, kind="stable")
            order = order[~same[order]]
            _, first = np.unique(photo_labels[order], return_index=True)  # the best photo of each instance
            hardest = self.photos[order[np.sort(first)][: self.negatives]]
            out.append([int(a), positive, *map(int, hardest)])
        return out


def train(preset: Preset, cfg: TrainConfig, data: str | None, out: str | None = None, *, device=None,
          bank: ViewBank | None = None, resume: bool = False, progress: bool = False,
          on_error: Callable[[str, str], None] | None = None, start: dict | None = None,
          local_features: list | None = None) -> TrainResult:
    """Train ``preset``'s head (and ``cfg.train_blocks`` backbone stages) on ``data``.

    ``out``: checkpoint file, written every ``cfg.checkpoint_every`` steps and at the
    end; with ``resume`` an existing one is continued. ``bank``: training views
    already made for this backbone and config (the ablation shares one); ``data``
    may then be None. ``start``: a head state to start from (e.g. a trained head being
    adapted) instead of the untrained head and its data-dependent start. ``local_features``:
    with ``cfg.mine``, the local features of ``bank.paths`` when already extracted."""
    ck = None
    if out is not None and os.path.exists(out):
        if not resume:
            raise ImretError(f"{out} exists: pass --resume to continue that training, or name another --out")
        ck = load_checkpoint(out)
        _check_resume(ck, preset, cfg, data, out)
    torch.manual_seed(cfg.seed)
    if bank is None:
        if data is None:
            raise ValueError("train: name the data, or pass a bank of views made from it")
        bank = build_bank(preset, cfg, data, device, progress=progress, on_error=on_error)
    elif (bank.views, bank.seed, bank.extractor.preset.extraction.max_size) != (cfg.views, cfg.seed, cfg.max_size) \
            or (bank.cache and bank.train_blocks != cfg.train_blocks) \
            or bank.extractor.preset.backbone != preset.backbone:
        raise ValueError("the view bank was made for another backbone or other training settings")
    if bank.n_labels < 2:
        raise ImretError(f"{data}: training needs at least two instances, found {bank.n_labels}")
    device = bank.extractor.device
    backbone = bank.extractor.backbone
    backbone_params = unfreeze_last(backbone, cfg.train_blocks)
    head = build_head(preset.head, backbone.out_channels).to(device)
    head_params = [p for p in head.parameters() if p.requires_grad]
    if not head_params and not backbone_params:
        raise ConfigError(f"head {preset.head.name!r} has nothing to train; pick an attention head "
                          "or unfreeze backbone stages (--train-blocks)")
    if ck is not None or start is not None:
        head.load_state_dict(ck.head if ck is not None else start)
        if ck is not None and ck.backbone is not None:
            backbone.net.load_state_dict(ck.backbone)
    elif hasattr(head, "init_from_features"):
        data_start(head, bank, cfg.seed)
    start_state = None if ck is not None else state_copy(head.state_dict())
    mined = None
    if cfg.mine:
        if ck is not None and "mined" in ck.meta:  # the links of the interrupted run: its steps saw them
            saved = ck.meta["mined"]
            if len(saved["labels"]) != len(bank.paths):
                raise ImretError(f"{out}: was trained on {len(saved['labels'])} photos, {data} now holds "
                                 f"{len(bank.paths)} that load")
            bank = bank.relabel(saved["labels"])
            mined = Mined.of(bank, saved["links"])
        else:
            bank, mined = mine_bank(bank, head, progress=progress, features=local_features)
    labels = torch.tensor(bank.labels, device=device)
    loss_fn = LOSSES.get(cfg.loss)(cfg.margin, bank.n_labels, head.out_dim).to(device)
    if ck is not None:
        loss_fn.load_state_dict(ck.loss)
    optimizer = make_optimizer(cfg, head, backbone_params + list(loss_fn.parameters()))
    if ck is not None:
        optimizer.load_state_dict(ck.meta["optimizer"])
    start = ck.step if ck is not None else 0
    losses = list(ck.meta["losses"]) if ck is not None else []
    pool = ck.pool.to(device) if ck is not None and ck.pool is not None else None
    miner = _Miner(bank.items, bank.labels, cfg.negatives)

    @torch.no_grad()
    def refresh() -> torch.Tensor:
        return bank.describe(head, list(range(len(bank))))

    def save(step: int) -> None:
        if out is None:
            return
        meta = make_meta(preset, cfg, data, step, losses, optimizer.state_dict())
        if mined is not None:
            meta["mined"] = {"labels": list(mined.labels), "links": mined.links}
        save_checkpoint(out, Checkpoint(
            meta,
            {k: v.detach().cpu() for k, v in head.state_dict().items()},
            {k: v.detach().cpu() for k, v in loss_fn.state_dict().items()},
            pool.cpu() if pool is not None else None,
            {k: v.detach().cpu() for k, v in backbone.net.state_dict().items()} if backbone_params else None))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=min(start, cfg.steps), unit="step", desc="training", dynamic_ncols=True)
    head.train()
    for step in range(start, cfg.steps):
        if pool is None or step % cfg.refresh_every == 0:
            fresh = pool is None and ck is None
            head.eval()
            pool = refresh()
            head.train()
            if fresh:
                loss_fn.prepare(pool, labels)
        tuples = miner.tuples(pool, np.random.default_rng([cfg.seed, 1, step]), cfg.batch)
        ks = [k for t in tuples for k in t]
        desc = describe(head, bank.maps(ks)).view(len(tuples), -1, head.out_dim)
        loss = loss_fn(desc, labels[torch.as_tensor(ks, device=device)].view(len(tuples), -1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save(step + 1)
    if bar:
        bar.close()
    head.eval()
    return TrainResult(preset, state_copy(head.state_dict()), losses,
                       max(start, cfg.steps), out, list(bank.skipped), mined, start_state)
