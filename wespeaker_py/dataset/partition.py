"""Who am I (DDP rank, dataloader worker) and which list items are mine this epoch.

The list order of an epoch is a permutation seeded by ``(seed, epoch)`` only, the
same in every process; each (rank, worker) then takes a disjoint stride of it, so
every item is seen exactly once per epoch across ranks x workers. Randomness
inside a worker (shuffle buffer, chunk positions, speed, augmentation) comes
from a generator seeded by ``(seed, epoch, rank, worker)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch.distributed as dist
import torch.utils.data


@dataclass(frozen=True)
class WorkerPlace:
    """Rank and world size of this process, id and count of dataloader workers."""

    rank: int = 0
    world_size: int = 1
    worker_id: int = 0
    num_workers: int = 1

    @property
    def num_consumers(self) -> int:
        """How many (rank, worker) pairs share the list."""
        return self.world_size * self.num_workers


def process_rank() -> Tuple[int, int]:
    """``(rank, world_size)`` of this process: from torch.distributed, else env
    RANK/WORLD_SIZE, else 0/1."""
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return rank, world_size


def current_place(rank: int, world_size: int) -> WorkerPlace:
    """The place of this dataloader worker (from torch) in the rank ``rank`` of
    ``world_size`` (:func:`process_rank` of the process that made the dataset)."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return WorkerPlace(rank, world_size)
    return WorkerPlace(rank, world_size, info.id, info.num_workers)


def epoch_order(num_items: int, seed: int, epoch: int, shuffle: bool) -> List[int]:
    """The epoch's list order: a (seed, epoch) permutation when shuffling, else 0..n-1."""
    if not shuffle:
        return list(range(num_items))
    return np.random.default_rng([seed, epoch]).permutation(num_items).tolist()


def my_items(num_items: int, place: WorkerPlace, seed: int, epoch: int,
             shuffle: bool) -> List[int]:
    """Indices of the list items this (rank, worker) handles this epoch, in order."""
    order = epoch_order(num_items, seed, epoch, shuffle)
    return order[place.rank::place.world_size][place.worker_id::place.num_workers]


def my_quota(total: int, place: WorkerPlace) -> int:
    """This worker's share of ``sample_num_per_epoch``: total // world_size per rank, split
    as evenly as possible over the rank's workers (WeSpeaker's epoch_iter arithmetic)."""
    per_rank = total // place.world_size
    base, extra = divmod(per_rank, place.num_workers)
    return base + (1 if place.worker_id < extra else 0)


def worker_rng(seed: int, epoch: int, place: WorkerPlace) -> np.random.Generator:
    """The random generator of one (rank, worker) for one epoch."""
    return np.random.default_rng([seed, epoch, place.rank, place.worker_id])
