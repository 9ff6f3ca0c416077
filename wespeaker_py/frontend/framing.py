"""Frame arithmetic shared by the front-end and the input pipeline (Kaldi snip-edges framing)."""
from __future__ import annotations


def frame_params(sample_rate: int, frame_length_ms: float = 25.0,
                 frame_shift_ms: float = 10.0) -> tuple:
    """Return ``(window_samples, shift_samples)`` for a frame length and shift in ms."""
    window = int(sample_rate * frame_length_ms / 1000.0)
    shift = int(sample_rate * frame_shift_ms / 1000.0)
    if window <= 0 or shift <= 0:
        raise ValueError(f"frame length {frame_length_ms} ms and shift {frame_shift_ms} ms "
                         f"give no samples at {sample_rate} Hz")
    return window, shift


def num_frames(num_samples: int, sample_rate: int, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0) -> int:
    """Number of frames Kaldi's snip-edges framing makes from ``num_samples`` samples."""
    window, shift = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    if num_samples < window:
        return 0
    return 1 + (num_samples - window) // shift


def samples_for_frames(frames: int, sample_rate: int, frame_length_ms: float = 25.0,
                       frame_shift_ms: float = 10.0) -> int:
    """Fewest samples that give ``frames`` frames (the chunk length for ``num_frms``)."""
    window, shift = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    return (frames - 1) * shift + window


def frame_span(start: int, stop: int, window: int, shift: int) -> slice:
    """The samples that frames ``[start, stop)`` cover (``window`` and ``shift`` in samples,
    as :func:`frame_params` gives them): a chunk's own input when its frames are computed
    alone."""
    return slice(start * shift, (stop - 1) * shift + window)
