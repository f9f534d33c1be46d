"""torchrun support: process group, rank helpers, exact gathering for evaluation.

Without torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK) the run is one plain
process and no process group is created. Under torchrun: NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(device_name: str) -> tuple[DistributedContext, torch.device]:
    """Start the process group when launched by torchrun; pick this rank's device."""
    if not launched_by_torchrun():
        return DistributedContext(), None
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return DistributedContext(rank, world_size, local_rank), device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_uneven(values: torch.Tensor) -> torch.Tensor:
    """Concatenate each rank's 1-D tensor, of any length, in rank order, on every rank.

    Unlike a padded DistributedSampler, nothing is duplicated: each test image is counted once.
    """
    if not dist.is_initialized():
        return values
    world_size = dist.get_world_size()
    length = torch.tensor([values.numel()], device=values.device)
    lengths = [torch.zeros_like(length) for _ in range(world_size)]
    dist.all_gather(lengths, length)
    longest = int(max(int(n) for n in lengths))
    padded = torch.zeros(longest, dtype=values.dtype, device=values.device)
    padded[:values.numel()] = values
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([chunk[:int(n)] for chunk, n in zip(gathered, lengths)])


def broadcast_flag(flag: bool, device) -> bool:
    """True on every rank if it is True on any rank (a stop request, a failure)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather_lists(items: list) -> list:
    """Every rank's list of small picklable items (file names), concatenated in rank order, on
    every rank; one process: the list itself."""
    if not dist.is_initialized():
        return list(items)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]
