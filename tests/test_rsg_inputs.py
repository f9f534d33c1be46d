"""What the RSG plug-in does with inputs at the edges: an empty batch, arguments and tensors it
cannot use (one ValueError naming the argument), and the dtypes of the network it is attached to."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rsg import RSG

C, H, W, K = 6, 4, 3, 3
NUM_CLASSES = 5
FREQUENT = [0, 1]
THRESHOLD = 2


def make_rsg(**overrides):
    torch.manual_seed(0)
    options = dict(num_centers=K, contrastive_channels=8, threshold_epoch=THRESHOLD)
    options.update(overrides)
    return RSG(C, NUM_CLASSES, FREQUENT, **options).train()


# -- an empty batch ------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", ["transform", "direct"])
@pytest.mark.parametrize("epoch", [0, THRESHOLD])
def test_an_empty_batch_gives_zero_losses_and_its_input_unchanged(epoch, generation):
    """Both phases: no NaN (a mean over no sample), and every parameter the phase trains still gets
    a gradient, a zero one (under DistributedDataParallel every rank uses the same parameters)."""
    rsg = make_rsg(generation=generation)
    rsg.set_epoch(epoch)
    features, targets = torch.zeros(0, C, H, W), torch.zeros(0, dtype=torch.long)
    out_features, out_targets, losses = rsg(features, targets)
    assert out_features is features and out_targets is targets
    assert set(losses) == set(RSG.loss_names)
    assert all(float(loss.detach()) == 0.0 for loss in losses.values())
    (losses["cesc"] + losses["mv"]).backward()
    for name, parameter in rsg.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.count_nonzero(parameter.grad) == 0, name
