"""QMF score calibration (stage 7 of the recipe), as three sub-commands:

    python -m wespeaker_py.bin.score_calibration gather_calibration_factors \\
        --wav_dur_scp utt2dur --max_dur 20 --score_norm_file NORM.score \\
        --calibration_factor_file OUT.calibration [--drop_duration]
    python -m wespeaker_py.bin.score_calibration train_calibration_model \\
        --calibration_factor_file CALI.calibration --save_model_path calibration_model.pt
    python -m wespeaker_py.bin.score_calibration infer_calibration \\
        --calibration_factor_file EVAL.calibration --save_model_path calibration_model.pt \\
        --calibration_score_file OUT.score
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import add_bool_flag, add_flag, bin_parser, positive_number, run_main
from wespeaker_py.utils.logging_utils import get_logger, setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input

logger = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("gather_calibration_factors",
                                 help="quality features of a normalised score file")
    add_flag(gather, "wav_dur_scp", default=None, help="utt2dur of all trial utterances")
    add_flag(gather, "max_dur", type=positive_number, default=20.0,
             help="durations are capped here (s, > 0)")
    add_flag(gather, "score_norm_file", required=True)
    add_flag(gather, "calibration_factor_file", required=True)
    add_bool_flag(gather, "drop_duration", default=False, help="leave durations out")
    train = commands.add_parser("train_calibration_model", help="fit the QMF model on Cllr")
    add_flag(train, "calibration_factor_file", required=True)
    add_flag(train, "save_model_path", required=True)
    infer = commands.add_parser("infer_calibration", help="apply the QMF model")
    add_flag(infer, "calibration_factor_file", required=True)
    add_flag(infer, "save_model_path", required=True)
    add_flag(infer, "calibration_score_file", required=True)
    return parser


def _refuse_over_inputs(args: argparse.Namespace) -> None:
    """Each sub-command's output must not be one of its inputs."""
    factors = {"--calibration_factor_file": args.calibration_factor_file}
    if args.command == "gather_calibration_factors":
        refuse_output_over_input(factors, {"--score_norm_file": args.score_norm_file,
                                           "--wav_dur_scp": args.wav_dur_scp})
    elif args.command == "train_calibration_model":
        refuse_output_over_input({"--save_model_path": args.save_model_path}, factors)
    else:
        refuse_output_over_input({"--calibration_score_file": args.calibration_score_file},
                                 {**factors, "--save_model_path": args.save_model_path})


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    _refuse_over_inputs(args)
    from wespeaker_py.scoring.qmf import (gather_calibration_factors, infer_calibration_file,
                                          train_calibration_file)
    setup_logging()
    if args.command == "gather_calibration_factors":
        count = gather_calibration_factors(args.score_norm_file, args.calibration_factor_file,
                                           args.wav_dur_scp, args.max_dur, args.drop_duration)
        logger.info("wrote quality features of %d trials to %s", count,
                    args.calibration_factor_file)
    elif args.command == "train_calibration_model":
        trained_cllr = train_calibration_file(args.calibration_factor_file,
                                              args.save_model_path)
        logger.info("calibration model saved to %s (Cllr on its training trials %.4f)",
                    args.save_model_path, trained_cllr)
    else:
        count = infer_calibration_file(args.calibration_factor_file, args.save_model_path,
                                       args.calibration_score_file)
        logger.info("calibrated %d trials into %s", count, args.calibration_score_file)


if __name__ == "__main__":
    sys.exit(run_main(main))
