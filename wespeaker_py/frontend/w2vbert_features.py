"""Batched W2V-BERT 2.0 input features, as the Hugging Face feature extractor makes them.

WeSpeaker's W2V-BERT front-end feeds waveforms through
``AutoFeatureExtractor.from_pretrained("facebook/w2v-bert-2.0")``, i.e.
``transformers.SeamlessM4TFeatureExtractor``, called per batch with
``padding="longest"``. This module reproduces that call's ``input_features`` and
``attention_mask`` for a batch of equal-length rows (what the front-end is given:
training chunks, or one utterance) with tensor operations (CPU or GPU):

1. Kaldi fbank from :func:`wespeaker_py.frontend.fbank.fbank`: 80 mel bins,
   25 ms / 10 ms snip-edges frames, povey window, DC removal, pre-emphasis 0.97,
   512-point FFT, mel bins 20 Hz .. Nyquist, natural log floored at float32 eps.
   No dither.
2. Per utterance and per mel bin, over its frames:
   ``(x - mean) / sqrt(var + 1e-7)`` with the unbiased (ddof = 1) variance.
3. An odd frame count is padded to an even one (the extractor's default
   ``pad_to_multiple_of=2``) with a ``padding_value`` frame.
4. Pairs of consecutive frames are concatenated: ``[B, T, 80] -> [B, T/2, 160]``
   at a 20 ms rate. A stacked frame is valid (mask 1) only when both of its
   frames are real, so a row with an odd number of fbank frames ends in a
   stacked frame ``[last real frame, padding]`` that the mask marks invalid.

The extractor's class default ``padding_value`` is 0.0, but the
facebook/w2v-bert-2.0 preprocessor config sets 1.0; this module defaults to 1.0.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from wespeaker_py.config.schema import FIXED_SAMPLE_RATES
from wespeaker_py.frontend.fbank import fbank
from wespeaker_py.frontend.framing import frame_params, num_frames as fbank_frames

SAMPLE_RATE = FIXED_SAMPLE_RATES["w2vbert"]
NUM_MEL_BINS = 80
STRIDE = 2
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
# Added to the per-bin variance before the square root, as the extractor does.
VARIANCE_EPSILON = 1e-7
W2VBERT_PADDING_VALUE = 1.0


class W2VBertFeatures(torch.nn.Module):
    """Waveforms ``[B, samples]`` (int16 scale) -> W2V-BERT features ``[B, frames, 160]``.

    Holds no parameters or buffers. Output is float32 (float64 for float64 input).

    Args:
        sample_rate: must be 16000, the only rate the extractor accepts.
        padding_value: value of padded frames (1.0 as in facebook/w2v-bert-2.0's
            config; 0.0 is ``SeamlessM4TFeatureExtractor()``'s class default).
        compute_dtype: dtype of the fbank and normalisation arithmetic. float64
            (default) follows the extractor's float64 fbank closely; float32 is
            faster on GPUs with slow float64 and differs by ~1e-3 after
            normalisation.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE,
                 padding_value: float = W2VBERT_PADDING_VALUE,
                 compute_dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"W2V-BERT features need {SAMPLE_RATE} Hz audio, got "
                             f"sample_rate={sample_rate}")
        if compute_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"compute_dtype must be torch.float32 or torch.float64, "
                             f"got {compute_dtype}")
        self.sample_rate = sample_rate
        self.padding_value = float(padding_value)
        self.compute_dtype = compute_dtype
        self.stride = STRIDE
        self.num_mel_bins = NUM_MEL_BINS
        self.output_dim = NUM_MEL_BINS * STRIDE
        window, shift = frame_params(sample_rate, FRAME_LENGTH_MS, FRAME_SHIFT_MS)
        # Two fbank frames: one stacked frame, and a finite ddof=1 variance.
        self.min_samples = window + (STRIDE - 1) * shift

    def _fbank_frames(self, num_samples: int) -> int:
        return fbank_frames(num_samples, self.sample_rate, FRAME_LENGTH_MS, FRAME_SHIFT_MS)

    def num_frames(self, num_samples: int) -> int:
        """Output frames for rows of ``num_samples`` samples: ``ceil(fbank_frames / 2)``."""
        return -(-self._fbank_frames(num_samples) // self.stride)

    def features_and_mask(self, wavs: torch.Tensor
                          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Features ``[B, F, 160]`` and a bool mask ``[B, F]`` (True = valid).

        Args:
            wavs: ``[B, samples]`` (or ``[samples]``) int16-scale waveforms, every
                row a full signal.

        Returns:
            ``(features, mask)``; ``mask`` is None when every frame is valid (an even
            fbank frame count, e.g. 200-frame training chunks), else it marks the
            last, half-padded frame invalid.
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [samples] or [batch, samples], "
                             f"got shape {tuple(wavs.shape)}")
        num_samples = wavs.shape[1]
        if num_samples < self.min_samples:
            raise ValueError(
                f"waveform has {num_samples} samples, too short for one W2V-BERT frame: "
                f"need at least {self.min_samples} samples "
                f"({1000.0 * self.min_samples / self.sample_rate:g} ms at {self.sample_rate} Hz)")
        out_dtype = torch.float64 if wavs.dtype == torch.float64 else torch.float32
        feats = fbank(wavs.to(self.compute_dtype), sample_rate=self.sample_rate,
                      num_mel_bins=self.num_mel_bins, frame_length=FRAME_LENGTH_MS,
                      frame_shift=FRAME_SHIFT_MS, dither=0.0, window_type="povey")
        batch, total, _ = feats.shape

        with torch.autocast(device_type=feats.device.type, enabled=False):
            mean = feats.mean(dim=1, keepdim=True)
            var = feats.var(dim=1, correction=1, keepdim=True)
            feats = (feats - mean) * torch.rsqrt(var + VARIANCE_EPSILON)
            remainder = total % self.stride
            if remainder:
                feats = torch.cat([feats, feats.new_full(
                    (batch, self.stride - remainder, self.num_mel_bins), self.padding_value)],
                    dim=1)
            stacked = feats.reshape(batch, -1, self.output_dim).to(out_dtype)

        if not remainder:
            return stacked, None
        mask = torch.ones(batch, stacked.shape[1], dtype=torch.bool, device=stacked.device)
        mask[:, -1] = False
        return stacked, mask

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        """Features ``[B, F, 160]`` of int16-scale ``wavs`` ``[B, samples]``; see
        :meth:`features_and_mask` for the mask."""
        return self.features_and_mask(wavs)[0]

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, padding_value={self.padding_value}, "
                f"compute_dtype={self.compute_dtype}")
