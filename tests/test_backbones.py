"""Every registered backbone: stages, RSG at its default position (forward and backward), published
parameter counts; ImageNet initialisation from model.pretrained (a .pth file, torchvision offline).

The ImageNet networks run at 64 px and the CIFAR networks at 16 px, so the suite stays fast; nothing
touches the network (the torchvision download is replaced by one that fails).
"""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch
import torchvision

from conftest import ROOT
from core.errors import UserError
from engine.config import load_config
from models import build_model, feature_shape_at
from models.backbones.base import StagedBackbone
from models.heads import LinearHead
from models.registry import BACKBONES

RECIPE = os.path.join(ROOT, "configs/cifar10_lt/ldam_drw_rsg_r50.yaml")
COUNTS = [100, 70, 50, 35, 25, 18, 12, 9, 6, 5]
IMAGENET_BACKBONES = ("resnet50", "resnet152", "resnext50_32x4d")


def image_size(name: str) -> int:
    return 64 if name in IMAGENET_BACKBONES else 16


def config(*overrides):
    # a narrow RSG keeps the test cheap; generation from epoch 0
    return load_config(RECIPE, ["rsg.contrastive_channels=8", "rsg.num_centers=2", "rsg.threshold_epoch=0",
                                *overrides])


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def slow_but_resnet32(names):
    """The backbones as parameters, all but ResNet-32 marked slow (seconds each on the CPU)."""
    return [name if name == "resnet32" else pytest.param(name, marks=pytest.mark.slow) for name in names]


@pytest.mark.parametrize("name", slow_but_resnet32(BACKBONES.names()))
def test_stages_and_default_position(name):
    backbone = BACKBONES.get(name)().eval()
    assert isinstance(backbone, StagedBackbone)
    assert backbone.default_rsg_position in backbone.stages
    size = image_size(name)
    with torch.no_grad():
        features = backbone(torch.zeros(2, 3, size, size))
    assert features.shape == (2, backbone.out_features)


@pytest.mark.parametrize("name", slow_but_resnet32(BACKBONES.names()))
def test_forward_backward_with_rsg_at_default_position(name):
    torch.manual_seed(0)
    size = image_size(name)
    model = build_model(config(f"model.backbone={name}", f"data.image_size={size}"), COUNTS).train()
    assert model.rsg_position == model.backbone.default_rsg_position
    model.set_epoch(0)
    targets = torch.tensor([0, 0, 1, 1, 4, 9])             # frequent: classes 0 and 1 (alpha 0.2)
    logits, all_targets, losses = model(torch.randn(6, 3, size, size), targets)
    assert logits.shape == (len(all_targets), 10) and len(all_targets) > 6   # generated rare samples
    loss = torch.nn.functional.cross_entropy(logits, all_targets) + losses["cesc"] + losses["mv"]
    loss.backward()
    first_conv = next(p for p in model.backbone.parameters() if p.dim() == 4)
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert model.rsg.transform.weight.grad.abs().sum() > 0
    assert model.rsg.centers.grad.abs().sum() > 0


# (backbone, classes, published parameters with a linear head): He et al. 2016, Huang et al. 2017,
# Xie et al. 2017, torchvision
PUBLISHED = [
    ("resnet32", 10, 0.46e6), ("resnet110", 10, 1.7e6), ("densenet40", 10, 1.0e6),
    *(pytest.param(*row, marks=pytest.mark.slow)     # 25-60 M parameters to initialise: about a second each
      for row in [("resnext29_8x64d", 10, 34.4e6), ("resnet50", 1000, 25.6e6), ("resnext50_32x4d", 1000, 25.0e6),
                  ("resnet152", 1000, 60.2e6)]),
]


@pytest.mark.parametrize("name,classes,published", PUBLISHED)
def test_parameter_count_matches_the_published_figure(name, classes, published):
    backbone = BACKBONES.get(name)()
    total = count(backbone) + count(LinearHead(backbone.out_features, classes))
    assert abs(total - published) / published < 0.02, f"{name}: {total:,} parameters"


@pytest.mark.slow
def test_imagenet_backbones_keep_torchvision_parameters():
    ours = BACKBONES.get("resnet50")()
    reference = torchvision.models.resnet50(weights=None)
    assert count(ours) == count(reference) - count(reference.fc)
    assert count(ours) + count(LinearHead(2048, 1000)) == 25_557_032


@pytest.mark.slow
def test_rsg_input_shapes_at_default_positions():
    # the paper's large-scale position: 1024 x 14 x 14 at 224 px
    resnet50 = BACKBONES.get("resnet50")()
    assert feature_shape_at(resnet50, resnet50.default_rsg_position, 224) == (1024, 14, 14)
    densenet = BACKBONES.get("densenet40")()
    assert densenet.default_rsg_position == "trans2"
    assert feature_shape_at(densenet, "trans2", 32) == (304, 16, 16)
    assert feature_shape_at(densenet, "dense3", 32) == (304, 8, 8)     # the authors' position
    resnext = BACKBONES.get("resnext29_8x64d")()
    assert feature_shape_at(resnext, resnext.default_rsg_position, 32) == (512, 16, 16)


@pytest.mark.slow
def test_rsg_model_of_an_imagenet_backbone_gets_1024_channels():
    model = build_model(config("model.backbone=resnext50_32x4d", "data.image_size=64"), COUNTS)
    assert model.rsg_position == "layer4" and model.rsg.in_channels == 1024


# ---------------------------------------------------------------------------------------------
# model.pretrained


def pretrained_config(value, backbone="resnet50"):
    return config(f"model.backbone={backbone}", "data.image_size=64", "rsg.enabled=false",
                  f"model.pretrained={value}")


@pytest.mark.slow
def test_pretrained_pth_loads_exactly(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None, num_classes=10).eval()
    path = tmp_path / "resnet50_10.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(2)                     # a different init: the weights must come from the file
    model = build_model(pretrained_config(path), COUNTS).eval()
    ours = model.backbone.stages.state_dict()
    for key, value in reference.state_dict().items():
        stage_key = model.backbone.stage_key(key)
        if key.startswith("fc."):
            assert stage_key is None
        else:
            assert torch.equal(ours[stage_key], value), key
    reference.fc = torch.nn.Identity()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.backbone(images), reference(images))


@pytest.mark.slow
def test_pretrained_pth_of_another_network_names_the_file(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(UserError) as info:
        build_model(pretrained_config(path), COUNTS)
    message = str(info.value)
    assert str(path) in message and "model.pretrained" in message and "resnet50" in message


def test_pretrained_missing_file_and_cifar_backbone(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_model(pretrained_config(tmp_path / "absent.pth"), COUNTS)
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_model(pretrained_config("torchvision", backbone="resnet32"), COUNTS)
    with pytest.raises(UserError, match="model.pretrained"):
        config("model.pretrained=torchvison")          # a typo fails when the config loads


def refuse_download(*args, **kwargs):
    raise urllib.error.URLError("no network (test)")


def test_pretrained_torchvision_offline_explains_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse_download)
    with pytest.raises(UserError) as info:
        build_model(pretrained_config("torchvision"), COUNTS)
    message = str(info.value)
    assert "model.pretrained" in message and "IMAGENET1K_V1" in message
    assert "resnet50-0676ba61.pth" in message                                 # the file to fetch
    assert os.path.join(str(tmp_path / "torch_home"), "hub", "checkpoints") in message   # where to put it


@pytest.mark.slow
def test_pretrained_torchvision_uses_the_hub_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(3)
    reference = torchvision.models.resnet50(weights=None)
    torch.save(reference.state_dict(), cache / "resnet50-0676ba61.pth")
    model = build_model(pretrained_config("torchvision"), COUNTS)
    assert torch.equal(model.backbone.stages.stem.conv1.weight, reference.conv1.weight)
