"""Cosine scoring of trial lists (stage 5 of the VoxCeleb recipe).

    python -m wespeaker_py.bin.score --exp_dir EXP \\
        --eval_scp_path EXP/embeddings/vox1/xvector.scp \\
        --cal_mean True --cal_mean_dir EXP/embeddings/vox2_dev TRIALS [TRIALS ...]

Writes EXP/scores/<trials name>.score; with ``--cal_mean True`` first computes
and saves ``<cal_mean_dir>/mean_vec.npy`` and subtracts it from every embedding.
Trials naming an utterance without an embedding are skipped and counted (see
``--max_missing_fraction``).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import (add_bool_flag, add_flag, add_missing_trials_flag, bin_parser,
                                     run_main)
from wespeaker_py.io.layout import MEAN_NAME, EmbeddingSetLayout, ExperimentLayout
from wespeaker_py.utils.logging_utils import get_logger, setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input

logger = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "exp_dir", required=True, help="experiment dir; scores go to EXP/scores")
    add_flag(parser, "eval_scp_path", required=True, help="embeddings of the trial utterances")
    add_bool_flag(parser, "cal_mean", default=False,
                  help="subtract the mean embedding of cal_mean_dir/xvector.scp")
    add_flag(parser, "cal_mean_dir", default=None, help="embedding dir of the reference set")
    add_flag(parser, "device", default="auto", help="auto, cpu or cuda[:N]")
    add_missing_trials_flag(parser)
    parser.add_argument("trials", nargs="+", help="trial lists")
    return parser


def _refuse_over_inputs(args: argparse.Namespace) -> None:
    """The score files (and the mean vector of --cal_mean) must not be one of the inputs."""
    layout = ExperimentLayout(args.exp_dir)
    numbered = dict(enumerate(args.trials, 1))
    outputs = {f"the scores of trial list {number}": layout.score_path(trials)
               for number, trials in numbered.items()}
    inputs = {f"trial list {number}": trials for number, trials in numbered.items()}
    if args.cal_mean and args.cal_mean_dir:
        reference = EmbeddingSetLayout(args.cal_mean_dir)
        outputs[f"--cal_mean_dir's {MEAN_NAME}"] = reference.mean_path
        inputs["--cal_mean_dir's xvector.scp"] = reference.embeddings_scp
    refuse_output_over_input(outputs, {"--eval_scp_path": args.eval_scp_path, **inputs})


def main(argv: Optional[List[str]] = None) -> List[str]:
    parser = build_parser()
    args = parser.parse_args(argv)
    _refuse_over_inputs(args)
    if args.cal_mean and not args.cal_mean_dir:
        parser.error("--cal_mean True needs --cal_mean_dir")
    from wespeaker_py.scoring.cosine import score_trial_files
    setup_logging()
    if not args.cal_mean:
        logger.info("no mean normalisation of the evaluation embeddings")
    return score_trial_files(args.eval_scp_path, args.trials,
                             ExperimentLayout(args.exp_dir).scores_dir,
                             args.cal_mean_dir if args.cal_mean else None,
                             args.device, args.max_missing_fraction)


if __name__ == "__main__":
    sys.exit(run_main(main))
