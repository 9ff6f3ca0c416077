"""The interface every registered speaker model offers."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SpeakerModel(Protocol):
    """A speaker embedding network over fbank-like features ``[B, T, feat_dim]``.

    ``forward`` gives the embeddings ``[B, embed_dim]``; ``frame_level_features``
    the frame-level features the pooling layer reads, as ``[B, T', D]`` (frames
    first, WeSpeaker's layout), where ``T'`` follows the model's time striding.
    """

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...
