#!/usr/bin/env python3
"""The before/after table of the fine-tuning recipe, from score files.

    python local/table.py --output exp/x/results.md \\
        "16 kHz model, 16 kHz audio=exp/x/eval/src16/scores/trials.score" \\
        "16 kHz model, 8 kHz audio=exp/x/eval/src8/scores/trials.score" \\
        "fine-tuned, 8 kHz audio=exp/x/eval/ft8/scores/trials.score@exp/x/model/calibration.json"

Each row: EER and minDCF (p_target 0.01) of its scores; a row with ``@calibration.json``
also gets the Cllr of its calibrated scores and the false-accept / miss rates at the
calibration's EER threshold (fitted on the dev speakers, measured on these).
"""
import argparse

import numpy as np

from wespeaker_py.api.calibration import load_calibration
from wespeaker_py.scoring.metrics import compute_eer, compute_min_dcf
from wespeaker_py.scoring.qmf import cllr
from wespeaker_py.scoring.trials import read_labelled_scores
from wespeaker_py.utils.atomic_files import atomic_open


def row(label: str, spec: str) -> str:
    score_file, _, calibration_file = spec.partition("@")
    scores, labels = read_labelled_scores(score_file)
    labels = np.asarray(labels, dtype=bool)
    cells = [label, f"{100 * compute_eer(scores, labels):.2f}",
             f"{compute_min_dcf(scores, labels):.3f}", f"{len(scores)}"]
    if calibration_file:
        calibration = load_calibration(calibration_file)
        llrs = calibration.weight * scores + calibration.bias
        threshold = calibration.threshold("eer")
        cells += [f"{cllr(llrs[labels], llrs[~labels]):.3f}",
                  f"{100 * np.mean(scores[~labels] > threshold):.2f} / "
                  f"{100 * np.mean(scores[labels] <= threshold):.2f}"]
    else:
        cells += ["", ""]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="markdown file to write")
    parser.add_argument("rows", nargs="+", help="LABEL=SCORE_FILE[@CALIBRATION_JSON]")
    args = parser.parse_args()
    lines = ["| model, test audio | EER (%) | minDCF | trials | Cllr (calibrated) | "
             "FA / miss (%) at the dev EER threshold |", "|:--|--:|--:|--:|--:|--:|"]
    lines += [row(*spec.split("=", 1)) for spec in args.rows]
    with atomic_open(args.output, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
