"""Build the configured model: backbone, RSG at its position, head."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from core.errors import UserError
from models import backbones  # noqa: F401  (registers the backbones)
from models.classifier import LongTailClassifier
from models.heads import ScaledHead, build_head
from models.pretrained import load_pretrained
from models.registry import BACKBONES
from rsg import RSG


def resolve_rsg_position(cfg, backbone) -> str:
    position = cfg.rsg.position
    if position == "default":
        return backbone.default_rsg_position
    if position not in backbone.stages:
        raise UserError(f"key 'rsg.position': {position!r} is not a stage of {cfg.model.backbone}; "
                        f"valid choices: default, {', '.join(backbone.stages)}")
    return position


@torch.no_grad()
def feature_shape_at(backbone, position: str, image_size: int) -> tuple[int, ...]:
    """(C, H, W) of the input of stage `position`, by a dry forward of one blank image."""
    was_training = backbone.training
    backbone.eval()
    x = torch.zeros(1, 3, image_size, image_size)
    for name, stage in backbone.stages.items():
        if name == position:
            break
        x = stage(x)
    backbone.train(was_training)
    return tuple(x.shape[1:])


def build_model(cfg, class_counts: Sequence[int], with_rsg: bool = True,
                load_pretrained_weights: bool = True) -> LongTailClassifier:
    """The model for `cfg`; `with_rsg=False` gives the evaluation model (the plain backbone).

    The backbone starts from `model.pretrained` unless `load_pretrained_weights=False` (for a model
    whose weights come from a checkpoint next, which must not need the ImageNet file or network).
    """
    num_classes = len(class_counts)
    backbone = BACKBONES.get(cfg.model.backbone)()
    if load_pretrained_weights:
        load_pretrained(backbone, cfg.model.pretrained, cfg.model.backbone)
    head = build_head(cfg.head_kind, backbone.out_features, num_classes)
    if isinstance(head, nn.Linear):
        backbone.init_linear_head(head)
    if cfg.stage.name == "lws":   # the classifier stage's per-class scales on the parent's head
        head = ScaledHead(head, num_classes)
    if not (with_rsg and cfg.rsg.enabled):
        return LongTailClassifier(backbone, head)
    position = resolve_rsg_position(cfg, backbone)
    channels = feature_shape_at(backbone, position, cfg.data.image_size)[0]
    rsg = RSG(in_channels=channels, **RSG.arguments_from(cfg.rsg, class_counts))
    return LongTailClassifier(backbone, head, rsg, position)


def strip_rsg(state_dict: dict) -> dict:
    """The evaluation model's weights: the checkpoint's without RSG's parameters."""
    return {k: v for k, v in state_dict.items() if not k.startswith("rsg.")}
