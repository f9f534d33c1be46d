"""What every backbone offers the model wrapper: named stages run in order.

A backbone is an `nn.Module` whose `stages` (an ordered `nn.ModuleDict`) map an image batch to a
flat feature vector when applied one after the other. RSG can be placed at the input of any stage
by name; `default_rsg_position` names the stage entered right before the second-to-last spatial
down-sampling, where the paper puts RSG. Backbones never import RSG.
"""

from __future__ import annotations

import torch
from torch import nn


class StagedBackbone(nn.Module):
    # The stages' names in order, declared on the class so that the config can check rsg.position
    # without building the network (registered with the builder as `stages`); __init__ enforces it.
    stage_names: tuple[str, ...] = ()
    default_rsg_position: str = ""
    out_features: int = 0
    # The He-normal std of each convolution as the authors' code draws it: from the kernel's fan-in
    # (torch's kaiming_normal_ default, the CIFAR ResNets of both LDAM-DRW and RSG) or its fan-out
    # (normal(0, sqrt(2 / (k * k * out))): RSG's DenseNet-40 and ResNeXt-29, and torchvision's
    # ImageNet networks). docs/CHOICES.md, "Initialisation".
    conv_fan_mode: str = "fan_in"

    def __init__(self, stages: dict[str, nn.Module]):
        super().__init__()
        if tuple(stages) != self.stage_names:
            raise ValueError(f"{type(self).__name__} declares stages {self.stage_names}, builds {tuple(stages)}")
        self.stages = nn.ModuleDict(stages)

    def init_weights(self) -> None:
        """He-normal convolutions (std sqrt(2 / fan), the fan of `conv_fan_mode`), batch-norm as the
        identity: the authors' initialisation of this network."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode=self.conv_fan_mode, nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def init_linear_head(self, head: nn.Linear) -> None:
        """A linear classifier as the authors' code starts it on this network: He-normal weights from
        the fan-in (torch's kaiming_normal_ default), torch's default bias (both authors'
        resnet_cifar.py, RSG's ImageNet resnet.py). A cosine head starts its own way (models/heads.py)."""
        nn.init.kaiming_normal_(head.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for stage in self.stages.values():
            x = stage(x)
        return x
