"""Train a speaker model (the recipe's stage 3).

    torchrun --nnodes=N --nproc_per_node=G -m wespeaker_py.bin.train \\
        --config conf/resnet34.yaml --exp_dir exp/resnet34 \\
        --data_type shard --train_data data/vox2_dev/shard.list \\
        --train_label data/vox2_dev/utt2spk \\
        [--reverb_data data/rirs/wav.scp --noise_data data/musan/wav.scp] \\
        [--checkpoint exp/resnet34/models/model_40.pt] [--model_args.embed_dim 192 ...]

Without torchrun the same command trains in one process. Any config key can be
overridden with its dotted name; the merged config is saved as exp_dir/config.yaml.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, List, Optional

from wespeaker_py.cli.common import add_flag, bin_parser, run_main
from wespeaker_py.utils.logging_utils import setup_logging

if TYPE_CHECKING:
    from wespeaker_py.config import TrainConfig

# Keys run.sh passes on the command line; any other key works as --dotted.key too.
_NAMED_KEYS = {
    "exp_dir": "experiment directory (models/, config.yaml, train.log)",
    "gpus": "device ids by local rank, e.g. \"[0,1]\"; \"[]\" trains on the CPU",
    "num_avg": "number of final epochs kept for averaging",
    "data_type": "raw or shard",
    "train_data": "training data list (raw.list or shard.list)",
    "train_label": "utt2spk of the training set (defines the speaker ids)",
    "reverb_data": "list of room impulse responses for augmentation",
    "noise_data": "list of noise recordings for augmentation",
    "checkpoint": "checkpoint to resume from (model_<epoch>.pt; a bare state_dict loads weights)",
    "model_init": "checkpoint whose weights initialise the model",
}


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations: "--model X" must override the model, not mean --model_init
    parser = bin_parser(
        __file__, __doc__, allow_abbrev=False,
        epilog="Other config keys: --dotted.key VALUE (e.g. --model_args.embed_dim 192).")
    add_flag(parser, "config", required=True, help="training config YAML")
    for key, text in _NAMED_KEYS.items():
        add_flag(parser, key, help=text)
    return parser


def config_from_args(argv: Optional[List[str]] = None) -> "TrainConfig":
    """The training config a command line of this module gives: ``--config`` with the
    named flags and ``--dotted.key VALUE`` overrides applied."""
    args, rest = build_parser().parse_known_args(argv)
    from wespeaker_py.config import load_config, parse_override_args
    overrides = [(key, getattr(args, key)) for key in _NAMED_KEYS
                 if getattr(args, key) is not None]
    return load_config(args.config, overrides + parse_override_args(rest))


def main(argv: Optional[List[str]] = None) -> None:
    """Train; a bad config key or value is a ConfigError, which :func:`run_main` reports in
    one line with exit status 2."""
    setup_logging()
    config = config_from_args(argv)
    from wespeaker_py.train.trainer import run_training
    from wespeaker_py.train.plan import check_data_files
    check_data_files(config)
    run_training(config)


if __name__ == "__main__":
    sys.exit(run_main(main))
