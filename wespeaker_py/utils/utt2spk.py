"""The one reader of Kaldi ``utt2spk`` files (``utterance speaker`` a line), used by
training's speaker map, the list builders and scoring.

It lives here rather than in :mod:`wespeaker_py.dataset.lists` so that scoring can use
it without importing the input pipeline (and with it torch).
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.tables import DataFormatError, iter_table

logger = get_logger(__name__)


def iter_utt2spk(path: str) -> Iterator[Tuple[int, str, str]]:
    """Yield ``(line_no, utterance, speaker)`` for each utterance of ``utt2spk`` ``path``,
    in file order.

    A line without exactly two fields, or an utterance given two different speakers, is a
    :class:`DataFormatError` naming the file and line(s). A line repeating an earlier one
    exactly is skipped; the repeats of a file are logged once, as a warning.
    """
    first: Dict[str, Tuple[int, str]] = {}
    repeats = 0
    first_repeat: Optional[Tuple[int, int, str, str]] = None
    for line_no, (utt, spk) in iter_table(path, min_fields=2, max_fields=2):
        seen = first.setdefault(utt, (line_no, spk))
        if seen[0] == line_no:
            yield line_no, utt, spk
        elif seen[1] != spk:
            raise DataFormatError(path, line_no,
                                  f"utterance {utt!r} has speaker {spk!r} here and "
                                  f"{seen[1]!r} on line {seen[0]}")
        else:
            repeats += 1
            if first_repeat is None:
                first_repeat = (line_no, seen[0], utt, spk)
    if first_repeat is not None:
        line_no, earlier, utt, spk = first_repeat
        logger.warning("%s: %d line(s) repeat an earlier line exactly and are skipped "
                       "(the first: line %d, '%s %s', as on line %d)", path, repeats,
                       line_no, utt, spk, earlier)
