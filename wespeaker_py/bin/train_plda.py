"""Train a two-covariance PLDA on embeddings with speaker labels.

    python -m wespeaker_py.bin.train_plda --exp_dir EXP \\
        --scp_path EXP/embeddings/vox2_dev/xvector.scp --utt2spk data/vox2_dev/utt2spk \\
        --indim 256 --iter 5

Saves the model as EXP/plda. The preprocessing options (off by default, as in
WeSpeaker's recipe) are stored with the model and applied when scoring. An utterance of
``--utt2spk`` without an embedding is an error unless ``--max_missing_fraction`` allows it.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from wespeaker_py.cli.common import add_bool_flag, add_flag, bin_parser, positive_int, run_main
from wespeaker_py.utils.list_jobs import parse_fail_fraction
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "type", default="2cov", choices=("2cov",),
             help="PLDA variant (the two-covariance model)")
    add_flag(parser, "scp_path", required=True, help="training embeddings (xvector.scp)")
    add_flag(parser, "utt2spk", required=True, help="speaker of each training utterance")
    add_flag(parser, "indim", type=int, default=None,
             help="embedding dimension (checked against the embeddings)")
    add_flag(parser, "exp_dir", required=True, help="the model is saved as EXP/plda")
    add_flag(parser, "iter", type=positive_int, default=5, help="EM iterations (at least 1)")
    add_bool_flag(parser, "whiten", default=False,
                  help="centre and whiten the total covariance before PLDA")
    add_flag(parser, "lda_dim", type=positive_int, default=None,
             help="centre and project by LDA to this dimension before PLDA (below the number "
                  "of training speakers, or the scores are not calibrated LLRs)")
    add_bool_flag(parser, "normalize_length", default=False,
                  help="length-normalise (to sqrt(dim)) after the projection")
    add_flag(parser, "max_missing_fraction", type=parse_fail_fraction, default=0.0, metavar="F",
             help="largest fraction of the utt2spk utterances that may lack an embedding "
                  "(extraction skipped them); they are left out (default 0: any is an error)")
    return parser


def main(argv: Optional[List[str]] = None) -> str:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.whiten and args.lda_dim is not None:
        parser.error("give --whiten or --lda_dim, not both (LDA already whitens)")
    model_path = os.path.join(args.exp_dir, "plda")
    refuse_output_over_input({"the model --exp_dir/plda": model_path},
                             {"--scp_path": args.scp_path, "--utt2spk": args.utt2spk})
    from wespeaker_py.scoring.plda_files import train_plda_files
    setup_logging()
    train_plda_files(args.scp_path, args.utt2spk, model_path, args.iter, args.indim,
                     args.whiten, args.lda_dim, args.normalize_length,
                     args.max_missing_fraction)
    return model_path


if __name__ == "__main__":
    sys.exit(run_main(main))
