"""Unsupervised adaptation of a PLDA model to unlabelled in-domain embeddings.

    python -m wespeaker_py.bin.adapt_plda -mo EXP/plda -ma EXP/plda_adapt \\
        -ad EXP/embeddings/indomain/xvector.scp -ws 0.75 -as 0.25
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import add_flag, bin_parser, run_main
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "adp_scp", "-ad", required=True, help="unlabelled adaptation data")
    add_flag(parser, "across_class_scale", "-as", type=float, default=0.5,
             help="share of the excess covariance added to the between-class one")
    add_flag(parser, "within_class_scale", "-ws", type=float, default=0.5,
             help="share of the excess covariance added to the within-class one")
    add_flag(parser, "mdl_org", "-mo", required=True, help="model to adapt")
    add_flag(parser, "mdl_adp", "-ma", required=True, help="adapted model to write")
    add_flag(parser, "mdl_format", "-mf", default="wespeaker", choices=("wespeaker", "kaldi"),
             help="format of --mdl_org (the adapted model is always ours)")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    refuse_output_over_input({"--mdl_adp": args.mdl_adp},
                             {"--mdl_org": args.mdl_org, "--adp_scp": args.adp_scp})
    from wespeaker_py.scoring.plda_files import adapt_plda_files
    setup_logging()
    adapt_plda_files(args.mdl_org, args.adp_scp, args.mdl_adp, args.across_class_scale,
                     args.within_class_scale, kaldi_format=args.mdl_format == "kaldi")


if __name__ == "__main__":
    sys.exit(run_main(main))
