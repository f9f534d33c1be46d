"""DenseNet-40 (growth rate k = 12) for CIFAR (Huang et al. 2017, section 4, "DenseNet", no BC).

A 3x3 stem with 16 channels, three dense blocks of (depth - 4) / 3 = 12 basic layers (BN-ReLU-Conv3x3
with k output channels, concatenated to the layer's input), and between them transition layers
(BN-ReLU-Conv1x1-AvgPool2x2) that keep the channel count (no compression). Channels: 16 -> 160 ->
304 -> 448; a final BN-ReLU and global average pooling. 1.02M parameters with a 10-class linear head
(Huang et al.: 1.0M).

Down-samplings: trans1's pooling (32 -> 16 px), trans2's pooling (16 -> 8 px), the global pooling.
RSG's default position is the input of trans2 (304 x 16 x 16), before the second-to-last one, as in
ResNet-32. The authors' code places it after trans2 (the input of dense3) and starts with 2k = 24
stem channels (1.06M parameters); see docs/CHOICES.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones.base import StagedBackbone
from models.registry import BACKBONES


class DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3 to `growth_rate` new channels, appended to the input's."""

    def __init__(self, in_channels: int, growth_rate: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, growth_rate, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


def _dense_block(in_channels: int, growth_rate: int, layers: int) -> nn.Sequential:
    return nn.Sequential(*[DenseLayer(in_channels + i * growth_rate, growth_rate) for i in range(layers)])


def _transition(channels: int) -> nn.Sequential:
    """BN-ReLU-Conv1x1-AvgPool2x2 with as many output channels as input (no compression)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 1, bias=False), nn.AvgPool2d(2))


class CifarDenseNet(StagedBackbone):
    """Stages at 32 px (DenseNet-40): stem (16 x 32 x 32), dense1 (160 x 32 x 32), trans1 (160 x 16 x 16),
    dense2 (304 x 16 x 16), trans2 (304 x 8 x 8), dense3 (448 x 8 x 8), pool (448)."""

    stage_names = ("stem", "dense1", "trans1", "dense2", "trans2", "dense3", "pool")
    default_rsg_position = "trans2"
    conv_fan_mode = "fan_out"       # RSG's densenet_cifar.py: normal(0, sqrt(2 / (k * k * out)))

    def __init__(self, depth: int = 40, growth_rate: int = 12, stem_channels: int = 16):
        if (depth - 4) % 3 != 0:
            raise ValueError(f"CIFAR DenseNet depth must be 3n + 4, got {depth}")
        layers = (depth - 4) // 3
        widths = [stem_channels + i * layers * growth_rate for i in range(4)]   # 16, 160, 304, 448
        super().__init__({
            "stem": nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False),
            "dense1": _dense_block(widths[0], growth_rate, layers),
            "trans1": _transition(widths[1]),
            "dense2": _dense_block(widths[1], growth_rate, layers),
            "trans2": _transition(widths[2]),
            "dense3": _dense_block(widths[2], growth_rate, layers),
            "pool": nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        })
        self.out_features = widths[3]
        self.init_weights()

    def init_linear_head(self, head: nn.Linear) -> None:
        """RSG's densenet_cifar.py keeps torch's default weights of its nn.Linear and zeroes the bias."""
        nn.init.zeros_(head.bias)


@BACKBONES.register("densenet40", stages=CifarDenseNet.stage_names, help="DenseNet-40, growth rate 12, for 32 x 32 images")
def densenet40() -> CifarDenseNet:
    return CifarDenseNet(40, growth_rate=12)
