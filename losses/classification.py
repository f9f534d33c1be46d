"""Classification losses L_cls: cross-entropy (ERM), focal, AM-softmax and LDAM.

Each takes logits (N, C), targets (N,) and optional class weights (C,); with weights every loss is
the weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}, as `F.cross_entropy` computes it, so that
class-balanced weights (CB, DRW) combine with each loss the same way.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.registry import Setting
from losses.registry import LOSSES


class CrossEntropy(nn.Module):
    def forward(self, logits, targets, class_weights: Optional[torch.Tensor] = None):
        return F.cross_entropy(logits, targets, weight=class_weights)


def weighted_mean(per_sample: torch.Tensor, targets, class_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """sum_i w_{y_i} l_i / sum_i w_{y_i}; the plain mean without weights."""
    if class_weights is None:
        return per_sample.mean()
    weights = class_weights.to(per_sample.dtype)[targets]
    return (weights * per_sample).sum() / weights.sum()


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) on the softmax: l_i = (1 - p_t)^gamma * (-log p_t).

    gamma = 0 is cross-entropy. p_t is always the model's probability of the target class; class
    weights only weight the per-sample terms (module docstring). The authors' code (from Cao et al.
    2019) instead takes p = exp(-w_y CE) and a plain mean over samples; both agree without weights.
    """

    def __init__(self, gamma: float = 1.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits, targets, class_weights: Optional[torch.Tensor] = None):
        log_p = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)   # (N,) log p_t
        # 1 - p_t as -expm1(log p_t): exact near p_t = 1. The floor keeps the gradient of
        # (1 - p_t)^gamma finite there when gamma < 1; it changes no value above 1e-12.
        modulator = (-torch.expm1(log_p)).clamp_min(1e-12).pow(self.gamma)
        return weighted_mean(modulator * -log_p, targets, class_weights)


def margin_cross_entropy(cosines, targets, target_margins, scale: float,
                         class_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of s * (cos theta_j - m_i [j = y_i]): the target's cosine lowered by its margin.

    cosines (N, C) in [-1, 1] from a cosine head; target_margins (N,), the margin of each sample.
    """
    shifted = cosines.scatter_add(1, targets[:, None], -target_margins.to(cosines.dtype)[:, None])
    return F.cross_entropy(scale * shifted, targets, weight=class_weights)


class AMSoftmaxLoss(nn.Module):
    """Additive-margin softmax (Wang et al. 2018): one margin m for every class, then scale s.

    With DRW it is the M-DRW baseline of Cao et al. 2019 (Tables 1 and 6).
    """

    def __init__(self, margin: float = 0.35, scale: float = 30.0):
        super().__init__()
        self.margin = margin
        self.scale = scale

    def forward(self, logits, targets, class_weights: Optional[torch.Tensor] = None):
        margins = logits.new_full(targets.shape, self.margin)
        return margin_cross_entropy(logits, targets, margins, self.scale, class_weights)


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
        return margin_cross_entropy(logits, targets, self.margins[targets], self.scale, class_weights)


# Each loss declares the settings it reads (core.registry.Setting); LDAM and AM both read
# max_margin and scale. Registered in this order so that a written config lists loss.max_margin,
# loss.scale, loss.focal_gamma in the order configs have always had.
SCALE = Setting(30.0, "logit scale s", valid=lambda scale: scale > 0, requirement="must be positive")


@LOSSES.register("ldam", head="cosine", help="label-distribution-aware margin loss (Cao et al. 2019)",
                 settings={"max_margin": Setting(0.5, "the largest margin max_m, that of the rarest class "
                                                      "(m_c proportional to n_c^(-1/4))"),
                           "scale": SCALE})
def build_ldam(cfg, class_counts):
    return LDAMLoss(class_counts, cfg.loss.max_margin, cfg.loss.scale)


@LOSSES.register("am", head="cosine", help="additive-margin softmax (Wang et al. 2018); with loss.reweight "
                 "drw it is M-DRW", settings={"max_margin": Setting(0.5, "the margin m of every class (the "
                                                                         "M-DRW configs: 0.35)"),
                                              "scale": SCALE})
def build_am_softmax(cfg, class_counts):
    return AMSoftmaxLoss(cfg.loss.max_margin, cfg.loss.scale)


@LOSSES.register("focal", help="focal loss (Lin et al. 2017)",
                 settings={"focal_gamma": Setting(1.0, "gamma of (1 - p_t)^gamma (1 in the authors' code)",
                                                  valid=lambda gamma: gamma >= 0, requirement="must be >= 0")})
def build_focal(cfg, class_counts):
    return FocalLoss(cfg.loss.focal_gamma)


@LOSSES.register("ce", help="cross-entropy (ERM)")
def build_cross_entropy(cfg, class_counts):
    return CrossEntropy()
