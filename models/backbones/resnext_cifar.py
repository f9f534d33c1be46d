"""ResNeXt-29 (8 x 64d) for CIFAR (Xie et al. 2017, section 5.3).

A 3x3 stem with 64 channels, then three stages of (depth - 2) / 9 = 3 bottleneck blocks: 1x1 down to
the group width, a 3x3 grouped convolution with `cardinality` groups, 1x1 up to the stage's output.
Group width cardinality x bottleneck width = 512, 1024, 2048; outputs 256, 512, 1024 channels;
stages 2 and 3 start with a stride-2 block; a shortcut changing shape is a 1x1 convolution with BN.
34.4M parameters with a 10-class linear head (Xie et al.: 34.4M).

RSG's default position is the input of stage3 (512 x 16 x 16), before the second-to-last
down-sampling, which is also where the authors' code puts it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones.base import StagedBackbone
from models.registry import BACKBONES


class ResNeXtBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, width: int, cardinality: int, stride: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_group = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn_group = nn.BatchNorm2d(width)
        self.conv_expand = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn_group(self.conv_group(out)))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + self.shortcut(x))


def _stage(in_channels, out_channels, width, cardinality, blocks, stride) -> nn.Sequential:
    layers = [ResNeXtBlock(in_channels, out_channels, width, cardinality, stride)]
    layers += [ResNeXtBlock(out_channels, out_channels, width, cardinality, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class CifarResNeXt(StagedBackbone):
    """Stages at 32 px (8 x 64d): stem (64 x 32 x 32), stage1 (256 x 32 x 32), stage2 (512 x 16 x 16),
    stage3 (1024 x 8 x 8), pool (1024)."""

    stage_names = ("stem", "stage1", "stage2", "stage3", "pool")
    default_rsg_position = "stage3"
    out_features = 1024
    conv_fan_mode = "fan_out"       # RSG's resnext_cifar.py: normal(0, sqrt(2 / (k * k * out)))

    def __init__(self, depth: int = 29, cardinality: int = 8, bottleneck_width: int = 64):
        if (depth - 2) % 9 != 0:
            raise ValueError(f"CIFAR ResNeXt depth must be 9n + 2, got {depth}")
        blocks = (depth - 2) // 9
        width = cardinality * bottleneck_width          # group width of stage 1; doubles per stage
        super().__init__({
            "stem": nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)),
            "stage1": _stage(64, 256, width, cardinality, blocks, 1),
            "stage2": _stage(256, 512, 2 * width, cardinality, blocks, 2),
            "stage3": _stage(512, 1024, 4 * width, cardinality, blocks, 2),
            "pool": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        })
        self.init_weights()

    def init_linear_head(self, head: nn.Linear) -> None:
        """RSG's resnext_cifar.py: He-normal weights from the fan-in, a zero bias."""
        super().init_linear_head(head)
        nn.init.zeros_(head.bias)


@BACKBONES.register("resnext29_8x64d", stages=CifarResNeXt.stage_names,
                    help="ResNeXt-29, 8 x 64d, for 32 x 32 images")
def resnext29_8x64d() -> CifarResNeXt:
    return CifarResNeXt(29, cardinality=8, bottleneck_width=64)
