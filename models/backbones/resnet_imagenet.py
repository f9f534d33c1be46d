"""ResNet-50, ResNet-152 and ResNeXt-50 32x4d: torchvision's networks, re-exposed as named stages.

Stages: stem (conv1, bn1, relu, maxpool), layer1 .. layer4, pool (avgpool, flatten). The modules are
torchvision's own, so inside a stage the parameter names are torchvision's (`layer3.0.conv1.weight`
is `stages.layer3.0.conv1.weight` here) and torchvision state dicts load after renaming the stem's
keys (see `stage_key`). torchvision's `fc` is dropped: the head is the project's.

At 224 px the down-samplings are conv1, maxpool, layer2, layer3, layer4 and the global pooling; RSG's
default position is the input of layer4 (1024 x 14 x 14), before the second-to-last one, as in the
paper's large-scale experiments and the authors' code (RSG between layer3 and layer4).

ImageNet weights (`model.pretrained: torchvision`) are torchvision's IMAGENET1K_V1: the original
model-zoo weights that the long-tailed literature fine-tunes (the authors' Places-LT code loads this
ResNet-152), not V2's newer, stronger training recipe.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torchvision
from torch import nn

from models.backbones.base import StagedBackbone
from models.registry import BACKBONES

STEM_MODULES = ("conv1", "bn1", "relu", "maxpool")


class TorchvisionResNet(StagedBackbone):
    """Stages at 224 px (ResNet-50): stem (64 x 56 x 56), layer1 (256 x 56 x 56), layer2 (512 x 28 x 28),
    layer3 (1024 x 14 x 14), layer4 (2048 x 7 x 7), pool (2048)."""

    stage_names = ("stem", "layer1", "layer2", "layer3", "layer4", "pool")
    default_rsg_position = "layer4"
    conv_fan_mode = "fan_out"       # torchvision initialises its convolutions so, as RSG's resnet.py does

    def __init__(self, net: torchvision.models.ResNet, imagenet_weights: torchvision.models.WeightsEnum):
        super().__init__({
            "stem": nn.Sequential(OrderedDict((name, getattr(net, name)) for name in STEM_MODULES)),
            "layer1": net.layer1,
            "layer2": net.layer2,
            "layer3": net.layer3,
            "layer4": net.layer4,
            "pool": nn.Sequential(OrderedDict(avgpool=net.avgpool, flatten=nn.Flatten())),
        })
        self.out_features = net.fc.in_features
        self.imagenet_weights = imagenet_weights

    @staticmethod
    def stage_key(torchvision_key: str) -> Optional[str]:
        """torchvision's state-dict key -> the key in `self.stages`; None for the dropped fc."""
        module = torchvision_key.split(".", 1)[0]
        if module == "fc":
            return None
        if module in STEM_MODULES:
            return f"stem.{torchvision_key}"
        return torchvision_key


@BACKBONES.register("resnet50", stages=TorchvisionResNet.stage_names, help="torchvision's ResNet-50 (ImageNet size)")
def resnet50() -> TorchvisionResNet:
    models = torchvision.models
    return TorchvisionResNet(models.resnet50(weights=None), models.ResNet50_Weights.IMAGENET1K_V1)


@BACKBONES.register("resnet152", stages=TorchvisionResNet.stage_names, help="torchvision's ResNet-152 (ImageNet size)")
def resnet152() -> TorchvisionResNet:
    models = torchvision.models
    return TorchvisionResNet(models.resnet152(weights=None), models.ResNet152_Weights.IMAGENET1K_V1)


@BACKBONES.register("resnext50_32x4d", stages=TorchvisionResNet.stage_names,
                    help="torchvision's ResNeXt-50 32 x 4d (ImageNet size)")
def resnext50_32x4d() -> TorchvisionResNet:
    models = torchvision.models
    return TorchvisionResNet(models.resnext50_32x4d(weights=None), models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1)
