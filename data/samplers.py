"""A resumable epoch sampler whose order is a pure function of (seed, epoch)."""

from typing import Iterator

import torch
from torch.utils.data import Sampler

# Spreads epochs of different seeds apart so that (seed, epoch) pairs rarely share a generator seed.
SEED_STRIDE = 100003


class EpochShuffleSampler(Sampler[int]):
    """Yields a fresh permutation of 0..num_samples-1 each epoch, optionally from a start offset.

    Because the order depends only on (seed, epoch), a run resumed mid-epoch with
    set_epoch(e); set_start(k) sees exactly the indices the uninterrupted run would have seen.
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select this epoch's order and restart from its beginning."""
        self.epoch = epoch
        self.start = 0

    def set_start(self, position: int) -> None:
        """Skip the first `position` indices of this epoch's order (mid-epoch resume)."""
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"start position must be in 0..{self.num_samples}, got {position}")
        self.start = position

    def epoch_order(self) -> torch.Tensor:
        """int64 (num_samples,): the full order of the current epoch."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed * SEED_STRIDE + self.epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.start:].tolist())

    def __len__(self) -> int:
        return self.num_samples - self.start
