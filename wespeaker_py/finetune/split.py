"""The fine-tuning data (:mod:`~wespeaker_py.finetune.data`) split into train and dev.

:func:`split_finetune_data` holds out the dev speakers (speakers with two or more
utterances, drawn with a fixed seed, each sample rate of the data among them when it can
be), every pair of whose utterances is a trial; the rest trains, and speakers with one
utterance only train. It refuses a dev part with too few trials;
:func:`warn_about_split` warns about a small one, once for the split a run uses.
:func:`recorded_dev_speakers` reads back the split a run's lists were written with,
which its resumption keeps (:func:`kept_split`).
"""
from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Tuple

from wespeaker_py.dataset.lists import TableEntry
from wespeaker_py.finetune.data import (FinetuneCorpus, FinetuneData, FinetuneDataError,
                                        most_common_rate, train_utt2spk)
from wespeaker_py.scoring.make_trials import all_pair_trials
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.tables import DataFormatError, read_key_value

logger = get_logger(__name__)

# the fewest dev trials of each kind an EER (and a calibration) is measured on
MIN_DEV_TARGET_TRIALS = 10
MIN_DEV_NONTARGET_TRIALS = 10
# below these a dev EER and its calibration rest on few trials: said in a warning
FEW_DEV_SPEAKERS = 5
FEW_DEV_TARGET_TRIALS = 50
# held-out share of the speakers with two or more utterances when --dev_speakers is not given
DEV_SHARE = 0.2
SPLIT_SEED = 777


def _speaker_utterances(entries: Sequence[TableEntry]) -> Dict[str, List[str]]:
    """Each speaker's utterance keys."""
    spk2utts: Dict[str, List[str]] = defaultdict(list)
    for entry in entries:
        spk2utts[entry.spk].append(entry.key)
    return spk2utts


def _speaker_rates(entries: Sequence[TableEntry], headers: Dict[str, Tuple[int, int]]
                   ) -> Dict[str, int]:
    """Each speaker's rate: that of most of their utterances' files (a tie: the higher);
    a speaker none of whose file headers was read (pipes) has none."""
    counts: Dict[str, Counter] = defaultdict(Counter)
    for entry in entries:
        if entry.wav in headers:
            counts[entry.spk][headers[entry.wav][1]] += 1
    return {spk: most_common_rate(rates) for spk, rates in counts.items()}


def _trial_counts(spk2utts: Mapping[str, Sequence[str]], speakers: Collection[str]
                  ) -> Tuple[int, int]:
    """The target and nontarget trials that every pair of ``speakers``' utterances gives."""
    sizes = [len(spk2utts[spk]) for spk in speakers]
    targets = sum(size * (size - 1) // 2 for size in sizes)
    return targets, sum(sizes) * (sum(sizes) - 1) // 2 - targets


def _enough_trials(targets: int, nontargets: int) -> bool:
    """Whether a dev part has the trials an EER and a calibration are measured on."""
    return targets >= MIN_DEV_TARGET_TRIALS and nontargets >= MIN_DEV_NONTARGET_TRIALS


def _rate_covering_draw(eligible: List[str], by_rate: Mapping[int, List[str]],
                        wanted: int) -> Optional[List[str]]:
    """``wanted`` dev speakers of ``eligible``: one of each rate with two or more candidates
    (``by_rate``; of the rates with the most, when fewer speakers are wanted than there are
    such rates), then the rest from all, drawn with :data:`SPLIT_SEED`. A rate whose
    candidates left the rest could take in full keeps one of them (the first by name) in
    training, so that training hears every rate: the only candidate of a rate stays there.
    None when too few candidates are left for the rest."""
    draw = random.Random(SPLIT_SEED)
    shared = {rate: speakers for rate, speakers in by_rate.items() if len(speakers) >= 2}
    covered = sorted(shared, key=lambda rate: (-len(shared[rate]), -rate))[:wanted]
    chosen = [draw.choice(shared[rate]) for rate in covered]
    more = wanted - len(chosen)
    left_by_rate = ([spk for spk in speakers if spk not in chosen]
                    for speakers in by_rate.values())
    kept = {min(left) for left in left_by_rate if 0 < len(left) <= more}
    rest = [spk for spk in eligible if spk not in chosen and spk not in kept]
    if more > len(rest):
        return None
    return sorted(chosen + draw.sample(rest, more))


def _choose_dev(spk2utts: Dict[str, List[str]], dev_speakers: Optional[int],
                speaker_rates: Mapping[str, int]) -> List[str]:
    """The dev speakers, drawn with :data:`SPLIT_SEED` from those with two or more
    utterances. Candidates at several rates (``speaker_rates``): the rate-covering draw of
    :func:`_rate_covering_draw`, unless it cannot be made, or its dev part falls short of
    the trials that the plain seeded draw (the one of data at one rate) gives enough of:
    then the plain draw."""
    eligible = sorted(spk for spk, utts in spk2utts.items() if len(utts) >= 2)
    wanted = (max(2, round(DEV_SHARE * len(eligible))) if dev_speakers is None
              else dev_speakers)
    if wanted < 2:
        raise FinetuneDataError(f"--dev_speakers must be at least 2, got {wanted}")
    if wanted > len(eligible):
        raise FinetuneDataError(f"{wanted} dev speakers asked for, but only {len(eligible)} "
                                f"speakers have two or more utterances")
    plain = sorted(random.Random(SPLIT_SEED).sample(eligible, wanted))
    by_rate: Dict[int, List[str]] = defaultdict(list)
    for spk in eligible:
        if spk in speaker_rates:
            by_rate[speaker_rates[spk]].append(spk)
    if len(by_rate) < 2:
        return plain
    covering = _rate_covering_draw(eligible, by_rate, wanted)
    if covering is None or (not _enough_trials(*_trial_counts(spk2utts, covering))
                            and _enough_trials(*_trial_counts(spk2utts, plain))):
        return plain
    return covering


def _warn_small_dev(data_dir: str, dev_speakers: int, targets: int, nontargets: int,
                    most_dev_speakers: int) -> None:
    """Warn when the dev part is below :data:`FEW_DEV_SPEAKERS` speakers or
    :data:`FEW_DEV_TARGET_TRIALS` target trials; ``most_dev_speakers``: the most
    ``--dev_speakers`` the data allows."""
    if dev_speakers >= FEW_DEV_SPEAKERS and targets >= FEW_DEV_TARGET_TRIALS:
        return
    more = (f"hold out more with --dev_speakers (up to {most_dev_speakers} here)"
            if most_dev_speakers > dev_speakers else
            "more speakers with two or more utterances would give more")
    logger.warning("%s: the dev part has %d speakers, %d target trials and %d nontarget "
                   "trials (those from %d speaker pair(s)): its EER and minDCF, and the "
                   "calibration fitted on them, rest on few trials (below %d speakers or %d "
                   "target trials); %s", data_dir, dev_speakers, targets, nontargets,
                   dev_speakers * (dev_speakers - 1) // 2, FEW_DEV_SPEAKERS,
                   FEW_DEV_TARGET_TRIALS, more)


def _warn_rates_not_trained(corpus: FinetuneCorpus, train: Sequence[TableEntry],
                            dev_rates: Mapping[int, int]) -> None:
    """Warn when every file of a rate of the dev part is a dev speaker's: training
    (``train``: DIR's training speakers and --mix_data) hears nothing at that rate."""
    heard = {corpus.headers[entry.wav][1] for entry in train if entry.wav in corpus.headers}
    unheard = sorted(set(dev_rates) - heard - set(corpus.mix_rates))
    if unheard:
        logger.warning("%s: all of its files at %s Hz are the dev speakers', so training "
                       "hears none at %s (too few speakers with two or more utterances to "
                       "keep one for training)", corpus.source,
                       " and ".join(str(rate) for rate in unheard),
                       "that rate" if len(unheard) == 1 else "those rates")


def split_finetune_data(corpus: FinetuneCorpus, dev_speakers: Optional[int] = None,
                        dev_set: Optional[Collection[str]] = None) -> FinetuneData:
    """Split ``corpus`` into training and dev; :class:`FinetuneDataError` when it cannot.

    The dev speakers are ``dev_set`` (a resumed run's, :func:`recorded_dev_speakers`), else
    ``dev_speakers`` of them drawn by :func:`_choose_dev`. Refused: fewer than two
    training speakers left, or dev trials below :data:`MIN_DEV_TARGET_TRIALS` /
    :data:`MIN_DEV_NONTARGET_TRIALS`. Logs nothing: :func:`warn_about_split` says what
    is to be said about the split a run keeps.
    """
    spk2utts = _speaker_utterances(corpus.entries)
    held_out = set(dev_set if dev_set is not None else
                   _choose_dev(spk2utts, dev_speakers,
                               _speaker_rates(corpus.entries, corpus.headers)))
    train = [entry for entry in corpus.entries if entry.spk not in held_out]
    dev = [entry for entry in corpus.entries if entry.spk in held_out]
    train_speakers = len({entry.spk for entry in train})
    if train_speakers < 2:
        raise FinetuneDataError(f"{corpus.source}: {len(held_out)} dev speakers leave "
                                f"{train_speakers} to train on; at least 2 are needed (lower "
                                f"--dev_speakers)")
    trials = all_pair_trials({entry.key: entry.spk for entry in dev})
    targets = sum(label == "target" for _, _, label in trials)
    if not _enough_trials(targets, len(trials) - targets):
        raise FinetuneDataError(
            f"{corpus.source}: the {len(held_out)} dev speakers give {targets} target and "
            f"{len(trials) - targets} nontarget trials; at least {MIN_DEV_TARGET_TRIALS} and "
            f"{MIN_DEV_NONTARGET_TRIALS} are needed (more --dev_speakers, or more utterances)")
    dev_rates = dict(Counter(corpus.headers[entry.wav][1] for entry in dev
                             if entry.wav in corpus.headers))
    singles = sum(len(utts) == 1 for utts in spk2utts.values())
    return FinetuneData(source=corpus.source, train=train + corpus.mixed, dev=dev,
                        trials=trials, sample_rate=corpus.sample_rate, rates=corpus.rates,
                        single_utterance_speakers=singles, mix_source=corpus.mix_source,
                        mix_utterances=len(corpus.mixed), mix_rates=corpus.mix_rates,
                        dev_rates=dev_rates, listings=corpus.listings,
                        folder_entries=corpus.folder_entries)


def warn_about_split(corpus: FinetuneCorpus, data: FinetuneData) -> None:
    """Say what the split ``data`` of ``corpus`` leaves to be said, once: a warning for a
    dev part below :data:`FEW_DEV_SPEAKERS` speakers or :data:`FEW_DEV_TARGET_TRIALS`
    target trials, one for a dev part that holds every file of a rate, and an INFO line
    counting the speakers with one utterance (who only train)."""
    spk2utts = _speaker_utterances(corpus.entries)
    targets = sum(label == "target" for _, _, label in data.trials)
    _warn_small_dev(corpus.source, len(data.dev_speakers), targets, len(data.trials) - targets,
                    min(sum(len(utts) >= 2 for utts in spk2utts.values()), len(spk2utts) - 2))
    _warn_rates_not_trained(corpus, data.train, data.dev_rates)
    if data.single_utterance_speakers:
        logger.info("%d speaker(s) with one utterance: used for training only",
                    data.single_utterance_speakers)


def recorded_dev_speakers(corpus: FinetuneCorpus, folder: str) -> Optional[List[str]]:
    """The dev speakers of the split that :func:`~wespeaker_py.finetune.data.write_lists`
    wrote under ``folder`` (DIR's speakers absent from its ``train/utt2spk``), which a
    resumed run keeps whatever the split's rule now draws; None when no lists were written
    there."""
    utt2spk = train_utt2spk(folder)
    if not os.path.isfile(utt2spk):
        return None
    try:
        trained = set(read_key_value(utt2spk, allow_spaces_in_value=False).values())
    except DataFormatError as error:
        raise FinetuneDataError(f"the split of the run being resumed: {error}") from None
    return sorted({entry.spk for entry in corpus.entries} - trained)


def kept_split(corpus: FinetuneCorpus, data: FinetuneData, lists: str) -> FinetuneData:
    """``data``, or, when OUT holds the lists of the run being resumed (under ``lists``)
    with other dev speakers (drawn by an earlier rule), the split of those lists: a
    resumed run keeps the speakers it trained and evaluates on."""
    recorded = recorded_dev_speakers(corpus, lists)
    if recorded is None or recorded == data.dev_speakers:
        return data
    logger.info("%s: the run being resumed keeps its dev speakers (%s) rather than those "
                "drawn now (%s)", lists, ", ".join(recorded), ", ".join(data.dev_speakers))
    return split_finetune_data(corpus, dev_set=recorded)
