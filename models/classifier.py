"""The wrapper that composes a staged backbone, an optional RSG and a classifier head."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class LongTailClassifier(nn.Module):
    """images (N, 3, H, W), targets (N,) -> logits (N + M, classes), targets (N + M,), losses.

    RSG, when present, transforms the input of the backbone stage named `rsg_position` and may
    append M generated samples. In evaluation (or without RSG) M = 0, the losses are zero and the
    computation is exactly the plain backbone's and head's.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, rsg: Optional[nn.Module] = None,
                 rsg_position: Optional[str] = None):
        super().__init__()
        if rsg is not None and rsg_position not in backbone.stages:
            raise ValueError(f"RSG position {rsg_position!r} is not a stage of the backbone "
                             f"({', '.join(backbone.stages)})")
        self.backbone = backbone
        self.head = head
        self.rsg = rsg
        self.rsg_position = rsg_position if rsg is not None else None

    def freeze_backbone(self) -> None:
        """The classifier stage (cRT, LWS): no backbone parameter trains, and its BatchNorm layers
        stay in evaluation mode (running statistics fixed), so the features are the parent's."""
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "backbone_frozen", False):
            self.backbone.eval()
        return self

    @property
    def loss_names(self) -> tuple[str, ...]:
        """The keys of the losses dict `forward` returns (RSG's, or none)."""
        return self.rsg.loss_names if self.rsg is not None else ()

    def set_epoch(self, epoch: int) -> None:
        if self.rsg is not None:
            self.rsg.set_epoch(epoch)

    def forward(self, images: torch.Tensor, targets: Optional[torch.Tensor] = None):
        x = images
        losses = {}
        for name, stage in self.backbone.stages.items():
            if name == self.rsg_position:
                x, targets, losses = self.rsg(x, targets)
            x = stage(x)
        return self.classify(x), targets, losses

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The head, in float32 also under bf16 / fp16 autocast (float64 stays float64). A cosine
        head's logits are scaled by s = 30 in LDAM and AM: in bf16 (8 significant bits) a cosine
        near 1 is only known to 0.004, 0.12 after scaling, about the gap between two classes'
        margins. The head is one small matrix product, so float32 costs nothing measurable."""
        with torch.autocast(features.device.type, enabled=False):
            return self.head(features.to(torch.promote_types(features.dtype, torch.float32)))
