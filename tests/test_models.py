"""Backbones, heads and the model wrapper built from a config (RSG placement, evaluation model)."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import ROOT
from core.errors import UserError
from engine.config import load_config
from models import build_model, strip_rsg
from models.backbones.resnet_cifar import CifarResNet
from models.heads import CosineHead, LinearHead
from models.registry import BACKBONES

COUNTS = [100, 70, 50, 35, 25, 18, 12, 9, 6, 5]
RECIPE = os.path.join(ROOT, "configs/cifar10_lt/ldam_drw_rsg_r100.yaml")


def config(*overrides):
    # a narrow contrastive module keeps the model cheap; the layout is the recipe's
    return load_config(RECIPE, ["rsg.contrastive_channels=8", *overrides])


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet32_parameter_count():
    backbone = BACKBONES.get("resnet32")()
    head = LinearHead(backbone.out_features, 10)
    total = count(backbone) + count(head)
    assert 0.46e6 < total < 0.47e6
    assert count(head) == 64 * 10 + 10
    # 6n + 2 layers: ResNet-56 and -110 are deeper, with the same widths
    assert count(BACKBONES.get("resnet56")()) > count(backbone)
    assert {"resnet32", "resnet56", "resnet110"} <= set(BACKBONES.names())


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n"):
        CifarResNet(33)


@pytest.mark.slow
def test_backbone_stage_shapes():
    backbone = BACKBONES.get("resnet32")().eval()
    x = torch.randn(2, 3, 32, 32)
    shapes = {}
    for name, stage in backbone.stages.items():
        x = stage(x)
        shapes[name] = tuple(x.shape)
    assert shapes == {"stem": (2, 16, 32, 32), "stage1": (2, 16, 32, 32), "stage2": (2, 32, 16, 16),
                      "stage3": (2, 64, 8, 8), "pool": (2, 64)}
    assert backbone.default_rsg_position == "stage3"
    assert backbone.out_features == 64


@pytest.mark.slow
def test_forward_shapes_train_and_eval():
    torch.manual_seed(0)
    model = build_model(config(), COUNTS)
    images = torch.randn(8, 3, 32, 32)
    targets = torch.tensor([0, 0, 1, 2, 3, 5, 8, 9])
    model.train()
    model.set_epoch(0)                       # before the threshold: no generated sample
    logits, out_targets, losses = model(images, targets)
    assert logits.shape == (8, 10)
    assert torch.equal(out_targets, targets)
    assert set(losses) == {"cesc", "mv"}
    model.eval()
    logits, out_targets, losses = model(images)
    assert logits.shape == (8, 10) and out_targets is None


@pytest.mark.slow
def test_classifier_auto():
    assert config().head_kind == "cosine"
    assert config("loss.name=ce").head_kind == "linear"
    assert config("loss.name=ce", "model.classifier=cosine").head_kind == "cosine"
    assert config("model.classifier=linear").head_kind == "linear"
    assert isinstance(build_model(config(), COUNTS).head, CosineHead)
    assert isinstance(build_model(config("loss.name=ce"), COUNTS).head, LinearHead)


def test_cosine_head_logits_are_cosines():
    head = CosineHead(4, 3)
    features = torch.randn(5, 4) * 10
    logits = head(features)
    assert logits.abs().max() <= 1 + 1e-6
    expected = torch.nn.functional.cosine_similarity(features[:, None, :], head.weight[None], dim=2)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_the_head_runs_in_float32_under_autocast(amp):
    """LDAM scales the cosines by 30: rounded to bf16 they would move the logits by about 0.1."""
    torch.manual_seed(0)
    model = build_model(config("rsg.enabled=false"), COUNTS).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=amp):
        images = torch.randn(4, 3, 32, 32)
        features = model.backbone(images)                 # autocast: half precision
        logits, _, _ = model(images)
        reduced = model.head(features)                    # the head as autocast would run it
    with torch.no_grad():
        in_float32 = model.head(features.float())
    assert features.dtype == amp and logits.dtype == torch.float32 and reduced.dtype == amp
    torch.testing.assert_close(logits, in_float32, rtol=0, atol=0)
    assert not torch.equal(reduced.float(), in_float32)


@pytest.mark.slow
def test_evaluation_model_has_no_rsg_parameters():
    cfg = config()
    torch.manual_seed(0)
    train_model = build_model(cfg, COUNTS)
    eval_model = build_model(cfg, COUNTS, with_rsg=False)
    plain = build_model(config("rsg.enabled=false"), COUNTS)
    assert train_model.rsg is not None and eval_model.rsg is None and plain.rsg is None
    assert count(eval_model) == count(plain)
    assert count(train_model) > count(plain)
    stripped = strip_rsg(train_model.state_dict())
    assert set(stripped) == set(eval_model.state_dict())
    assert set(stripped) == set(plain.state_dict())
    assert any(key.startswith("rsg.") for key in train_model.state_dict())
    assert not any(key.startswith("rsg.") for key in stripped)
    # the RSG-free model loads the stripped weights strictly
    eval_model.load_state_dict(stripped, strict=True)


@pytest.mark.slow
def test_rsg_model_in_eval_mode_equals_plain_model():
    cfg = config()
    torch.manual_seed(0)
    train_model = build_model(cfg, COUNTS)
    # move the batch-norm statistics away from their initial values, with RSG in the path
    train_model.train()
    train_model.set_epoch(0)
    with torch.no_grad():
        train_model(torch.randn(16, 3, 32, 32), torch.arange(16) % 10)
    torch.manual_seed(123)                   # a different init: the weights must come from loading
    plain = build_model(config("rsg.enabled=false"), COUNTS)
    plain.load_state_dict(strip_rsg(train_model.state_dict()), strict=True)
    train_model.eval()
    plain.eval()
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        logits, _, losses = train_model(images, torch.arange(6))
        expected, _, _ = plain(images)
    assert torch.equal(logits, expected)
    assert float(losses["cesc"]) == 0.0 and float(losses["mv"]) == 0.0


@pytest.mark.slow
def test_rsg_at_stage3_receives_32x16x16_at_32px():
    model = build_model(config("rsg.position=stage3"), COUNTS)
    assert model.rsg_position == "stage3"
    assert model.rsg.in_channels == 32
    seen = []
    model.rsg.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    model.train()
    model.set_epoch(0)
    model(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert seen == [(4, 32, 16, 16)]
    default = build_model(config(), COUNTS)
    assert default.rsg_position == "stage3"  # "default" resolves to the backbone's stage3


def test_rsg_at_stage2_receives_16_channels():
    model = build_model(config("rsg.position=stage2"), COUNTS)
    assert model.rsg.in_channels == 16
    seen = []
    model.rsg.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    model.train()
    model(torch.randn(2, 3, 32, 32), torch.tensor([0, 9]))
    assert seen == [(2, 16, 32, 32)]


def test_unknown_rsg_position_lists_stages():
    with pytest.raises(UserError) as info:
        build_model(config("rsg.position=layer9"), COUNTS)
    message = str(info.value)
    assert "rsg.position" in message and "layer9" in message
    for stage in ("stem", "stage1", "stage2", "stage3", "pool"):
        assert stage in message


def test_unknown_backbone_lists_names():
    with pytest.raises(UserError) as info:
        build_model(config("model.backbone=resnet18"), COUNTS)
    message = str(info.value)
    assert "model.backbone" in message and "resnet18" in message
    for name in ("resnet32", "resnet56", "resnet110"):
        assert name in message
