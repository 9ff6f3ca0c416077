"""DET curves and score histograms of score files: SCORE.det.png, SCORE.det.txt, SCORE.hist.png.

    python -m wespeaker_py.bin.compute_det EXP/scores/vox1_O_cleaned.kaldi.score [...]

The text file lists ``threshold false_alarm_rate miss_rate`` at every distinct threshold.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from wespeaker_py.cli.common import bin_parser, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    parser.add_argument("scores_files", nargs="+", help="score files with labels")
    return parser


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Write the plots and the points of each file; return the DET PNG paths."""
    args = build_parser().parse_args(argv)
    from wespeaker_py.scoring.det_plot import (plot_det_curves, plot_score_histogram,
                                               write_det_points)
    from wespeaker_py.scoring.metrics import compute_det_points
    from wespeaker_py.scoring.trials import read_labelled_scores
    written = []
    for scores_file in args.scores_files:
        scores, labels = read_labelled_scores(scores_file)
        points = compute_det_points(scores, labels)
        name = os.path.basename(scores_file)
        write_det_points(scores_file + ".det.txt", points)
        plot_det_curves([(name, points)], scores_file + ".det.png", title=f"DET: {name}")
        plot_score_histogram(scores, labels, scores_file + ".hist.png", title=name)
        print(f"DET curve saved in {scores_file}.det.png (points in {scores_file}.det.txt), "
              f"score histogram in {scores_file}.hist.png")
        written.append(scores_file + ".det.png")
    return written


if __name__ == "__main__":
    sys.exit(run_main(main))
