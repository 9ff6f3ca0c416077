"""Inputs of QMF calibration: utterance durations and a duration-stratified trial list.

The calibration list mirrors WeSpeaker's ``vox2_cali``: utterances of the
training set are split into short (``2 < dur < 6`` s) and long (``dur > 6`` s);
each round picks a speaker and an impostor speaker and writes one target and
one nontarget trial for each of short-short, short-long and long-long, so the
list covers the duration conditions the quality measures must learn.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from wespeaker_py.audio import AudioCheckError, audio_duration
from wespeaker_py.scoring.make_trials import TrialDesignError
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.tables import DataFormatError, iter_key_rest, write_utt2dur

SHORT_RANGE = (2.0, 6.0)


def compute_utt2dur(wav_scp: str, utt2dur_path: str) -> Tuple[int, float]:
    """Write ``utt duration_seconds`` for every entry of ``wav.scp``: a file's from its
    header, a ``command |``'s from the audio the command gives (it is run, as training
    runs it).

    Returns ``(utterance count, total seconds)``. An entry that cannot be read is an
    error naming the ``wav.scp`` line.
    """
    rows, total = [], 0.0
    entries = list(iter_key_rest(wav_scp, "'<utt> <audio path or command |>'"))
    for line_no, utt, path in progress_bar(entries, desc="utt2dur", unit="utt"):
        try:
            duration = audio_duration(path)
        except AudioCheckError as error:
            raise DataFormatError(wav_scp, line_no, f"cannot read {path!r}: {error}") from error
        rows.append((utt, duration))
        total += duration
    write_utt2dur(utt2dur_path, rows)
    return len(rows), total


def _duration_bins(durations: Dict[str, float], utt2spk: Dict[str, str]
                   ) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    short, long = defaultdict(list), defaultdict(list)
    for utt, duration in durations.items():
        speaker = utt2spk[utt]
        if SHORT_RANGE[0] < duration < SHORT_RANGE[1]:
            short[speaker].append(utt)
        elif duration > SHORT_RANGE[1]:
            long[speaker].append(utt)
    return short, long


def generate_calibration_trials(durations: Dict[str, float],
                                utt2spk: Optional[Dict[str, str]] = None,
                                each_trial_num: int = 10000, seed: int = 0, *,
                                utt2dur_path: str = "utt2dur", utt2spk_path: str = "utt2spk"
                                ) -> List[Tuple[str, str, str]]:
    """Draw ``each_trial_num`` trials (half target) for each duration pairing.

    Speakers come from ``utt2spk`` or, without it, from the key prefix before
    the first ``/`` (VoxCeleb keys ``spk/video/utt.wav``). Only speakers with
    at least two short and two long utterances take part, so target trials
    never pair an utterance with itself. An utterance of ``durations`` without a
    speaker is a :class:`DataFormatError` naming both files (``*_path``, for the message).
    """
    if utt2spk is None:
        utt2spk = {utt: utt.split("/")[0] for utt in durations}
    missing = [utt for utt in durations if utt not in utt2spk]
    if missing:
        raise DataFormatError(utt2dur_path, None,
                              f"{len(missing)} of its utterances are not in {utt2spk_path}, "
                              f"the first: {missing[0]!r}")
    short, long = _duration_bins(durations, utt2spk)
    speakers = sorted(spk for spk in short
                      if len(short[spk]) >= 2 and len(long.get(spk, ())) >= 2)
    if len(speakers) < 2:
        raise TrialDesignError(f"{utt2dur_path}: need at least two speakers with two short "
                               f"(2-6 s) and two long (> 6 s) utterances each; found "
                               f"{len(speakers)}")
    rng = random.Random(seed)
    trials = []
    for _ in range(each_trial_num // 2):
        speaker, impostor = rng.sample(speakers, 2)
        for enroll_bin, test_bin in ((short, short), (short, long), (long, long)):
            if enroll_bin is test_bin:
                enroll_utt, test_utt = rng.sample(enroll_bin[speaker], 2)
            else:
                enroll_utt = rng.choice(enroll_bin[speaker])
                test_utt = rng.choice(test_bin[speaker])
            trials.append((enroll_utt, test_utt, "target"))
            trials.append((enroll_utt, rng.choice(test_bin[impostor]), "nontarget"))
    return trials
