"""The fine-tuning data: a Kaldi folder read, checked, split into train and dev, and listed.

DIR holds ``wav.scp`` and ``utt2spk`` (``segments``, ``utt recording start end``,
optional: then wav.scp lists recordings), or, without a wav.scp, one folder of audio
files per speaker (:mod:`~wespeaker_py.finetune.speaker_folders`). A speaker-disjoint
dev part (speakers with two or more utterances, drawn with a fixed seed, each sample
rate of the data among them when it can be) gives every pair of its utterances as
trials; the rest trains. Speakers with one utterance only train.
:func:`list_digests` tells a folder's lists apart from the same folder edited.
"""
from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from wespeaker_py.audio import (AudioCheckError, AudioEmptyError, AudioMissingError,
                                AudioTruncatedError, is_pipe, open_audio)
from wespeaker_py.audio.files import MAX_SEGMENT_OVERSHOOT, segment_outside
from wespeaker_py.dataset.lists import (AUDIO_EXTENSIONS, TableEntry, read_utterance_table,
                                        write_raw_list)
from wespeaker_py.errors import WespeakerError
from wespeaker_py.finetune.speaker_folders import (LISTS, SpeakerFolderError,
                                                   SpeakerFolderListing, list_speaker_folders,
                                                   table_digest)
from wespeaker_py.scoring.make_trials import Trial, all_pair_trials
from wespeaker_py.scoring.trials import write_trials
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.paths import file_digest
from wespeaker_py.utils.tables import (DataFormatError, UniqueKeys, iter_table, read_key_value,
                                       resolve_wav, write_table)

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
# the lists a data folder is read from (segments optional)
LIST_NAMES = ("wav.scp", "utt2spk", "segments")


class FinetuneDataError(WespeakerError):
    """A fine-tuning data folder that cannot give a training and a dev set (exit status 2)."""


@dataclass
class FinetuneData:
    """DIR split into training and dev entries, with the dev trials and the data's rate
    (None when wav.scp holds only pipes and the rate to train at was given)."""

    source: str
    train: List[TableEntry]
    dev: List[TableEntry]
    trials: List[Trial]
    sample_rate: Optional[int]
    rates: Dict[int, int] = field(default_factory=dict)  # files by sample rate
    single_utterance_speakers: int = 0
    mix_source: Optional[str] = None  # --mix_data: original-domain data that only trains
    mix_utterances: int = 0
    dev_rates: Dict[int, int] = field(default_factory=dict)  # dev utterances by file rate
    # "data" / "mix_data": the folder's utterances listed from its speaker folders
    listings: Dict[str, SpeakerFolderListing] = field(default_factory=dict)

    @property
    def train_speakers(self) -> List[str]:
        return sorted({entry.spk for entry in self.train})

    @property
    def dev_speakers(self) -> List[str]:
        return sorted({entry.spk for entry in self.dev})

    def summary(self) -> Dict[str, object]:
        """What finetune.json records about the data."""
        targets = sum(label == "target" for _, _, label in self.trials)
        return {"dir": self.source, "speaker_folders": "data" in self.listings,
                "sample_rate": self.sample_rate,
                "files_by_rate": {str(rate): count for rate, count in sorted(self.rates.items())},
                "train_speakers": len(self.train_speakers), "train_utterances": len(self.train),
                "single_utterance_speakers": self.single_utterance_speakers,
                "dev_speakers": len(self.dev_speakers), "dev_utterances": len(self.dev),
                "dev_utterances_by_rate": {str(rate): count
                                           for rate, count in sorted(self.dev_rates.items())},
                "mix_data": self.mix_source, "mix_utterances": self.mix_utterances,
                "dev_target_trials": targets, "dev_nontarget_trials": len(self.trials) - targets}


def _read_segments(path: str) -> Dict[str, Tuple[str, float, float]]:
    """``utt -> (recording, start, end)`` of a Kaldi segments file (seconds); an utterance
    given twice is a :class:`DataFormatError` naming both lines."""
    segments = {}
    utterances = UniqueKeys(path, "segment")
    for line_no, (utt, recording, start, end) in iter_table(path, min_fields=4, max_fields=4):
        utterances.claim(utt, line_no)
        try:
            begin, finish = float(start), float(end)
        except ValueError:
            raise DataFormatError(path, line_no, f"start/end are not numbers: {start!r} "
                                                 f"{end!r}") from None
        if begin < 0 or finish <= begin:
            raise DataFormatError(path, line_no, f"bad segment [{start}, {end}]")
        segments[utt] = (recording, begin, finish)
    return segments


def _listed_speaker_folders(data_dir: str) -> SpeakerFolderListing:
    """The utterances of a DIR without wav.scp, from its speaker folders; a
    :class:`FinetuneDataError` naming both layouts when it has none with audio."""
    if not os.path.isdir(data_dir):
        raise FinetuneDataError(f"{data_dir} does not exist, or is not a folder")
    try:
        listing = list_speaker_folders(data_dir)
    except SpeakerFolderError as error:
        raise FinetuneDataError(str(error)) from None
    if not listing.entries:
        raise FinetuneDataError(
            f"{data_dir} has no wav.scp, nor speaker folders with audio files: give a Kaldi "
            f"folder (wav.scp and utt2spk, segments optional) or a folder with one folder "
            f"per speaker holding their audio files ({data_dir}/<speaker>/<name>.wav; "
            f"{', '.join(sorted(AUDIO_EXTENSIONS))}, at any depth)")
    logger.info("%s has no wav.scp: %d speaker folders with %d audio files are its "
                "utterances, keyed by their path below it (<speaker>/...)%s", data_dir,
                listing.speakers, len(listing.entries),
                f"; {listing.other_files} other files left out" if listing.other_files else "")
    return listing


def _read_entries(data_dir: str) -> Tuple[List[TableEntry], Optional[SpeakerFolderListing]]:
    """DIR's utterances, and its listing when they came from speaker folders (no
    wav.scp)."""
    wav_scp, utt2spk = (os.path.join(data_dir, name) for name in ("wav.scp", "utt2spk"))
    if not os.path.isfile(wav_scp):
        listing = _listed_speaker_folders(data_dir)
        return listing.entries, listing
    if not os.path.isfile(utt2spk):
        raise FinetuneDataError(f"{utt2spk} does not exist (a data folder needs wav.scp and "
                                f"utt2spk; or, without a wav.scp, one folder of audio files "
                                f"per speaker)")
    segments_path = os.path.join(data_dir, "segments")
    if not os.path.isfile(segments_path):
        entries = read_utterance_table(wav_scp, utt2spk)
    else:
        recordings = read_key_value(wav_scp)
        segments = _read_segments(segments_path)
        entries = []
        for utt, spk in read_key_value(utt2spk, allow_spaces_in_value=False).items():
            recording, start, end = segments.get(utt, (None, 0.0, 0.0))
            if recording not in recordings:
                raise FinetuneDataError(f"{utt2spk}: utterance {utt!r} has no segment of a "
                                        f"recording in {wav_scp} (see {segments_path})")
            entries.append(TableEntry(key=utt, spk=spk, wav=recordings[recording],
                                      vad=((start, end),)))
    # wav paths relative to the data folder, as in the mini recipe's corpus
    return [TableEntry(entry.key, entry.spk, resolve_wav(entry.wav, data_dir), entry.vad)
            for entry in entries], None


def _headers(entries: Sequence[TableEntry], wav_scp: str,
             used_for: str = "in training and in the dev evaluation"
             ) -> Dict[str, Tuple[int, int]]:
    """``wav -> (frames, sample rate)`` of each file, from its header (pipes are not run).
    A file that is missing, cut short or empty is left out here and counted in a warning
    (training skips it, and the dev evaluation skips and names it; ``used_for`` says where it
    is skipped); one that is not audio is a :class:`FinetuneDataError` naming its utterance
    in ``wav_scp``."""
    keys: Dict[str, str] = {}
    for entry in entries:
        if not is_pipe(entry.wav):
            keys.setdefault(entry.wav, entry.key)
    headers = {}
    skipped = []
    for wav in sorted(keys):
        try:
            with open_audio(wav) as handle:
                headers[wav] = (handle.frames, handle.samplerate)
        except (AudioMissingError, AudioTruncatedError, AudioEmptyError) as error:
            skipped.append(f"{keys[wav]} ({error})")
        except AudioCheckError as error:
            raise FinetuneDataError(f"{wav_scp}: utterance {keys[wav]!r}: {error}") from None
    if skipped:
        logger.warning("%s: %d of its %d files cannot be read, and their utterances are "
                       "skipped %s: %s", wav_scp, len(skipped), len(keys), used_for,
                       listed_names(skipped, 5))
    return headers


def _rate_counts(headers: Dict[str, Tuple[int, int]]) -> Dict[int, int]:
    """Files by sample rate."""
    return dict(Counter(rate for _, rate in headers.values()))


def _past_end(entry: TableEntry, frames: int, rate: int) -> Optional[Tuple[float, float]]:
    """The first of ``entry``'s segments that training cannot cut from its ``frames`` of
    audio, or None. The rule of :func:`~wespeaker_py.audio.apply_vad` (which raises
    ``segment_past_end`` for it), on the header alone."""
    for start, end in entry.vad or ():
        if segment_outside(start, end, frames, rate) is not None:
            return start, end
    return None


def _segments_within(entries: List[TableEntry], headers: Dict[str, Tuple[int, int]],
                     folder: str) -> List[TableEntry]:
    """``entries`` less those whose segment lies past the end of its recording (as
    training would skip them), counted in a warning naming the first. Recordings whose
    header could not be read are left to training."""
    kept, past = [], []
    for entry in entries:
        header = headers.get(entry.wav)
        bad = _past_end(entry, *header) if header else None
        if bad is None:
            kept.append(entry)
        else:
            past.append(f"{entry.key} [{bad[0]:g}, {bad[1]:g}] s of {entry.wav} "
                        f"({header[0] / header[1]:.3f} s)")
    if past:
        logger.warning("%s: %d of its %d segments start at or end more than %g s past the "
                       "end of their recording, and are skipped (segment_past_end): the "
                       "first is %s", os.path.join(folder, "segments"), len(past),
                       len(entries), MAX_SEGMENT_OVERSHOOT, past[0])
    return kept


def _most_common_rate(counts: Mapping[int, int]) -> int:
    """The rate of most files (a tie: the higher)."""
    return max(counts, key=lambda rate: (counts[rate], rate))


def _speaker_rates(entries: Sequence[TableEntry], headers: Dict[str, Tuple[int, int]]
                   ) -> Dict[str, int]:
    """Each speaker's rate: that of most of their utterances' files (a tie: the higher);
    a speaker none of whose file headers was read (pipes) has none."""
    counts: Dict[str, Counter] = defaultdict(Counter)
    for entry in entries:
        if entry.wav in headers:
            counts[entry.spk][headers[entry.wav][1]] += 1
    return {spk: _most_common_rate(rates) for spk, rates in counts.items()}


def _choose_dev(spk2utts: Dict[str, List[str]], dev_speakers: Optional[int],
                speaker_rates: Mapping[str, int]) -> List[str]:
    """The dev speakers, drawn with :data:`SPLIT_SEED` from those with two or more
    utterances. Candidates at several rates (``speaker_rates``): one speaker of each rate
    first (of the rates with the most candidates, when fewer speakers are wanted than
    there are rates), then the rest from all."""
    eligible = sorted(spk for spk, utts in spk2utts.items() if len(utts) >= 2)
    wanted = (max(2, round(DEV_SHARE * len(eligible))) if dev_speakers is None
              else dev_speakers)
    if wanted < 2:
        raise FinetuneDataError(f"--dev_speakers must be at least 2, got {wanted}")
    if wanted > len(eligible):
        raise FinetuneDataError(f"{wanted} dev speakers asked for, but only {len(eligible)} "
                                f"speakers have two or more utterances")
    draw = random.Random(SPLIT_SEED)
    by_rate: Dict[int, List[str]] = defaultdict(list)
    for spk in eligible:
        if spk in speaker_rates:
            by_rate[speaker_rates[spk]].append(spk)
    if len(by_rate) < 2:
        return sorted(draw.sample(eligible, wanted))
    rates = sorted(by_rate, key=lambda rate: (-len(by_rate[rate]), -rate))[:wanted]
    chosen = [draw.choice(by_rate[rate]) for rate in rates]
    rest = [spk for spk in eligible if spk not in chosen]
    return sorted(chosen + draw.sample(rest, wanted - len(chosen)))


def _warn_mixed_rates(where: str, rates: Mapping[int, int], target: int,
                      rate_given: bool) -> None:
    """Say that files at several ``rates`` are all resampled to ``target``; files below it
    are upsampled with their top band empty, and, unless the rate was given
    (``--sample_rate``, or a front-end that takes one rate), the lowest rate is suggested
    for narrow-band audio to score."""
    below = {rate: count for rate, count in rates.items() if rate < target}
    message = (f"{where} holds files at "
               + ", ".join(f"{rate} ({count} files)" for rate, count in sorted(rates.items()))
               + f" Hz: all are resampled to {target} Hz")
    if below:
        lowest = min(below)
        message += (f"; the {sum(below.values())} files below {target} Hz are upsampled, "
                    f"with nothing above half their own rate")
        if not rate_given:
            message += (f". If the audio the new model is to score is narrow-band (calls at "
                        f"{lowest} Hz), give --sample_rate {lowest} to train a model at "
                        f"{lowest} Hz (the other files are then downsampled)")
    logger.warning("%s", message)


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


def _list_name(folder: str, name: str, listing: Optional[SpeakerFolderListing]) -> str:
    """How messages name the list ``name`` of ``folder``: the file, or the folder when its
    lists were made from speaker folders."""
    return f"{folder} (speaker folders)" if listing else os.path.join(folder, name)


def read_finetune_data(data_dir: str, dev_speakers: Optional[int] = None,
                       mix_dir: Optional[str] = None,
                       sample_rate: Optional[int] = None) -> FinetuneData:
    """Read and split ``data_dir``; :class:`FinetuneDataError` when it cannot serve.

    Refused: fewer than two speakers, fewer than two training speakers left
    after the dev split, or dev trials below :data:`MIN_DEV_TARGET_TRIALS` /
    :data:`MIN_DEV_NONTARGET_TRIALS`, and a wav.scp of only pipes (whose rate
    cannot be read) unless ``sample_rate``, the rate to train at, is given. Utterances
    whose segment lies past the end of its recording are left out (and counted in a
    warning) before the split, so these checks count what is left. A dev part below
    :data:`FEW_DEV_SPEAKERS` speakers or :data:`FEW_DEV_TARGET_TRIALS` target trials
    is warned about.
    ``mix_dir`` (original-domain data) only trains: its utterances and speakers
    join the training set under a ``mix-`` prefix; the rate stays ``data_dir``'s.
    Either folder may be a Kaldi folder or a folder of speaker folders.
    """
    try:
        entries, listing = _read_entries(data_dir)
        mix_entries, mix_listing = _read_entries(mix_dir) if mix_dir else ([], None)
    except DataFormatError as error:
        raise FinetuneDataError(str(error)) from None
    mixed = [TableEntry("mix-" + entry.key, "mix-" + entry.spk, entry.wav, entry.vad)
             for entry in mix_entries]
    # headers and segment bounds are read now: a segment past its recording's end is left
    # out before the split, so the checks below count only what can train and be scored
    wav_scp = _list_name(data_dir, "wav.scp", listing)
    headers = _headers(entries, wav_scp)
    listed, entries = len(entries), _segments_within(entries, headers, data_dir)
    if listed and not entries:
        raise FinetuneDataError(f"{data_dir}/segments: none of its {listed} segments lies "
                                f"within its recording (see the warning above); correct their "
                                f"start and end times")
    mix_headers = _headers(mixed, _list_name(mix_dir, "wav.scp", mix_listing),
                           "in training") if mixed else {}
    mixed = _segments_within(mixed, mix_headers, mix_dir) if mixed else []
    spk2utts: Dict[str, List[str]] = defaultdict(list)
    for entry in entries:
        spk2utts[entry.spk].append(entry.key)
    if len(spk2utts) < 2:
        raise FinetuneDataError(f"{_list_name(data_dir, 'utt2spk', listing)} has "
                                f"{len(spk2utts)} speaker(s); fine-tuning needs at least 2")
    dev_set = set(_choose_dev(spk2utts, dev_speakers, _speaker_rates(entries, headers)))
    train = [entry for entry in entries if entry.spk not in dev_set]
    dev = [entry for entry in entries if entry.spk in dev_set]
    if len({entry.spk for entry in train}) < 2:
        raise FinetuneDataError(f"{data_dir}: {len(dev_set)} dev speakers leave "
                                f"{len({entry.spk for entry in train})} to train on; "
                                f"at least 2 are needed (lower --dev_speakers)")
    trials = all_pair_trials({entry.key: entry.spk for entry in dev})
    targets = sum(label == "target" for _, _, label in trials)
    if targets < MIN_DEV_TARGET_TRIALS or len(trials) - targets < MIN_DEV_NONTARGET_TRIALS:
        raise FinetuneDataError(
            f"{data_dir}: the {len(dev_set)} dev speakers give {targets} target and "
            f"{len(trials) - targets} nontarget trials; at least {MIN_DEV_TARGET_TRIALS} and "
            f"{MIN_DEV_NONTARGET_TRIALS} are needed (more --dev_speakers, or more utterances)")
    _warn_small_dev(data_dir, len(dev_set), targets, len(trials) - targets,
                    min(sum(len(utts) >= 2 for utts in spk2utts.values()), len(spk2utts) - 2))
    own_rates = _rate_counts(headers)
    if not own_rates and not any(is_pipe(entry.wav) for entry in entries):
        raise FinetuneDataError(f"{wav_scp}: none of its files can be read (see the warning "
                                f"above)")
    if not own_rates and sample_rate is None:
        raise FinetuneDataError(f"{wav_scp}: only pipes; the data's sample rate "
                                f"cannot be read (give --sample_rate)")
    rate = _most_common_rate(own_rates) if own_rates else None
    rates = Counter(own_rates) + Counter(_rate_counts(mix_headers))
    if len(rates) > 1:
        _warn_mixed_rates(data_dir + (f" (with {mix_dir})" if mix_dir else ""), rates,
                          sample_rate or rate, sample_rate is not None)
    if mixed:
        logger.info("%d utterances of %d speakers of %s train too", len(mixed),
                    len({entry.spk for entry in mixed}), mix_dir)
        train += mixed
    singles = sum(len(utts) == 1 for utts in spk2utts.values())
    if singles:
        logger.info("%d speaker(s) with one utterance: used for training only", singles)
    listings = {role: found for role, found in (("data", listing), ("mix_data", mix_listing))
                if found}
    return FinetuneData(source=os.path.abspath(data_dir), train=train, dev=dev, trials=trials,
                        sample_rate=rate, rates=dict(rates), single_utterance_speakers=singles,
                        mix_source=os.path.abspath(mix_dir) if mix_dir else None,
                        mix_utterances=len(mixed),
                        dev_rates=dict(Counter(headers[entry.wav][1] for entry in dev
                                               if entry.wav in headers)),
                        listings=listings)


def list_digests(data: FinetuneData) -> Dict[str, str]:
    """SHA-256 of the content of each list the data is read from (:data:`LIST_NAMES`,
    ``data/wav.scp``, ``mix_data/utt2spk``, ...): a folder edited in place differs. For a
    folder of speaker folders, those of the lists made from them (a file added, removed or
    renamed differs).

    The content, not the files' times: a list touched or copied unchanged is the same.
    """
    digests = {}
    for role, folder in (("data", data.source), ("mix_data", data.mix_source)):
        listing = data.listings.get(role)
        for name in LIST_NAMES if folder else ():
            path = os.path.join(folder, name)
            if listing and name in LISTS:
                digests[f"{role}/{name}"] = table_digest(listing.rows(name))
            elif not listing and os.path.isfile(path):
                digests[f"{role}/{name}"] = file_digest(path)
    return digests


def write_speaker_folder_lists(data: FinetuneData, folder: str) -> Dict[str, str]:
    """Write the ``wav.scp`` and ``utt2spk`` made for each data folder read from speaker
    folders into ``folder/<role>`` (``data``, ``mix_data``); return ``{role: that folder}``
    (a Kaldi folder the other commands take)."""
    written = {}
    for role, listing in data.listings.items():
        written[role] = os.path.join(folder, role)
        os.makedirs(written[role], exist_ok=True)
        for name in LISTS:
            write_table(os.path.join(written[role], name), listing.rows(name))
    return written


def write_lists(data: FinetuneData, folder: str) -> Tuple[str, str, str]:
    """Write ``train/raw.list``, ``train/utt2spk`` and ``dev/trials`` under ``folder``."""
    for sub in ("train", "dev"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    raw_list = os.path.join(folder, "train", "raw.list")
    utt2spk = os.path.join(folder, "train", "utt2spk")
    trials = os.path.join(folder, "dev", "trials")
    write_raw_list(data.train, raw_list)
    write_table(utt2spk, ((entry.key, entry.spk) for entry in data.train))
    write_trials(trials, data.trials)
    return raw_list, utt2spk, trials
