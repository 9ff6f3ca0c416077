"""RTTM files: one ``SPEAKER`` line per speaker turn (NIST Rich Transcription format).

    SPEAKER <recording> <channel> <start> <duration> <NA> <NA> <speaker> <NA> <NA>

The channel is NIST's, counted from 1: the diarized channel ``N`` (counted from 0, as
``--channel N`` counts) is written ``N+1``, a mix or the default first channel ``1``
(:func:`rttm_channel`). Writing is atomic. Reading accepts the lines other tools write
(any number of trailing fields after the speaker, ``;;`` comments, the other NIST RTTM
line types ignored; the channel is not read) and names the file and line of anything
malformed, or of a line that is no RTTM line at all (a wav.scp given for an RTTM).
"""
from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from wespeaker_py.diarization.turns import Turn
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.tables import DataFormatError, UniqueKeys, iter_table


# the NIST RTTM line types other than SPEAKER (RT-09 evaluation plan; md-eval's list)
OTHER_LINE_TYPES = frozenset({"SEGMENT", "NOSCORE", "NO_RT_METADATA", "LEXEME", "NON-LEX",
                              "NON-SPEECH", "FILLER", "EDIT", "IP", "SU", "CB", "A/P",
                              "SPKR-INFO"})


def recording_id(audio_path: str, folder: Optional[str] = None) -> str:
    """The RTTM recording id of an audio file: its name (its path below ``folder``, when
    given) without the extension, each run of whitespace and each ``/`` replaced by ``_``
    (RTTM fields cannot hold spaces; ``talks/day 1/a.wav`` below ``talks`` is ``day_1_a``)."""
    name = os.path.relpath(audio_path, folder) if folder else os.path.basename(audio_path)
    return re.sub(r"[\s/]+", "_", os.path.splitext(name.replace(os.sep, "/"))[0])


def rttm_channel(channel: Union[str, int]) -> int:
    """The RTTM channel field of audio diarized with the channel policy ``channel`` (see
    :mod:`wespeaker_py.audio`): channel ``N`` (from 0) is ``N+1``; ``first``, ``mean`` and
    ``loudest`` are ``1``."""
    return channel + 1 if isinstance(channel, int) else 1


def millisecond_span(turn: Turn) -> Tuple[int, int]:
    """A turn's start and end, each rounded to the millisecond (as integers). Rounding the
    end rather than the duration keeps touching turns touching in the file."""
    return int(round(turn.start * 1000)), int(round(turn.end * 1000))


def format_rttm_line(recording: str, turn: Turn, channel: int = 1) -> str:
    """One RTTM ``SPEAKER`` line (no newline): start and end to the millisecond, the
    duration their difference; ``channel`` is the RTTM's, from 1 (:func:`rttm_channel`)."""
    if any(ch.isspace() for ch in recording + turn.speaker):
        raise ValueError(f"RTTM fields cannot hold spaces: {recording!r} / {turn.speaker!r}")
    start, end = millisecond_span(turn)
    return (f"SPEAKER {recording} {channel} {start / 1000:.3f} {(end - start) / 1000:.3f} "
            f"<NA> <NA> {turn.speaker} <NA> <NA>")


def rttm_lines(recording: str, turns: Iterable[Turn], channel: int = 1) -> Iterator[str]:
    """The ``SPEAKER`` lines (no newlines) of a recording's turns in order of start time,
    leaving out a turn shorter than the millisecond the times are written to."""
    for turn in sorted(turns, key=lambda t: (t.start, t.end, t.speaker)):
        start, end = millisecond_span(turn)
        if end > start:
            yield format_rttm_line(recording, turn, channel)


def write_rttm(path: str, recordings: Mapping[str, Iterable[Turn]], channel: int = 1) -> None:
    """Write the turns of each recording, in order of start time, atomically, on the RTTM
    channel ``channel`` (:func:`rttm_channel`).

    A recording without turns writes nothing (the RTTM way to say "no speech"); a turn
    that rounds to no length is left out (:func:`rttm_lines`).
    """
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for recording, turns in recordings.items():
            for line in rttm_lines(recording, turns, channel):
                handle.write(line + "\n")


def read_rttm(path: str) -> Dict[str, List[Turn]]:
    """Turns per recording from an RTTM file, in file order (``SPEAKER`` lines only)."""
    recordings: Dict[str, List[Turn]] = OrderedDict()
    for line_no, fields in iter_table(path):
        line = " ".join(fields)
        kind = fields[0].upper()   # md-eval takes the types in any case
        if kind != "SPEAKER":
            if kind in OTHER_LINE_TYPES or kind.startswith(";;"):
                continue
            raise DataFormatError(path, line_no, f"not an RTTM line: {line!r} (an RTTM line "
                                                 f"starts with SPEAKER, another RTTM type such "
                                                 f"as SPKR-INFO, or ';;'); is it an RTTM file?")
        if len(fields) < 8:
            raise DataFormatError(path, line_no, f"a SPEAKER line needs at least 8 fields, "
                                                 f"got {len(fields)}: {line!r}")
        try:
            start, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise DataFormatError(path, line_no, f"start and duration must be numbers: "
                                                 f"{fields[3]!r} {fields[4]!r}") from None
        if not (math.isfinite(start) and math.isfinite(duration)):
            raise DataFormatError(path, line_no, f"start and duration must be finite "
                                                 f"numbers: {line!r}")
        if start < 0 or duration < 0:
            raise DataFormatError(path, line_no, f"negative start or duration: {line!r}")
        recordings.setdefault(fields[1], []).append(Turn(start, start + duration, fields[7]))
    return recordings


def read_uem(path: str) -> Dict[str, List[Tuple[float, float]]]:
    """Scoring regions per recording from a NIST UEM file
    (``<recording> <channel> <start> <end>``)."""
    regions: Dict[str, List[Tuple[float, float]]] = OrderedDict()
    for line_no, fields in iter_table(path):
        if fields[0].startswith(";;"):
            continue
        line = " ".join(fields)
        if len(fields) != 4:
            raise DataFormatError(path, line_no, f"expected '<recording> <channel> <start> "
                                                 f"<end>', got {line!r}")
        try:
            start, end = float(fields[2]), float(fields[3])
        except ValueError:
            raise DataFormatError(path, line_no, f"start and end must be numbers: "
                                                 f"{line!r}") from None
        if not (0 <= start < end and math.isfinite(end)):
            raise DataFormatError(path, line_no, f"need 0 <= start < end, both finite: "
                                                 f"{line!r}")
        regions.setdefault(fields[0], []).append((start, end))
    return regions


def read_speaker_counts(path: str) -> Dict[str, int]:
    """Number of speakers per recording from a Kaldi ``reco2num_spk`` file
    (``<recording> <count>`` per line), or from an RTTM file (its speakers counted)."""
    if path.endswith(".rttm"):
        return {key: len({turn.speaker for turn in turns})
                for key, turns in read_rttm(path).items()}
    counts: Dict[str, int] = OrderedDict()
    recordings = UniqueKeys(path, "recording")
    for line_no, fields in iter_table(path):
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) < 1:
            raise DataFormatError(path, line_no, f"expected '<recording> <count>' with a "
                                                 f"count of at least 1, got {' '.join(fields)!r}")
        recordings.claim(fields[0], line_no)
        counts[fields[0]] = int(fields[1])
    return counts
