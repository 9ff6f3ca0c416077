"""Combining a corpus's short utterances into longer ones (the CN-Celeb recipe's training set).

Many CN-Celeb utterances last a second or two. As WeSpeaker's recipe does, the
utterances of one speaker and genre (the key up to its first ``-``:
``id00000/interview-01-001`` belongs to ``id00000/interview``) are joined, in
list order, into pieces of at least ``min_duration`` seconds by Kaldi's
``combine_short_segments`` rule (:func:`group_consecutive`); nothing is joined
across groups. A piece of one utterance keeps its key and its file; a piece of
``n > 1`` utterances is named ``<first key>-comb<n>`` and written as a 16-bit
WAV of the concatenated samples. That name does not tell what it was made of, so
the manifest ``pieces.txt`` beside the pieces does: a piece file is reused only when
the manifest's last line for it lists the members planned now, read from the same
sources (each member's ``wav.scp`` entry and, for a file, its size, time and inode).
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from wespeaker_py.audio import AudioCheckError, audio_duration, is_pipe, open_audio, write_wav
from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils.paths import file_stamp
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.tables import DataFormatError, read_wav_scp, write_table, write_utt2dur

# durations closer than this count as equal, so rounding never decides a grouping
TOLERANCE = 1e-5
# unreadable inputs named in the final report
NAMED_SKIPS = 5
# in out_audio_dir: a "<piece key> src:<sources digest> <member> ..." line appended as each
# piece is written
MANIFEST = "pieces.txt"
SOURCES_TAG = "src:"


def _shorter(x: float, y: float) -> bool:
    return x < y - TOLERANCE


def _joins_left(left: Optional[float], this: float, right: Optional[float],
                min_duration: float) -> bool:
    """Kaldi's choice of the neighbour a short group joins (None: no neighbour there)."""
    if left is None:
        return False
    if right is None or _shorter(min_duration, right):
        return True
    if _shorter(left + this, min_duration):
        return False   # left would stay short: right either reaches the minimum or not
    if _shorter(right + this, min_duration):
        return True
    return _shorter(left, right)   # both reach the minimum: the shorter neighbour


def group_consecutive(durations: Sequence[float], min_duration: float) -> List[Tuple[int, int]]:
    """Split ``range(len(durations))`` into consecutive ``(start, end)`` groups that each last
    at least ``min_duration`` (within :data:`TOLERANCE`), Kaldi's combine_short_segments rule.

    The short groups wait on a stack, the last one first; each joins a neighbour
    (:func:`_joins_left`) and, having joined its right one, waits again while still
    short. Only when everything together is short is the one group shorter.
    """
    if min_duration < 0:
        raise ValueError(f"min_duration must be >= 0, got {min_duration}")
    if any(not duration > 0 for duration in durations):
        raise ValueError("every duration must be > 0")
    count = len(durations)
    head = list(range(count))            # head[i]: first index of the group holding i
    end = [i + 1 for i in range(count)]  # end[h]: one past the last index of group h
    total = list(durations)              # total[h]: seconds of group h
    waiting = [i for i in range(count) if _shorter(total[i], min_duration)]

    def absorb(first: int, second: int) -> None:
        """Group ``second`` (right of ``first``) becomes part of group ``first``."""
        for i in range(second, end[second]):
            head[i] = first
            total[first] += durations[i]
        end[first] = end[second]

    while waiting:
        group = waiting.pop()
        if head[group] != group or not _shorter(total[group], min_duration):
            continue
        left = head[group - 1] if group > 0 else None
        right = end[group] if end[group] < count else None
        if left is None and right is None:
            break
        if _joins_left(None if left is None else total[left], total[group],
                       None if right is None else total[right], min_duration):
            absorb(left, group)
        else:
            absorb(group, right)
            if _shorter(total[group], min_duration):
                waiting.append(group)
    starts = [i for i in range(count) if head[i] == i]
    return [(start, end[start]) for start in starts]


def genre_group(key: str) -> str:
    """The speaker and genre of a CN-Celeb key: the text before its first ``-``."""
    return key.split("-", 1)[0]


def speaker_of(key: str) -> str:
    """The speaker of a key: the text before its first ``/``."""
    return key.split("/", 1)[0]


def combined_key(keys: Sequence[str]) -> str:
    """The key of a piece: the only key, or ``<first key>-comb<n>`` for ``n > 1`` keys."""
    return keys[0] if len(keys) == 1 else f"{keys[0]}-comb{len(keys)}"


def plan_pieces(durations: Dict[str, float], min_duration: float) -> List[List[str]]:
    """The keys of each piece: ``durations``' keys (in their order) grouped by
    :func:`genre_group`, then by :func:`group_consecutive` within each group."""
    groups: Dict[str, List[str]] = {}
    for key in durations:
        groups.setdefault(genre_group(key), []).append(key)
    pieces = []
    for keys in groups.values():
        ranges = group_consecutive([durations[key] for key in keys], min_duration)
        pieces.extend(keys[start:end] for start, end in ranges)
    return pieces


def read_file_list(path: str) -> Dict[str, str]:
    """``key -> audio file`` of a wav.scp (:func:`read_wav_scp`'s checks); a pipe command
    is a :class:`DataFormatError` too."""
    paths = read_wav_scp(path)
    for key, audio in paths.items():
        if is_pipe(audio):
            raise DataFormatError(path, None, f"{key}: pipes are not supported: list files")
    return paths


def _parallel(function: Callable, items: Sequence, nj: int, desc: str,
              unit: str) -> Iterator:
    """``function(item) for item in items``, in order, in ``nj`` processes, with a
    progress bar; a generator, so each result can be used as it arrives."""
    with progress_bar(total=len(items), desc=desc, unit=unit) as bar:
        if nj <= 1 or len(items) <= 1:
            for item in items:
                result = function(item)
                bar.update()
                yield result
            return
        chunk = max(1, min(64, len(items) // (4 * nj)))
        with multiprocessing.Pool(nj) as pool:
            for result in pool.imap(function, items, chunk):
                bar.update()
                yield result


def _probe(path: str) -> Tuple[Optional[float], str]:
    """``(seconds, "")``, or ``(None, reason)`` for a file that cannot be read."""
    try:
        return audio_duration(path), ""
    except AudioCheckError as error:
        return None, error.reason


def _write_piece(job: Tuple[str, Sequence[str]]) -> Dict[int, str]:
    """Write the joined audio of ``job = (out_wav, paths)`` atomically.

    Returns the members that could not be joined (their index -> reason), empty when the
    piece was written: each file that cannot be decoded, or all of them when their
    sample rates differ (``sample_rate_mismatch``).
    """
    out_wav, paths = job
    samples, rates, failed = [], set(), {}
    for index, path in enumerate(paths):
        try:
            with open_audio(path) as handle:
                samples.append(handle.read_all())
                rates.add(handle.samplerate)
        except AudioCheckError as error:
            failed[index] = error.reason
    if failed:
        return failed
    if len(rates) > 1:
        return {index: "sample_rate_mismatch" for index in range(len(paths))}
    pcm = np.clip(np.round(np.concatenate(samples)), -32768, 32767).astype(np.int16)
    write_wav(out_wav, pcm, rates.pop())
    return {}


@dataclass
class CombineResult:
    """What :func:`combine_short_utterances` did; ``skipped`` maps a key to its reason."""

    inputs: int = 0
    pieces: List[List[str]] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def combined(self) -> int:
        """Pieces of more than one utterance."""
        return sum(len(keys) > 1 for keys in self.pieces)

    def describe(self) -> str:
        """One line: utterances in and out, and the skipped ones (a count, reasons, keys)."""
        line = (f"{self.inputs} utterances -> {len(self.pieces)} ({self.combined} combined "
                f"from {sum(len(keys) for keys in self.pieces if len(keys) > 1)})")
        if not self.skipped:
            return line
        reasons = Counter(self.skipped.values())
        named = list(self.skipped)[:NAMED_SKIPS]
        more = ", ..." if len(self.skipped) > NAMED_SKIPS else ""
        return (f"{line}; {len(self.skipped)} skipped ("
                f"{', '.join(f'{n} {why}' for why, n in sorted(reasons.items()))}): "
                f"{', '.join(named)}{more}")


def _readable_durations(paths: Dict[str, str], nj: int,
                        result: CombineResult) -> Dict[str, float]:
    """Seconds of each readable file; the others go to ``result.skipped``."""
    probes = list(_parallel(_probe, list(paths.values()), nj, "durations", "utt"))
    durations = {}
    for key, (seconds, reason) in zip(paths, probes):
        if seconds is None:
            result.skipped[key] = reason
        else:
            durations[key] = seconds
    return durations


def sources_digest(keys: Sequence[str], paths: Dict[str, str]) -> str:
    """What the members of a piece are read from: a digest of each one's key and
    ``wav.scp`` entry and, for a file, its :data:`~wespeaker_py.utils.paths.FileStamp`
    (a command's output cannot be stamped: its command line stands for it)."""
    sources = [(key, paths[key], None if is_pipe(paths[key]) else file_stamp(paths[key]))
               for key in keys]
    return SOURCES_TAG + hashlib.sha1(repr(sources).encode("utf-8")).hexdigest()[:16]


def _read_manifest(path: str) -> Dict[str, Tuple[str, List[str]]]:
    """The sources digest and members of each piece by the last line naming it in the
    manifest ``path`` (``<piece key> src:<digest> <member> ...`` lines; a line of an
    older manifest, without the digest, matches no sources); empty when there is none."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        rows = [line.split() for line in handle]
    return {row[0]: ((row[1], row[2:]) if row[1:2] and row[1].startswith(SOURCES_TAG)
                     else ("", row[1:]))
            for row in rows if row}


def _join_pieces(pieces: List[List[str]], paths: Dict[str, str],
                 out_audio_dir: str, nj: int) -> Dict[str, str]:
    """Write the combined pieces that are not already there with the same members read
    from the same sources (by the manifest), adding a manifest line as each is written;
    returns the members that could not be joined, key -> reason."""
    manifest = os.path.join(out_audio_dir, MANIFEST)
    written = _read_manifest(manifest)
    digests = {combined_key(keys): sources_digest(keys, paths)
               for keys in pieces if len(keys) > 1}
    todo = [keys for keys in pieces if len(keys) > 1 and not (
        written.get(combined_key(keys)) == (digests[combined_key(keys)], keys)
        and os.path.isfile(piece_wav(out_audio_dir, keys)))]
    if not todo:
        return {}
    jobs = [(piece_wav(out_audio_dir, keys), [paths[key] for key in keys]) for keys in todo]
    failed: Dict[str, str] = {}
    os.makedirs(out_audio_dir, exist_ok=True)
    with open(manifest, "a", encoding="utf-8") as out:
        for faults, keys in zip(_parallel(_write_piece, jobs, nj, "combine", "piece"), todo):
            failed.update((keys[index], reason) for index, reason in faults.items())
            if not faults:
                piece = combined_key(keys)
                out.write(f"{piece} {digests[piece]} {' '.join(keys)}\n")
                out.flush()
    return failed


def _write_pieces(durations: Dict[str, float], paths: Dict[str, str], out_audio_dir: str,
                  min_duration: float, nj: int, result: CombineResult) -> List[List[str]]:
    """Plan and write the pieces; returns them. Members that cannot be joined are skipped
    (``result.skipped``), taken out of ``durations`` and the rest planned again."""
    while True:
        pieces = plan_pieces(durations, min_duration)
        failed = _join_pieces(pieces, paths, out_audio_dir, nj)
        if not failed:
            return pieces
        result.skipped.update(failed)
        for key in failed:
            del durations[key]


def piece_wav(out_audio_dir: str, keys: Sequence[str]) -> str:
    """Where the audio of a combined piece is written: ``<out_audio_dir>/<key>.wav``."""
    return os.path.join(out_audio_dir, combined_key(keys) + ".wav")


def write_piece_lists(out_dir: str, pieces: List[List[str]], paths: Dict[str, str],
                      durations: Dict[str, float], out_audio_dir: str, key_suffix: str) -> None:
    """``wav.scp``, ``utt2spk``, ``utt2dur`` and ``utt2utts`` of the pieces in ``out_dir``,
    sorted by key, each written atomically (``utt2utts`` last)."""
    def audio(keys: List[str]) -> str:
        return paths[keys[0]] if len(keys) == 1 else piece_wav(out_audio_dir, keys)

    def speaker(keys: List[str]) -> str:
        return speaker_of(keys[0])

    rows = sorted((combined_key(keys) + key_suffix, keys) for keys in pieces)
    os.makedirs(out_dir, exist_ok=True)
    for name, value in (("wav.scp", audio), ("utt2spk", speaker)):
        write_table(os.path.join(out_dir, name), ((key, value(keys)) for key, keys in rows))
    write_utt2dur(os.path.join(out_dir, "utt2dur"),
                  ((key, sum(durations[member] for member in keys)) for key, keys in rows))
    write_table(os.path.join(out_dir, "utt2utts"), ((key, " ".join(keys)) for key, keys in rows))


def combine_short_utterances(wav_scp: str, out_audio_dir: str, out_data_dir: str,
                             min_duration: float, nj: int = 1,
                             key_suffix: str = "") -> CombineResult:
    """Join the short utterances of ``wav_scp`` (keys ``<spk>/<genre>-...``, no extension)
    into pieces of at least ``min_duration`` seconds within each speaker and genre.

    Combined audio goes to ``out_audio_dir/<key>.wav``, listed by its absolute path (a
    piece already there with the same members, by the manifest, is kept, so an
    interrupted run resumes); the lists (:func:`write_piece_lists`) to ``out_data_dir``,
    keys ending in ``key_suffix``.
    Unreadable files are left out (alone: the others are grouped again) and counted in
    the result; a run where nothing is readable is a :class:`RunFailedError`.
    """
    paths = read_file_list(wav_scp)
    out_audio_dir = os.path.abspath(out_audio_dir)
    result = CombineResult(inputs=len(paths))
    durations = _readable_durations(paths, nj, result)
    if not durations:
        raise RunFailedError(f"no file of {wav_scp} is readable ({result.describe()}); "
                             "nothing was written")
    result.pieces = _write_pieces(durations, paths, out_audio_dir, min_duration, nj, result)
    write_piece_lists(out_data_dir, result.pieces, paths, durations, out_audio_dir, key_suffix)
    return result
