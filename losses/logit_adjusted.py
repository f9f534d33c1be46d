"""Losses that add the log of the training label prior to the logits before the softmax.

prior pi_c = n_c / sum_j n_j, the training class frequency. Both losses are cross-entropy of shifted
logits, so class weights (CB, DRW) and RSG's generated samples combine with them as with `ce`:

- logit-adjusted cross-entropy (Menon et al., ICLR 2021, Eq. 10): CE(z + tau * log pi, y), tau = 1;
- balanced softmax (Ren et al., NeurIPS 2020, Eq. 4): p_y = n_y e^{z_y} / sum_j n_j e^{z_j}, i.e.
  CE(z + log n, y). It is the logit-adjusted loss at tau = 1 (log n and log pi differ by a constant
  that the softmax cancels), as Menon et al. note; it is kept under its own name because papers
  report it as its own row. The meta sampler of Ren et al. (BALMS) is not part of it.

At evaluation the logits are used as they are (the adjustment is the loss's, not the model's).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.registry import Setting
from losses.registry import LOSSES


def log_prior(class_counts: Sequence[int]) -> torch.Tensor:
    """float32 (C,): log(n_c / sum_j n_j). A class without training images gets log 0 = -inf,
    which would make its logit -inf everywhere: refused by the builders below."""
    counts = np.asarray(class_counts, dtype=np.float64)
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def check_counts(class_counts: Sequence[int], loss_name: str) -> None:
    empty = [c for c, n in enumerate(class_counts) if n <= 0]
    if empty:
        raise UserError(f"key 'loss.name': {loss_name} needs every class in the training set (log of its "
                        f"prior); classes {empty[:10]} have no training image")


class ShiftedCrossEntropy(nn.Module):
    """CE(z + shift, y) with a fixed per-class shift (C,); weights as in `F.cross_entropy`."""

    def __init__(self, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, logits, targets, class_weights: Optional[torch.Tensor] = None):
        return F.cross_entropy(logits + self.shift.to(logits.dtype), targets, weight=class_weights)


class LogitAdjustedLoss(ShiftedCrossEntropy):
    """Menon et al. 2021, Eq. 10: shift = tau * log pi."""

    def __init__(self, class_counts: Sequence[int], tau: float = 1.0):
        super().__init__(tau * log_prior(class_counts))
        self.tau = tau


class BalancedSoftmaxLoss(ShiftedCrossEntropy):
    """Ren et al. 2020, Eq. 4: shift = log n_c."""

    def __init__(self, class_counts: Sequence[int]):
        super().__init__(torch.tensor(np.log(np.asarray(class_counts, dtype=np.float64)), dtype=torch.float32))


@LOSSES.register("logit_adjusted", help="CE of z + tau log(prior) (Menon et al. 2021)",
                 settings={"logit_adjust_tau": Setting(1.0, "tau of z + tau * log(prior), prior = n_c / n")})
def build_logit_adjusted(cfg, class_counts):
    check_counts(class_counts, "logit_adjusted")
    return LogitAdjustedLoss(class_counts, cfg.loss.logit_adjust_tau)


@LOSSES.register("balanced_softmax", help="CE of z + log(n_c) (Ren et al. 2020)")
def build_balanced_softmax(cfg, class_counts):
    check_counts(class_counts, "balanced_softmax")
    return BalancedSoftmaxLoss(class_counts)
