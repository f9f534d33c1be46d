"""ImageNet initialisation of a backbone from `model.pretrained`: none, torchvision, or a .pth file.

`torchvision` fetches the backbone's torchvision weights (IMAGENET1K_V1, see
models/backbones/resnet_imagenet.py) through the torch hub cache, so a file already in
`<torch hub dir>/checkpoints/` is used without network access. A path loads a torchvision-format
state dict (`torch.save(torchvision.models.resnet152(...).state_dict(), path)`); its `fc.*` keys
are dropped because the head is ours. Every other key must match the backbone exactly.
"""

from __future__ import annotations

import os

import torch

from core.errors import UserError


def load_pretrained(backbone, setting: str, backbone_name: str) -> None:
    """Load `setting` (the value of model.pretrained) into `backbone` in place."""
    if setting == "none":
        return
    if not hasattr(backbone, "stage_key"):
        raise UserError(f"key 'model.pretrained' is {setting!r}, but backbone {backbone_name} has no ImageNet "
                        f"weights; pretrained weights exist for resnet50, resnet152, resnext50_32x4d")
    if setting == "torchvision":
        weights = backbone.imagenet_weights
        state, source = torchvision_state_dict(weights), f"torchvision weights {weights} ({weights.url})"
    else:
        state, source = read_state_dict(setting), setting
    load_into_stages(backbone, state, source, backbone_name)


def hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def torchvision_state_dict(weights) -> dict:
    """The weights' state dict from the torch hub cache, downloading it there when missing."""
    try:
        return torch.hub.load_state_dict_from_url(weights.url, model_dir=hub_checkpoint_dir(), map_location="cpu",
                                                  check_hash=True, weights_only=True)
    except Exception as error:  # no network, a proxy, a truncated file: all end in the same advice
        file_name = os.path.basename(weights.url)
        raise UserError(
            f"key 'model.pretrained' is 'torchvision', but the {weights} weights could not be loaded "
            f"({type(error).__name__}: {error}). Without network access, download {weights.url} on another "
            f"machine, then either set model.pretrained=/path/to/{file_name} or put the file into the torch "
            f"hub cache as {os.path.join(hub_checkpoint_dir(), file_name)} ($TORCH_HOME/hub/checkpoints)") from None


def read_state_dict(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"key 'model.pretrained': file not found: {path} (valid: none, torchvision, or a path "
                        f"to a torchvision state dict .pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise UserError(f"key 'model.pretrained': cannot read {path}: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"key 'model.pretrained': {path} is not a state dict (a mapping of names to tensors, as "
                        f"written by torch.save(torchvision_model.state_dict(), path))")
    return state


def load_into_stages(backbone, state: dict, source: str, backbone_name: str) -> None:
    """Rename torchvision keys to stage keys, drop fc.*, and load strictly (shapes included)."""
    renamed = {}
    for key, value in state.items():
        stage_key = backbone.stage_key(key)
        if stage_key is not None:
            renamed[stage_key] = value
    expected = backbone.stages.state_dict()
    # old torchvision files lack num_batches_tracked; batch norm fills it in when loading
    missing = [k for k in expected if k not in renamed and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in renamed if k not in expected]
    reshaped = [k for k in renamed if k in expected and renamed[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        problems = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                       ("keys of another shape", reshaped)) if keys]
        raise UserError(f"key 'model.pretrained': {source} does not fit backbone {backbone_name}: "
                        f"{'; '.join(problems)}. It must be a torchvision {backbone_name} state dict "
                        f"(fc.* is ignored)")
    backbone.stages.load_state_dict(renamed, strict=True)
