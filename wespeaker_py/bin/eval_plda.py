"""Score a trial list with a PLDA model (log-likelihood ratios).

    python -m wespeaker_py.bin.eval_plda --enroll_scp_path EXP/embeddings/vox1/xvector.scp \\
        --test_scp_path EXP/embeddings/vox1/xvector.scp --utt2spk ENROLL_UTT2SPK \\
        --trial TRIALS --score_path EXP/scores/TRIALS.pldascore --model_path EXP/plda

Trials name enrollment models (the speakers of ``--utt2spk``) and test utterances.
``--max_missing_fraction`` bounds both the enrollment utterances and the trials left
out for want of an embedding.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import add_flag, add_missing_trials_flag, bin_parser, run_main
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "type", default="2cov", choices=("2cov", "kaldi"),
             help="model file written here (2cov) or by Kaldi (kaldi)")
    add_flag(parser, "enroll_scp_path", required=True, help="enrollment embeddings")
    add_flag(parser, "indomain_scp_path", default=None,
             help="in-domain embeddings whose mean replaces the model mean")
    add_flag(parser, "test_scp_path", required=True, help="test embeddings")
    add_flag(parser, "utt2spk", required=True, help="enrollment utterance -> model id")
    add_flag(parser, "model_path", required=True, help="PLDA model")
    add_flag(parser, "score_path", required=True, help="score file to write")
    add_flag(parser, "trial", required=True, help="trial list")
    add_flag(parser, "multisession_avg", action="store_true",
             help="score multi-utterance models by their average as if one utterance")
    add_missing_trials_flag(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    refuse_output_over_input({"--score_path": args.score_path},
                             {"--trial": args.trial, "--enroll_scp_path": args.enroll_scp_path,
                              "--test_scp_path": args.test_scp_path, "--utt2spk": args.utt2spk,
                              "--model_path": args.model_path,
                              "--indomain_scp_path": args.indomain_scp_path})
    from wespeaker_py.scoring.plda_files import eval_plda_files
    setup_logging()
    eval_plda_files(args.model_path, args.enroll_scp_path, args.utt2spk, args.test_scp_path,
                    args.trial, args.score_path, args.multisession_avg,
                    args.indomain_scp_path, kaldi_format=args.type == "kaldi",
                    max_missing_fraction=args.max_missing_fraction)


if __name__ == "__main__":
    sys.exit(run_main(main))
