"""The TFMel front-end of ReDimNet2 (``dataset_args.frontend: tfmel``), WeSpeaker-compatible.

Waveform -> (signal normalisation) -> pre-emphasis -> STFT as two convolutions
(Hamming window, ``n_fft // 2`` bins: the Nyquist bin is dropped) -> power ->
mel filterbank (``n_mels`` triangles over ``f_min``..``f_max`` Hz on a TF-style
frequency grid) -> log -> mean over time subtracted, batched on the input's
device. It follows WeSpeaker's ``TFMelFrontend`` (itself after PalabraAI's
redimnet2), and keeps its constant kernels as buffers under the same names
(``spec.torchfbank.{1,2}.*``) so that WeSpeaker checkpoints, which hold them
under ``frontend.``, load strictly.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.audio import INT16_SCALE
from wespeaker_py.config import ConfigError, DatasetArgs, TfmelArgs, as_dataset_args

PREEMPHASIS = 0.97


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_weights(n_mels: int, num_bins: int, sample_rate: int, f_min: float,
                f_max: float) -> np.ndarray:
    """``[num_bins, n_mels]`` triangular mel weights (float32).

    Bin ``k`` (k >= 1) sits at the k-th point of ``num_bins`` equally spaced
    frequencies over 0..sample_rate/2 (TensorFlow's grid, as TFMel uses it);
    bin 0 gets no weight.
    """
    edges = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    lower, center, upper = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    bins = _hz_to_mel(np.linspace(0, sample_rate // 2, num_bins))[1:, None]
    rising = (bins - lower) / (center - lower)
    falling = (upper - bins) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.vstack([np.zeros((1, n_mels)), weights]).astype(np.float32)


def dft_kernels(n_fft: int, win_length: int) -> np.ndarray:
    """``[2, n_fft // 2, 1, win_length]`` Hamming-windowed cosine and sine kernels (float32)."""
    n = np.arange(win_length)[:, None]
    k = np.arange(n_fft // 2)[None, :]
    phase = 2 * np.pi * ((n * k) % n_fft) / n_fft
    window = (0.54 - 0.46 * np.cos(2 * np.pi * np.arange(win_length) / (win_length - 1)))
    window = window.astype(np.float32)[:, None]
    kernels = [np.cos(phase).astype(np.float32) * window,
               np.sin(phase).astype(np.float32) * window]
    return np.stack([kernel.T[:, None, :] for kernel in kernels])


class NormalizeSignal(nn.Module):
    """Per-utterance zero mean, unit (population) standard deviation of ``[B, 1, N]``."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.std(dim=2, keepdim=True, unbiased=False)
        return (x - x.mean(dim=2, keepdim=True)) / (std + self.eps)


class PreEmphasis(nn.Module):
    """``y[n] = x[n] - 0.97 x[n-1]`` over ``[B, 1, N]``, with ``x[-1] = x[1]`` (reflection)."""

    def __init__(self, coef: float = PREEMPHASIS):
        super().__init__()
        self.register_buffer("flipped_filter", torch.tensor([[[-coef, 1.0]]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(F.pad(x, (1, 0), mode="reflect"), self.flipped_filter)


class MelPowerSpectrum(nn.Module):
    """``[B, 1, N]`` -> mel power ``[B, n_mels, frames]``; ``hop // 2`` zeros pad each end."""

    def __init__(self, n_fft: int, win_length: int, hop_length: int, sample_rate: int,
                 f_min: float, f_max: float, n_mels: int, eps: float):
        super().__init__()
        self.hop_length = hop_length
        self.eps = eps
        real, imag = torch.from_numpy(dft_kernels(n_fft, win_length))
        self.register_buffer("real_kernel_pt", real)
        self.register_buffer("image_kernel_pt", imag)
        weights = mel_weights(n_mels, n_fft // 2, sample_rate, f_min, f_max)
        self.register_buffer("melbanks_pt", torch.from_numpy(weights.T[:, :, None].copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.hop_length // 2
        real = F.conv1d(x, self.real_kernel_pt, stride=self.hop_length, padding=pad)
        imag = F.conv1d(x, self.image_kernel_pt, stride=self.hop_length, padding=pad)
        power = (real.square() + imag.square()).clip(self.eps, 1 / self.eps)
        return F.conv1d(power, self.melbanks_pt).clip(self.eps, 1 / self.eps)


class _MelBanks(nn.Module):
    """The chain under WeSpeaker's module names: ``torchfbank`` = (normalise, pre-emphasis, mel)."""

    def __init__(self, args: TfmelArgs, sample_rate: int):
        super().__init__()
        self.torchfbank = nn.Sequential(
            NormalizeSignal(args.eps) if args.norm_signal else nn.Identity(),
            PreEmphasis() if args.do_preemph else nn.Identity(),
            MelPowerSpectrum(args.n_fft, args.win_length, args.hop_length, sample_rate,
                             args.f_min, args.f_max, args.n_mels, args.eps))


def _mask_spans(feats: torch.Tensor, dim: int, width: Sequence[int]) -> torch.Tensor:
    """Zero one random span per utterance along ``dim`` (1: mel, 2: time) of ``[B, M, T]``."""
    batch, size = feats.shape[0], feats.shape[dim]
    lengths = torch.randint(width[0], width[1], (batch, 1), device=feats.device)
    starts = torch.randint(0, max(1, size - int(lengths.max())), (batch, 1), device=feats.device)
    positions = torch.arange(size, device=feats.device)[None]
    mask = (positions >= starts) & (positions < starts + lengths)
    return feats.masked_fill(mask.unsqueeze(3 - dim), 0.0)


class TFMelFeatures(nn.Module):
    """Waveforms ``[B, samples]`` (int16 scale) -> log-mel features ``[B, frames, n_mels]``.

    ``frames = 1 + (samples + 2 * (hop // 2) - win_length) // hop``. In training
    mode with ``do_spec_aug`` one time span and one mel span per utterance are
    zeroed (widths drawn from ``time_mask_width`` / ``freq_mask_width``). The
    buffers are constants; loading them from a checkpoint changes nothing.
    """

    def __init__(self, args: TfmelArgs, sample_rate: int = 16000):
        super().__init__()
        self.args = args
        self.sample_rate = sample_rate
        self.output_dim = args.n_mels
        self.frame_length = 1000.0 * args.win_length / sample_rate  # ms
        self.frame_shift = 1000.0 * args.hop_length / sample_rate  # ms
        self.spec = _MelBanks(args, sample_rate)

    @classmethod
    def from_dataset_args(cls, dataset_args: Union[DatasetArgs, Mapping[str, Any]]
                          ) -> "TFMelFeatures":
        """Build from WeSpeaker's ``dataset_args`` (``frontend: tfmel``), schema-checked."""
        config = as_dataset_args(dataset_args)
        if config.frontend != "tfmel":
            raise ConfigError(f"config key 'dataset_args.frontend' is {config.frontend!r}; "
                              f"TFMelFeatures handles only 'tfmel'")
        return cls(config.tfmel_args, sample_rate=config.resample_rate)

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wavs.device.type, enabled=False):
            # our front-ends take int16-scale waveforms; WeSpeaker feeds TFMel [-1, 1]
            x = (wavs.float() / INT16_SCALE).unsqueeze(1)
            feats = torch.log(self.spec.torchfbank(x) + self.args.eps)
            feats = feats - feats.mean(dim=-1, keepdim=True)
            if self.training and self.args.do_spec_aug:
                feats = _mask_spans(feats, 2, self.args.time_mask_width)
                feats = _mask_spans(feats, 1, self.args.freq_mask_width)
        return feats.transpose(1, 2)

    def num_frames(self, num_samples: int) -> int:
        """Frames made from ``num_samples`` samples."""
        pad = self.args.hop_length // 2
        return max(0, 1 + (num_samples + 2 * pad - self.args.win_length) // self.args.hop_length)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_mels={self.args.n_mels}, "
                f"norm_signal={self.args.norm_signal}, do_preemph={self.args.do_preemph}")
