"""Image transforms: the training augmentation presets of `data.transform` and evaluation
preprocessing, for PIL images (`data.decoder: pil`) or uint8 tensors (`data.decoder: torchvision`).

Presets (the paper's section 4, "Implementation details"; the jitter: docs/CHOICES.md, "Where the
recipes and file formats come from"):
    pad_crop_flip        zero-pad, random crop, flip: CIFAR and digits
    resized_crop         RandomResizedCrop, flip: Places-LT
    resized_crop_jitter  RandomResizedCrop, flip, ColorJitter(0.4, 0.4, 0.4, 0): ImageNet-LT, iNaturalist
Evaluation: Resize(eval_resize) of the shorter side and CenterCrop(image_size) when eval_resize > 0,
else the image as it is (CIFAR).

PIL images go through torchvision.transforms (v1), the pipeline of the published recipes. uint8
(3, H, W) tensors go through torchvision.transforms.v2, which makes the same torch random draws in
the same order: for the same RNG state, the same crop, flip and jitter. Pixels differ by a level or
a few (antialiased resize and colour jitter round differently, docs/BENCHMARKS.md). Every
transform returns a float tensor (3, H, W).
"""

from typing import Sequence

import torch
from torchvision import transforms
from torchvision.transforms import v2

# Per-channel statistics used by the reference CIFAR recipe (RGB order).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
# ImageNet's (ImageNet-LT, Places-LT) and iNaturalist 2018's (the authors' code).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INATURALIST_MEAN = (0.466, 0.471, 0.380)
INATURALIST_STD = (0.195, 0.194, 0.192)

TRANSFORM_PRESETS = ("pad_crop_flip", "resized_crop", "resized_crop_jitter")
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.0}


def preset_train_transform(preset: str, size: int, padding: int, hflip: bool, mean: Sequence[float],
                           std: Sequence[float], tensor_input: bool = False):
    """The training augmentation `preset` at output side `size`.

    tensor_input False: PIL image in (torchvision.transforms); True: uint8 tensor (3, H, W) in
    (transforms.v2). Either way a float tensor (3, size, size) out.
    """
    if preset not in TRANSFORM_PRESETS:
        raise ValueError(f"unknown transform preset {preset!r}; choose one of {', '.join(TRANSFORM_PRESETS)}")
    ops = v2 if tensor_input else transforms
    if preset == "pad_crop_flip":
        steps = [ops.RandomCrop(size, padding=padding, fill=0, padding_mode="constant")]
    else:
        steps = [ops.RandomResizedCrop(size, antialias=True)]
    if hflip:
        steps.append(ops.RandomHorizontalFlip(p=0.5))
    if preset == "resized_crop_jitter":
        steps.append(ops.ColorJitter(**JITTER))   # on uint8 tensors: the fast integer path
    return ops.Compose(steps + _to_normalized_float(tensor_input, mean, std))


def preset_eval_transform(size: int, resize: int, mean: Sequence[float], std: Sequence[float],
                          tensor_input: bool = False):
    """Evaluation preprocessing: Resize(resize) + CenterCrop(size) when resize > 0, then normalize.

    resize 0 keeps the image as it is (CIFAR: the 32 x 32 test images).
    """
    ops = v2 if tensor_input else transforms
    steps = [ops.Resize(resize, antialias=True), ops.CenterCrop(size)] if resize else []
    return ops.Compose(steps + _to_normalized_float(tensor_input, mean, std))


def _to_normalized_float(tensor_input: bool, mean: Sequence[float], std: Sequence[float]) -> list:
    """uint8 (tensor or PIL) -> float32 in [0, 1] -> (x - mean) / std, as ToTensor + Normalize."""
    if tensor_input:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return [transforms.ToTensor(), transforms.Normalize(tuple(mean), tuple(std))]
