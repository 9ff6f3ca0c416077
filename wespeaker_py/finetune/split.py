"""The fine-tuning data (:mod:`~wespeaker_py.finetune.data`) split into train and dev.

:func:`split_finetune_data` holds out the dev speakers (speakers with two or more
utterances whose files can be read, drawn with a fixed seed: at several sample rates, two
of one rate, so that some nontarget trials do not pair two rates, and one of each other
rate as far as they go), every pair of whose readable utterances is a trial; the rest
trains, and speakers with one utterance only train. It refuses too few speakers and a dev
part with too few trials; :func:`warn_about_split` warns about a small one, and about one
whose nontarget trials all pair two rates, once for the split a run uses.
:func:`recorded_dev_speakers` reads back the split a run's lists were written with,
which its resumption keeps (:func:`kept_split`).
"""
from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Tuple

from wespeaker_py.api.calibration import MIN_TRIALS_PER_CLASS
from wespeaker_py.dataset.lists import TableEntry
from wespeaker_py.finetune.config import OptionValueError, option_name
from wespeaker_py.finetune.data import (MIN_DEV_SPEAKERS, MIN_TRAIN_SPEAKERS, SPEAKER_MINIMUM,
                                        FinetuneCorpus, FinetuneData, FinetuneDataError,
                                        most_common_rate, train_utt2spk)
from wespeaker_py.scoring.make_trials import all_pair_trials
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.tables import DataFormatError, read_key_value

logger = get_logger(__name__)

# the fewest dev trials of each kind an EER is measured on: those a calibration is fitted on
# (a run whose dev audio is skipped below them at its evaluation writes none)
MIN_DEV_TARGET_TRIALS = MIN_TRIALS_PER_CLASS
MIN_DEV_NONTARGET_TRIALS = MIN_TRIALS_PER_CLASS
# below these a dev EER and its calibration rest on few trials: said in a warning
FEW_DEV_SPEAKERS = 5
FEW_DEV_TARGET_TRIALS = 50
# held-out share of the speakers with two or more utterances when dev_speakers is not given
DEV_SHARE = 0.2
SPLIT_SEED = 777


def _speaker_utterances(corpus: FinetuneCorpus) -> Dict[str, List[str]]:
    """Each speaker's utterance keys whose file can be read (or is a pipe): what a dev
    part and training can use; a speaker with none is absent."""
    spk2utts: Dict[str, List[str]] = defaultdict(list)
    for entry in corpus.entries:
        if corpus.readable(entry):
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


def _dev_candidates(spk2utts: Mapping[str, Sequence[str]]) -> List[str]:
    """The speakers that may be held out for dev, sorted: those with two or more utterances
    (a target trial needs two)."""
    return sorted(spk for spk, utts in spk2utts.items() if len(utts) >= 2)


def _candidates_by_rate(spk2utts: Mapping[str, Sequence[str]],
                        speaker_rates: Mapping[str, int]) -> Dict[int, List[str]]:
    """The dev candidates (speakers with two or more utterances) of each rate, by name."""
    by_rate: Dict[int, List[str]] = defaultdict(list)
    for spk in _dev_candidates(spk2utts):
        if spk in speaker_rates:
            by_rate[speaker_rates[spk]].append(spk)
    return by_rate


def _shares_a_rate(speakers: Collection[str], speaker_rates: Mapping[str, int]) -> bool:
    """Whether two of ``speakers`` are at one rate: their pair gives nontarget trials that
    a rate difference does not tell apart."""
    rates = [speaker_rates[spk] for spk in speakers if spk in speaker_rates]
    return len(set(rates)) < len(rates)


def _rate_pair_draw(eligible: List[str], by_rate: Mapping[int, List[str]], wanted: int,
                    pair_rate: int) -> Optional[List[str]]:
    """``wanted`` dev speakers of ``eligible``: two of ``pair_rate`` (so that some
    nontarget trials pair speakers at one rate), then one of each other rate with two or
    more candidates (``by_rate``; those with the most first, while more are wanted), then
    the rest from all, drawn with :data:`SPLIT_SEED`. A rate whose candidates left the rest
    could take in full keeps one of them (the first by name) in training, so that training
    hears every rate it can: the only candidate of a rate stays there. None when too few
    candidates are left for the rest."""
    draw = random.Random(SPLIT_SEED)
    chosen = draw.sample(by_rate[pair_rate], 2)
    others = sorted((rate for rate, speakers in by_rate.items()
                     if rate != pair_rate and len(speakers) >= 2),
                    key=lambda rate: (-len(by_rate[rate]), -rate))
    chosen += [draw.choice(by_rate[rate]) for rate in others[:wanted - 2]]
    more = wanted - len(chosen)
    left_by_rate = ([spk for spk in speakers if spk not in chosen]
                    for speakers in by_rate.values())
    kept = {min(left) for left in left_by_rate if 0 < len(left) <= more}
    rest = [spk for spk in eligible if spk not in chosen and spk not in kept]
    if more > len(rest):
        return None
    return sorted(chosen + draw.sample(rest, more))


def _choose_dev(spk2utts: Dict[str, List[str]], wanted: int,
                speaker_rates: Mapping[str, int]) -> List[str]:
    """``wanted`` dev speakers, drawn with :data:`SPLIT_SEED` from those with two or more
    utterances. Candidates at one rate (or none read): the plain seeded draw. At several
    rates (``speaker_rates``): a draw of :func:`_rate_pair_draw` for each rate with two or
    more candidates, those that leave a speaker of their rate to training first, then the
    rates with the most candidates; the first that gives enough trials is taken, else the
    plain draw when it does (it may pair no two speakers of one rate: then
    :func:`warn_about_split` says so), else the first."""
    eligible = _dev_candidates(spk2utts)
    plain = sorted(random.Random(SPLIT_SEED).sample(eligible, wanted))
    by_rate = _candidates_by_rate(spk2utts, speaker_rates)
    if len(by_rate) < 2:
        return plain
    speakers_at = Counter(speaker_rates[spk] for spk in spk2utts if spk in speaker_rates)
    pair_rates = sorted((rate for rate, speakers in by_rate.items() if len(speakers) >= 2),
                        key=lambda rate: (speakers_at[rate] <= 2, -len(by_rate[rate]), -rate))
    draws = [draw for draw in (_rate_pair_draw(eligible, by_rate, wanted, rate)
                               for rate in pair_rates) if draw is not None]
    # max keeps the first of equals: the order above is the order of preference
    return max(draws + [plain], key=lambda draw: (
        _enough_trials(*_trial_counts(spk2utts, draw)), _shares_a_rate(draw, speaker_rates)))


def _most_dev_speakers(spk2utts: Mapping[str, Sequence[str]]) -> int:
    """The most dev speakers ``spk2utts`` gives: those with two or more utterances, as long
    as :data:`MIN_TRAIN_SPEAKERS` are left to train on."""
    return min(len(_dev_candidates(spk2utts)), len(spk2utts) - MIN_TRAIN_SPEAKERS)


def _dev_count(source: str, spk2utts: Mapping[str, Sequence[str]],
               dev_speakers: Optional[int], unheard: int) -> int:
    """The dev speakers to draw: ``dev_speakers``, or by default a :data:`DEV_SHARE` of
    those with two or more utterances (:data:`MIN_DEV_SPEAKERS` at least; a smaller
    ``dev_speakers`` is the option check's to refuse). Refused, naming ``source``: data
    that cannot give :data:`MIN_DEV_SPEAKERS` and leave :data:`MIN_TRAIN_SPEAKERS`
    (:data:`SPEAKER_MINIMUM`), and an :class:`OptionValueError` for a ``dev_speakers``
    above :func:`_most_dev_speakers`; ``unheard``: the speakers none of whose files can be
    read, counted in the message."""
    eligible = len(_dev_candidates(spk2utts))
    wanted = (max(MIN_DEV_SPEAKERS, round(DEV_SHARE * eligible)) if dev_speakers is None
              else dev_speakers)
    most = _most_dev_speakers(spk2utts)
    if wanted <= most:
        return wanted
    speakers = len(spk2utts)
    has = (f"it has {speakers} speaker{'' if speakers == 1 else 's'}, {eligible} of them "
           f"with two or more utterances" + (f" ({unheard} more with no file that can be "
                                             f"read)" if unheard else ""))
    if most < MIN_DEV_SPEAKERS:
        raise FinetuneDataError(f"{source}: {SPEAKER_MINIMUM}; {has}")
    # the message names the option by its flag for the command, by its keyword in Python;
    # braces in the folder's name are not fields of it
    where = source.replace("{", "{{").replace("}", "}}")
    raise OptionValueError("dev_speakers", wanted,
                           f"holds out more speakers than {where} can spare: {has}, and "
                           f"{MIN_TRAIN_SPEAKERS} must be left to train on; lower "
                           f"{{dev_speakers}} to {most} or less")


def _warn_small_dev(data_dir: str, dev_speakers: int, targets: int, nontargets: int,
                    most_dev_speakers: int) -> None:
    """Warn when the dev part is below :data:`FEW_DEV_SPEAKERS` speakers or
    :data:`FEW_DEV_TARGET_TRIALS` target trials; ``most_dev_speakers``: the most
    ``dev_speakers`` the data allows."""
    if dev_speakers >= FEW_DEV_SPEAKERS and targets >= FEW_DEV_TARGET_TRIALS:
        return
    more = (f"hold out more with {option_name('dev_speakers')} (up to {most_dev_speakers} "
            f"here)"
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
    (``train``: DIR's training speakers and ``mix_data``) hears nothing at that rate."""
    heard = {corpus.headers[entry.wav][1] for entry in train if entry.wav in corpus.headers}
    unheard = sorted(set(dev_rates) - heard - set(corpus.mix_rates))
    if unheard:
        logger.warning("%s: all of its files at %s Hz are the dev speakers', so training "
                       "hears none at %s (too few speakers with two or more utterances to "
                       "keep one for training)", corpus.source,
                       " and ".join(str(rate) for rate in unheard),
                       "that rate" if len(unheard) == 1 else "those rates")


def _warn_cross_rate_dev(corpus: FinetuneCorpus, data: FinetuneData,
                         spk2utts: Mapping[str, Sequence[str]],
                         speaker_rates: Mapping[str, int]) -> None:
    """Warn when every dev nontarget trial pairs files at two rates: its scores then tell
    the rates apart, not the speakers, and a calibration fitted on them accepts
    different-speaker pairs at one rate. A trial with a pipe (rate unknown) is not one."""
    rate_of = {entry.key: corpus.headers[entry.wav][1] for entry in data.dev
               if entry.wav in corpus.headers}
    nontargets = [(enroll, test) for enroll, test, label in data.trials
                  if label == "nontarget"]
    if not nontargets or any(rate_of.get(enroll) is None or rate_of.get(test) is None
                             or rate_of[enroll] == rate_of[test] for enroll, test in nontargets):
        return
    dev_rates = ", ".join(f"{spk} at {speaker_rates[spk]} Hz" for spk in data.dev_speakers
                          if spk in speaker_rates)
    could = any(len(speakers) >= 2 for speakers in
                _candidates_by_rate(spk2utts, speaker_rates).values())
    remedy = (f"hold out more with {option_name('dev_speakers')} so that two dev speakers "
              f"share a rate, or, for a resumed run (which keeps its dev speakers), fine-tune "
              f"into another {option_name('out_dir')}"
              if could else
              "no rate has two speakers with two or more utterances: add speakers at one "
              "of the rates")
    logger.warning("%s: all %d dev nontarget trials pair files at different sample rates "
                   "(dev speakers: %s): the dev EER and minDCF, and the calibration fitted "
                   "on them, measure the rate difference, not how well speakers are told "
                   "apart (such a calibration can accept every different-speaker pair at one "
                   "rate); %s", corpus.source, len(nontargets), dev_rates, remedy)


def _warn_unheard_speakers(corpus: FinetuneCorpus, spk2utts: Mapping[str, Sequence[str]]
                           ) -> None:
    """Warn about DIR's speakers none of whose files can be read: counted nowhere."""
    unheard = sorted({entry.spk for entry in corpus.entries} - set(spk2utts))
    if unheard:
        logger.warning("%s: none of the files of %d speaker(s) can be read (%s): they count "
                       "neither as training nor as dev speakers", corpus.source, len(unheard),
                       listed_names(unheard, 5))


def split_finetune_data(corpus: FinetuneCorpus, dev_speakers: Optional[int] = None,
                        dev_set: Optional[Collection[str]] = None) -> FinetuneData:
    """Split ``corpus`` into training and dev; :class:`FinetuneDataError` when it cannot
    (an :class:`OptionValueError` for more ``dev_speakers`` than it can give).

    The dev speakers are ``dev_set`` (a resumed run's, :func:`recorded_dev_speakers`), else
    ``dev_speakers`` of them (:func:`_dev_count`) drawn by :func:`_choose_dev`. Only
    utterances whose file can be read (or is a pipe) make a speaker a candidate, give a
    trial and count a speaker; the others stay in the lists, for training to skip and the
    dev evaluation to name. Refused: fewer than :data:`MIN_TRAIN_SPEAKERS` training
    speakers left, or dev trials below :data:`MIN_DEV_TARGET_TRIALS` /
    :data:`MIN_DEV_NONTARGET_TRIALS`. Logs nothing: :func:`warn_about_split` says what
    is to be said about the split a run keeps.
    """
    spk2utts = _speaker_utterances(corpus)
    unheard = len({entry.spk for entry in corpus.entries} - set(spk2utts))
    if dev_set is None:
        held_out = set(_choose_dev(spk2utts, _dev_count(corpus.source, spk2utts, dev_speakers,
                                                        unheard),
                                   _speaker_rates(corpus.entries, corpus.headers)))
        whose = f"the {len(held_out)} dev speakers"
        remedy = f"more {option_name('dev_speakers')}"
    else:
        held_out = set(dev_set)
        whose = f"the {len(held_out)} dev speakers of the run being resumed (which keeps them)"
        remedy = f"fine-tune into another {option_name('out_dir')} for a new split"
    train = [entry for entry in corpus.entries if entry.spk not in held_out]
    dev = [entry for entry in corpus.entries if entry.spk in held_out]
    train_speakers = len(set(spk2utts) - held_out)
    if train_speakers < MIN_TRAIN_SPEAKERS:
        raise FinetuneDataError(f"{corpus.source}: {whose} leave {train_speakers} speaker(s) "
                                f"with a file that can be read to train on; "
                                f"{SPEAKER_MINIMUM}; {remedy}")
    heard = {entry.key: entry.spk for entry in dev if corpus.readable(entry)}
    trials = all_pair_trials(heard) if len(heard) >= 2 else []
    targets = sum(label == "target" for _, _, label in trials)
    if not _enough_trials(targets, len(trials) - targets):
        unread = len(dev) - len(heard)
        raise FinetuneDataError(
            f"{corpus.source}: {whose} give {targets} target and {len(trials) - targets} "
            f"nontarget trials; at least {MIN_DEV_TARGET_TRIALS} and "
            f"{MIN_DEV_NONTARGET_TRIALS} are needed ({remedy}, or more utterances)"
            + (f"; {unread} of their utterances' files cannot be read and give none"
               if unread else ""))
    dev_rates = dict(Counter(corpus.headers[entry.wav][1] for entry in dev
                             if entry.wav in corpus.headers))
    singles = sum(len(utts) == 1 for utts in spk2utts.values())
    return FinetuneData(source=corpus.source, train=train + corpus.mixed, dev=dev,
                        trials=trials, sample_rate=corpus.sample_rate, rates=corpus.rates,
                        single_utterance_speakers=singles, mix_source=corpus.mix_source,
                        mix_utterances=len(corpus.mixed), mix_rates=corpus.mix_rates,
                        dev_rates=dev_rates, listings=corpus.listings,
                        folder_entries=corpus.folder_entries, unreadable=corpus.unreadable)


def warn_about_split(corpus: FinetuneCorpus, data: FinetuneData) -> None:
    """Say what the split ``data`` of ``corpus`` leaves to be said, once: a warning for
    speakers none of whose files can be read, one for a dev part below
    :data:`FEW_DEV_SPEAKERS` speakers or :data:`FEW_DEV_TARGET_TRIALS` target trials, one
    for a dev part whose nontarget trials all pair two rates, one for a dev part that
    holds every file of a rate, and an INFO line counting the speakers with one utterance
    (who only train)."""
    spk2utts = _speaker_utterances(corpus)
    _warn_unheard_speakers(corpus, spk2utts)
    targets = sum(label == "target" for _, _, label in data.trials)
    _warn_small_dev(corpus.source, len(data.dev_speakers), targets, len(data.trials) - targets,
                    _most_dev_speakers(spk2utts))
    _warn_cross_rate_dev(corpus, data, spk2utts,
                         _speaker_rates(corpus.entries, corpus.headers))
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
