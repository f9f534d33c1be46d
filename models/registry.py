from engine.registry import Registry

BACKBONES = Registry("backbone", "model.backbone")
