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
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

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
    if kind == "cosine":
        return CosineHead(in_features, num_classes)
    head = LinearHead(in_features, num_classes)
    nn.init.kaiming_normal_(head.weight)
    return head
