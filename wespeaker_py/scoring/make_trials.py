"""Trial lists made from a Kaldi utt2spk: random balanced trials, or every pair of utterances.

Random mode: half the trials are target (two different utterances of one
speaker), half nontarget (an utterance of another speaker). WeSpeaker's
duration-stratified generator needs utterances longer than 6 s, which corpora
of short utterances lack; this one only needs two speakers, one of them with two
utterances. All pairs: each unordered pair of distinct utterances once, the
largest trial list a set of utterances gives (its target trials bound how
finely EER can be measured). Used by ``tools/make_trials.py`` and fine-tuning.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Dict, List, Tuple


Trial = Tuple[str, str, str]


def sample_balanced_trials(utt2spk: Dict[str, str], num_trials: int,
                           seed: int = 0) -> List[Trial]:
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


def all_pair_trials(utt2spk: Dict[str, str]) -> List[Trial]:
    """Every unordered pair of distinct utterances, in sorted order, labelled by speaker."""
    utts = sorted(utt2spk)
    if len(utts) < 2:
        raise ValueError(f"need at least two utterances, got {len(utts)}")
    return [(enroll, test, "target" if utt2spk[enroll] == utt2spk[test] else "nontarget")
            for index, enroll in enumerate(utts) for test in utts[index + 1:]]
