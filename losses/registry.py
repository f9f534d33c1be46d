from engine.registry import Registry

LOSSES = Registry("loss", "loss.name")
