"""ResNet-20/32/44/56/110 for CIFAR (He et al. 2016, section 4.2), with option-A shortcuts.

6n + 2 layers: a 3x3 stem with 16 channels, then three stages of n basic blocks with 16, 32 and 64
channels; stages 2 and 3 start with a stride-2 block (the 1st and 2nd down-sampling), global average
pooling is the 3rd. Option A: a down-sampling shortcut takes every other pixel and pads the new
channels with zeros, so shortcuts add no parameters (ResNet-32: 0.46M parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones.base import StagedBackbone
from models.registry import BACKBONES


class ZeroPadShortcut(nn.Module):
    """Option A: x[:, :, ::2, ::2] with the extra channels zero, split evenly on both sides."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ZeroPadShortcut(out_channels - in_channels)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class CifarResNet(StagedBackbone):
    """Stages: stem (16 x 32 x 32), stage1 (16 x 32 x 32), stage2 (32 x 16 x 16),
    stage3 (64 x 8 x 8), pool (64). RSG's default position is the input of stage3."""

    stage_names = ("stem", "stage1", "stage2", "stage3", "pool")
    default_rsg_position = "stage3"
    out_features = 64

    def __init__(self, depth: int):
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks = (depth - 2) // 6
        super().__init__({
            "stem": nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)),
            "stage1": _stage(16, 16, blocks, 1),
            "stage2": _stage(16, 32, blocks, 2),
            "stage3": _stage(32, 64, blocks, 2),
            "pool": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        })
        self.init_weights()


@BACKBONES.register("resnet32", stages=CifarResNet.stage_names, help="ResNet-32 for 32 x 32 images (He et al. 2016)")
def resnet32() -> CifarResNet:
    return CifarResNet(32)


@BACKBONES.register("resnet56", stages=CifarResNet.stage_names, help="ResNet-56 for 32 x 32 images (He et al. 2016)")
def resnet56() -> CifarResNet:
    return CifarResNet(56)


@BACKBONES.register("resnet110", stages=CifarResNet.stage_names, help="ResNet-110 for 32 x 32 images (He et al. 2016)")
def resnet110() -> CifarResNet:
    return CifarResNet(110)
