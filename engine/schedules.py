"""Schedules as pure functions of the epoch index (0-based): learning rate, class weights and the
evaluated epochs.

The RSG phase is the third schedule; it lives in the module itself (`RSG.set_epoch`). The fourth,
deferred re-sampling (DRS), is the training sampler's (`data/samplers.py`, `DeferredResampler`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from core.class_weights import class_balanced_weights


def milestone_decays(optim_cfg) -> list[float]:
    """The factor applied at each milestone: `milestone_decays` when given, else `decay` at each."""
    return list(optim_cfg.milestone_decays) or [optim_cfg.decay] * len(optim_cfg.milestones)


def learning_rate(epoch: int, optim_cfg, total_epochs: Optional[int] = None) -> float:
    """Linear warm-up to the base lr, then multiplied by the factor of each milestone passed
    (`optim.schedule: step`) or cosine-annealed to 0 over the remaining epochs (`cosine`, which
    needs `total_epochs`).

    CIFAR recipe: lr * (epoch + 1) / 5 for epochs 0-4; 0.1 until 159; 0.001 from 160; 1e-5 from 180.
    ImageNet-LT: x0.1 at 60, 80 and 95; Places-LT: no warm-up, x0.1 every 10 epochs (milestones 10, 20).
    Kang et al.'s classifier stage: cosine, no warm-up, lr 0.2 at epoch 0 (PyTorch's CosineAnnealingLR
    stepped once per epoch, T_max = the stage's epochs, eta_min = 0).
    """
    base = optim_cfg.lr
    if epoch < optim_cfg.warmup_epochs:
        return base * (epoch + 1) / optim_cfg.warmup_epochs
    if getattr(optim_cfg, "schedule", "step") == "cosine":
        if total_epochs is None:
            raise ValueError("optim.schedule=cosine needs the total number of epochs")
        done = (epoch - optim_cfg.warmup_epochs) / max(total_epochs - optim_cfg.warmup_epochs, 1)
        return base * (1.0 + math.cos(math.pi * done)) / 2.0
    factor = 1.0
    for milestone, decay in zip(optim_cfg.milestones, milestone_decays(optim_cfg)):
        if epoch >= milestone:
            factor *= decay
    return base * factor


def reweight_start(loss_cfg) -> Optional[int]:
    """The first epoch with class-balanced weights, or None when the loss is never re-weighted.

    cb: from the start (Cui et al. 2019: CB RW, CB Focal). drw: deferred to `reweight_start`
    (Cao et al. 2019), so that the features are learned with uniform weights first.
    """
    return {"none": None, "cb": 0, "drw": loss_cfg.reweight_start}[loss_cfg.reweight]


def class_weights(epoch: int, class_counts: Sequence[int], loss_cfg) -> Optional[np.ndarray]:
    """Per-class loss weights for this epoch (they sum to C), or None for uniform weights."""
    start = reweight_start(loss_cfg)
    if start is not None and epoch >= start:
        return class_balanced_weights(class_counts, loss_cfg.reweight_beta)
    return None


def is_evaluation_epoch(epoch: int, train_cfg) -> bool:
    """Every `eval_every` epochs, every epoch from `eval_every_epoch_from` on, and always the last."""
    dense_from = train_cfg.eval_every_epoch_from
    return ((epoch + 1) % train_cfg.eval_every == 0 or epoch + 1 == train_cfg.epochs
            or (dense_from is not None and epoch >= dense_from))
