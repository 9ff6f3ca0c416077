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
import os
import sys
from typing import List

import torch

from wespeaker_py.bin import train as train_cli
from wespeaker_py.config import load_config, parse_override_args
from wespeaker_py.dataset import Dataset, spk2id_from_utt2spk
from wespeaker_py.dataset.stats import SkipSummary
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.train import builder, experiment, trainer
from wespeaker_py.utils.tables import read_key_value


def _train_config(train_args: List[str]):
    parser = train_cli.build_parser()
    args, rest = parser.parse_known_args(train_args)
    overrides = [(key, getattr(args, key)) for key in train_cli._NAMED_KEYS
                 if getattr(args, key) is not None]
    return load_config(args.config, overrides + parse_override_args(rest))


def dump(out_dir: str, train_args: List[str]) -> None:
    """Write the project's training batches (as fbank features) epoch by epoch."""
    config = _train_config(train_args)
    spk2id = spk2id_from_utt2spk(config.train_label)
    epoch_iter = builder.epoch_iterations(config, len(read_key_value(config.train_label)), 1)
    dataset_args = builder.effective_dataset_args(config)
    dataset = Dataset(config.data_type, config.train_data, dataset_args, spk2id=spk2id,
                      reverb_data=config.reverb_data, noise_data=config.noise_data,
                      seed=config.seed, repeat=True)
    loader = trainer.build_loader(config.dataloader_args, dataset, torch.device("cpu"))
    frontend = FbankFeatures.from_dataset_args(dataset_args).train()
    os.makedirs(out_dir, exist_ok=True)
    for epoch in range(1, config.num_epochs + 1):
        dataset.set_epoch(epoch)
        batches = []
        iterator = iter(loader)
        for _ in range(epoch_iter):
            batch = next(iterator)
            with torch.no_grad():
                feats = frontend(batch["wavs"])
            batches.append({"key": list(batch["keys"]), "label": batch["labels"].clone(),
                            "feat": feats.clone()})
        del iterator
        torch.save(batches, os.path.join(out_dir, f"epoch_{epoch}.pt"))
        print(f"epoch {epoch}: {len(batches)} batches -> {out_dir}", flush=True)


class _ReplayLoader:
    """Stands in for the DataLoader: the recorded batches of the dataset's current epoch."""

    def __init__(self, batch_dir: str, dataset):
        self.batch_dir = batch_dir
        self.dataset = dataset

    def __iter__(self):
        path = os.path.join(self.batch_dir, f"epoch_{self.dataset.epoch}.pt")
        for batch in torch.load(path):
            yield {"keys": list(batch["key"]), "wavs": batch["feat"].float(),
                   "labels": batch["label"].long()}


class _Identity(torch.nn.Module):
    """The front-end of a replay: the batches already hold features."""

    def __init__(self, output_dim: int):
        super().__init__()
        self.output_dim = output_dim

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def replay(batch_dir: str, init: str, nudge: bool, train_args: List[str]) -> None:
    """Train the project's trainer on recorded batches (see the module docstring)."""
    original_build_frontend = builder.build_frontend
    original_load_start = experiment.load_start_weights
    builder.build_frontend = lambda config: _Identity(
        original_build_frontend(config).output_dim)
    trainer.build_loader = lambda args, dataset, device: _ReplayLoader(batch_dir, dataset)
    trainer._log_data_summary = lambda dataset, ctx, epoch: SkipSummary()

    def load_start_weights(settings, model):
        result = original_load_start(settings, model)
        if init:
            model.load_state_dict(torch.load(init, map_location="cpu"))
            print(f"initial weights from {init}", flush=True)
        if nudge:
            with torch.no_grad():
                for param in model.parameters():
                    param.copy_(torch.nextafter(param, torch.full_like(param, float("inf"))))
            print("every weight moved up by one ulp", flush=True)
        return result

    experiment.load_start_weights = load_start_weights
    trainer.experiment.load_start_weights = load_start_weights
    train_cli.main(train_args)


def main(argv: List[str]) -> None:
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
