"""``wespeaker-py``: use a trained speaker model from the shell.

Subcommands: embed, similarity, verify, enroll, unenroll, identify, calibrate, diarize,
window-lda, band-fill, export, info, finetune (``wespeaker-py SUBCOMMAND --help`` for each).
MODEL is an experiment directory, a WeSpeaker-style model folder (config.yaml + avg_model.pt), a
checkpoint (with --config, or config.yaml beside it or one folder up) or an .onnx file from
``wespeaker-py export --onnx --with_frontend``. ``python -m wespeaker_py.cli`` is the same
command.

Only argument parsing happens at import time; torch and the model load when a
subcommand runs, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from wespeaker_py.cli.common import FlagParser, add_common_flags, run_main
from wespeaker_py.cli.companion_commands import add_companion_commands
from wespeaker_py.cli.diarize_command import add_diarize_command
from wespeaker_py.cli.finetune_command import add_finetune_command
from wespeaker_py.cli.model_commands import add_model_commands
from wespeaker_py.cli.speaker_commands import add_speaker_commands

PROG = "wespeaker-py"
MIGRATION_DOC = "docs/migrating-from-wespeaker.md"
# flags of WeSpeaker's own `wespeaker` command, which wespeaker-py spells otherwise
WESPEAKER_CLI_FLAGS = ("-p", "--pretrain", "-t", "--task", "--audio_file", "--audio_file2",
                       "--output_file")
# wespeaker-py's counterpart of each --task of WeSpeaker's command (embedding is its default)
WESPEAKER_TASK_EQUIVALENTS = {
    "embedding": "wespeaker-py embed --model DIR a.wav --output e.txt",
    "embedding_kaldi": "wespeaker-py embed --model DIR --wav_scp wav.scp --output OUT.ark",
    "similarity": "wespeaker-py similarity --model DIR a.wav b.wav",
    "diarization": "wespeaker-py diarize --model DIR a.wav -o a.rttm",
    "diarization_list": "wespeaker-py diarize --model DIR --wav_scp wav.scp -o sys.rttm",
}


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


def wespeaker_habit_hint(argv: Sequence[str]) -> Optional[str]:
    """The line pointing a user of WeSpeaker's ``wespeaker`` command at the migration guide
    and at the wespeaker-py command for its ``--task``; None when ``argv`` has none of its
    flags (:data:`WESPEAKER_CLI_FLAGS`)."""
    names = [arg.split("=", 1)[0] for arg in argv]
    seen = [flag for flag in WESPEAKER_CLI_FLAGS if flag in names]
    if not seen:
        return None
    task = "embedding"
    for index, name in enumerate(names):
        if name in ("-t", "--task"):
            if "=" in argv[index]:
                task = argv[index].split("=", 1)[1]
            elif index + 1 < len(argv):
                task = argv[index + 1]
    if task not in WESPEAKER_TASK_EQUIVALENTS:
        task = "embedding"
    what = "a flag" if len(seen) == 1 else "flags"
    return (f"{PROG}: {', '.join(seen)}: {what} of WeSpeaker's `wespeaker` command; see "
            f"{MIGRATION_DOC} for what to type instead (its --task {task} is "
            f"`{WESPEAKER_TASK_EQUIVALENTS[task]}`)")


def _main(argv: List[str]) -> int:
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:   # the subcommand's usage, not the top level's, says what it takes
            args.subcommand_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as done:   # argparse's error (status 2) is kept; the hint follows it
        hint = wespeaker_habit_hint(argv) if done.code else None
        if hint:
            print(hint, file=sys.stderr)
        raise
    return args.handler(args)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point (``wespeaker-py``)."""
    sys.exit(run_main(_main, argv, prog=PROG))


if __name__ == "__main__":
    main()
