"""Whisper's log-mel input features, batched in torch on the input's device.

What OpenAI Whisper's ``log_mel_spectrogram`` computes for one waveform in [-1, 1] (and
WeSpeaker's ``whisper_encoder`` front-end, row by row), here for a batch of equal-length
rows at once:

1. a centred STFT (reflect padding of ``n_fft // 2`` samples at both ends), 400-point
   periodic Hann window, hop 160 (25 ms / 10 ms at 16 kHz);
2. the power spectrum, its last frame dropped: ``samples // 160`` frames;
3. a Slaney-scale mel filterbank with Slaney area normalisation (80 or 128 bands from
   0 Hz to Nyquist: ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=...)``, the
   matrix Whisper ships; computed here, in float64, then rounded to float32);
4. ``log10(max(mel, 1e-10))``, floored at each utterance's own maximum minus 8, then
   ``(x + 4) / 4``.

The arithmetic is float32, as Whisper's (float64 for float64 input). Inputs are
int16-scale, as every front-end here takes them, and are divided by 32768 first:
WeSpeaker hands the front-end torchaudio's [-1, 1] samples. The per-utterance maximum
makes the features depend on the whole row, so every row must be a full-length
signal (no padding).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from wespeaker_py.audio import INT16_SCALE
from wespeaker_py.config.schema import FIXED_SAMPLE_RATES

SAMPLE_RATE = FIXED_SAMPLE_RATES["whisper_encoder"]
N_FFT = 400
HOP_LENGTH = 160
MEL_BANDS = (80, 128)
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0   # log10 units below the utterance's maximum
CPU_ROWS_PER_CALL = 8   # rows computed together on the CPU

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_LOG_START_HZ = 1000.0
_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    linear = hz / _LINEAR_HZ_PER_MEL
    start = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
    logarithmic = start + torch.log(hz.clamp(min=_LOG_START_HZ) / _LOG_START_HZ) / _LOG_STEP
    return torch.where(hz >= _LOG_START_HZ, logarithmic, linear)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    start = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
    linear = mel * _LINEAR_HZ_PER_MEL
    logarithmic = _LOG_START_HZ * torch.exp(_LOG_STEP * (mel - start))
    return torch.where(mel >= start, logarithmic, linear)


def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT
                ) -> torch.Tensor:
    """``[n_mels, n_fft // 2 + 1]`` Slaney mel filterbank (triangles between adjacent band
    edges on Slaney's mel scale, each scaled to unit area, ``2 / (upper - lower)`` Hz),
    float32, as ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)``.
    Computed on the CPU whatever the default device (a model built on the meta device
    included)."""
    cpu64 = {"dtype": torch.float64, "device": "cpu"}
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, **cpu64)
    top = _hz_to_mel(torch.tensor(sample_rate / 2, **cpu64))
    edges = _mel_to_hz(torch.linspace(0.0, 1.0, n_mels + 2, **cpu64) * top)
    widths = edges.diff()
    offsets = edges[:, None] - bins[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = torch.minimum(rising, falling).clamp(min=0.0)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.float()


class WhisperLogMel(nn.Module):
    """Waveforms ``[B, samples]`` (int16 scale) -> Whisper log-mel ``[B, frames, n_mels]``.

    ``frames = samples // 160``; inputs shorter than :attr:`min_samples` (201, the
    fewest the reflect padding allows) give none. The window and filterbank are
    non-persistent buffers: nothing of this module enters a state_dict.
    """

    def __init__(self, n_mels: int = 80, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        if n_mels not in MEL_BANDS:
            raise ValueError(f"Whisper features have 80 or 128 mel bands, got n_mels={n_mels}")
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"Whisper features need {SAMPLE_RATE} Hz audio, got "
                             f"sample_rate={sample_rate}")
        self.n_mels = n_mels
        self.sample_rate = sample_rate
        self.min_samples = N_FFT // 2 + 1
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("filters", mel_filters(n_mels), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Feature frames (10 ms) made from ``num_samples`` samples."""
        return num_samples // HOP_LENGTH if num_samples >= self.min_samples else 0

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [batch, samples], got shape {tuple(wavs.shape)}")
        if wavs.shape[1] < self.min_samples:
            raise ValueError(f"Whisper features need at least {self.min_samples} samples, "
                             f"got {wavs.shape[1]}")
        if wavs.device.type == "cpu" and wavs.shape[0] > CPU_ROWS_PER_CALL:
            # a whole batch's spectra overflow the CPU's caches: a few rows at a time is
            # about 1.4x faster (bench/bench_whisper.py); rows are independent
            return torch.cat([self._log_mel(rows) for rows in wavs.split(CPU_ROWS_PER_CALL)])
        return self._log_mel(wavs)

    def _log_mel(self, wavs: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if wavs.dtype == torch.float64 else torch.float32
        with torch.autocast(wavs.device.type, enabled=False):
            audio = wavs.to(dtype) / INT16_SCALE
            spectrum = torch.stft(audio, N_FFT, HOP_LENGTH, window=self.window.to(dtype),
                                  center=True, pad_mode="reflect", return_complex=True)
            spectrum = spectrum[..., :-1]
            # |z|^2 as re^2 + im^2: the same to rounding as Whisper's abs() ** 2, 5x faster
            power = spectrum.real.square() + spectrum.imag.square()
            mel = torch.matmul(self.filters.to(dtype), power)
            log_mel = mel.clamp(min=LOG_FLOOR).log10()
            floor = log_mel.amax(dim=(1, 2), keepdim=True) - DYNAMIC_RANGE
            log_mel = torch.maximum(log_mel, floor)
            return ((log_mel + 4.0) / 4.0).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"n_mels={self.n_mels}, sample_rate={self.sample_rate}"
