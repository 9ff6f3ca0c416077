"""Swap experiments of the side-by-side comparison with WeSpeaker (bench/results_side_by_side.md).

Two commands, each taking the training command line of ``wespeaker_py.bin.train``
after ``--``:

``dump OUT_DIR -- TRAIN_ARGS``
    Write the project's training batch stream for that config and seed as
    features, one file per epoch (``OUT_DIR/epoch_N.pt``: a list of
    ``{"key", "label", "feat"}`` batches, WeSpeaker's batch format), without
    training. The stream is a function of the seed and the epoch only (see
    ``wespeaker_py.dataset.partition``), so it is the one a training run sees.

``replay BATCH_DIR [--init STATE_DICT] -- TRAIN_ARGS``
    Train with the project's trainer (model, head, optimizer, schedules, step,
    loop, checkpoints) on the batches of ``BATCH_DIR/epoch_N.pt`` instead of its
    own input pipeline; the fbank front-end becomes the identity, since the
    batches hold features. ``--init`` loads start weights (a state_dict with the
    model's keys, e.g. WeSpeaker's initial weights); ``--nudge`` then moves every
    weight by one float32 ulp (a rounding-sized change, to measure how far
    rounding alone carries a run).

The WeSpeaker side of a swap is WeSpeaker's own train.py with a few lines
patched in the side-by-side scratch copy (not part of the project): it dumps
its batches and initial weights (``SBS_DUMP_DIR``), or trains on a dump
(``SBS_REPLAY_DIR``) from given weights (``SBS_INIT``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from contextlib import ExitStack
from typing import Iterator, List, Mapping
from unittest import mock

import torch
import torch.nn as nn

from wespeaker_py.bin import train as train_cli
from wespeaker_py.config import TrainConfig
from wespeaker_py.dataset import Dataset
from wespeaker_py.dataset.device_augment import augment_batch
from wespeaker_py.dataset.stats import SkipSummary
from wespeaker_py.train import builder, trainer
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.train.plan import TrainingPlan, resolve
from wespeaker_py.utils.logging_utils import setup_logging

CPU_WORLD = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _fbank_frontend(plan: TrainingPlan) -> nn.Module:
    """The plan's fbank front-end; the batches of a swap are fbank features."""
    if plan.model_holds_frontend:
        sys.exit(f"sbs_replay.py swaps fbank features, but config key "
                 f"'dataset_args.frontend' is {plan.dataset_args.frontend!r}")
    return plan.frontend


def dump(out_dir: str, train_args: List[str]) -> None:
    """Write the project's training batches (as fbank features) epoch by epoch."""
    setup_logging()   # forked DataLoader workers inherit it (and log nowhere else)
    config = train_cli.config_from_args(train_args)
    trainer.set_seed(config.seed)   # the dither and SpecAugment draws of the features
    plan = resolve(config, CPU_WORLD)
    frontend = _fbank_frontend(plan).train()
    dataset = builder.build_dataset(plan)
    loader = builder.build_loader(plan, dataset)
    os.makedirs(out_dir, exist_ok=True)
    for epoch in range(1, plan.num_epochs + 1):
        dataset.set_epoch(epoch)
        batches = []
        iterator = iter(loader)
        for _ in range(plan.epoch_iter):
            batch = next(iterator)
            # the step's own input: speed, noise and reverb of augment_on: device applied
            wavs, labels = augment_batch(batch, CPU_WORLD.device)
            with torch.no_grad():
                feats = frontend(wavs)
            batches.append({"key": list(batch["keys"]), "label": labels.clone(),
                            "feat": feats.clone()})
        del iterator
        torch.save(batches, os.path.join(out_dir, f"epoch_{epoch}.pt"))
        print(f"epoch {epoch}: {len(batches)} batches -> {out_dir}", flush=True)


class _ReplayLoader:
    """Stands in for the DataLoader: the recorded batches of the dataset's current epoch."""

    def __init__(self, batch_dir: str, dataset: Dataset):
        self.batch_dir = batch_dir
        self.dataset = dataset

    def __iter__(self) -> Iterator[Mapping[str, object]]:
        path = os.path.join(self.batch_dir, f"epoch_{self.dataset.epoch}.pt")
        for batch in torch.load(path):
            yield {"keys": list(batch["key"]), "wavs": batch["feat"].float(),
                   "labels": batch["label"].long()}


def _nudged_up(model: nn.Module) -> None:
    """Every weight one float32 ulp up (towards +inf)."""
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.nextafter(param, torch.full_like(param, float("inf"))))


def replay(batch_dir: str, init: str, nudge: bool, train_args: List[str]) -> None:
    """Train the project's trainer on recorded batches (see the module docstring)."""
    resolve_plan, load_start_weights = trainer.resolve, builder.load_start_weights

    def plan_on_features(config: TrainConfig, world: DistContext) -> TrainingPlan:
        plan = resolve_plan(config, world)   # feat_dim is filled in from the fbank here
        _fbank_frontend(plan)
        return dataclasses.replace(plan, frontend=nn.Identity())

    def replay_loader(plan: TrainingPlan, dataset: Dataset) -> _ReplayLoader:
        # the data set reads nothing, so it has no skips to count (and no workers to wait
        # for, as its epoch_summary would)
        dataset.epoch_summary = lambda *args, **kwargs: SkipSummary()
        return _ReplayLoader(batch_dir, dataset)

    def start_weights(plan: TrainingPlan, model: nn.Module) -> None:
        load_start_weights(plan, model)
        if init:
            model.load_state_dict(torch.load(init, map_location="cpu"))
            print(f"initial weights from {init}", flush=True)
        if nudge:
            _nudged_up(model)
            print("every weight moved up by one ulp", flush=True)

    with ExitStack() as patches:
        patches.enter_context(mock.patch.object(trainer, "resolve", plan_on_features))
        patches.enter_context(mock.patch.object(builder, "build_loader", replay_loader))
        patches.enter_context(mock.patch.object(builder, "load_start_weights", start_weights))
        train_cli.main(train_args)


def main(argv: List[str]) -> None:
    """``dump`` or ``replay``, as the module docstring says."""
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    own, train_args = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dump_parser = sub.add_parser("dump")
    dump_parser.add_argument("out_dir")
    replay_parser = sub.add_parser("replay")
    replay_parser.add_argument("batch_dir")
    replay_parser.add_argument("--init", default="")
    replay_parser.add_argument("--nudge", action="store_true")
    args = parser.parse_args(own)
    if args.command == "dump":
        dump(args.out_dir, train_args)
    else:
        replay(args.batch_dir, args.init, args.nudge, train_args)


if __name__ == "__main__":
    main(sys.argv[1:])
