"""Classifier heads on the backbone's flat features (N, D) -> logits (N, num_classes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearHead(nn.Linear):
    pass


class CosineHead(nn.Module):
    """Cosine similarity between the normalized feature and each normalized class weight.

    Logits lie in [-1, 1]; LDAM subtracts its margins and scales by s (Cao et al. 2019).
    Each class's weight starts as uniform(-1, 1) draws scaled to norm 1, as the NormedLinear of
    LDAM-DRW's and RSG's code starts it. The forward pass sees only the direction, but the norm
    sets the step: the gradient of a normalised weight, and so its change per step relative to
    it, shrinks as 1 / ||w||^2, so a smaller start would learn the head several times faster.
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            self.weight.div_(self.weight.norm(dim=1, keepdim=True))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).t()


class ScaledHead(nn.Module):
    """Learnable weight scaling (LWS, Kang et al. 2020): logits_c = s_c * head(x)_c.

    The wrapped head keeps its (first-stage) weights; only the scales s (C,), initialised to 1,
    are meant to train (engine/stage.py freezes the rest).
    """

    def __init__(self, head: nn.Module, num_classes: int):
        super().__init__()
        self.head = head
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features) * self.scales


def build_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    """A cosine head, or a linear one with torch's default start (the backbone's `init_linear_head`
    gives it the authors' start for that network)."""
    if kind == "cosine":
        return CosineHead(in_features, num_classes)
    return LinearHead(in_features, num_classes)
