"""Image transforms: CIFAR-style training augmentation and plain evaluation preprocessing.

Both take PIL images (as produced by data.datasets) and return float tensors (3, H, W).
"""

from typing import Optional, Sequence

from torchvision import transforms

# Per-channel statistics used by the reference CIFAR recipe (RGB order).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def train_transform(crop_size: int, padding: int, hflip: bool,
                    mean: Sequence[float], std: Sequence[float]) -> transforms.Compose:
    """Zero-pad + random crop, optional horizontal flip, ToTensor, Normalize.

    Args:
        crop_size: side of the output crop (32 for CIFAR).
        padding: zero pixels added on each side before cropping (4 for CIFAR).
        hflip: add a horizontal flip with probability 0.5.
        mean, std: per-channel normalization, 3 floats each.

    Returns:
        Compose mapping a PIL image to a float tensor (3, crop_size, crop_size).
    """
    steps = [transforms.RandomCrop(crop_size, padding=padding, fill=0, padding_mode="constant")]
    if hflip:
        steps.append(transforms.RandomHorizontalFlip(p=0.5))
    steps += [transforms.ToTensor(), transforms.Normalize(tuple(mean), tuple(std))]
    return transforms.Compose(steps)


def eval_transform(mean: Sequence[float], std: Sequence[float],
                   resize: Optional[int] = None) -> transforms.Compose:
    """Deterministic preprocessing: optional Resize + CenterCrop, then ToTensor, Normalize.

    Args:
        mean, std: per-channel normalization, 3 floats each.
        resize: if given, shorter side resized to it and the centre resize x resize kept;
            None leaves the image size unchanged (CIFAR).

    Returns:
        Compose mapping a PIL image (H, W) to a float tensor (3, H, W), or (3, resize, resize).
    """
    steps = []
    if resize is not None:
        steps += [transforms.Resize(resize), transforms.CenterCrop(resize)]
    steps += [transforms.ToTensor(), transforms.Normalize(tuple(mean), tuple(std))]
    return transforms.Compose(steps)
