from core.registry import Registry

BACKBONES = Registry("backbone", "model.backbone")
