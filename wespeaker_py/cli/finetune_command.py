"""``wespeaker-py finetune``: a model adapted to your own speakers, written as a new model
folder (see docs/finetune.md)."""
from __future__ import annotations

import argparse

from wespeaker_py.cli.common import add_common_flags, add_flag, hint_on_interrupt
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, parse_fail_fraction

EXAMPLES = """examples:
  wespeaker-py finetune --model exp/ResNet34 --data data/calls --out exp/ResNet34-calls
  wespeaker-py finetune --model exp/ResNet34 --data data/calls --out exp/ResNet34-calls \\
      --epochs 8 --lr 5e-4 --freeze none --device cpu --num_threads 2

DIR: wav.scp + utt2spk (+ segments) at any rate, or without a wav.scp one folder
of audio files per speaker (DIR/<speaker>/*.wav). A speaker-disjoint dev part
(--dev_speakers) measures EER before and after and fits calibration.json; a new
model worse on it than the source is written all the same, with a warning. OUT
is a model folder (config.yaml, avg_model.pt, calibration.json, finetune.json
with the figures); run the same command again to resume a killed or
interrupted run (with or without --overwrite). --overwrite replaces a run with
other arguments, or trains a finished one again. See docs/finetune.md."""


def cmd_finetune(args: argparse.Namespace) -> int:
    """``wespeaker-py finetune``: a new model folder, trained on your speakers."""
    import logging

    from wespeaker_py.finetune import FinetuneOptions, finetune
    from wespeaker_py.finetune.config import options_named_as_flags
    from wespeaker_py.finetune.report import summary_line
    from wespeaker_py.finetune.run import resume_hint
    from wespeaker_py.utils.logging_utils import setup_logging
    if not logging.getLogger().handlers:  # training logs its progress; keep a caller's setup
        setup_logging()
    fields = FinetuneOptions.__dataclass_fields__
    options = FinetuneOptions(**{name: getattr(args, name) for name in fields
                                 if getattr(args, name) is not None})
    # its messages name the options as flags here, as keyword arguments in Python
    with options_named_as_flags():
        with hint_on_interrupt(resume_hint()):
            report = finetune(args.model, args.data, args.out, options, device=args.device,
                              num_threads=args.num_threads, overwrite=args.overwrite,
                              config=args.config, mix_data=args.mix_data, log_summary=False,
                              max_fail_fraction=args.max_fail_fraction)
        # printed here, on stdout, rather than logged too (a terminal would show it twice)
        print(summary_line(report, args.out))
    if report.get("next_steps"):
        print(report["next_steps"])
    return 0


def add_finetune_command(commands) -> None:
    """Add finetune to ``commands``."""
    from wespeaker_py.finetune.config import FEW_SPEAKERS, FREEZE_CHOICES, FinetuneOptions
    defaults = FinetuneOptions()
    summary = "fine-tune a model on your own speakers: a new model folder with calibration"
    sub = commands.add_parser("finetune", help=summary, description=summary,
                              epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.set_defaults(handler=cmd_finetune, subcommand_parser=sub)
    add_flag(sub, "model", required=True, metavar="SRC",
             help="experiment dir, model folder or checkpoint with PyTorch weights")
    add_flag(sub, "config", default=None, help="config.yaml for a checkpoint")
    add_flag(sub, "data", required=True, metavar="DIR",
             help="wav.scp + utt2spk (+ segments), or one folder of audio files per speaker")
    add_flag(sub, "out", required=True, metavar="OUT", help="the new model folder")
    add_flag(sub, "mix_data", default=None, metavar="DIR2",
             help="original-domain data (as DIR) mixed into training")
    add_flag(sub, "epochs", type=int, default=None, help=f"default {defaults.epochs}")
    add_flag(sub, "lr", type=float, default=None,
             help=f"peak learning rate as applied (Adam), default {defaults.lr:g}")
    add_flag(sub, "margin", type=float, default=None,
             help=f"additive angular margin, default {defaults.margin:g}")
    add_flag(sub, "freeze", default=None, choices=FREEZE_CHOICES,
             help=f"what does not train in the first --freeze_epochs: front (the first layer), "
                  f"body (all but the new head), none, or auto (body below {FEW_SPEAKERS} "
                  f"training speakers, else none); default {defaults.freeze}")
    add_flag(sub, "freeze_epochs", type=int, default=None,
             help=f"default {defaults.freeze_epochs}")
    add_flag(sub, "sample_rate", type=int, default=None,
             help="the new model's rate (default: the data's)")
    add_flag(sub, "dev_speakers", type=int, default=None,
             help="speakers held out for the dev EER and calibration, at least 2 (default: "
                  "a fifth); the data needs at least 4 speakers, 2 of them to train on")
    add_flag(sub, "batch_size", type=int, default=None,
             help="utterances per batch, at least 2; default: the source config's")
    add_flag(sub, "num_workers", type=int, default=None, help="data loader workers, 0 or more")
    add_flag(sub, "num_avg", type=int, default=None,
             help=f"last checkpoints averaged, default {defaults.num_avg}")
    add_flag(sub, "seed", type=int, default=None, help=f"default {defaults.seed}")
    add_flag(sub, "device", default=None,
             help="auto, cpu, cuda or cuda:N (default, like auto: a GPU if any, else the CPU); a "
                  "device this machine lacks is refused before anything is written")
    # default None: the phase configs leave the key out, as they did before the flag existed
    add_flag(sub, "max_fail_fraction", type=parse_fail_fraction, default=None, metavar="F",
             help=f"stop (exit 1, the epoch saved) after a training epoch that skipped more "
                  f"than this fraction of the utterances it read (default "
                  f"{DEFAULT_MAX_FAIL_FRACTION:g}; 1: never stop); raise it to go on with "
                  f"what is left: the same command resumes with another value")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace the fine-tuning run OUT holds when it has other "
                          "arguments, or train this one again once finished (its checkpoints "
                          "are lost); an unfinished run of the same command resumes even "
                          "with --overwrite")
    add_common_flags(sub)
