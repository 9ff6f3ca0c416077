#!/usr/bin/env python3
"""Print the results table of experiments: model, params, scoring, EER (%) and minDCF.

    python tools/results_table.py --trials "vox1_O_cleaned.kaldi vox1_E_cleaned.kaldi" \
        --output exp/X/results.md --det_dir exp/X/scores exp/X [exp/X-LM ...]

Reads each experiment's config.yaml and the score files the recipe's scoring
scripts leave in its scores/ (cosine, AS-Norm/S-Norm, QMF, PLDA, whichever
exist; any other <trials>.<name>score is a row of its own, labelled *.<name>score).
With --det_dir it also draws all back-ends of each trial list into
DET_DIR/det_<trials>.png. Each experiment after the first is a fine-tuning of the
first (exp/X-LM of exp/X). What the table cannot vouch for is marked, with a footnote
below it and a warning: a row whose score file is older than the embeddings its
experiment was scored from (stale), rows of one list over different numbers of trials,
and a fine-tuning whose models/model_0.pt is not the first's models/avg_model.pt.
"""
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.scoring.report import write_report
from wespeaker_py.utils.logging_utils import setup_logging


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__.splitlines()[0])
    parser.add_argument("exp_dirs", nargs="+", help="experiment directories")
    add_flag(parser, "trials", required=True,
             help="trial list names, separated by spaces (as the recipe's --trials)")
    add_flag(parser, "output", default=None, help="also write the table (markdown) here")
    add_flag(parser, "det_dir", default=None, help="write the combined DET plots here")
    args = parser.parse_args(argv)
    setup_logging()
    print(write_report(args.exp_dirs, args.trials.split(), args.output, args.det_dir), end="")


if __name__ == "__main__":
    sys.exit(run_main(main))
