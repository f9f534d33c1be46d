"""Resumable training samplers whose order is a pure function of (seed, epoch), keyed by
`data.sampler`: `shuffle` (a permutation per epoch), `drs` (deferred re-sampling) and
`class_balanced` (every class equally likely, for the classifier stage)."""

from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from core.class_weights import class_balanced_weights
from core.registry import Registry
from core.seeds import SAMPLER_STREAM, epoch_seed

SAMPLERS = Registry("sampler", "data.sampler")


def epoch_indices(num_samples: int, seed: int, epoch: int, sample_weights: Optional[torch.Tensor] = None,
                  resample_start: int = 0) -> torch.Tensor:
    """int64 (num_samples,): the indices one epoch visits, in order; a pure function of its inputs.

    A permutation of 0..num_samples-1 without weights or before `resample_start`. Otherwise
    num_samples draws with replacement, index i with probability sample_weights[i] / sum(sample_weights).
    Every sampler (and a distributed one, by slicing this order) takes its epoch from here.
    """
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, stream=SAMPLER_STREAM))
    if sample_weights is None or epoch < resample_start:
        return torch.randperm(num_samples, generator=generator)
    return torch.multinomial(sample_weights, num_samples, replacement=True, generator=generator)


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
        return epoch_indices(self.num_samples, self.seed, self.epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.start:].tolist())

    def __len__(self) -> int:
        return self.num_samples - self.start


def resampling_weights(targets: Sequence[int], beta: float) -> torch.Tensor:
    """float64 (N,): each sample's class-balanced weight w_c = (1 - beta) / (1 - beta^{n_c}).

    Classes come from the labels present, so a class without training samples never gets the
    infinite weight of n_c = 0. Class c is then drawn with probability proportional to n_c w_c.
    """
    _, class_of_sample, counts = np.unique(np.asarray(targets), return_inverse=True, return_counts=True)
    return torch.from_numpy(class_balanced_weights(counts, beta)[class_of_sample.reshape(-1)])


class DeferredResampler(EpochShuffleSampler):
    """Deferred re-sampling (DRS, Cao et al. 2019): the epoch shuffle before `start_epoch`, then
    num_samples draws with replacement, each index with probability proportional to `sample_weights`.

    Before the start it yields exactly what EpochShuffleSampler(num_samples, seed) yields;
    set_epoch / set_start work the same way (a run resumed mid-epoch sees the same indices).
    """

    def __init__(self, sample_weights: torch.Tensor, start_epoch: int, seed: int):
        super().__init__(len(sample_weights), seed)
        self.sample_weights = torch.as_tensor(sample_weights, dtype=torch.float64)
        self.start_epoch = start_epoch

    def epoch_order(self) -> torch.Tensor:
        return epoch_indices(self.num_samples, self.seed, self.epoch, self.sample_weights, self.start_epoch)


def class_uniform_weights(targets: Sequence[int]) -> torch.Tensor:
    """float64 (N,): 1 / n_c for a sample of class c, so that each draw picks every class present
    with probability n_c * (1 / n_c) / C = 1 / C, then a sample of it uniformly (class-balanced
    sampling of Kang et al. 2020, the sampler of cRT and LWS)."""
    _, class_of_sample, counts = np.unique(np.asarray(targets), return_inverse=True, return_counts=True)
    return torch.from_numpy(1.0 / counts[class_of_sample.reshape(-1)].astype(np.float64))


@SAMPLERS.register("shuffle", help="a fresh permutation each epoch")
def build_shuffle_sampler(data_cfg, targets: Sequence[int], seed: int) -> EpochShuffleSampler:
    return EpochShuffleSampler(len(targets), seed)


@SAMPLERS.register("drs", help="deferred re-sampling (Cao et al. 2019): the shuffle before data.resample_start, "
                   "from it len(dataset) draws with replacement, each sample's probability proportional to "
                   "the class-balanced weight of its class")
def build_deferred_resampler(data_cfg, targets: Sequence[int], seed: int) -> DeferredResampler:
    weights = resampling_weights(targets, data_cfg.resample_beta)
    return DeferredResampler(weights, data_cfg.resample_start, seed)


@SAMPLERS.register("class_balanced", help="len(dataset) draws with replacement, every class with probability "
                   "1 / C (cRT, LWS; Kang et al. 2020)")
def build_class_balanced_sampler(data_cfg, targets: Sequence[int], seed: int) -> DeferredResampler:
    """len(dataset) draws with replacement per epoch from epoch 0; a pure function of (seed, epoch)."""
    return DeferredResampler(class_uniform_weights(targets), 0, seed)


def build_sampler(data_cfg, targets: Sequence[int], seed: int) -> EpochShuffleSampler:
    """The training sampler named by `data.sampler`; labels come from the `targets` list only."""
    return SAMPLERS.get(data_cfg.sampler)(data_cfg, targets, seed)


class RankSlice(Sampler[int]):
    """One rank's part of every global batch of a base sampler's epoch order (torchrun).

    The base order (shuffle or DRS, a function of (seed, epoch), the same on every rank) is cut
    into global batches of `rank_batch * world_size` samples; rank r takes the r-th block of
    `rank_batch` of each. So the ranks' batches together are exactly the batch one process would
    draw with the global batch size, and an incomplete last global batch is dropped on every rank.
    `set_start(position)` counts global samples, as in one process.
    """

    def __init__(self, base: EpochShuffleSampler, rank: int, world_size: int, rank_batch: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.base, self.rank, self.world_size, self.rank_batch = base, rank, world_size, rank_batch

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def set_start(self, position: int) -> None:
        self.base.set_start(position)

    def epoch_order(self) -> torch.Tensor:
        order = self.base.epoch_order()[self.base.start:]
        global_batch = self.rank_batch * self.world_size
        usable = len(order) // global_batch * global_batch
        return order[:usable].view(-1, self.world_size, self.rank_batch)[:, self.rank].reshape(-1)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order().tolist())

    def __len__(self) -> int:
        return len(self.base) // (self.rank_batch * self.world_size) * self.rank_batch


class ShardSampler(Sampler[int]):
    """Evaluation: rank r takes samples r, r + W, r + 2W, ...; no padding, no duplicates, so every
    test image is counted exactly once when the ranks' predictions are gathered."""

    def __init__(self, num_samples: int, rank: int, world_size: int):
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
