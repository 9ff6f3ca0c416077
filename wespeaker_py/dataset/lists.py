"""Data lists: Kaldi tables in, raw.list / shard.list / augmentation lists out and in.

Formats (the same as WeSpeaker's, so its lists work unchanged):

- ``raw.list``: one JSON object a line with ``key``, ``wav`` (a path, or a Kaldi
  pipe command ending in ``|``) and ``spk``; optionally ``vad``, a list of
  ``[start, end]`` pairs in seconds whose audio is kept and concatenated (an end of
  ``null`` runs to the end of the audio: a Kaldi segment ending in -1).
- ``shard.list``: one tar shard a line: a local path, a URL, or ``pipe:COMMAND``
  whose standard output is the tar stream.
- augmentation lists (MUSAN noise, RIRs): a Kaldi ``wav.scp`` (``key path``) or a
  ``raw.list`` (JSON lines with ``key`` and ``wav``).

A Kaldi folder whose ``wav.scp`` lists recordings is joined through its ``segments``
(``utt recording start end``; an end of -1 is the end of the recording, as in Kaldi):
each utterance is its recording with one VAD segment.

Every parse error is a :class:`DataFormatError` naming the file and line.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Container, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlparse

import soundfile as sf

from wespeaker_py.audio import audio_duration, is_pipe
from wespeaker_py.audio.errors import AudioCheckError, AudioUnreadableError
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.tables import (DataFormatError, UniqueKeys, iter_key_rest, iter_table,
                                       open_table, read_key_value)
from wespeaker_py.utils.utt2spk import iter_utt2spk

logger = get_logger(__name__)

# a span in seconds; an end of None runs to the end of the audio (Kaldi's segment end -1)
Span = Tuple[float, Optional[float]]
Segments = Tuple[Span, ...]
# file suffixes read as audio (also as members of any shard, ours or a third party's)
AUDIO_EXTENSIONS = frozenset(["flac", "mp3", "m4a", "ogg", "opus", "wav", "wma"])
# extensions that soundfile decodes under another format's name
_SOUNDFILE_FORMAT_OF = {"opus": "OGG"}
# the shard member suffix of a soundfile format where it is not the format's name in lower case
_SUFFIX_OF_FORMAT = {"NIST": "sph", "WAVEX": "wav"}


def format_suffix(soundfile_format: str) -> str:
    """The suffix a shard stores audio of a soundfile format under (``sf.info(...).format``):
    the format's name in lower case (``aiff``, ``au``, ``w64``), ``sph`` for NIST SPHERE."""
    return _SUFFIX_OF_FORMAT.get(soundfile_format, soundfile_format.lower())


# the suffixes of shard members read as audio: those of AUDIO_EXTENSIONS, and those of
# format_suffix for each format soundfile detects (headerless RAW it cannot)
SHARD_AUDIO_SUFFIXES = AUDIO_EXTENSIONS | frozenset(
    format_suffix(name) for name in sf.available_formats() if name != "RAW")
# the --vad_file default of WeSpeaker's list tools: no VAD file
NO_VAD_FILE = "non_exist"
# the Kaldi table beside a wav.scp of recordings that cuts utterances from them
SEGMENTS_NAME = "segments"


@dataclass(frozen=True)
class Utterance:
    """One utterance to read: from a path or pipe command (``wav``) or from bytes (``data``)."""

    key: str
    spk: Optional[str]
    wav: Optional[str] = None
    data: Optional[bytes] = None
    vad: Optional[Segments] = None


@dataclass(frozen=True)
class TableEntry:
    """One row joined from wav.scp, utt2spk and an optional VAD file (for the list builders)."""

    key: str
    spk: str
    wav: str
    vad: Optional[Segments] = None


def read_list_file(path: str) -> List[Tuple[int, str]]:
    """Return ``(line_no, stripped_line)`` for the non-blank lines of a list file."""
    with open_table(path) as handle:
        return [(no, line.strip()) for no, line in enumerate(handle, start=1) if line.strip()]


def _parse_segments(path: str, line_no: int, value) -> Segments:
    try:
        segments = tuple((float(start), None if end is None else float(end))
                         for start, end in value)
    except (TypeError, ValueError) as err:
        raise DataFormatError(path, line_no,
                              f"'vad' must be a list of [start, end] pairs: {err}") from None
    for start, end in segments:
        if start < 0 or (end is not None and end <= start):
            raise DataFormatError(path, line_no, f"bad vad segment [{start}, {end}]")
    return segments


def parse_raw_line(path: str, line_no: int, text: str, require_spk: bool = True) -> Utterance:
    """Parse one ``raw.list`` line; a bad line raises :class:`DataFormatError`."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        hint = ("; it looks like a shard location: a shard list is read with data_type shard "
                "(--data_type shard)" if _looks_like_shard(text) else "")
        raise DataFormatError(path, line_no, f"not a JSON object ({err.msg}): "
                                             f"{text[:80]!r}{hint}") from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, line_no, f"expected a JSON object, got {text[:80]!r}")
    required = ("key", "wav", "spk") if require_spk else ("key", "wav")
    for field in required:
        if field not in obj:
            raise DataFormatError(path, line_no, f"missing field {field!r}")
        if not isinstance(obj[field], str) or not obj[field]:
            raise DataFormatError(path, line_no, f"field {field!r} must be a non-empty string")
    spk = obj.get("spk")
    if spk is not None and not isinstance(spk, str):
        raise DataFormatError(path, line_no, "field 'spk' must be a string")
    vad = _parse_segments(path, line_no, obj["vad"]) if "vad" in obj else None
    return Utterance(key=obj["key"], spk=spk, wav=obj["wav"], vad=vad)


def _looks_like_shard(text: str) -> bool:
    """Whether a list line reads as a shard location (a tar file, a URL or a pipe)."""
    return text.endswith(".tar") or text.startswith(("pipe:", "http://", "https://"))


def read_raw_list(path: str, require_spk: bool = True) -> List[Utterance]:
    """Read and validate every line of a ``raw.list``; a repeated key is an error."""
    keys = UniqueKeys(path, "key")
    utterances = []
    for line_no, text in read_list_file(path):
        utt = parse_raw_line(path, line_no, text, require_spk)
        keys.claim(utt.key, line_no)
        utterances.append(utt)
    return utterances


def read_shard_list(path: str) -> List[str]:
    """Read a ``shard.list``: one shard location (path, URL or ``pipe:COMMAND``) a line.

    A shard listed twice is an error (its utterances would be read twice).
    """
    shards = UniqueKeys(path, "shard")
    for line_no, text in read_list_file(path):
        if text.startswith("{"):
            raise DataFormatError(path, line_no, "a raw-list JSON line, not a shard location: "
                                                 "a raw list is read with data_type raw "
                                                 "(--data_type raw)")
        shards.claim(text, line_no)
    return list(shards.first_line)


# a shard location that is a command whose output is the tar file
PIPE_PREFIX = "pipe:"


def local_shard_file(location: str) -> Optional[str]:
    """The local file a shard location names: the location itself, or a ``file://`` URL's
    path; None for a ``pipe:COMMAND`` or an ``http(s)://``/``ftp://`` URL, which only
    reading them can check."""
    if location.startswith(PIPE_PREFIX):
        return None
    scheme = urlparse(location).scheme
    if scheme in ("http", "https", "ftp"):
        return None
    return location[len("file://"):] if scheme == "file" else location


def unreadable_shards(locations: Sequence[str]) -> List[str]:
    """The local shard files (:func:`local_shard_file`) of ``locations`` that are missing or
    cannot be read, in their order."""
    files = filter(None, map(local_shard_file, locations))
    return [file for file in files if not (os.path.isfile(file) and os.access(file, os.R_OK))]


def read_data_list(path: str, data_type: str, require_spk: bool = True) -> List:
    """The entries of a ``raw`` list (:class:`Utterance` each) or a ``shard`` list (locations).

    The whole list is validated, so a bad line or a repeated key fails before any work.
    """
    if data_type == "raw":
        return read_raw_list(path, require_spk)
    if data_type == "shard":
        return read_shard_list(path)
    raise ValueError(f"data_type must be 'raw' or 'shard', got {data_type!r}")


def spk2id_from_utt2spk(utt2spk_path: str) -> Dict[str, int]:
    """Map the sorted unique speakers of an ``utt2spk`` file to ``0..N-1`` (the file read
    by :func:`~wespeaker_py.utils.utt2spk.iter_utt2spk`, with its checks)."""
    speakers = {spk for _, _, spk in iter_utt2spk(utt2spk_path)}
    return {spk: index for index, spk in enumerate(sorted(speakers))}


def read_audio_list(path: str) -> List[Tuple[str, str]]:
    """Read a noise/RIR list given as Kaldi ``wav.scp`` or as ``raw.list`` JSON lines.

    Returns ``(key, wav)`` pairs; the key decides the noise type (``noise``, ``music``,
    ``speech``, ``babble`` prefixes, as in MUSAN keys ``noise/free-sound/...``). The first
    line decides the format (a JSON object: ``raw.list``); a key given twice is a
    :class:`DataFormatError` naming both lines.
    """
    lines = read_list_file(path)
    if lines and lines[0][1].startswith("{"):
        entries = [(utt.key, utt.wav) for utt in read_raw_list(path, require_spk=False)]
    else:
        keys = UniqueKeys(path, "key")
        entries = []
        for line_no, key, wav in iter_key_rest(path, "'<key> <wav>'"):
            if key.startswith("{"):
                raise DataFormatError(path, line_no, "a raw.list JSON line in a wav.scp-style "
                                                     "list (its first line): use one format")
            keys.claim(key, line_no)
            entries.append((key, wav))
    if not entries:
        raise DataFormatError(path, None, "the list is empty")
    return entries


# the segment end of a Kaldi segments file that means "to the end of the recording"
OPEN_END = -1.0


def _parse_span(path: str, line_no: int, start: str, end: str, open_end: bool = False) -> Span:
    """``(start, end)`` in seconds of a VAD or segments line; numbers that are not, a
    negative start or an end not after the start is a :class:`DataFormatError`. With
    ``open_end`` an end of -1 (:data:`OPEN_END`) is taken, as None."""
    try:
        span = (float(start), float(end))
    except ValueError:
        raise DataFormatError(path, line_no, f"start/end are not numbers: {start!r} {end!r}") \
            from None
    if open_end and span[1] == OPEN_END and span[0] >= 0:
        return span[0], None
    if span[0] < 0 or span[1] <= span[0]:
        ends = "after it, or -1 for the end of the recording" if open_end else "after it"
        raise DataFormatError(path, line_no, f"bad segment [{start}, {end}]: the start must "
                                             f"be 0 or more and the end {ends}")
    return span


def read_vad_file(path: str) -> Dict[str, Segments]:
    """Read a VAD/segments file whose last three fields are ``utt start end`` (seconds)."""
    table: Dict[str, List[Tuple[float, float]]] = {}
    for line_no, fields in iter_table(path, min_fields=3):
        utt, start, end = fields[-3:]
        table.setdefault(utt, []).append(_parse_span(path, line_no, start, end))
    return {utt: tuple(segments) for utt, segments in table.items()}


@dataclass(frozen=True)
class RecordingSegment:
    """One line of a Kaldi ``segments`` file: the span (seconds) of a recording that is
    an utterance; an ``end`` of None (Kaldi's -1) is the end of the recording."""

    recording: str
    start: float
    end: Optional[float]
    line_no: int


def read_segments(path: str) -> Dict[str, RecordingSegment]:
    """``utt -> RecordingSegment`` of a Kaldi ``segments`` file (``utt recording start end``,
    an end of -1 read as None: to the end of the recording); a malformed line or span (a
    negative end other than -1 too), or an utterance given twice, is a
    :class:`DataFormatError` naming the file and line."""
    segments: Dict[str, RecordingSegment] = {}
    utterances = UniqueKeys(path, "segment")
    for line_no, (utt, recording, start, end) in iter_table(path, min_fields=4, max_fields=4):
        utterances.claim(utt, line_no)
        segments[utt] = RecordingSegment(
            recording, *_parse_span(path, line_no, start, end, open_end=True),
            line_no=line_no)
    return segments


def _check_recordings(segments: Mapping[str, RecordingSegment], recordings: Container[str],
                      segments_file: str, wav_scp: str) -> None:
    """A segment whose recording is not in ``recordings`` (those of ``wav_scp``) is a
    :class:`DataFormatError` naming the segments file and line."""
    for utt, segment in segments.items():
        if segment.recording not in recordings:
            raise DataFormatError(segments_file, segment.line_no,
                                  f"recording {segment.recording!r} of utterance {utt!r} is "
                                  f"not in {wav_scp}")


def segment_durations(wav_scp: str, segments_file: str) -> List[Tuple[str, float]]:
    """``(utterance, seconds)`` of each line of a Kaldi ``segments`` file, in its order: the
    length of its span, read from the file alone; for an end of -1, the rest of its
    recording (of ``wav_scp``), whose audio is measured once however many segments it has.

    A segment whose recording is not in wav.scp, an open-ended one whose recording
    cannot be read or ends at or before its start, is a :class:`DataFormatError` naming
    the segments file and line.
    """
    recordings = read_key_value(wav_scp)
    segments = read_segments(segments_file)
    _check_recordings(segments, recordings, segments_file, wav_scp)
    lengths: Dict[str, float] = {}
    rows = []
    for utt, segment in segments.items():
        end = segment.end
        if end is None:
            wav = recordings[segment.recording]
            if segment.recording not in lengths:
                try:
                    lengths[segment.recording] = audio_duration(wav)
                except AudioCheckError as error:
                    raise DataFormatError(segments_file, segment.line_no,
                                          f"cannot measure recording {segment.recording!r} "
                                          f"({wav!r}) for the end -1 of utterance {utt!r}: "
                                          f"{error}") from error
            end = lengths[segment.recording]
            if end <= segment.start:
                raise DataFormatError(segments_file, segment.line_no,
                                      f"utterance {utt!r} starts at {segment.start:g} s, at "
                                      f"or past the end of recording {segment.recording!r} "
                                      f"({end:.3f} s)")
        rows.append((utt, end - segment.start))
    return rows


def read_segment_table(wav_scp: str, utt2spk: str, segments_file: str) -> List[TableEntry]:
    """Join a Kaldi folder whose ``wav.scp`` lists recordings and whose ``segments`` cuts
    the utterances from them: one entry an utterance of ``utt2spk`` (in its order), with its
    recording's audio and its span as the one VAD segment, which readers keep alone (an
    end of -1 as None, which :func:`~wespeaker_py.audio.apply_vad` cuts at the end of the
    audio).

    A segment whose recording is not in wav.scp is a :class:`DataFormatError` naming the
    segments file and line; an utterance of utt2spk without a segment, or given two
    speakers, one naming utt2spk and the line(s). Segments of no utterance of utt2spk are
    left out with a warning.
    """
    recordings = read_key_value(wav_scp)
    segments = read_segments(segments_file)
    _check_recordings(segments, recordings, segments_file, wav_scp)
    rows = list(iter_utt2spk(utt2spk))
    entries = []
    for line_no, key, spk in rows:
        segment = segments.get(key)
        if segment is None:
            raise DataFormatError(utt2spk, line_no, f"utterance {key!r} is not in "
                                                    f"{segments_file}")
        entries.append(TableEntry(key=key, spk=spk, wav=recordings[segment.recording],
                                  vad=((segment.start, segment.end),)))
    warn_unlisted(segments, {key for _, key, _ in rows}, segments_file, utt2spk)
    return entries


def _segments_hint(wav_scp: str, utterance: str) -> str:
    """The end of the "not in wav.scp" error of ``utterance`` when the ``segments`` file
    beside ``wav_scp`` cuts it from a recording (then wav.scp lists recordings)."""
    path = os.path.join(os.path.dirname(wav_scp), SEGMENTS_NAME)
    if not os.path.isfile(path):
        return ""
    try:
        with open_table(path) as handle:
            if not any(line.split()[:1] == [utterance] for line in handle):
                return ""
    except (OSError, DataFormatError):
        return ""
    return (f"; {wav_scp} lists recordings, and {path} cuts the utterances from them: "
            f"give --segments {path}")


def vad_file_argument(value: str) -> Optional[str]:
    """argparse ``type`` of the list tools' ``--vad_file``: None for WeSpeaker's default
    (:data:`NO_VAD_FILE`); a file given that does not exist is an error naming it, not,
    as in WeSpeaker, a silent run without VAD."""
    if value == NO_VAD_FILE:
        return None
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"{value} does not exist or is not a file "
                                         "(leave --vad_file out for none)")
    return value


def read_utterance_table(wav_scp: str, utt2spk: str,
                         vad_file: Optional[str] = None,
                         drop_without_vad: bool = False) -> List[TableEntry]:
    """Join ``wav.scp`` and ``utt2spk`` (in utt2spk order), attaching VAD segments if given.

    An utterance of utt2spk missing from wav.scp, or given two speakers in utt2spk, is an
    error naming utt2spk and its line(s) (one that the ``segments`` file beside wav.scp cuts from
    a recording: saying so, see :func:`read_segment_table`); utterances of wav.scp missing
    from utt2spk are left out with a warning. With ``drop_without_vad`` utterances that
    have no VAD segments are left out (WeSpeaker's raw-list behaviour); otherwise they are
    kept whole. Either way the log counts them, and a VAD file none of whose keys is an
    utterance of utt2spk (another corpus's, or keyed differently) is a
    :class:`DataFormatError` naming it.
    """
    wavs = read_key_value(wav_scp)
    vad = read_vad_file(vad_file) if vad_file else None
    rows = list(iter_utt2spk(utt2spk))
    entries: List[TableEntry] = []
    without_vad: List[str] = []
    for line_no, key, spk in rows:
        if key not in wavs:
            raise DataFormatError(utt2spk, line_no, f"utterance {key!r} is not in {wav_scp}"
                                                    + _segments_hint(wav_scp, key))
        segments = vad.get(key) if vad is not None else None
        if vad is not None and segments is None:
            without_vad.append(key)
            if drop_without_vad:
                continue
        entries.append(TableEntry(key=key, spk=spk, wav=wavs[key], vad=segments))
    utterances = [key for _, key, _ in rows]
    warn_unlisted(wavs, set(utterances), wav_scp, utt2spk)
    if vad is not None:
        _check_vad_keys(vad_file, vad, utterances, without_vad, utt2spk,
                        drop_without_vad)
    return entries


def _check_vad_keys(vad_file: str, vad: Dict[str, Segments], utterances: List[str],
                    without_vad: List[str], utt2spk: str, dropped: bool) -> None:
    """Refuse a VAD file that matches no utterance; log the utterances it has no segments
    for (``dropped``: they are left out, else kept whole)."""
    if utterances and len(without_vad) == len(utterances):
        raise DataFormatError(vad_file, None, "holds no segments" if not vad else
                              f"none of its keys (e.g. {next(iter(vad))!r}, {len(vad)} in "
                              f"all) is an utterance of {utt2spk} (e.g. {utterances[0]!r}): "
                              f"is it the VAD of this data?")
    if without_vad:
        logger.warning("%d of the %d utterances of %s have no segments in %s and are %s "
                       "(the first: %r)", len(without_vad), len(utterances), utt2spk,
                       vad_file, "left out" if dropped else "kept whole", without_vad[0])


def warn_unlisted(wavs: Mapping[str, str], in_utt2spk: Container[str],
                  wav_scp: str, utt2spk: str) -> None:
    """Warn (counting them, naming the first) about the utterances of ``wav.scp`` that have
    no line in ``utt2spk``, and so are left out."""
    unlisted = [key for key in wavs if key not in in_utt2spk]
    if unlisted:
        logger.warning("%d of the %d utterances of %s are not in %s and are left out "
                       "(the first: %r)", len(unlisted), len(wavs), wav_scp, utt2spk,
                       unlisted[0])


def raw_list_line(entry: TableEntry) -> str:
    """The ``raw.list`` JSON line of one entry."""
    obj = {"key": entry.key, "wav": entry.wav, "spk": entry.spk}
    if entry.vad is not None:
        obj["vad"] = [list(segment) for segment in entry.vad]
    return json.dumps(obj, ensure_ascii=False)


def audio_extension(wav: str) -> str:
    """The lower-case suffix of an audio path ("" for none)."""
    return wav.rsplit(".", 1)[-1].lower() if "." in wav else ""


def decodable_extensions() -> List[str]:
    """The suffixes of :data:`AUDIO_EXTENSIONS` whose format soundfile decodes here, sorted
    (not m4a and wma with libsndfile)."""
    formats = sf.available_formats()
    return sorted(suffix for suffix in AUDIO_EXTENSIONS
                  if _SOUNDFILE_FORMAT_OF.get(suffix, suffix.upper()) in formats)


def check_decodable(entries: Sequence[TableEntry]) -> None:
    """Refuse, before a list or shard is made, audio that soundfile cannot decode here.

    An entry whose file has an audio extension (:data:`AUDIO_EXTENSIONS`) outside
    :func:`decodable_extensions` is an :class:`AudioUnreadableError` naming the utterance
    and the file. Pipes and other extensions are left to the reader (libsndfile detects
    formats by content).
    """
    decodable = decodable_extensions()
    for entry in entries:
        suffix = "" if is_pipe(entry.wav) else audio_extension(entry.wav)
        if suffix in AUDIO_EXTENSIONS and suffix not in decodable:
            raise AudioUnreadableError(
                f"utterance {entry.key}: soundfile (libsndfile {sf.__libsndfile_version__}) "
                f"cannot decode .{suffix} files such as {entry.wav!r}; convert them first "
                f"(e.g. to wav or flac)")


def write_raw_list(entries: Sequence[TableEntry], path: str) -> None:
    """Write a ``raw.list`` atomically, after :func:`check_decodable`."""
    check_decodable(entries)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(raw_list_line(entry) + "\n")
