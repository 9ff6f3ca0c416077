"""Batching training samples into fixed-length waveform tensors."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch


def collate_train(samples: Sequence[dict]) -> Dict[str, object]:
    """Stack equal-length training samples: ``{"keys", "wavs": [B, S], "labels": [B]}``."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    lengths = {int(sample["wav"].shape[-1]) for sample in samples}
    if len(lengths) != 1:
        raise ValueError(f"training samples must have one length, got {sorted(lengths)}")
    keys: List[str] = [sample["key"] for sample in samples]
    wavs = torch.stack([sample["wav"] for sample in samples]).float()
    labels = torch.tensor([int(sample["label"]) for sample in samples], dtype=torch.long)
    return {"keys": keys, "wavs": wavs, "labels": labels}
