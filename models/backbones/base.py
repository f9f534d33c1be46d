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

    def __init__(self, stages: dict[str, nn.Module]):
        super().__init__()
        if tuple(stages) != self.stage_names:
            raise ValueError(f"{type(self).__name__} declares stages {self.stage_names}, builds {tuple(stages)}")
        self.stages = nn.ModuleDict(stages)

    def init_weights(self) -> None:
        """He initialisation (fan-out) of every convolution, batch-norm as the identity: the
        initialisation of the CIFAR networks' original papers and of the authors' code."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for stage in self.stages.values():
            x = stage(x)
        return x
