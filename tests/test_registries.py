"""Adding a backbone or a loss is one registered function plus a config (docs/DESIGN.md, "Names: one
registry each"): a toy of each, registered here, passes the config's checks and trains."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from conftest import read_jsonl, tiny_config_dict, write_config
from core.errors import UserError
from core.registry import Registry
from engine.config import load_config
from engine.run import fit
from losses import LOSSES
from models import BACKBONES
from models.backbones.base import StagedBackbone


class ToyNet(StagedBackbone):
    """Two convolutions and a pooling: RSG fits at the input of `body`."""

    stage_names = ("stem", "body", "pool")
    default_rsg_position = "body"
    out_features = 8

    def __init__(self):
        super().__init__({
            "stem": nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU()),
            "body": nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()),
            "pool": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        })


class SquaredErrorLoss(nn.Module):
    """The squared error of the softmax against the one-hot target, per-class weighted."""

    def forward(self, logits, targets, class_weights=None):
        error = (logits.softmax(dim=1) - nn.functional.one_hot(targets, logits.shape[1]).float()).pow(2).sum(dim=1)
        weights = torch.ones_like(error) if class_weights is None else class_weights[targets]
        return (weights * error).sum() / weights.sum()


def register_toys(monkeypatch) -> None:
    """ToyNet as model.backbone=toy_net and SquaredErrorLoss as loss.name=toy_squared_error, until
    `monkeypatch` undoes its changes: the registries then get back their own tables."""
    for registry in (BACKBONES, LOSSES):
        monkeypatch.setattr(registry, "_builders", dict(registry._builders))
        monkeypatch.setattr(registry, "_info", dict(registry._info))
    BACKBONES.register("toy_net", stages=ToyNet.stage_names)(ToyNet)
    LOSSES.register("toy_squared_error")(lambda cfg, class_counts: SquaredErrorLoss())


@pytest.fixture
def toy_registrations(monkeypatch):
    register_toys(monkeypatch)


@pytest.mark.slow
def test_a_toy_backbone_and_loss_train_with_rsg(tmp_path, toy_registrations):
    tree = tiny_config_dict(str(tmp_path / "run"), model={"backbone": "toy_net"}, train={"epochs": 2},
                            loss={"name": "toy_squared_error"})
    tree["rsg"]["position"] = "default"
    cfg = load_config(write_config(tmp_path / "toy.yaml", tree))
    assert cfg.head_kind == "linear"
    report = fit(cfg)
    assert 0 <= report.top1 <= 100
    records = read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[-1]["train"]["generated_per_step"] > 0   # RSG generated at the input of ToyNet.body


def test_a_toy_backbone_checks_its_positions(tmp_path, toy_registrations):
    tree = tiny_config_dict(str(tmp_path / "run"), model={"backbone": "toy_net"})
    tree["rsg"]["position"] = "stage3"
    with pytest.raises(UserError, match=r"not a stage of toy_net; valid choices: default, stem, body, pool"):
        load_config(write_config(tmp_path / "toy.yaml", tree))


def test_the_toy_names_are_gone_after_the_test():
    with pytest.MonkeyPatch.context() as monkeypatch:
        register_toys(monkeypatch)
        assert "toy_net" in BACKBONES.names() and "toy_squared_error" in LOSSES.names()
    assert "toy_net" not in BACKBONES.names() and "toy_squared_error" not in LOSSES.names()


def test_registering_a_name_twice_is_refused():
    registry = Registry("thing", "thing.name")
    registry.register("a", colour="red")(object)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(object)
    assert registry.info("a") == {"colour": "red"} and registry.names(colour="red") == ["a"]
    with pytest.raises(UserError, match=r"key 'thing.name': unknown thing 'b'; valid choices: a"):
        registry.get("b")
