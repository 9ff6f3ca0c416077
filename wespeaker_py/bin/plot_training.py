"""Training curves of a run: loss, accuracy, learning rate and margin against epochs.

    python -m wespeaker_py.bin.plot_training exp/ECAPA_TDNN_GLOB_c512-ASTP-emb192 [...]

Reads EXP_DIR/train.log (ours, or one written by WeSpeaker's own trainer) and writes
EXP_DIR/train_curves.png; training draws the same figure after every epoch. A
log file may be given instead of a folder (then --output, or LOG.png beside it).
--output is written in the image format its extension names (.png, .pdf, .svg, ...;
another extension: PNG).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from wespeaker_py.cli.common import add_flag, bin_parser, run_main
from wespeaker_py.utils.paths import refuse_output_over_input


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    parser.add_argument("runs", nargs="+", help="experiment folders (or train.log files)")
    add_flag(parser, "output", help="image to write, in the format its extension names "
                                    "(.png, .pdf, .svg, ...; another: PNG); one run only "
                                    "(default: EXP_DIR/train_curves.png)")
    return parser


def _paths(run: str, output: Optional[str]) -> tuple:
    """(the log to read, the image to write) for ``run``."""
    if os.path.isdir(run):
        return os.path.join(run, "train.log"), output or os.path.join(run, "train_curves.png")
    return run, output or os.path.splitext(run)[0] + ".png"


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Draw the curves of each run; return the image paths."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output and len(args.runs) > 1:
        parser.error("--output names one image file: give one run")
    from wespeaker_py.train.curves import plot_training_curves, read_training_curves
    written = []
    for run in args.runs:
        log_path, png_path = _paths(run, args.output)
        refuse_output_over_input({"--output" if args.output else "the PNG": png_path},
                                 {"the log": log_path})
        curves = read_training_curves(log_path)
        title = os.path.basename(os.path.abspath(run if os.path.isdir(run) else
                                                 os.path.dirname(log_path)))
        plot_training_curves(curves, png_path, title=title)
        print(f"{png_path}: {len(curves.batches)} log points, {len(curves.epochs)} epochs")
        written.append(png_path)
    return written


if __name__ == "__main__":
    sys.exit(run_main(main))
