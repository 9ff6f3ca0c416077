"""torch.distributed set-up: torchrun environment, device choice, DDP wrapping, small collectives.

Under ``torchrun`` (``WORLD_SIZE`` set) a process group is created, NCCL on GPU
and gloo on CPU, and on GPU a second, gloo, group for the flags the ranks agree
on after every batch (stop, save), which must not wait for the device; without
torchrun the same code runs as a single process with no process group.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from wespeaker_py.config import ConfigError, parse_gpus
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job and which device it trains on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    # the gloo group of the small host-side collectives (``all_reduce_sum(host=True)``);
    # None: the default group (itself gloo on the CPU)
    host_group: Optional[Any] = None
    # the config's gpus when none could be used (no CUDA): the run's log says so
    unused_gpus: Optional[List[int]] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def unused_gpus_note(gpus: List[int]) -> str:
    """What the console warning and the run's log say of ``gpus`` on a machine without CUDA."""
    return f"gpus {gpus} asked for, but no CUDA device is available"


def choose_device(local_rank: int, gpus: Optional[List[int]]) -> torch.device:
    """The CUDA device for ``local_rank`` (via ``gpus`` when given), or the CPU.

    ``gpus`` naming devices on a machine without CUDA trains on the CPU with a warning
    (recipes pass their ``gpus`` on CPU-only machines too).
    """
    if gpus == []:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if gpus:
            logger.warning("%s: training on the CPU", unused_gpus_note(gpus))
        return torch.device("cpu")
    if gpus is None:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if local_rank >= len(gpus):
        raise ConfigError(f"config key 'gpus' ({gpus}) has no entry for local rank "
                          f"{local_rank}: list one device per process on the node")
    return torch.device("cuda", gpus[local_rank])


def init_distributed(gpus: Union[None, int, str, Sequence[int]] = None) -> DistContext:
    """Join the torchrun job if there is one; pick this process's device.

    ``gpus``: the config's, in any form :func:`~wespeaker_py.config.parse_gpus` reads.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    asked = parse_gpus(gpus)
    device = choose_device(local_rank, asked)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    host_group = None
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend,
                                device_id=device if device.type == "cuda" else None)
    # also for a process group a caller made: the host collectives need gloo
    if dist.is_initialized() and dist.get_backend() != "gloo":
        host_group = dist.new_group(backend="gloo")
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device,
                       host_group=host_group,
                       unused_gpus=asked if asked and device.type == "cpu" else None)


def shutdown_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, ctx: DistContext,
             find_unused_parameters: bool = False) -> nn.Module:
    """Wrap ``module`` in DistributedDataParallel when running distributed.

    ``find_unused_parameters``: some parameters may get no gradient in a step (a layer
    skipped by LayerDrop); DDP then looks for them after each forward pass.
    """
    if not ctx.is_distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.is_distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def gather_objects(obj: Any, ctx: DistContext) -> List[Any]:
    """Every rank's ``obj``, ordered by rank (a one-element list in a single process)."""
    if not ctx.is_distributed:
        return [obj]
    gathered: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(values: torch.Tensor, ctx: DistContext, host: bool = False) -> torch.Tensor:
    """Element-wise sum of ``values`` over ranks (returns a new tensor).

    ``host``: ``values`` is a CPU tensor, summed through ``ctx.host_group`` (gloo), so
    nothing waits for the device: cheap enough to run after every batch.
    """
    total = values.clone()
    if ctx.is_distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.host_group if host else None)
    return total


def true_on_every_rank(flag: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """A bool tensor that is True where ``flag`` is True on every rank (a device tensor
    all the way: nothing waits for the host)."""
    if not ctx.is_distributed:
        return flag
    return all_reduce_sum((~flag).to(torch.float32), ctx) == 0
