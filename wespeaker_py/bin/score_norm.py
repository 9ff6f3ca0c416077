"""AS-Norm / S-Norm of a cosine score file against a cohort (stage 6 of the recipe).

    python -m wespeaker_py.bin.score_norm --score_norm_method asnorm --top_n 300 \\
        --trial_score_file EXP/scores/vox1_O_cleaned.kaldi.score \\
        --score_norm_file EXP/scores/vox2_dev_asnorm300_vox1_O_cleaned.kaldi.score \\
        --cohort_emb_scp EXP/embeddings/vox2_dev/spk_xvector.scp \\
        --eval_emb_scp EXP/embeddings/vox1/xvector.scp \\
        --mean_vec_path EXP/embeddings/vox2_dev/mean_vec.npy

Output lines: ``enroll test score [label] enroll_mag test_mag enroll_mean test_mean``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import (add_bool_flag, add_flag, add_missing_trials_flag, bin_parser,
                                     positive_int, run_main)
from wespeaker_py.defaults import NORM_METHODS
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.paths import refuse_output_over_input


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "score_norm_method", required=True, choices=NORM_METHODS,
             help="asnorm: adaptive S-Norm, each side normalised by the mean and spread of "
                  "its top_n closest cohort scores; snorm: the same over the whole cohort")
    add_flag(parser, "top_n", type=positive_int, required=True,
             help="cohort size of AS-Norm (ignored by snorm, which uses the whole cohort)")
    add_flag(parser, "trial_score_file", required=True, help="cosine score file to normalise")
    add_flag(parser, "score_norm_file", required=True, help="output file")
    add_flag(parser, "cohort_emb_scp", required=True, help="cohort (per-speaker) embeddings")
    add_flag(parser, "eval_emb_scp", required=True, help="embeddings of the trial utterances")
    add_flag(parser, "mean_vec_path", default=None, help="mean vector to subtract (.npy)")
    add_flag(parser, "device", default="auto", help="auto, cpu or cuda[:N]")
    add_bool_flag(parser, "cohort_of_trial_speakers",
                  help="the trials are of the cohort's own speakers (QMF's calibration "
                       "trials): a cohort member equal to an utterance is expected, not "
                       "warned about")
    add_missing_trials_flag(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    refuse_output_over_input({"--score_norm_file": args.score_norm_file},
                             {"--trial_score_file": args.trial_score_file,
                              "--cohort_emb_scp": args.cohort_emb_scp,
                              "--eval_emb_scp": args.eval_emb_scp,
                              "--mean_vec_path": args.mean_vec_path})
    from wespeaker_py.scoring.norm import score_norm_file
    setup_logging()
    score_norm_file(args.score_norm_method, args.top_n, args.trial_score_file,
                    args.score_norm_file, args.cohort_emb_scp, args.eval_emb_scp,
                    args.mean_vec_path, args.device, args.max_missing_fraction,
                    args.cohort_of_trial_speakers)


if __name__ == "__main__":
    sys.exit(run_main(main))
