"""Classification losses, keyed by `loss.name`. Importing this package imports each of its modules,
so a loss registered in a new module here, with the settings it reads, is found (docs/DESIGN.md)."""

from core.registry import import_modules
from losses.registry import LOSSES

import_modules(__name__, __path__)


def build_loss(cfg, class_counts):
    return LOSSES.get(cfg.loss.name)(cfg, class_counts)


__all__ = ["LOSSES", "build_loss"]
