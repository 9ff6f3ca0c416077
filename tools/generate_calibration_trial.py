"""Duration-stratified calibration trials from a training set (WeSpeaker's vox2_cali).

    python tools/generate_calibration_trial.py --utt2dur data/vox2_dev/utt2dur \
        --trial_path data/vox1/trials/vox2_cali.kaldi [--each_trial_num 10000]
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.scoring.calibration_set import generate_calibration_trials
from wespeaker_py.utils.tables import read_utt2dur
from wespeaker_py.scoring.trials import write_trials
from wespeaker_py.utils.tables import read_key_value


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(parser, "utt2dur", required=True, help="durations of the training set")
    add_flag(parser, "trial_path", required=True, help="output trial list")
    add_flag(parser, "each_trial_num", type=int, default=10000,
             help="trials (half target) per duration pairing")
    add_flag(parser, "utt2spk", default=None,
             help="speaker of each utterance (default: key prefix before '/')")
    add_flag(parser, "seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    utt2spk = read_key_value(args.utt2spk, allow_spaces_in_value=False) if args.utt2spk else None
    trials = generate_calibration_trials(read_utt2dur(args.utt2dur), utt2spk,
                                         args.each_trial_num, args.seed,
                                         utt2dur_path=args.utt2dur,
                                         utt2spk_path=args.utt2spk or "utt2spk")
    write_trials(args.trial_path, trials)
    print(f"wrote {len(trials)} calibration trials to {args.trial_path}")


if __name__ == "__main__":
    sys.exit(run_main(main))
