"""``wespeaker-py``: use a trained speaker model from the shell.

Subcommands: embed, similarity, verify, enroll, identify, calibrate, diarize, window-lda,
band-fill, export, info, finetune (``wespeaker-py SUBCOMMAND --help`` for each). MODEL is
an experiment directory, a WeSpeaker-style model folder (config.yaml + avg_model.pt), a
checkpoint (with --config, or config.yaml beside it or one folder up) or an .onnx file from
``wespeaker-py export --onnx --with_frontend``.

Only argument parsing happens at import time; torch and the model load when a
subcommand runs, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_common_flags, run_main
from wespeaker_py.cli.companion_commands import add_companion_commands
from wespeaker_py.cli.diarize_command import add_diarize_command
from wespeaker_py.cli.finetune_command import add_finetune_command
from wespeaker_py.cli.model_commands import add_model_commands
from wespeaker_py.cli.speaker_commands import add_speaker_commands

PROG = "wespeaker-py"


def build_parser() -> argparse.ArgumentParser:
    """The ``wespeaker-py`` parser: every subcommand, in the order its help lists them."""
    parser = FlagParser(prog=PROG, description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    add_speaker_commands(commands)
    add_diarize_command(commands)
    add_companion_commands(commands)
    add_model_commands(commands)
    add_finetune_command(commands)
    return parser


def _main(argv: List[str]) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:   # the subcommand's usage, not the top level's, says what it takes
        args.subcommand_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.handler(args)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point (``wespeaker-py``)."""
    sys.exit(run_main(_main, argv, prog=PROG))


if __name__ == "__main__":
    main()
