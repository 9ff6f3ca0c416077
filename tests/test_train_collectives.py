"""The training's small collectives on two gloo ranks (torch.multiprocessing, no torchrun)."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_helpers import free_port
from wespeaker_py.train.distributed import DistContext, true_on_every_rank


def _rank(rank: int, port: int, flags, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        ctx = DistContext(rank, rank, 2, torch.device("cpu"))
        for index, pair in enumerate(flags):
            agreed = true_on_every_rank(torch.tensor(pair[rank]), ctx)
            results[(rank, index)] = bool(agreed)
    finally:
        dist.destroy_process_group()


def test_a_flag_is_true_on_every_rank_only_where_all_ranks_say_so():
    # a float16 step whose loss is NaN on one rank only must be dropped by both
    flags = [(True, True), (True, False), (False, True), (False, False)]
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(free_port(), flags, results), nprocs=2, join=True)
    for rank in (0, 1):
        assert [results[(rank, index)] for index in range(len(flags))] == [
            True, False, False, False]
    single = DistContext(0, 0, 1, torch.device("cpu"))
    assert bool(true_on_every_rank(torch.tensor(False), single)) is False
