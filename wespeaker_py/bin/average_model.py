"""Average the last checkpoints of a run into one model (the recipe's stage 4).

    python -m wespeaker_py.bin.average_model --src_path exp/X/models --num 10 \\
        --dst_model exp/X/models/avg_model.pt [--min_epoch 0 --max_epoch 65536]
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import add_flag, bin_parser, positive_int, run_main
from wespeaker_py.utils.logging_utils import get_logger, setup_logging

logger = get_logger("wespeaker_py.bin.average_model")


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "src_path", required=True, help="directory holding model_<epoch>.pt")
    add_flag(parser, "dst_model", required=True,
             help="averaged state_dict to write (not a model_<epoch>.pt training checkpoint)")
    add_flag(parser, "num", type=positive_int, default=5, help="how many latest checkpoints")
    add_flag(parser, "min_epoch", type=int, default=0, help="ignore earlier epochs")
    add_flag(parser, "max_epoch", type=int, default=65536, help="ignore later epochs")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Average the checkpoints; errors go to :func:`run_main` (one line, exit status 2)."""
    args = build_parser().parse_args(argv)
    from wespeaker_py.train.average import average_checkpoints
    setup_logging()
    paths = average_checkpoints(args.src_path, args.num, args.dst_model,
                                args.min_epoch, args.max_epoch)
    logger.info("averaged %s into %s", ", ".join(paths), args.dst_model)


if __name__ == "__main__":
    sys.exit(run_main(main))
