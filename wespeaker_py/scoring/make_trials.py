"""Trial lists made from a Kaldi utt2spk: random balanced trials, or every pair of utterances.

Random mode: half the trials are target (two different utterances of one
speaker), half nontarget (utterances of two speakers); of an odd number the one
more is nontarget. No pair of utterances is drawn twice: when the utterances
give fewer distinct target (or nontarget) pairs than half the trials, every one
of them is taken and the other kind makes up the number, and a warning gives the
counts (the list is then not balanced; QMF calibration weights the two kinds
equally whatever their counts). Only when there are fewer distinct pairs in all
than trials asked for is the list shorter. WeSpeaker's duration-stratified
generator needs utterances longer than 6 s, which corpora of short utterances
lack; this one only needs two speakers, one of them with two utterances. All pairs: each
unordered pair of distinct utterances once, the largest trial list a set of
utterances gives (its target trials bound how finely EER can be measured).
Used by ``tools/make_trials.py`` and fine-tuning.
"""
from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Callable, Dict, List, Tuple

from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

Trial = Tuple[str, str, str]
Pair = Tuple[str, str]


class TrialDesignError(WespeakerError, ValueError):
    """Utterances that cannot give the trials asked for (too few speakers or utterances)."""


def _speaker_utterances(utt2spk: Dict[str, str]) -> Dict[str, List[str]]:
    """speaker -> its utterances, both sorted (so that a seed gives the same trials)."""
    spk2utts: Dict[str, List[str]] = defaultdict(list)
    for utt, spk in sorted(utt2spk.items()):
        spk2utts[spk].append(utt)
    return dict(sorted(spk2utts.items()))


def _distinct_pairs(rng: random.Random, wanted: int, population: int,
                    draw: Callable[[], Pair], every: Callable[[], List[Pair]]) -> List[Pair]:
    """``min(wanted, population)`` distinct unordered pairs: drawn one by one with ``draw``
    (a repeat is drawn again) while they are at most half the ``population``, else a sample
    of ``every()`` pair, so that neither way takes long."""
    if 2 * wanted > population:
        pairs = every()
        return rng.sample(pairs, wanted) if wanted < population else pairs
    chosen: Dict[frozenset, Pair] = {}
    while len(chosen) < wanted:
        pair = draw()
        chosen.setdefault(frozenset(pair), pair)
    return list(chosen.values())


def _trial_counts(num_trials: int, num_target_pairs: int, num_nontarget_pairs: int,
                  source: str) -> Tuple[int, int]:
    """How many target and nontarget trials to draw: half and half (the odd one nontarget),
    unless one kind has fewer distinct pairs; then all of those, the other kind making up
    the number as far as it can (a warning gives the counts)."""
    wanted = (num_trials // 2, num_trials - num_trials // 2)
    targets = min(wanted[0], num_target_pairs)
    nontargets = min(num_trials - targets, num_nontarget_pairs)
    targets = min(num_trials - nontargets, num_target_pairs)
    if (targets, nontargets) != wanted:
        in_all = "" if targets + nontargets == num_trials else \
            f", {targets + nontargets} trials in all"
        logger.warning("%s: its utterances give %d distinct target and %d distinct nontarget "
                       "pairs; of %d trials, %d and %d would be target and nontarget: writing "
                       "%d target and %d nontarget trials%s, none twice", source,
                       num_target_pairs, num_nontarget_pairs, num_trials, wanted[0], wanted[1],
                       targets, nontargets, in_all)
    return targets, nontargets


def sample_balanced_trials(utt2spk: Dict[str, str], num_trials: int, seed: int = 0,
                           source: str = "utt2spk") -> List[Trial]:
    """``num_trials // 2`` target and the rest nontarget ``(enroll, test, label)`` trials,
    no two of the same pair of utterances, in random order (see the module doc for what
    happens when there are too few distinct pairs; ``source`` names the utt2spk in
    messages).

    As long as at most half of a kind's pairs are asked for, each trial picks its speaker
    (a target trial) or its two speakers (a nontarget one) uniformly, then an utterance of
    each, and a pair drawn before is drawn again; asked for more, a uniform sample of all
    the pairs of that kind is taken.
    """
    if num_trials < 1:
        raise TrialDesignError(f"the number of trials must be at least 1, got {num_trials}")
    spk2utts = _speaker_utterances(utt2spk)
    speakers = list(spk2utts)
    multi = [spk for spk in speakers if len(spk2utts[spk]) >= 2]
    if len(speakers) < 2 or not multi:
        raise TrialDesignError(f"{source}: need at least two speakers, one with two utterances; "
                               f"got {len(speakers)} speakers, {len(multi)} with two or more "
                               f"utterances")
    rng = random.Random(seed)
    sizes = [len(spk2utts[spk]) for spk in speakers]
    num_target_pairs = sum(size * (size - 1) // 2 for size in sizes)
    num_nontarget_pairs = (sum(sizes) ** 2 - sum(size * size for size in sizes)) // 2

    def draw_target() -> Pair:
        first, second = rng.sample(spk2utts[rng.choice(multi)], 2)
        return first, second

    def draw_nontarget() -> Pair:
        speaker, impostor = rng.sample(speakers, 2)
        return rng.choice(spk2utts[speaker]), rng.choice(spk2utts[impostor])

    def every_target() -> List[Pair]:
        return [pair for spk in multi for pair in itertools.combinations(spk2utts[spk], 2)]

    def every_nontarget() -> List[Pair]:
        return [(first, second) for one, other in itertools.combinations(speakers, 2)
                for first in spk2utts[one] for second in spk2utts[other]]

    num_targets, num_nontargets = _trial_counts(num_trials, num_target_pairs,
                                                num_nontarget_pairs, source)
    trials = [(first, second, "target") for first, second in _distinct_pairs(
        rng, num_targets, num_target_pairs, draw_target, every_target)]
    trials += [(first, second, "nontarget") for first, second in _distinct_pairs(
        rng, num_nontargets, num_nontarget_pairs, draw_nontarget, every_nontarget)]
    rng.shuffle(trials)
    return trials


def all_pair_trials(utt2spk: Dict[str, str]) -> List[Trial]:
    """Every unordered pair of distinct utterances, in sorted order, labelled by speaker."""
    utts = sorted(utt2spk)
    if len(utts) < 2:
        raise TrialDesignError(f"need at least two utterances, got {len(utts)}")
    return [(enroll, test, "target" if utt2spk[enroll] == utt2spk[test] else "nontarget")
            for index, enroll in enumerate(utts) for test in utts[index + 1:]]
