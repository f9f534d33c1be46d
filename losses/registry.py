from core.registry import Registry

LOSSES = Registry("loss", "loss.name")
