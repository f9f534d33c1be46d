"""Classification losses L_cls: cross-entropy (ERM) and LDAM.

Each takes logits (N, C), targets (N,) and optional class weights (C,); with weights the loss is
the weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}, as `F.cross_entropy` computes it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from losses.registry import LOSSES


class CrossEntropy(nn.Module):
    def forward(self, logits, targets, class_weights: Optional[torch.Tensor] = None):
        return F.cross_entropy(logits, targets, weight=class_weights)


def ldam_margins(class_counts: Sequence[int], max_margin: float) -> np.ndarray:
    """m_c proportional to n_c^(-1/4), scaled so that the largest margin is max_margin."""
    raw = 1.0 / np.power(np.asarray(class_counts, dtype=np.float64), 0.25)
    return raw * (max_margin / raw.max())


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss (Cao et al. 2019) on cosine logits.

    The target logit is lowered by its class margin m_y, then all logits are scaled by s.
    """

    def __init__(self, class_counts: Sequence[int], max_margin: float = 0.5, scale: float = 30.0):
        super().__init__()
        margins = torch.tensor(ldam_margins(class_counts, max_margin), dtype=torch.float32)
        self.register_buffer("margins", margins, persistent=False)
        self.scale = scale

    def forward(self, logits, targets, class_weights: Optional[torch.Tensor] = None):
        margin = self.margins.to(logits.dtype)[targets]                        # (N,)
        shifted = logits.scatter_add(1, targets[:, None], -margin[:, None])
        return F.cross_entropy(self.scale * shifted, targets, weight=class_weights)


@LOSSES.register("ce")
def build_cross_entropy(cfg, class_counts):
    return CrossEntropy()


@LOSSES.register("ldam")
def build_ldam(cfg, class_counts):
    return LDAMLoss(class_counts, cfg.loss.max_margin, cfg.loss.scale)
