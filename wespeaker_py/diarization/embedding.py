"""The embedding step of diarization, as a plain function of windows.

The pipeline needs only ``embed_windows(windows) -> [N, D]``: 1-D model
samples (int16 scale, see :mod:`wespeaker_py.audio`) at the model's rate, all
of one length when they come from the pipeline, to one embedding per row.
Any model can be plugged in this way; :func:`embedder_function` makes one from
a loaded :class:`~wespeaker_py.inference.model_loading.SpeakerEmbedder` (the
same front-end + model assembly that extraction uses).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch

from wespeaker_py.diarization.pipeline import EmbedFunction
from wespeaker_py.inference.model_loading import SpeakerEmbedder


def embedder_function(embedder: SpeakerEmbedder, device: str = "cpu",
                      batch_size: int = 32) -> EmbedFunction:
    """Wrap a loaded embedder as an :data:`EmbedFunction` running batches on ``device``.

    Windows of equal length go through the network together (at most
    ``batch_size`` at a time); build the Diarizer with the front-end's sample rate.
    """
    target = torch.device(device)
    embedder = embedder.to(target).eval()

    @torch.inference_mode()
    def embed_windows(waveforms: Sequence[np.ndarray]) -> np.ndarray:
        outputs: List[Optional[np.ndarray]] = [None] * len(waveforms)
        by_length = {}
        for index, wav in enumerate(waveforms):
            by_length.setdefault(len(wav), []).append(index)
        for indices in by_length.values():
            for begin in range(0, len(indices), batch_size):
                chunk = indices[begin:begin + batch_size]
                batch = torch.from_numpy(np.stack([waveforms[i] for i in chunk])
                                         .astype(np.float32)).to(target)
                embeddings = embedder(embedder.features(batch)).float().cpu().numpy()
                for i, embedding in zip(chunk, embeddings):
                    outputs[i] = embedding
        if not outputs:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(outputs)

    return embed_windows
