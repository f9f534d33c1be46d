"""torchrun support: process group, rank helpers, exact gathering for evaluation.

Without torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK) the run is one plain
process and no process group is created. Under torchrun: NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from core.errors import UserError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


FAILURE_KEY = "rsg_lt/failure/rank{}"   # in the process group's store: why a rank ended
FAILURE_WAIT_S = 1.0                     # how long a rank that lost its peer waits for the peer's word

_group_started = False                  # a process group was made in this process (it outlives shutdown)


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def group_started() -> bool:
    return _group_started


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
    global _group_started
    _group_started = True
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


# ---------------------------------------------------------------------------------------------
# Why a rank failed, for the others: a rank blocked in a collective only learns from gloo or NCCL
# that its peer is gone ("Connection closed by peer"). The failing rank leaves its reason in the
# store (hosted by torchrun's agent, or by rank 0) before it exits, and the others read it there.


def failure_record(error: BaseException) -> dict:
    """What a rank tells the others about the error that ends it: its rank, its exit status (2 for a
    UserError, a mistake the user can fix) and one line."""
    lines = str(error).strip().splitlines()
    return {"rank": dist.get_rank() if dist.is_initialized() else 0,
            "status": 2 if isinstance(error, UserError) else 1,
            "message": f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": "), "time": time.time()}


def announce_failure(record: dict) -> None:
    """Leave this rank's failure_record where the other ranks can read it (`announced_failure`)."""
    if not dist.is_initialized():
        return
    try:
        dist.distributed_c10d._get_default_store().set(FAILURE_KEY.format(record["rank"]), json.dumps(record))
    except Exception:   # noqa: BLE001 - the store went with its host: torchrun's summary still names the rank
        pass


def announced_failure(wait_s: float = FAILURE_WAIT_S) -> Optional[dict]:
    """Another rank's failure_record, waiting up to `wait_s` for one; None when no rank left one (a
    rank killed by a signal says nothing)."""
    if not dist.is_initialized():
        return None
    others = [FAILURE_KEY.format(r) for r in range(dist.get_world_size()) if r != dist.get_rank()]
    deadline = time.time() + wait_s
    try:
        store = dist.distributed_c10d._get_default_store()
        while True:
            found = [key for key in others if store.check([key])]
            if found or time.time() >= deadline:
                return json.loads(store.get(found[0])) if found else None
            time.sleep(0.05)
    except Exception:   # noqa: BLE001 - no store to ask: the caller says only that a peer failed
        return None
