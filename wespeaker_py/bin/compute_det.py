"""DET curves of score files: SCORE.det.png (needs matplotlib) and SCORE.det.txt.

    python -m wespeaker_py.bin.compute_det EXP/scores/vox1_O_cleaned.kaldi.score [...]

The text file lists ``threshold false_alarm_rate miss_rate`` at every distinct threshold.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from wespeaker_py.scoring.det_plot import plot_det_curve, write_det_points
from wespeaker_py.scoring.metrics import compute_det_points
from wespeaker_py.scoring.trials import read_labelled_scores
from wespeaker_py.utils.cli_errors import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores_files", nargs="+", help="score files with labels")
    return parser


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Write the plot and the points of each file; return the PNG paths."""
    args = build_parser().parse_args(argv)
    written = []
    for scores_file in args.scores_files:
        points = compute_det_points(*read_labelled_scores(scores_file))
        write_det_points(scores_file + ".det.txt", points)
        plot_det_curve(points, scores_file + ".det.png", title=os.path.basename(scores_file))
        print(f"DET curve saved in {scores_file}.det.png (points in {scores_file}.det.txt)")
        written.append(scores_file + ".det.png")
    return written


if __name__ == "__main__":
    sys.exit(run_main(main))
