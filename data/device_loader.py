"""A loader for small-image datasets that lives on the accelerator (`data.loader: device`).

A CIFAR-LT epoch is ~100 steps of a small network: a CPU DataLoader (PIL decode, per-image
augmentation, host-to-device copies) is what bounds it. Here the whole split is kept on the device
as uint8 (CIFAR-10: 12,406 x 32 x 32 x 3 = 38 MB), and each batch is gathered, cropped, flipped and
normalized by a handful of batched tensor operations, with no host synchronisation.

The augmentation draws from the same distribution as the torchvision path (`data/transforms.py`):
zero padding p, a crop offset uniform over 0..2p in each axis, a horizontal flip with probability
1/2, then (x / 255 - mean) / std. For a given offset and flip the output equals torchvision's.
Batch order comes from the same samplers as the standard path, so DRS and resume work unchanged.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def stack_images(dataset) -> np.ndarray:
    """uint8 (N, H, W, 3) pixels of a dataset: its array, or every file decoded once."""
    if hasattr(dataset, "images"):
        return np.asarray(dataset.images)
    from core.errors import UserError
    from data.datasets import load_rgb  # FileDataset: decode each file once, up front

    first = np.asarray(load_rgb(dataset.paths[0]))
    images = np.empty((len(dataset.paths),) + first.shape, dtype=np.uint8)
    for index, path in enumerate(dataset.paths):
        pixels = np.asarray(load_rgb(path))
        if pixels.shape != first.shape:
            raise UserError(f"data.loader=device needs images of one size: {path} is {pixels.shape[1]}x"
                            f"{pixels.shape[0]}, {dataset.paths[0]} is {first.shape[1]}x{first.shape[0]}; "
                            "use data.loader=standard")
        images[index] = pixels
    return images


def augment_batch(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Crop and flip a padded batch by one gather.

    images: uint8 (B, H + 2p, W + 2p, 3), already zero-padded; offsets: int (B, 2) as (row, col);
    flips: bool (B,). Returns uint8 (B, 3, size, size) in channels_last memory format.
    """
    ramp = torch.arange(size, device=images.device)
    rows = offsets[:, 0:1] + ramp                                            # (B, size)
    cols = offsets[:, 1:2] + torch.where(flips[:, None], size - 1 - ramp, ramp)  # flipped crop
    batch = torch.arange(len(images), device=images.device)[:, None, None]
    cropped = images[batch, rows[:, :, None], cols[:, None, :]]               # (B, size, size, 3)
    return cropped.permute(0, 3, 1, 2)


class DeviceLoader:
    """Iterates (images (B, 3, S, S) float, targets (B,)) batches on `device`.

    `sampler` gives the epoch's order (any sampler of data/samplers.py: set_epoch/set_start are
    called by the engine as for a DataLoader). Training batches are augmented and drop_last; with
    `train=False` the images are only normalized and the last partial batch is kept.
    """

    def __init__(self, dataset, batch_size: int, device, *, mean: Sequence[float], std: Sequence[float],
                 train: bool, sampler=None, crop_size: int = 32, padding: int = 4, hflip: bool = True,
                 dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        pixels = torch.from_numpy(stack_images(dataset)).to(self.device)          # (N, H, W, 3) uint8
        if train and padding:
            pixels = F.pad(pixels, (0, 0, padding, padding, padding, padding))  # zero border, as RandomCrop
        self.pixels = pixels
        self.targets = torch.as_tensor(dataset.targets, dtype=torch.long, device=self.device)
        self.batch_size, self.train, self.sampler = batch_size, train, sampler
        self.crop_size, self.padding, self.hflip, self.dtype = crop_size, padding, hflip, dtype
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        count = len(self.sampler) if self.sampler is not None else len(self.targets)
        return count // self.batch_size if self.train else -(-count // self.batch_size)

    def _order(self) -> torch.Tensor:
        if self.sampler is None:
            return torch.arange(len(self.targets), device=self.device)
        return torch.as_tensor(list(iter(self.sampler)), dtype=torch.long).to(self.device, non_blocking=True)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> (x - 255 mean) / (255 std), i.e. Normalize(ToTensor(x))."""
        return ((images.float() - self.mean) / self.std).to(self.dtype)

    def _augment(self, pixels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        count = len(pixels)
        offsets = torch.randint(0, 2 * self.padding + 1, (count, 2), device=self.device, generator=generator)
        if self.hflip:
            flips = torch.rand(count, device=self.device, generator=generator) < 0.5
        else:
            flips = torch.zeros(count, dtype=torch.bool, device=self.device)
        return augment_batch(pixels, offsets, flips, self.crop_size)

    def __iter__(self):
        order = self._order()
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            pixels = self.pixels[index]
            images = self._augment(pixels) if self.train else pixels.permute(0, 3, 1, 2)
            yield self.normalize(images).contiguous(memory_format=torch.channels_last), self.targets[index]
