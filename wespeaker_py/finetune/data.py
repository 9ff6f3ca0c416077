"""The fine-tuning data: a Kaldi folder read, checked and listed.

DIR holds ``wav.scp`` and ``utt2spk`` (``segments``, ``utt recording start end``,
optional: then wav.scp lists recordings), or, without a wav.scp (nor utt2spk or
segments), one folder of audio files per speaker
(:mod:`~wespeaker_py.finetune.speaker_folders`). :func:`read_finetune_corpus` reads and
checks the folders; :mod:`~wespeaker_py.finetune.split` splits what it read into
training and dev (:class:`FinetuneData`). :func:`list_digests` tells a folder's lists
apart from the same folder edited; :func:`write_lists` and :func:`write_data_lists` write
the lists a run trains and evaluates on, and those of each data folder as read.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from wespeaker_py.audio import (AudioCheckError, AudioEmptyError, AudioMissingError,
                                AudioTruncatedError, is_pipe, open_audio)
from wespeaker_py.audio.files import MAX_SEGMENT_OVERSHOOT, describe_segment, segment_outside
from wespeaker_py.dataset.lists import (SEGMENTS_NAME, TableEntry, decodable_extensions,
                                        read_segment_table, read_utterance_table,
                                        write_raw_list)
from wespeaker_py.errors import WespeakerError
from wespeaker_py.finetune.config import option_name, option_setting
from wespeaker_py.finetune.speaker_folders import (LISTS, SpeakerFolderError,
                                                   SpeakerFolderListing, list_speaker_folders)
from wespeaker_py.scoring.make_trials import Trial
from wespeaker_py.scoring.trials import write_trials
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.paths import file_digest
from wespeaker_py.utils.tables import DataFormatError, resolve_wav, table_digest, write_table

logger = get_logger(__name__)

# the lists a data folder is read from (segments optional)
LIST_NAMES = ("wav.scp", "utt2spk", SEGMENTS_NAME)
# the fewest speakers held out for dev, and left to train on
MIN_DEV_SPEAKERS = 2
MIN_TRAIN_SPEAKERS = 2
SPEAKER_MINIMUM = (f"fine-tuning needs at least {MIN_DEV_SPEAKERS + MIN_TRAIN_SPEAKERS} "
                   f"speakers: {MIN_DEV_SPEAKERS} held out for dev (each with two or more "
                   f"utterances) and {MIN_TRAIN_SPEAKERS} to train on")


class FinetuneDataError(WespeakerError):
    """A fine-tuning data folder that cannot give a training and a dev set (exit status 2)."""


class _ReadableEntries:
    """The readability test of the data classes below, each of which has ``unreadable``: the
    files whose header could not be read."""

    unreadable: Set[str]

    def readable(self, entry: TableEntry) -> bool:
        """Whether ``entry``'s file header was read, or it is a pipe (not run here)."""
        return entry.wav not in self.unreadable


@dataclass
class FinetuneCorpus(_ReadableEntries):
    """DIR (and ``--mix_data``) read and checked, before the split: DIR's utterances, the
    header ``(frames, rate)`` of each of their files that could be read, the ``mix-``
    prefixed utterances of ``--mix_data``, and the rate of most of DIR's files (None when
    its wav.scp holds only pipes and the rate to train at was given). ``unreadable``: the
    files of either folder whose header could not be read (missing, cut short, empty),
    which the split counts neither as candidates, trials nor speakers."""

    source: str
    entries: List[TableEntry]
    headers: Dict[str, Tuple[int, int]]
    sample_rate: Optional[int]
    rates: Dict[int, int] = field(default_factory=dict)  # DIR's files by sample rate
    mix_source: Optional[str] = None
    mixed: List[TableEntry] = field(default_factory=list)
    mix_rates: Dict[int, int] = field(default_factory=dict)  # --mix_data's files by rate
    # "data" / "mix_data": the folder's utterances listed from its speaker folders
    listings: Dict[str, SpeakerFolderListing] = field(default_factory=dict)
    # "data" / "mix_data": the folder's utterances as read (paths resolved, no prefix)
    folder_entries: Dict[str, List[TableEntry]] = field(default_factory=dict)
    unreadable: Set[str] = field(default_factory=set)


@dataclass
class FinetuneData(_ReadableEntries):
    """DIR split into training and dev entries, with the dev trials and the data's rate
    (None when wav.scp holds only pipes and the rate to train at was given). Entries whose
    file is ``unreadable`` stay listed (training skips and counts them, the dev evaluation
    names them) but give no trial and count in no speaker or utterance figure."""

    source: str
    train: List[TableEntry]
    dev: List[TableEntry]
    trials: List[Trial]
    sample_rate: Optional[int]
    rates: Dict[int, int] = field(default_factory=dict)  # DIR's files by sample rate
    single_utterance_speakers: int = 0
    mix_source: Optional[str] = None  # --mix_data: original-domain data that only trains
    mix_utterances: int = 0
    mix_rates: Dict[int, int] = field(default_factory=dict)  # --mix_data's files by rate
    dev_rates: Dict[int, int] = field(default_factory=dict)  # dev utterances by file rate
    # "data" / "mix_data": the folder's utterances listed from its speaker folders
    listings: Dict[str, SpeakerFolderListing] = field(default_factory=dict)
    # "data" / "mix_data": the folder's utterances as read (paths resolved, no prefix)
    folder_entries: Dict[str, List[TableEntry]] = field(default_factory=dict)
    unreadable: Set[str] = field(default_factory=set)

    @property
    def train_speakers(self) -> List[str]:
        """The training speakers with a file that can be read (or a pipe)."""
        return sorted({entry.spk for entry in self.train if self.readable(entry)})

    @property
    def dev_speakers(self) -> List[str]:
        """The dev speakers with a file that can be read (or a pipe): on a resumed run, which
        keeps its split, one whose files have all gone since is left out."""
        return sorted({entry.spk for entry in self.dev if self.readable(entry)})

    @property
    def train_utterances(self) -> int:
        """The training utterances whose file can be read (or is a pipe)."""
        return sum(self.readable(entry) for entry in self.train)

    @property
    def dev_utterances(self) -> int:
        """The dev utterances whose file can be read (or is a pipe)."""
        return sum(self.readable(entry) for entry in self.dev)

    def summary(self) -> Dict[str, object]:
        """What finetune.json records about the data."""
        targets = sum(label == "target" for _, _, label in self.trials)
        return {"dir": self.source, "speaker_folders": "data" in self.listings,
                "segments": _has_segments(self.folder_entries.get("data", ())),
                "sample_rate": self.sample_rate, "files_by_rate": _by_rate(self.rates),
                "train_speakers": len(self.train_speakers),
                "train_utterances": self.train_utterances,
                "single_utterance_speakers": self.single_utterance_speakers,
                "dev_speakers": len(self.dev_speakers), "dev_utterances": self.dev_utterances,
                "dev_utterances_by_rate": _by_rate(self.dev_rates),
                "mix_data": self.mix_source, "mix_utterances": self.mix_utterances,
                "mix_files_by_rate": _by_rate(self.mix_rates),
                "dev_target_trials": targets, "dev_nontarget_trials": len(self.trials) - targets}


def _has_segments(entries: Sequence[TableEntry]) -> bool:
    """Whether ``entries`` are segments of recordings (a Kaldi folder with ``segments``)."""
    return any(entry.vad for entry in entries)


def _by_rate(counts: Mapping[int, int]) -> Dict[str, int]:
    """``{rate: count}`` as finetune.json records it (rates as strings, in order)."""
    return {str(rate): count for rate, count in sorted(counts.items())}


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
            f"{', '.join(decodable_extensions())}, at any depth)")
    logger.info("%s has no wav.scp: %d speaker folders with %d audio files are its "
                "utterances, keyed by their path below it (<speaker>/...)%s", data_dir,
                listing.speakers, len(listing.entries),
                f"; {listing.other_files} other files left out" if listing.other_files else "")
    return listing


def _read_entries(data_dir: str) -> Tuple[List[TableEntry], Optional[SpeakerFolderListing]]:
    """DIR's utterances, and its listing when they came from speaker folders (none of
    :data:`LIST_NAMES`: a folder with some of a Kaldi folder's lists is one missing the
    rest)."""
    wav_scp, utt2spk, segments_path = (os.path.join(data_dir, name) for name in LIST_NAMES)
    if not any(os.path.isfile(path) for path in (wav_scp, utt2spk, segments_path)):
        listing = _listed_speaker_folders(data_dir)
        return listing.entries, listing
    for path in (wav_scp, utt2spk):
        if not os.path.isfile(path):
            raise FinetuneDataError(f"{path} does not exist (a data folder needs wav.scp and "
                                    f"utt2spk; or, without any of wav.scp, utt2spk and "
                                    f"segments, one folder of audio files per speaker)")
    if os.path.isfile(segments_path):
        entries = read_segment_table(wav_scp, utt2spk, segments_path)
    else:
        entries = read_utterance_table(wav_scp, utt2spk)
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


def _past_end(entry: TableEntry, frames: int, rate: int
              ) -> Optional[Tuple[float, Optional[float]]]:
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
            past.append(f"{entry.key} {describe_segment(*bad)} of {entry.wav} "
                        f"({header[0] / header[1]:.3f} s)")
    if past:
        logger.warning("%s: %d of its %d segments start at or end more than %g s past the "
                       "end of their recording, and are skipped (segment_past_end): the "
                       "first is %s", os.path.join(folder, SEGMENTS_NAME), len(past),
                       len(entries), MAX_SEGMENT_OVERSHOOT, past[0])
    return kept


def most_common_rate(counts: Mapping[int, int]) -> int:
    """The rate of most files (a tie: the higher)."""
    return max(counts, key=lambda rate: (counts[rate], rate))


def _warn_mixed_rates(where: str, rates: Mapping[int, int], own_rates: Mapping[int, int],
                      target: int, rate_given: bool) -> None:
    """Say that files at several ``rates`` are all resampled to ``target``; files below it
    are upsampled with their top band empty, and, unless the rate was given
    (``--sample_rate``, or a front-end that takes one rate), the lowest rate of DIR's own
    files (``own_rates``; not --mix_data's) below it is suggested for narrow-band audio to
    score."""
    below = {rate: count for rate, count in rates.items() if rate < target}
    message = (f"{where} holds files at "
               + ", ".join(f"{rate} ({count} files)" for rate, count in sorted(rates.items()))
               + f" Hz: all are resampled to {target} Hz")
    if below:
        message += (f"; the {sum(below.values())} files below {target} Hz are upsampled, "
                    f"with nothing above half their own rate")
        own_below = [rate for rate in own_rates if rate < target]
        if own_below and not rate_given:
            lowest = min(own_below)
            message += (f". If the audio the new model is to score is narrow-band (calls at "
                        f"{lowest} Hz), give {option_setting('sample_rate', lowest)} to "
                        f"train a model at "
                        f"{lowest} Hz (the other files are then downsampled)")
    logger.warning("%s", message)


def _list_name(folder: str, name: str, listing: Optional[SpeakerFolderListing]) -> str:
    """How messages name the list ``name`` of ``folder``: the file, or the folder when its
    lists were made from speaker folders."""
    return f"{folder} (speaker folders)" if listing else os.path.join(folder, name)


def read_finetune_corpus(data_dir: str, mix_dir: Optional[str] = None,
                         sample_rate: Optional[int] = None) -> FinetuneCorpus:
    """Read and check ``data_dir`` (and ``mix_dir``); :class:`FinetuneDataError` when it
    cannot serve.

    Refused: a wav.scp none of whose files can be read, and one of only pipes (whose rate
    cannot be read) unless ``sample_rate``, the rate to train at, is given; too few
    speakers are the split's to refuse (:data:`SPEAKER_MINIMUM`). Utterances whose segment
    lies past the end of its recording are left out (and counted in a warning), so the
    split's checks count what is left.
    ``mix_dir`` (original-domain data) only trains: its utterances and speakers
    join the training set under a ``mix-`` prefix; the rate stays ``data_dir``'s.
    Either folder may be a Kaldi folder or a folder of speaker folders.
    """
    try:
        entries, listing = _read_entries(data_dir)
        mix_entries, mix_listing = _read_entries(mix_dir) if mix_dir else ([], None)
    except DataFormatError as error:
        raise FinetuneDataError(str(error)) from None
    folder_entries = {"data": entries, **({"mix_data": mix_entries} if mix_dir else {})}
    mixed = [TableEntry("mix-" + entry.key, "mix-" + entry.spk, entry.wav, entry.vad)
             for entry in mix_entries]
    # headers and segment bounds are read now: a segment past its recording's end is left
    # out before the split, so its checks count only what can train and be scored
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
    own_rates = _rate_counts(headers)
    if not own_rates and not any(is_pipe(entry.wav) for entry in entries):
        raise FinetuneDataError(f"{wav_scp}: none of its files can be read (see the warning "
                                f"above)")
    unreadable = {entry.wav for entry in entries + mixed if not is_pipe(entry.wav)
                  and entry.wav not in headers and entry.wav not in mix_headers}
    if not own_rates and sample_rate is None:
        raise FinetuneDataError(f"{wav_scp}: only pipes; the data's sample rate "
                                f"cannot be read (give {option_name('sample_rate')})")
    rate = most_common_rate(own_rates) if own_rates else None
    mix_rates = _rate_counts(mix_headers)
    rates = Counter(own_rates) + Counter(mix_rates)
    if len(rates) > 1:
        _warn_mixed_rates(data_dir + (f" (with {mix_dir})" if mix_dir else ""), rates,
                          own_rates, sample_rate or rate, sample_rate is not None)
    if mixed:
        logger.info("%d utterances of %d speakers of %s train too", len(mixed),
                    len({entry.spk for entry in mixed}), mix_dir)
    listings = {role: found for role, found in (("data", listing), ("mix_data", mix_listing))
                if found}
    return FinetuneCorpus(source=os.path.abspath(data_dir), entries=entries, headers=headers,
                          sample_rate=rate, rates=own_rates,
                          mix_source=os.path.abspath(mix_dir) if mix_dir else None,
                          mixed=mixed, mix_rates=mix_rates, listings=listings,
                          folder_entries=folder_entries, unreadable=unreadable)


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


def write_data_lists(data: FinetuneData, folder: str) -> Dict[str, str]:
    """Write each data folder's ``wav.scp`` and ``utt2spk`` as the run read them (paths
    made absolute; for speaker folders, the lists made of them) into ``folder/<role>``
    (``data``, ``mix_data``): a Kaldi folder the other commands take, whose lists read
    alike from any working folder. Return ``{role: that folder}``; a folder of segments is
    left out (the other commands read whole files)."""
    written = {}
    for role, entries in data.folder_entries.items():
        if _has_segments(entries):
            continue
        written[role] = os.path.join(folder, role)
        os.makedirs(written[role], exist_ok=True)
        write_table(os.path.join(written[role], "wav.scp"),
                    ((entry.key, entry.wav) for entry in entries))
        write_table(os.path.join(written[role], "utt2spk"),
                    ((entry.key, entry.spk) for entry in entries))
    return written


def train_utt2spk(folder: str) -> str:
    """The training list ``utt2spk`` that :func:`write_lists` writes under ``folder``."""
    return os.path.join(folder, "train", "utt2spk")


def write_lists(data: FinetuneData, folder: str) -> Tuple[str, str, str]:
    """Write ``train/raw.list``, ``train/utt2spk`` and ``dev/trials`` under ``folder``."""
    for sub in ("train", "dev"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    raw_list = os.path.join(folder, "train", "raw.list")
    utt2spk = train_utt2spk(folder)
    trials = os.path.join(folder, "dev", "trials")
    write_raw_list(data.train, raw_list)
    write_table(utt2spk, ((entry.key, entry.spk) for entry in data.train))
    write_trials(trials, data.trials)
    return raw_list, utt2spk, trials
