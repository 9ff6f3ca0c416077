"""DET curves and score histograms of score files: SCORE.det.png, SCORE.det.txt, SCORE.hist.png.

    python -m wespeaker_py.bin.compute_det EXP/scores/vox1_O_cleaned.kaldi.score [...]

The text file lists ``threshold false_alarm_rate miss_rate`` at every distinct threshold.
Before any file is read, every score file must exist, and no output may be one of them or
be where it cannot be written.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

from wespeaker_py.cli.common import bin_parser, run_main
from wespeaker_py.utils.atomic_files import require_writable
from wespeaker_py.utils.paths import refuse_output_over_input, require_input_file

# what each output is, by the suffix it adds to its score file's name
_OUTPUTS = {".det.txt": "DET points", ".det.png": "DET curve", ".hist.png": "score histogram"}


def build_parser() -> argparse.ArgumentParser:
    parser = bin_parser(__file__, __doc__)
    parser.add_argument("scores_files", nargs="+", help="score files with labels")
    return parser


def _check_files(scores_files: List[str]) -> None:
    """Fail before any work when a score file is missing or empty, or when an output would
    replace a score file (``a`` and ``a.det.txt`` given together) or cannot be written."""
    inputs: Dict[str, str] = {}
    outputs: Dict[str, str] = {}
    for number, scores_file in enumerate(scores_files, 1):
        inputs[f"score file {number}"] = scores_file
        for suffix, what in _OUTPUTS.items():
            outputs[f"the {what} of score file {number}"] = scores_file + suffix
    for name, path in inputs.items():
        require_input_file(path, name)
    refuse_output_over_input(outputs, inputs)
    for path in outputs.values():
        require_writable(path)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Write the plots and the points of each file; return the DET PNG paths."""
    args = build_parser().parse_args(argv)
    _check_files(args.scores_files)
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
