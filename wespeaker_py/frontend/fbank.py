"""Batched, Kaldi-compatible log-mel filter-bank features.

The numbers follow Kaldi's ``compute-fbank-feats`` (and kaldi-native-fbank) with
``use_energy=false``: snip-edges framing, per-frame dither, DC removal,
pre-emphasis, a window, a power-of-two FFT, the power spectrum, Kaldi's
triangular mel bins between 20 Hz and Nyquist, and a log floored at the float32
machine epsilon. Every step is a tensor operation over the whole batch, so the
same code runs on CPU or GPU.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np
import torch

from wespeaker_py.frontend.framing import frame_params, num_frames

PREEMPHASIS = 0.97
LOW_FREQ_HZ = 20.0
BLACKMAN_COEFF = 0.42
# Kaldi floors mel energies at std::numeric_limits<float>::epsilon() before the log.
LOG_FLOOR = torch.finfo(torch.float32).eps
WINDOW_TYPES = ("hamming", "hanning", "povey", "rectangular", "blackman")


def padded_fft_size(window: int) -> int:
    """The FFT size Kaldi pads a ``window``-sample frame to: the next power of two."""
    return 1 << (window - 1).bit_length()


def _mel_scale(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def window_function(window_type: str, length: int) -> torch.Tensor:
    """Kaldi's window of ``length`` samples (float64)."""
    n = torch.arange(length, dtype=torch.float64)
    # Kaldi divides by (length - 1); a one-sample window would divide by zero there.
    a = 2.0 * math.pi / max(length - 1, 1)
    if window_type == "hamming":
        return 0.54 - 0.46 * torch.cos(a * n)
    if window_type == "hanning":
        return 0.5 - 0.5 * torch.cos(a * n)
    if window_type == "povey":
        return (0.5 - 0.5 * torch.cos(a * n)).pow(0.85)
    if window_type == "rectangular":
        return torch.ones(length, dtype=torch.float64)
    if window_type == "blackman":
        return (BLACKMAN_COEFF - 0.5 * torch.cos(a * n)
                + (0.5 - BLACKMAN_COEFF) * torch.cos(2.0 * a * n))
    raise ValueError(f"window_type must be one of {WINDOW_TYPES}, got {window_type!r}")


def mel_matrix(sample_rate: int, fft_size: int, num_mel_bins: int) -> torch.Tensor:
    """Kaldi's triangular mel weights as a ``[fft_size // 2, num_mel_bins]`` matrix.

    Like Kaldi's bank it covers FFT bins ``0 .. fft_size/2 - 1``: the Nyquist bin
    never contributes.
    """
    nyquist = 0.5 * sample_rate
    if not 0.0 <= LOW_FREQ_HZ < nyquist:
        raise ValueError(f"sample rate {sample_rate} Hz leaves no band above {LOW_FREQ_HZ} Hz")
    mel_low = _mel_scale(torch.tensor(LOW_FREQ_HZ, dtype=torch.float64))
    mel_high = _mel_scale(torch.tensor(nyquist, dtype=torch.float64))
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    edges = mel_low + delta * torch.arange(num_mel_bins + 2, dtype=torch.float64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]

    bin_freqs = torch.arange(fft_size // 2, dtype=torch.float64) * (sample_rate / fft_size)
    mel = _mel_scale(bin_freqs)[:, None]
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    weights = torch.where(mel <= center, rising, falling)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros_like(weights))
    if not (weights > 0).any(dim=0).all():
        raise ValueError(f"num_mel_bins={num_mel_bins} is too many for a {fft_size}-point FFT "
                         f"at {sample_rate} Hz: some mel bins contain no FFT bin")
    return weights


def mel_bin_tops(sample_rate: int, num_mel_bins: int, frame_length: float = 25) -> np.ndarray:
    """The highest frequency (Hz) of an FFT bin that each mel bin takes in, ``[num_mel_bins]``."""
    window_length, _ = frame_params(sample_rate, frame_length, frame_length)
    fft_size = padded_fft_size(window_length)
    weights = mel_matrix(sample_rate, fft_size, num_mel_bins).numpy()
    freqs = np.arange(fft_size // 2) * (sample_rate / fft_size)
    return np.array([freqs[weights[:, j] > 0].max() for j in range(num_mel_bins)])


@functools.lru_cache(maxsize=32)
def _constants(sample_rate: int, window_length: int, fft_size: int, num_mel_bins: int,
               window_type: str, device: str, dtype: torch.dtype) -> tuple:
    """Window, pre-emphasis-scaled window and mel matrix for one configuration."""
    window = window_function(window_type, window_length)
    mel = mel_matrix(sample_rate, fft_size, num_mel_bins)
    return (window.to(device=device, dtype=dtype),
            (PREEMPHASIS * window[1:]).to(device=device, dtype=dtype),
            mel.to(device=device, dtype=dtype))


def _as_batch(waveforms: torch.Tensor) -> torch.Tensor:
    if not isinstance(waveforms, torch.Tensor):
        raise TypeError(f"waveforms must be a torch.Tensor, got {type(waveforms).__name__}")
    if waveforms.dim() == 1:
        waveforms = waveforms.unsqueeze(0)
    if waveforms.dim() != 2:
        raise ValueError(f"waveforms must be [samples] or [batch, samples], "
                         f"got shape {tuple(waveforms.shape)}")
    if waveforms.dtype != torch.float64:
        waveforms = waveforms.to(torch.float32)
    return waveforms


def fbank(waveforms: torch.Tensor, sample_rate: int = 16000, num_mel_bins: int = 80,
          frame_length: float = 25, frame_shift: float = 10, dither: float = 0.0,
          window_type: str = "hamming",
          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Log-mel filter-bank features of a batch of waveforms, as Kaldi computes them.

    Args:
        waveforms: ``[B, samples]`` (or ``[samples]``, treated as ``B = 1``) on the
            int16 scale Kaldi uses (multiply [-1, 1] audio by 32768 first).
        sample_rate: sampling rate in Hz.
        num_mel_bins: number of mel bins.
        frame_length, frame_shift: frame length and shift in milliseconds.
        dither: standard deviation of the Gaussian noise added to every frame
            before processing (0 disables it).
        window_type: ``hamming``, ``hanning``, ``povey``, ``rectangular`` or ``blackman``.
        generator: random generator for the dither noise, on the waveforms' device.

    Returns:
        ``[B, frames, num_mel_bins]`` in float32 (float64 for float64 input); frames
        follow snip-edges framing, so inputs shorter than one window give 0 frames.
    """
    waveforms = _as_batch(waveforms)
    if num_mel_bins < 1:
        raise ValueError(f"num_mel_bins must be positive, got {num_mel_bins}")
    window_length, shift = frame_params(sample_rate, frame_length, frame_shift)
    fft_size = padded_fft_size(window_length)
    window, shifted_window, mel = _constants(
        sample_rate, window_length, fft_size, num_mel_bins, window_type,
        str(waveforms.device), waveforms.dtype)

    batch, num_samples = waveforms.shape
    if batch == 0 or num_samples < window_length:  # MKL's FFT rejects empty batches
        count = num_frames(num_samples, sample_rate, frame_length, frame_shift)
        return waveforms.new_zeros(batch, count, num_mel_bins)

    # Autocast would run the mel product in bf16/fp16 and break Kaldi parity.
    with torch.autocast(device_type=waveforms.device.type, enabled=False):
        frames = waveforms.unfold(1, window_length, shift)  # [B, T, W], a view
        if dither != 0.0:
            noise = torch.randn(frames.shape, generator=generator,
                                device=frames.device, dtype=frames.dtype)
            frames = torch.add(frames, noise, alpha=dither)
        means = frames.mean(dim=-1, keepdim=True)

        # window * preemph(frame - mean), expanded so that no intermediate frame
        # copy is needed: preemph(x)[0] = (1 - k) x[0], preemph(x)[i] = x[i] - k x[i-1],
        # and preemph of a constant m is (1 - k) m at every position.
        padded = frames.new_empty(batch, frames.shape[1], fft_size)
        padded[..., window_length:].zero_()
        windowed = padded[..., :window_length]
        torch.mul(frames, window, out=windowed)
        windowed[..., 1:].addcmul_(frames[..., :-1], shifted_window, value=-1.0)
        windowed[..., 0].mul_(1.0 - PREEMPHASIS)
        windowed.addcmul_(means, window, value=-(1.0 - PREEMPHASIS))

        spectrum = torch.view_as_real(torch.fft.rfft(padded, dim=-1)[..., :fft_size // 2])
        real, imag = spectrum[..., 0], spectrum[..., 1]
        power = torch.addcmul(real * real, imag, imag)
        return torch.matmul(power, mel).clamp_min_(LOG_FLOOR).log_()
