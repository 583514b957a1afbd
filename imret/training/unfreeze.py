"""Which backbone parameters train: none by default, or those of the last N stages.

The groups are the backbone's own (``Backbone.param_groups``: forward order up to the
stage it extracts from, the stem first), so this file knows no network.
"""
from __future__ import annotations

from torch import nn

from ..config import ConfigError


def backbone_stages(backbone) -> list[list[nn.Module]]:
    return backbone.param_groups()


def unfreeze_last(backbone, n: int) -> list[nn.Parameter]:
    """Freeze ``backbone`` but for its last ``n`` stages; return the parameters that train."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    if n == 0:
        return []
    stages = backbone_stages(backbone)
    if n > len(stages):
        raise ConfigError(f"train_blocks={n}, but backbone {type(backbone.net).__name__} has {len(stages)} stages "
                          f"up to {backbone.stage!r}")
    params = [p for group in stages[-n:] for m in group for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params
