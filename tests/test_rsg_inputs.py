"""What the RSG plug-in does with inputs at the edges: an empty batch, arguments and tensors it
cannot use (one ValueError naming the argument), and the dtypes of the network it is attached to."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import rsg
from rsg import RSG, frequent_classes_from_counts

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


# -- arguments and tensors RSG cannot use: one ValueError naming the argument ---------------------


@pytest.mark.parametrize("argument, value", [
    ("in_channels", 0), ("num_classes", 0), ("num_centers", 0), ("num_centers", 2.5), ("contrastive_channels", 0),
    ("transfer_strength", 0.0), ("transfer_strength", -1.0), ("transfer_strength", math.nan),
    ("transfer_strength", math.inf), ("threshold_epoch", -1), ("mv_terms", (True, True)),
    ("frequent_classes", [0, 1.5]),
])
def test_rsg_refuses_an_argument_it_cannot_use_naming_it(argument, value):
    arguments = dict(in_channels=C, num_classes=NUM_CLASSES, frequent_classes=FREQUENT)
    arguments[argument] = value
    with pytest.raises(ValueError, match=f"^{argument} must "):
        RSG(**arguments)


@pytest.mark.parametrize("ratio", [-0.1, 1.5, math.nan])
def test_frequent_ratio_outside_0_1_is_refused_naming_it(ratio):
    with pytest.raises(ValueError, match="^frequent_ratio must "):
        frequent_classes_from_counts([5, 4, 3, 2], ratio)


def good_batch():
    return torch.randn(4, C, H, W), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("argument, change", [
    ("features", lambda x, y: (x[:, :, 0], y)),                             # (N, C, H): no spatial map
    ("features", lambda x, y: (x[None], y)),                                # rank 5
    ("features", lambda x, y: (x[:, :C - 1], y)),                           # C - 1 channels
    ("features", lambda x, y: (x.long(), y)),                               # not floating point
    ("targets", lambda x, y: (x, y[:3])),                                   # one label short
    ("targets", lambda x, y: (x, y[:, None])),                              # (N, 1)
    ("targets", lambda x, y: (x, y.float())),                               # float labels
    ("targets", lambda x, y: (x, y.bool())),                                # a mask, not labels
    ("targets", lambda x, y: (x, y.to(torch.uint8))),                       # uint8 indexes as a mask
    ("targets", lambda x, y: (x, y.to("meta"))),                            # another device
    ("targets", lambda x, y: (x, y - 1)),                                   # a negative label
    ("targets", lambda x, y: (x, y + NUM_CLASSES - 3)),                     # a label = num_classes
])
@pytest.mark.parametrize("epoch", [0, THRESHOLD])
def test_rsg_refuses_features_and_targets_it_cannot_use_naming_them(argument, change, epoch):
    rsg = make_rsg()
    rsg.set_epoch(epoch)
    with pytest.raises(ValueError, match=f"^RSG: {argument} must "):
        rsg(*change(*good_batch()))


def test_int32_targets_still_work():
    rsg = make_rsg()
    x, y = good_batch()
    for epoch in (0, THRESHOLD):
        rsg.set_epoch(epoch)
        _, targets, _ = rsg(x, y.int())
        assert targets.dtype == torch.int32


def test_attach_refuses_an_empty_submodule_name():
    """at="" is the network itself (get_submodule("")): RSG on its logits, never meant."""
    net = nn.Sequential(nn.Conv2d(3, C, 3), nn.Flatten())
    with pytest.raises(ValueError, match="^at must "):
        rsg.attach(net, at="", num_classes=NUM_CLASSES, frequent_classes=FREQUENT, in_channels=C)


# -- dtypes ------------------------------------------------------------------------------------


def small_network(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.ReLU(), nn.Conv2d(C, C, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, NUM_CLASSES))
    return net.to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_attach_follows_the_networks_dtype_in_both_phases(dtype):
    net = small_network(dtype)
    model = rsg.attach(net, at="1", num_classes=NUM_CLASSES, frequent_classes=FREQUENT, in_channels=C,
                       num_centers=K, contrastive_channels=8, threshold_epoch=THRESHOLD).train()
    assert {p.dtype for p in model.parameters()} == {dtype}
    images, targets = torch.randn(8, 3, H, W, dtype=dtype), torch.tensor([0, 0, 0, 1, 1, 2, 3, 4])
    for epoch in (0, THRESHOLD):
        model.set_epoch(epoch)
        logits, all_targets, losses = model(images, targets)
        loss = nn.functional.cross_entropy(logits.float(), all_targets) + losses["cesc"] + losses["mv"]
        loss.backward()
        assert logits.dtype == dtype and torch.isfinite(loss)
        assert len(all_targets) > len(targets) if epoch == THRESHOLD else torch.equal(all_targets, targets)


def test_a_bf16_input_to_a_float32_rsg_works_before_the_threshold_as_after():
    rsg = make_rsg()
    x, y = good_batch()
    for epoch in (0, THRESHOLD):
        rsg.set_epoch(epoch)
        features, _, losses = rsg(x.bfloat16(), y)
        assert features.dtype == torch.bfloat16
        assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses.values())
