"""Print params, MACs and embedding size of speaker models as a markdown table.

    python -m wespeaker_py.bin.model_summary [--models ResNet34 XVEC ...] [--frames 200]

Without ``--models`` every registered model is listed. Models are built with
the VoxCeleb v2 recipe's model_args; params exclude the projection head.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import UsageError, add_flag, bin_parser, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__.splitlines()[0])
    add_flag(parser, "models", nargs="+", default=None,
             help="WeSpeaker model names (default: all registered models)")
    add_flag(parser, "frames", type=int, default=200,
             help="input length in frames for the MAC count")
    add_flag(parser, "feat_dim", type=int, default=None,
             help="input size in mel bins (default: the recipe's, 80 or 72)")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    from wespeaker_py.models import list_models
    from wespeaker_py.models.complexity import format_summary_table, summarize_models
    known = list_models(generic=True)   # WeSpeaker's generic names (ReDimNet, ...) too
    unknown = [name for name in args.models or () if name not in known]
    if unknown:   # before any model is built
        raise UsageError(f"--models: no model is called {', '.join(unknown)} (without "
                         f"--models every one is listed)")
    try:
        rows = summarize_models(args.models or list_models(), num_frames=args.frames,
                                feat_dim=args.feat_dim)
    except ValueError as error:
        # without --models the registry's own models are measured: no flag is to blame
        raise UsageError(f"--models: {error}" if args.models else str(error)) from None
    print(format_summary_table(rows, num_frames=args.frames))


if __name__ == "__main__":
    sys.exit(run_main(main))
