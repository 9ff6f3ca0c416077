#!/usr/bin/env python3
"""Trials from a Kaldi utt2spk: random balanced ones (e.g. calibration trials for a small
corpus), or every pair of utterances.

    python tools/make_trials.py --utt2spk data/train/utt2spk --num_trials 2000 \
        data/test/trials/train_cali.kaldi
    python tools/make_trials.py --utt2spk test/utt2spk --all_pairs trials

Random mode: half the trials are target (two different utterances of one
speaker), half nontarget (an utterance of another speaker). WeSpeaker's
duration-stratified generator (tools/generate_calibration_trial.py) needs
utterances longer than 6 s, which corpora of short utterances lack; this one
only needs two speakers, one of them with two utterances. --all_pairs writes
each unordered pair of distinct utterances once, the largest trial list a set
of utterances gives (its target trials bound how finely EER can be measured).
"""
import argparse
import random
from collections import defaultdict
from typing import Dict, List, Tuple

from wespeaker_py.utils.file_utils import atomic_open, read_key_value


def sample_balanced_trials(utt2spk: Dict[str, str], num_trials: int,
                           seed: int = 0) -> List[Tuple[str, str, str]]:
    """``num_trials // 2`` target and as many nontarget ``(enroll, test, label)`` trials."""
    spk2utts: Dict[str, List[str]] = defaultdict(list)
    for utt, spk in sorted(utt2spk.items()):
        spk2utts[spk].append(utt)
    speakers = sorted(spk2utts)
    multi = [spk for spk in speakers if len(spk2utts[spk]) >= 2]
    if len(speakers) < 2 or not multi:
        raise ValueError(f"need at least two speakers, one with two utterances; got "
                         f"{len(speakers)} speakers, {len(multi)} with two or more utterances")
    rng = random.Random(seed)
    trials = []
    for _ in range(num_trials // 2):
        speaker = rng.choice(multi)
        enroll, test = rng.sample(spk2utts[speaker], 2)
        trials.append((enroll, test, "target"))
        impostor = rng.choice([spk for spk in speakers if spk != speaker])
        trials.append((enroll, rng.choice(spk2utts[impostor]), "nontarget"))
    return trials


def all_pair_trials(utt2spk: Dict[str, str]) -> List[Tuple[str, str, str]]:
    """Every unordered pair of distinct utterances, in sorted order, labelled by speaker."""
    utts = sorted(utt2spk)
    if len(utts) < 2:
        raise ValueError(f"need at least two utterances, got {len(utts)}")
    return [(enroll, test, "target" if utt2spk[enroll] == utt2spk[test] else "nontarget")
            for index, enroll in enumerate(utts) for test in utts[index + 1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utt2spk", required=True, help="speaker of each utterance")
    parser.add_argument("--num_trials", type=int, default=2000,
                        help="trials to draw (half target)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all_pairs", action="store_true",
                        help="every pair of utterances instead of --num_trials random ones")
    parser.add_argument("trial_path", help="output trial list 'enroll test target|nontarget'")
    args = parser.parse_args()
    utt2spk = read_key_value(args.utt2spk, allow_spaces_in_value=False)
    if args.all_pairs:
        trials = all_pair_trials(utt2spk)
    else:
        trials = sample_balanced_trials(utt2spk, args.num_trials, args.seed)
    with atomic_open(args.trial_path, "w", encoding="utf-8") as out:
        out.write("".join(f"{enroll} {test} {label}\n" for enroll, test, label in trials))
    targets = sum(label == "target" for _, _, label in trials)
    print(f"wrote {len(trials)} trials ({targets} target) to {args.trial_path}")


if __name__ == "__main__":
    main()
