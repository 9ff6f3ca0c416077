"""Speed perturbation and noise/reverb of a collated batch, on the training device.

With ``dataset_args.augment_on: device`` the CPU workers only read: the span of
each utterance before its speed change, the noise segments and RIR drawn for it
(:meth:`~wespeaker_py.dataset.augment.Augmenter.plan`, the CPU path's own
draws), and :func:`~wespeaker_py.dataset.collate.collate_train` batches them.
:func:`augment_batch` then does the arithmetic of the CPU path, batched:

1. each speed group of rows is resampled to the chunk length
   (:func:`~wespeaker_py.dataset.device_resample.speed_resample`);
2. reverb rows: FFT convolution with the unit-energy RIR, cut to the chunk;
3. noise rows: every noise segment scaled to its drawn SNR against the clean
   chunk (WeSpeaker's powers with their 1e-4 floor) and added to its row;
4. augmented rows are scaled to a peak of just under 1 (on the [-1, 1] scale).

Labels were already shifted by speed in the workers. Everything random was
drawn there from the seeded worker generator, so no random numbers are drawn
here and the batch holds all there is to reproduce a step.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple, Union

import torch

from wespeaker_py.audio import INT16_SCALE
from wespeaker_py.dataset.augment import POWER_FLOOR
from wespeaker_py.dataset.collate import AUG_NONE
from wespeaker_py.dataset.device_resample import speed_resample
from wespeaker_py.dataset.speed import SPEEDS

Device = Union[str, torch.device, None]


def augment_batch(batch: Mapping[str, object],
                  device: Device = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Finished training waveforms ``[B, chunk_len]`` (int16 scale) and labels ``[B]`` on
    ``device``.

    ``batch`` is what the DataLoader gives (host tensors, pinned or not; the row
    grouping is read from them without touching the device). A batch of the CPU
    path (no ``"speeds"``) is only moved. ``device`` defaults to the batch's.
    """
    wavs = batch["wavs"]
    device = torch.device(device) if device is not None else wavs.device
    labels = batch["labels"].to(device, non_blocking=True)
    wavs = wavs.to(device, non_blocking=True)
    if "speeds" not in batch:
        return wavs, labels
    chunks = _apply_speeds(wavs, batch, device)
    return _apply_noise_and_reverb(chunks, batch, device), labels


def _apply_speeds(wavs: torch.Tensor, batch: Mapping[str, object],
                  device: torch.device) -> torch.Tensor:
    speeds = batch["speeds"].cpu()
    lengths = batch["wav_lengths"].cpu()
    chunk_len = int(batch["chunk_len"])
    if bool((speeds == 0).all()):
        return wavs[:, :chunk_len]
    out = torch.empty(wavs.shape[0], chunk_len, dtype=wavs.dtype, device=device)
    for index in torch.unique(speeds).tolist():
        rows = torch.nonzero(speeds == index).flatten()
        width = int(lengths[rows].max())
        on_device = rows.to(device, non_blocking=True)
        group = wavs.index_select(0, on_device)[:, :width]
        out.index_copy_(0, on_device, speed_resample(group, SPEEDS[index], chunk_len))
    return out


def _apply_noise_and_reverb(chunks: torch.Tensor, batch: Mapping[str, object],
                            device: torch.device) -> torch.Tensor:
    augmented_rows = torch.nonzero(batch["aug"].cpu() != AUG_NONE).flatten()
    if augmented_rows.numel() == 0:
        return chunks
    audio = chunks / INT16_SCALE
    mixed = audio.clone()
    if batch["rir_owner"].numel():
        rows = batch["rir_owner"].to(device, non_blocking=True)
        rirs = batch["rirs"].to(device, non_blocking=True)
        mixed.index_copy_(0, rows, reverberate(audio.index_select(0, rows), rirs))
    if batch["noise_owner"].numel():
        rows = batch["noise_owner"].to(device, non_blocking=True)
        noises = batch["noises"].to(device, non_blocking=True) / INT16_SCALE
        snrs = batch["noise_snrs"].to(device, non_blocking=True)
        mixed.index_add_(0, rows, scale_to_snr(audio.index_select(0, rows), noises, snrs))
    rows = augmented_rows.to(device, non_blocking=True)
    out = chunks.clone()
    out.index_copy_(0, rows, peak_normalise(mixed.index_select(0, rows)) * INT16_SCALE)
    return out


def mean_power(signals: torch.Tensor) -> torch.Tensor:
    """Per-row mean power plus WeSpeaker's floor (the linear form of its dB power)."""
    return signals.square().mean(dim=-1) + POWER_FLOOR


def scale_to_snr(clean: torch.Tensor, noises: torch.Tensor, snrs: torch.Tensor) -> torch.Tensor:
    """Rows of ``noises`` scaled so that each lies ``snrs`` dB below its row of ``clean``."""
    gain = torch.sqrt(mean_power(clean) / mean_power(noises) * torch.pow(10.0, -snrs / 10.0))
    return gain.unsqueeze(-1) * noises


def reverberate(audio: torch.Tensor, rirs: torch.Tensor) -> torch.Tensor:
    """Rows convolved with their unit-energy RIR, first ``audio.shape[-1]`` samples kept."""
    length = audio.shape[-1]
    rirs = rirs / rirs.square().sum(dim=-1, keepdim=True).sqrt()
    rirs = rirs[:, :length]  # later taps cannot reach the kept samples
    size = fft_size(length + rirs.shape[-1] - 1)
    spectrum = torch.fft.rfft(audio, n=size) * torch.fft.rfft(rirs, n=size)
    return torch.fft.irfft(spectrum, n=size)[:, :length]


def peak_normalise(audio: torch.Tensor) -> torch.Tensor:
    """Rows scaled to a peak of just under 1, as after the CPU path's augmentation."""
    return audio / (audio.abs().amax(dim=-1, keepdim=True) + POWER_FLOOR)


def fft_size(minimum: int) -> int:
    """The smallest 2-3-5-smooth integer >= ``minimum`` (fast for every FFT backend)."""
    best: Optional[int] = None
    power5 = 1
    while power5 < 2 * minimum:
        power3 = power5
        while power3 < 2 * minimum:
            size = power3
            while size < minimum:
                size *= 2
            if best is None or size < best:
                best = size
            power3 *= 3
        power5 *= 5
    return best
