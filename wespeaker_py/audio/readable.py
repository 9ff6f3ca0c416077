"""Reading every recording of a list, the unreadable ones skipped and counted by reason."""
from __future__ import annotations

from collections import Counter
from typing import Iterator, Mapping, Tuple

import numpy as np

from wespeaker_py.audio.load import load_audio_with_rate
from wespeaker_py.errors import AudioInputError
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.progress import progress_bar

logger = get_logger(__name__)


def readable_recordings(recordings: Mapping[str, str], rate: int, skipped: Counter,
                        desc: str, progress: bool = True
                        ) -> Iterator[Tuple[str, np.ndarray, int]]:
    """``(key, samples at rate, the rate it came at)`` for each recording of ``recordings``
    (``{key: audio path or Kaldi "command |"}``, read in order with
    :func:`~wespeaker_py.audio.load.load_audio_with_rate`), under a progress bar named
    ``desc`` when ``progress``. A recording that cannot be read is warned about, counted in
    ``skipped`` under its error's ``reason`` and left out."""
    with progress_bar(recordings.items(), desc=desc, unit="utt", enabled=progress) as bar:
        for key, path in bar:
            try:
                samples, source_rate = load_audio_with_rate(path, rate)
            except AudioInputError as err:
                logger.warning("skipping %s: %s", key, err)
                skipped[err.reason] += 1
                continue
            yield key, samples, source_rate
