"""The fbank front-end as a module: fbank -> CMN -> SpecAugment, configured like WeSpeaker."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

import torch

from wespeaker_py.config import ConfigError, DatasetArgs, SpecAugArgs, as_dataset_args
from wespeaker_py.frontend.band_fill import BandFill
from wespeaker_py.frontend.fbank import fbank
from wespeaker_py.frontend.framing import frame_params, frame_span, num_frames
from wespeaker_py.frontend.specaug import apply_cmn, cmvn_flags, spec_augment


class FbankFeatures(torch.nn.Module):
    """Waveforms ``[B, samples]`` (int16 scale) -> features ``[B, frames, num_mel_bins]``.

    Runs Kaldi-compatible fbank, then per-utterance mean normalisation (``cmn``),
    then SpecAugment when ``spec_aug`` is set and the module is training. Dither
    is applied only in training mode. The module holds no parameters or buffers,
    so it adds nothing to a model's state_dict.
    """

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 80,
                 frame_length: float = 25, frame_shift: float = 10, dither: float = 0.0,
                 cmn: bool = True, spec_aug: bool = False,
                 spec_aug_args: Optional[SpecAugArgs] = None) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.frame_length = frame_length
        self.frame_shift = frame_shift
        self.dither = dither
        self.cmn = cmn
        self.spec_aug = spec_aug
        self.spec_aug_args = spec_aug_args or SpecAugArgs()
        self.output_dim = num_mel_bins

    @classmethod
    def from_dataset_args(cls, dataset_args: Union[DatasetArgs, Mapping[str, Any]]
                          ) -> "FbankFeatures":
        """Build from WeSpeaker's ``dataset_args`` block (``frontend: fbank``), schema-checked.

        Uses ``resample_rate``, ``fbank_args``, ``cmvn``, ``cmvn_args``, ``spec_aug``
        and ``spec_aug_args``; the rest belongs to the input pipeline.
        """
        config = as_dataset_args(dataset_args)
        if config.frontend != "fbank":
            raise ConfigError(f"config key 'dataset_args.frontend' is {config.frontend!r}; "
                              f"FbankFeatures handles only 'fbank'")
        norm_mean, norm_var = cmvn_flags(config)
        if norm_var:
            raise ConfigError("config key 'dataset_args.cmvn_args.norm_var': variance "
                              "normalisation is not supported by FbankFeatures")
        args = config.fbank_args
        return cls(sample_rate=config.resample_rate, num_mel_bins=args.num_mel_bins,
                   frame_length=args.frame_length, frame_shift=args.frame_shift,
                   dither=args.dither, cmn=norm_mean,
                   spec_aug=config.spec_aug, spec_aug_args=config.spec_aug_args)

    def forward(self, wavs: torch.Tensor, band_fill: Optional[BandFill] = None) -> torch.Tensor:
        """Features of ``wavs``; ``band_fill`` fills the mel bins that narrow-band audio
        leaves empty (:mod:`~wespeaker_py.frontend.band_fill`), before CMN."""
        feats = self.log_mel(wavs, self.dither if self.training else 0.0)
        if band_fill is not None:
            feats = band_fill.apply(feats)
        if self.cmn:
            feats = apply_cmn(feats)
        if self.spec_aug and self.training:
            feats = spec_augment(feats, **dataclasses.asdict(self.spec_aug_args))
        return feats

    def log_mel(self, wavs: torch.Tensor, dither: float = 0.0) -> torch.Tensor:
        """The fbank alone: ``[B, frames, num_mel_bins]`` log-mel energies, before CMN."""
        return fbank(wavs, sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
                     frame_length=self.frame_length, frame_shift=self.frame_shift,
                     dither=dither)

    def num_frames(self, num_samples: int) -> int:
        """Frames made from ``num_samples`` samples (Kaldi's snip-edges framing)."""
        return num_frames(num_samples, self.sample_rate, self.frame_length, self.frame_shift)

    @torch.no_grad()
    def features_in_chunks(self, wav: torch.Tensor, chunk_frames: int,
                           band_fill: Optional[BandFill] = None) -> torch.Tensor:
        """Eval-mode features ``[1, frames, num_mel_bins]`` of one long waveform ``[samples]``.

        Fbank is local to each frame, so it is computed ``chunk_frames`` frames at a
        time (its intermediates stay small) into one output, then the CMN mean is
        taken over the whole. No dither, no SpecAugment; ``band_fill`` as in :meth:`forward`.
        """
        window, shift = frame_params(self.sample_rate, self.frame_length, self.frame_shift)
        total = num_frames(int(wav.shape[-1]), self.sample_rate, self.frame_length,
                           self.frame_shift)
        dtype = torch.float64 if wav.dtype == torch.float64 else torch.float32  # as fbank's
        feats = wav.new_empty(1, total, self.num_mel_bins, dtype=dtype)
        for start in range(0, total, chunk_frames):
            stop = min(start + chunk_frames, total)
            piece = wav[frame_span(start, stop, window, shift)]
            feats[0, start:stop] = self.log_mel(piece)[0]
        if band_fill is not None:
            feats = band_fill.apply(feats)
        return apply_cmn(feats) if self.cmn else feats

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, "
                f"frame_length={self.frame_length}, frame_shift={self.frame_shift}, "
                f"cmn={self.cmn}, training only: dither={self.dither}, "
                f"spec_aug={self.spec_aug}")
