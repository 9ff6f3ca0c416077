"""EER and minDCF of score files, printed in WeSpeaker's format (EER in %), with the
number of trials each covers.

    python -m wespeaker_py.bin.compute_metrics --p_target 0.01 --c_fa 1 --c_miss 1 \\
        EXP/scores/vox1_O_cleaned.kaldi.score [more score files]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Tuple

from wespeaker_py.cli.common import (add_flag, bin_parser, open_probability, positive_number,
                                     run_main)


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    add_flag(parser, "p_target", type=open_probability, default=0.01,
             help="prior of a target trial, 0 < p < 1")
    add_flag(parser, "c_miss", type=positive_number, default=1.0, help="cost of a miss, > 0")
    add_flag(parser, "c_fa", type=positive_number, default=1.0,
             help="cost of a false alarm, > 0")
    parser.add_argument("scores_files", nargs="+", help="score files with labels")
    return parser


def main(argv: Optional[List[str]] = None) -> List[Tuple[str, float, float]]:
    """Print and return ``(file, EER fraction, minDCF)`` for every score file."""
    args = build_parser().parse_args(argv)
    from wespeaker_py.scoring.metrics import compute_det_points, eer_from_det, min_dcf_from_det
    from wespeaker_py.scoring.trials import read_labelled_scores
    results = []
    for scores_file in args.scores_files:
        scores, labels = read_labelled_scores(scores_file)
        points = compute_det_points(scores, labels)
        eer = eer_from_det(points)
        min_dcf = min_dcf_from_det(points, args.p_target, args.c_miss, args.c_fa)
        print(f"---- {os.path.basename(scores_file)} -----")
        print(f"EER = {100 * eer:.3f}")
        print(f"minDCF (p_target:{args.p_target:g} c_miss:{args.c_miss:g} "
              f"c_fa:{args.c_fa:g}) = {min_dcf:.3f}")
        targets = int(labels.sum())
        print(f"trials = {labels.size} ({targets} target, {labels.size - targets} nontarget)")
        results.append((scores_file, eer, min_dcf))
    return results


if __name__ == "__main__":
    sys.exit(run_main(main))
