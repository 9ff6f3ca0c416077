"""Writing audio: WAV bytes in memory (tar shard members) and WAV files, atomically.

Everything the package writes as audio (shard members, combined short utterances, the
synthetic noise/RIR sources and diarization conversations) goes through here, so the
format is chosen in one place: WAV, 16-bit PCM unless asked otherwise. Samples are
given as soundfile takes them: floats in [-1, 1] or int16 values, ``[frames]`` or
``[frames, channels]``.
"""
from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf

from wespeaker_py.utils.atomic_files import atomic_path

DEFAULT_SUBTYPE = "PCM_16"


def wav_bytes(samples: np.ndarray, sample_rate: int, subtype: str = DEFAULT_SUBTYPE) -> bytes:
    """``samples`` encoded as the bytes of a WAV file."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def write_wav(path: str, samples: np.ndarray, sample_rate: int,
              subtype: str = DEFAULT_SUBTYPE) -> None:
    """Write ``samples`` to the WAV file ``path`` (its folder made if missing); a reader
    never sees it half written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        sf.write(tmp, samples, sample_rate, format="WAV", subtype=subtype)
