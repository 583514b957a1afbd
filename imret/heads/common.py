"""Pieces shared by the attention heads."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Attention weights are kept at or above EPS: softplus and sigmoid underflow to 0 in
# float32 for large negative inputs, and a zero weight everywhere would leave a
# descriptor (or a weighted mean) undefined.
EPS = 1e-6

# positive(SOFTPLUS_ONE) == 1: weights parametrised through ``positive`` start at 1,
# so an untrained attention module is the identity.
SOFTPLUS_ONE = math.log(math.expm1(1.0 - EPS))


def positive(z: torch.Tensor) -> torch.Tensor:
    return F.softplus(z) + EPS


def gate(z: torch.Tensor) -> torch.Tensor:
    """A weight in (0, 2) that is exactly 1 at z=0, where a zero-initialised layer starts."""
    return (2 - 2 * EPS) * torch.sigmoid(z) + EPS


def ones_through_softplus(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.full(shape, SOFTPLUS_ONE))


def identity_score(layer: nn.Conv2d | nn.Linear) -> nn.Module:
    """Zero the weights of the layer that scores attention and set its bias so that
    positive(score) == 1 for any input: the layers before it still learn, but the
    untrained module leaves its input unchanged."""
    nn.init.zeros_(layer.weight)
    nn.init.constant_(layer.bias, SOFTPLUS_ONE)
    return layer


class AttentionHead(nn.Module):
    """Base of heads with learnable parts: ``imret train`` trains them."""

    trainable = True

    def __init__(self, out_dim: int):
        super().__init__()
        self.out_dim = out_dim

    def input_independent_parameters(self) -> list[nn.Parameter]:
        """The weights that act the same on every input (ICSA's, IA's), which
        ``TrainConfig.attention_lr`` trains at their own rate; none by default."""
        return []


class Reweighting(nn.Module):
    """An attention module that multiplies its input by positive weights; subclasses
    define ``weights(x)``, broadcastable to x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)
