#!/usr/bin/env python3
"""Trials from a Kaldi utt2spk: random balanced ones (e.g. calibration trials for a small
corpus), or every pair of utterances.

    python tools/make_trials.py --utt2spk data/train/utt2spk --num_trials 2000 \
        data/test/trials/train_cali.kaldi
    python tools/make_trials.py --utt2spk test/utt2spk --all_pairs trials

Random mode: half the trials are target (two different utterances of one
speaker), half nontarget (utterances of two speakers; of an odd --num_trials the
one more). No pair is written twice: when the utterances give fewer distinct
pairs of one kind than half the trials, all of them are written, the other kind
makes up the number, and a warning gives the counts; the list is shorter than
--num_trials only when there are fewer distinct pairs in all. WeSpeaker's
duration-stratified generator (tools/generate_calibration_trial.py) needs
utterances longer than 6 s, which corpora of short utterances lack; this one
only needs two speakers, one of them with two utterances. --all_pairs writes
each unordered pair of distinct utterances once, the largest trial list a set
of utterances gives (its target trials bound how finely EER can be measured);
it takes no --num_trials.
"""
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, UsageError, add_flag, positive_int, run_main
from wespeaker_py.scoring.make_trials import all_pair_trials, sample_balanced_trials
from wespeaker_py.scoring.trials import write_trials
from wespeaker_py.utils.logging_utils import setup_logging
from wespeaker_py.utils.tables import read_key_value

DEFAULT_NUM_TRIALS = 2000


def main(argv: Optional[List[str]] = None) -> None:
    """Write the trial list; bad input ends in one line and exit status 2 (:func:`run_main`)."""
    parser = FlagParser(description=__doc__.splitlines()[0])
    add_flag(parser, "utt2spk", required=True, help="speaker of each utterance")
    add_flag(parser, "num_trials", type=positive_int, default=None,
             help=f"distinct trials to draw, half target, the odd one nontarget "
             f"(default {DEFAULT_NUM_TRIALS})")
    add_flag(parser, "seed", type=int, default=0)
    add_flag(parser, "all_pairs", action="store_true",
             help="every pair of utterances instead of --num_trials random ones")
    parser.add_argument("trial_path", help="output trial list 'enroll test target|nontarget'")
    args = parser.parse_args(argv)
    if args.all_pairs and args.num_trials is not None:
        raise UsageError("--all_pairs writes every pair of utterances: give it or "
                         "--num_trials, not both")
    setup_logging()
    utt2spk = read_key_value(args.utt2spk, allow_spaces_in_value=False)
    if args.all_pairs:
        trials = all_pair_trials(utt2spk)
    else:
        trials = sample_balanced_trials(utt2spk, args.num_trials or DEFAULT_NUM_TRIALS,
                                        args.seed, source=args.utt2spk)
    write_trials(args.trial_path, trials)
    targets = sum(label == "target" for _, _, label in trials)
    print(f"wrote {len(trials)} trials ({targets} target) to {args.trial_path}")


if __name__ == "__main__":
    sys.exit(run_main(main))
