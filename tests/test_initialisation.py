"""Every CIFAR network and head starts as the authors' code starts it, layer by layer.

The authors' schemes, read from their model files (kaiming_normal_ without arguments is torch's
fan-in He-normal, std sqrt(2 / fan_in); `normal_(0, sqrt(2. / n))` with n = k * k * out_channels is
the fan-out one):
- ResNet-32/56/110: LDAM-DRW's and RSG's resnet_cifar.py, `_weights_init`: every conv and linear
  kaiming_normal_ (fan-in); the linear bias keeps torch's default; BN weight 1, bias 0.
- DenseNet-40: RSG's densenet_cifar.py: convs fan-out; the linear weight keeps torch's default
  (uniform(+-1/sqrt(in))), its bias 0.
- ResNeXt-29: RSG's resnext_cifar.py: convs fan-out; the linear weight kaiming_normal_ (fan-in),
  its bias 0.
- The cosine head (LDAM), in all of them: NormedLinear, each class's weight uniform(-1, 1) renormed
  to norm 1.
The expected values are written here from those files, not read from the classes under test.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from conftest import ROOT
from engine.config import load_config
from models import build_model
from models.heads import CosineHead

RECIPE = os.path.join(ROOT, "configs/cifar10_lt/ldam_drw_r100.yaml")
COUNTS = [100, 70, 50, 35, 25, 18, 12, 9, 6, 5]

# backbone: (conv fan, linear weight, linear bias)
AUTHORS = {
    "resnet32": ("fan_in", "he_fan_in", "torch_default"),
    "resnet56": ("fan_in", "he_fan_in", "torch_default"),
    "resnet110": ("fan_in", "he_fan_in", "torch_default"),
    "densenet40": ("fan_out", "torch_default", "zero"),
    "resnext29_8x64d": ("fan_out", "he_fan_in", "zero"),
}


def model(backbone: str, loss: str):
    torch.manual_seed(0)
    return build_model(load_config(RECIPE, [f"model.backbone={backbone}", f"loss.name={loss}"]), COUNTS)


def fans(weight: torch.Tensor) -> dict:
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    return {"fan_in": weight.shape[1] * receptive, "fan_out": weight.shape[0] * receptive}


def assert_std(name: str, weight: torch.Tensor, expected: float) -> None:
    """The sample std within five standard errors of a normal sample's std (sigma / sqrt(2n))."""
    measured = weight.detach().float().std().item()
    tolerance = 5 / math.sqrt(2 * weight.numel()) + 0.01
    assert abs(measured / expected - 1) < tolerance, (
        f"{name}: std {measured:.4f}, the authors' scheme gives {expected:.4f} (shape {tuple(weight.shape)})")


@pytest.mark.parametrize("backbone", sorted(AUTHORS))
def test_every_convolution_and_batch_norm_starts_as_in_the_authors_code(backbone):
    fan, _, _ = AUTHORS[backbone]
    network = model(backbone, "ce").backbone
    convolutions = 0
    for name, module in network.named_modules():
        if isinstance(module, nn.Conv2d):
            assert_std(name, module.weight, math.sqrt(2.0 / fans(module.weight)[fan]))
            convolutions += 1
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
    assert convolutions > 10


def test_the_stem_and_the_down_sampling_convolutions_tell_the_fans_apart():
    """Where fan-in and fan-out differ, ResNet-32 takes the fan-in: the stem's std 0.272, not 0.118."""
    stem = model("resnet32", "ce").backbone.stages["stem"][0].weight
    assert abs(stem.std().item() - math.sqrt(2 / 27)) < 0.03
    assert abs(stem.std().item() - math.sqrt(2 / 144)) > 0.1


@pytest.mark.parametrize("backbone", sorted(AUTHORS))
def test_the_linear_head_starts_as_in_the_authors_code(backbone):
    _, weight_rule, bias_rule = AUTHORS[backbone]
    head = model(backbone, "ce").head
    assert isinstance(head, nn.Linear)
    fan_in = head.weight.shape[1]
    if weight_rule == "he_fan_in":
        assert_std("head.weight", head.weight, math.sqrt(2.0 / fan_in))
    else:   # torch's default: uniform(-1/sqrt(in), 1/sqrt(in)), std 1/sqrt(3 in)
        assert head.weight.abs().max() <= 1 / math.sqrt(fan_in)
        assert_std("head.weight", head.weight, 1 / math.sqrt(3 * fan_in))
    if bias_rule == "zero":
        assert torch.equal(head.bias, torch.zeros_like(head.bias))
    else:
        assert head.bias.abs().max() <= 1 / math.sqrt(fan_in) and head.bias.abs().sum() > 0


@pytest.mark.parametrize("backbone", sorted(AUTHORS))
def test_each_class_of_the_cosine_head_starts_with_a_unit_weight(backbone):
    """NormedLinear: uniform(-1, 1) renormed per class to norm 1 (kaiming_uniform gave about 0.57)."""
    head = model(backbone, "ldam").head
    assert isinstance(head, CosineHead)
    norms = head.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    # the direction is a uniform draw's: every entry non-zero, of both signs, none above 1
    assert (head.weight != 0).all() and (head.weight > 0).any() and (head.weight < 0).any()
    # a uniform(-1, 1) vector's entries, renormed: mean square 1/in, max |entry| of order sqrt(3/in)
    assert head.weight.abs().max() <= math.sqrt(3 / head.weight.shape[1]) * 1.8
