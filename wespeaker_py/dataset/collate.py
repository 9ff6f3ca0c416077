"""Batching training samples into waveform tensors (and the deferred augmentation)."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

# ``batch["aug"]`` values: what the device applies to each row.
AUG_NONE, AUG_REVERB, AUG_NOISE = 0, 1, 2


def collate_train(samples: Sequence[dict]) -> Dict[str, object]:
    """Stack training samples: ``{"keys", "wavs": [B, S], "labels": [B]}``.

    Samples of ``dataset_args.augment_on: device`` (they carry ``"speed"``) also
    give what :func:`~wespeaker_py.dataset.device_augment.augment_batch` needs:
    ``wavs`` zero-padded with ``wav_lengths`` [B], ``speeds`` [B] (index into
    SPEEDS), ``chunk_len``, ``aug`` [B] (AUG_*), the RIRs ``rirs`` [R, max len]
    (zero-padded, which leaves the convolution unchanged) with ``rir_owner`` [R]
    (their rows), and the noise segments ``noises`` [M, chunk_len] with
    ``noise_owner`` [M] and ``noise_snrs`` [M] (dB).
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    keys: List[str] = [sample["key"] for sample in samples]
    labels = torch.tensor([int(sample["label"]) for sample in samples], dtype=torch.long)
    if "speed" in samples[0]:
        batch = _collate_deferred(samples)
        batch.update(keys=keys, labels=labels)
        return batch
    lengths = {int(sample["wav"].shape[-1]) for sample in samples}
    if len(lengths) != 1:
        raise ValueError(f"training samples must have one length, got {sorted(lengths)}")
    wavs = torch.stack([sample["wav"] for sample in samples]).float()
    return {"keys": keys, "wavs": wavs, "labels": labels}


def _padded(rows: Sequence, width: int) -> torch.Tensor:
    """Rows (arrays or CPU tensors) in one float32 tensor, zeros after each row's end."""
    # numpy slice copies into uninitialised memory: a third of the cost of torch.zeros
    # plus tensor slice assignment, which dominated the worker's collation
    out = np.empty((len(rows), width), dtype=np.float32)
    for index, row in enumerate(rows):
        length = len(row)
        out[index, :length] = np.asarray(row)
        out[index, length:] = 0.0
    return torch.from_numpy(out)


def _collate_deferred(samples: Sequence[dict]) -> Dict[str, object]:
    chunk_lens = {int(sample["chunk_len"]) for sample in samples}
    if len(chunk_lens) != 1:
        raise ValueError(f"training samples must have one chunk length, got {sorted(chunk_lens)}")
    chunk_len = chunk_lens.pop()
    wav_lengths = [int(sample["wav"].shape[-1]) for sample in samples]
    kinds, rirs, rir_owner, noises, noise_owner, snrs = [], [], [], [], [], []
    for row, sample in enumerate(samples):
        plan = sample.get("aug")
        if plan is None:
            kinds.append(AUG_NONE)
        elif plan.rir is not None:
            kinds.append(AUG_REVERB)
            rirs.append(plan.rir)
            rir_owner.append(row)
        else:
            kinds.append(AUG_NOISE)
            noises.extend(plan.noises)
            noise_owner.extend([row] * len(plan.noises))
            snrs.extend(plan.snrs)
    return {
        "wavs": _padded([sample["wav"] for sample in samples], max(wav_lengths)),
        "wav_lengths": torch.tensor(wav_lengths, dtype=torch.long),
        "speeds": torch.tensor([int(sample["speed"]) for sample in samples], dtype=torch.long),
        "chunk_len": chunk_len,
        "aug": torch.tensor(kinds, dtype=torch.long),
        "rirs": _padded(rirs, max((len(rir) for rir in rirs), default=0)),
        "rir_owner": torch.tensor(rir_owner, dtype=torch.long),
        "noises": (torch.from_numpy(np.stack(noises)).float() if noises
                   else torch.zeros(0, chunk_len)),
        "noise_owner": torch.tensor(noise_owner, dtype=torch.long),
        "noise_snrs": torch.tensor(snrs, dtype=torch.float32),
    }
