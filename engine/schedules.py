"""Schedules as pure functions of the epoch index (0-based): learning rate and class weights.

The RSG phase is the third schedule; it lives in the module itself (`RSG.set_epoch`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from losses.weights import class_balanced_weights


def learning_rate(epoch: int, optim_cfg) -> float:
    """Linear warm-up to the base lr, then multiplied by `decay` at each milestone passed.

    CIFAR recipe: lr * (epoch + 1) / 5 for epochs 0-4; 0.1 until 159; 0.001 from 160; 1e-5 from 180.
    """
    base = optim_cfg.lr
    if epoch < optim_cfg.warmup_epochs:
        return base * (epoch + 1) / optim_cfg.warmup_epochs
    passed = sum(1 for milestone in optim_cfg.milestones if epoch >= milestone)
    return base * optim_cfg.decay ** passed


def class_weights(epoch: int, class_counts: Sequence[int], loss_cfg) -> Optional[np.ndarray]:
    """Per-class loss weights for this epoch, or None for uniform weights.

    DRW (deferred re-weighting): uniform before `reweight_start`, class-balanced from it on.
    """
    if loss_cfg.reweight == "drw" and epoch >= loss_cfg.reweight_start:
        return class_balanced_weights(class_counts, loss_cfg.reweight_beta)
    return None
