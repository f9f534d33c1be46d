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


def build_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    if kind == "cosine":
        return CosineHead(in_features, num_classes)
    head = LinearHead(in_features, num_classes)
    nn.init.kaiming_normal_(head.weight)
    return head
