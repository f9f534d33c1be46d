"""Classification losses, keyed by `loss.name`; importing this package registers them all."""

from losses import classification, logit_adjusted  # noqa: F401
from losses.registry import LOSSES


def build_loss(cfg, class_counts):
    return LOSSES.get(cfg.loss.name)(cfg, class_counts)


__all__ = ["LOSSES", "build_loss"]
