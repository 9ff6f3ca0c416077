"""What every ``wespeaker-py`` subcommand that uses a MODEL shares: its parser with the model
flags, ``--force``, the model loaded from those flags, and JSON output."""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from wespeaker_py.cli.common import add_channel_flag, add_common_flags, add_flag

Handler = Callable[[argparse.Namespace], int]


def add_model_subcommand(commands, name: str, handler: Handler, summary: str, examples: str,
                         reads_audio: bool = True) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``commands`` (the subparsers of ``wespeaker-py``) with the
    model flags, and ``--channel`` when it ``reads_audio``; ``examples`` is its epilog. The
    subcommand's own flags are added to the parser returned."""
    sub = commands.add_parser(name, help=summary, description=summary, epilog=examples,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_flags(sub)
    if reads_audio:
        add_channel_flag(sub)
    sub.set_defaults(handler=handler, subcommand_parser=sub)
    return sub


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "model", required=True, metavar="MODEL",
             help="experiment dir, model folder, checkpoint or .onnx file")
    add_flag(parser, "config", default=None,
             help="config.yaml for a checkpoint (default: beside it or one folder up)")
    add_flag(parser, "device", default=None,
             help="cpu, cuda or cuda:N (default: the first GPU if any; an .onnx MODEL runs "
                  "on the CPU only)")
    add_flag(parser, "calibration", default=None,
             help="calibration.json to use or write (default: MODEL/calibration.json "
                  "for a folder, <stem>.calibration.json beside a checkpoint or .onnx "
                  "file)")
    add_flag(parser, "mean_vec", default=None,
             help="mean embedding (.npy) to subtract before cosine "
                  "(default, if present: MODEL/mean_vec.npy for a folder, "
                  "<stem>.mean_vec.npy beside a checkpoint or .onnx file)")
    add_common_flags(parser)


def add_force_flag(parser: argparse.ArgumentParser, what: str, also: str = "") -> None:
    """``--force``: use ``what`` (a file made with a model) even when another model, or
    another band fill, made it; ``also``: what else the command's --force does."""
    parser.add_argument("--force", action="store_true",
                        help=f"use {what} made with another model, or through another band "
                             f"fill than the model has now (a warning, not an error){also}")


def load_model_of(args: argparse.Namespace):
    """The :class:`~wespeaker_py.api.SpeakerModel` that the model flags of ``args`` name.

    An ONNX model is given the command's thread count; torch's own count is set by
    :func:`~wespeaker_py.utils.threads.using_threads` for the whole command."""
    from wespeaker_py.api import load_model
    from wespeaker_py.api.loading import is_onnx_source
    from wespeaker_py.utils.threads import num_threads_in_use
    onnx = is_onnx_source(args.model)
    return load_model(args.model, device=args.device, config=args.config,
                      mean_vec=args.mean_vec, calibration=args.calibration,
                      force=getattr(args, "force", False),
                      num_threads=num_threads_in_use() if onnx else None)


def print_json(payload: Any) -> None:
    """``payload`` on stdout as indented JSON, keys sorted."""
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
