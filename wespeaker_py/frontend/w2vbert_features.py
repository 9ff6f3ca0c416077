"""Batched W2V-BERT 2.0 input features, as the Hugging Face feature extractor makes them.

WeSpeaker's W2V-BERT front-end feeds waveforms through
``AutoFeatureExtractor.from_pretrained("facebook/w2v-bert-2.0")``, i.e.
``transformers.SeamlessM4TFeatureExtractor``, called per batch with
``padding="longest"``. This module reproduces that call's ``input_features`` and
``attention_mask`` with tensor operations over the whole batch (CPU or GPU):

1. Kaldi fbank from :func:`wespeaker_py.frontend.fbank.fbank`: 80 mel bins,
   25 ms / 10 ms snip-edges frames, povey window, DC removal, pre-emphasis 0.97,
   512-point FFT, mel bins 20 Hz .. Nyquist, natural log floored at float32 eps.
   No dither.
2. Per utterance and per mel bin, over that utterance's own frames:
   ``(x - mean) / sqrt(var + 1e-7)`` with the unbiased (ddof = 1) variance.
3. Frames past an utterance's end are set to ``padding_value``; the frame axis is
   padded to the longest row, rounded up to an even count (the extractor's
   default ``pad_to_multiple_of=2``), with ``padding_value`` frames.
4. Pairs of consecutive frames are concatenated: ``[B, T, 80] -> [B, T/2, 160]``
   at a 20 ms rate. A stacked frame is valid (mask 1) only when both of its
   frames are real, so a row with an odd number of fbank frames ends in a
   stacked frame ``[last real frame, padding]`` that the mask marks invalid.

The extractor's class default ``padding_value`` is 0.0, but the
facebook/w2v-bert-2.0 preprocessor config sets 1.0; this module defaults to 1.0.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from wespeaker_py.frontend.fbank import fbank
from wespeaker_py.frontend.framing import frame_params, num_frames as fbank_frames

SAMPLE_RATE = 16000
NUM_MEL_BINS = 80
STRIDE = 2
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
# Added to the per-bin variance before the square root, as the extractor does.
VARIANCE_EPSILON = 1e-7
W2VBERT_PADDING_VALUE = 1.0

Lengths = Union[torch.Tensor, Sequence[int]]


class W2VBertFeatures(torch.nn.Module):
    """Waveforms ``[B, samples]`` (int16 scale) -> W2V-BERT features ``[B, frames, 160]``.

    Holds no parameters or buffers. Output is float32 (float64 for float64 input).

    Args:
        sample_rate: must be 16000, the only rate the extractor accepts.
        padding_value: value of padded frames (1.0 as in facebook/w2v-bert-2.0's
            config; 0.0 is ``SeamlessM4TFeatureExtractor()``'s class default).
        drop_odd_frame: drop a trailing unpaired fbank frame instead of padding
            it (the extractor's behaviour with ``pad_to_multiple_of=None``).
            Then a batch of equal-length rows never needs a mask.
        compute_dtype: dtype of the fbank and normalisation arithmetic. float64
            (default) follows the extractor's float64 fbank closely; float32 is
            faster on GPUs with slow float64 and differs by ~1e-3 after
            normalisation.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE,
                 padding_value: float = W2VBERT_PADDING_VALUE,
                 drop_odd_frame: bool = False,
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
        self.drop_odd_frame = drop_odd_frame
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
        """Output frames (the frame axis) for rows of ``num_samples`` samples.

        ``ceil(fbank_frames / 2)``, or ``fbank_frames // 2`` with ``drop_odd_frame``.
        """
        count = self._fbank_frames(num_samples)
        if self.drop_odd_frame:
            return count // self.stride
        return -(-count // self.stride)

    def num_valid_frames(self, num_samples: int) -> int:
        """Output frames the attention mask marks valid: ``fbank_frames // 2``."""
        return self._fbank_frames(num_samples) // self.stride

    def _check_length(self, num_samples: int, what: str) -> None:
        if num_samples < self.min_samples:
            raise ValueError(
                f"{what} has {num_samples} samples, too short for one W2V-BERT frame: "
                f"need at least {self.min_samples} samples "
                f"({1000.0 * self.min_samples / self.sample_rate:g} ms at {self.sample_rate} Hz)")

    def _row_frames(self, wavs: torch.Tensor, lengths: Optional[Lengths]
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``wavs`` cut to its longest row, and the fbank frames of each row ``[B]``
        (long, on ``wavs``' device), or None when all rows have the same count."""
        batch, num_samples = wavs.shape
        if lengths is None:
            self._check_length(num_samples, "waveform")
            return wavs, None
        if isinstance(lengths, torch.Tensor):
            values = [int(v) for v in lengths.reshape(-1).tolist()]
        else:
            values = [int(v) for v in lengths]
        if len(values) != batch:
            raise ValueError(f"lengths has {len(values)} entries for a batch of {batch}")
        for row, value in enumerate(values):
            self._check_length(value, f"row {row}")
            if value > num_samples:
                raise ValueError(f"lengths[{row}] = {value} exceeds the {num_samples} "
                                 f"samples of the batch")
        if not values:
            self._check_length(num_samples, "waveform")
            return wavs, None
        longest = max(values)
        frames = [self._fbank_frames(v) for v in values]
        if min(frames) == max(frames):
            return wavs[:, :longest], None
        return wavs[:, :longest], torch.tensor(frames, dtype=torch.long, device=wavs.device)

    def features_and_mask(self, wavs: torch.Tensor, lengths: Optional[Lengths] = None
                          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Features ``[B, F, 160]`` and a bool mask ``[B, F]`` (True = valid).

        Args:
            wavs: ``[B, samples]`` (or ``[samples]``) int16-scale waveforms, rows
                right-padded to a common length.
            lengths: valid samples of each row; None means every row is full.

        Returns:
            ``(features, mask)``; ``mask`` is None when every frame is valid (equal
            rows with an even fbank frame count, e.g. 200-frame training chunks).
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [samples] or [batch, samples], "
                             f"got shape {tuple(wavs.shape)}")
        out_dtype = torch.float64 if wavs.dtype == torch.float64 else torch.float32
        wavs, row_frames = self._row_frames(wavs, lengths)
        feats = fbank(wavs.to(self.compute_dtype), sample_rate=self.sample_rate,
                      num_mel_bins=self.num_mel_bins, frame_length=FRAME_LENGTH_MS,
                      frame_shift=FRAME_SHIFT_MS, dither=0.0, window_type="povey")
        batch, total, _ = feats.shape

        with torch.autocast(device_type=feats.device.type, enabled=False):
            if row_frames is None:
                mean = feats.mean(dim=1, keepdim=True)
                var = feats.var(dim=1, correction=1, keepdim=True)
                feats = (feats - mean) * torch.rsqrt(var + VARIANCE_EPSILON)
            else:
                valid = (torch.arange(total, device=feats.device)[None, :]
                         < row_frames[:, None]).unsqueeze(-1)  # [B, T, 1]
                count = row_frames.to(feats.dtype)[:, None, None]
                masked = feats.masked_fill(~valid, 0.0)
                mean = masked.sum(dim=1, keepdim=True) / count
                centred = (feats - mean).masked_fill_(~valid, 0.0)
                var = centred.square().sum(dim=1, keepdim=True) / (count - 1.0)
                feats = (centred * torch.rsqrt(var + VARIANCE_EPSILON)).masked_fill_(
                    ~valid, self.padding_value)

            remainder = total % self.stride
            if remainder and self.drop_odd_frame:
                feats = feats[:, :total - remainder]
            elif remainder:
                feats = torch.cat([feats, feats.new_full(
                    (batch, self.stride - remainder, self.num_mel_bins), self.padding_value)],
                    dim=1)
            stacked = feats.reshape(batch, -1, self.output_dim).to(out_dtype)

        padded_odd = bool(remainder) and not self.drop_odd_frame
        if row_frames is None and not padded_odd:
            return stacked, None
        if row_frames is None:  # equal rows, each ending in a half-padded stacked frame
            row_frames = torch.full((batch,), total, dtype=torch.long, device=stacked.device)
        mask = (torch.arange(stacked.shape[1], device=stacked.device)[None, :]
                < (row_frames // self.stride)[:, None])
        return stacked, mask

    def forward(self, wavs: torch.Tensor, lengths: Optional[Lengths] = None) -> torch.Tensor:
        """Features ``[B, F, 160]`` of int16-scale ``wavs`` ``[B, samples]``; see
        :meth:`features_and_mask` for the mask."""
        return self.features_and_mask(wavs, lengths)[0]

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, padding_value={self.padding_value}, "
                f"drop_odd_frame={self.drop_odd_frame}, compute_dtype={self.compute_dtype}")
