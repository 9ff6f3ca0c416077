"""Merge the LoRA weights of a W2V-BERT model into its encoder (run_w2v.sh stage 5).

    python -m wespeaker_py.bin.merge_lora --config exp/S1/config.yaml \\
        --checkpoint_in exp/S1/models/avg_model.pt \\
        --checkpoint_out exp/S1/models/merged_avg_model.pt

The flags are those of WeSpeaker's tools/merge_lora.py.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import add_flag, bin_parser, run_main
from wespeaker_py.utils.logging_utils import get_logger, setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input

logger = get_logger("wespeaker_py.bin.merge_lora")


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "config", required=True, help="the LoRA step's config.yaml")
    add_flag(parser, "checkpoint_in", required=True, help="checkpoint with LoRA weights")
    add_flag(parser, "checkpoint_out", required=True, help="merged state_dict to write")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    refuse_output_over_input({"--checkpoint_out": args.checkpoint_out},
                             {"--config": args.config, "--checkpoint_in": args.checkpoint_in})
    from wespeaker_py.train.lora_merge import merge_lora_checkpoint
    setup_logging()
    count = merge_lora_checkpoint(args.config, args.checkpoint_in, args.checkpoint_out)
    logger.info("merged the LoRA weights of %s into %s (%d tensors)", args.checkpoint_in,
                args.checkpoint_out, count)


if __name__ == "__main__":
    sys.exit(run_main(main))
