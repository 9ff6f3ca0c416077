"""Batches of whole utterances that need no padding, and the shortest input a model takes.

Speaker models pool statistics over time, so zero-padding a short utterance to
the length of a longer one changes its embedding, and cropping a long one drops
speech. Here a batch only ever holds feature matrices of *identical* frame
count: stacking them is exact, and each embedding equals the one the
utterance gets alone (up to float rounding of batched kernels). Utterances wait
in per-length buckets until a bucket is full; when the waiting features exceed
a memory budget the fullest bucket goes out as a smaller batch, so memory stays
bounded however the lengths are spread.
"""
from __future__ import annotations

import warnings
from typing import Dict, Hashable, List, Tuple

import torch
import torch.nn as nn

Batch = Tuple[List[Hashable], torch.Tensor]


class LengthBuckets:
    """Pending ``[frames, dim]`` feature matrices grouped by frame count (and ``group``).

    :meth:`add` returns the batches that became ready (a full bucket, or the
    fullest one when the budget ``max_buffer_bytes`` is exceeded); :meth:`drain`
    returns the rest at the end. Each batch is ``(keys, [B, frames, dim])``; a key is
    whatever the caller names an utterance by, returned as given. Inputs of
    different ``group`` never share a batch (the embedding loop groups by the rate
    the audio came at, which an ONNX graph's band fill is chosen by).
    """

    def __init__(self, batch_size: int, max_buffer_bytes: int):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_buffer_bytes = max_buffer_bytes
        # (group, frames) -> [(key, features)]
        self._buckets: Dict[Tuple[Hashable, int], List[Tuple[Hashable, torch.Tensor]]] = {}
        self._bytes = 0

    def _pop(self, bucket: Tuple[Hashable, int]) -> Batch:
        items = self._buckets.pop(bucket)
        self._bytes -= sum(feats.numel() * feats.element_size() for _, feats in items)
        keys = [key for key, _ in items]
        return keys, torch.stack([feats for _, feats in items])

    def add(self, key: Hashable, feats: torch.Tensor, group: Hashable = None) -> List[Batch]:
        """Queue one utterance's ``[frames, dim]`` features; return batches now ready."""
        bucket_id = (group, int(feats.shape[0]))
        bucket = self._buckets.setdefault(bucket_id, [])
        bucket.append((key, feats))
        self._bytes += feats.numel() * feats.element_size()
        ready = []
        if len(bucket) >= self.batch_size:
            ready.append(self._pop(bucket_id))
        while self._bytes > self.max_buffer_bytes and self._buckets:
            fullest = max(self._buckets, key=lambda b: (len(self._buckets[b]), b[1]))
            ready.append(self._pop(fullest))
        return ready

    def drain(self) -> List[Batch]:
        """All batches still waiting, longest first."""
        return [self._pop(bucket) for bucket in sorted(self._buckets, key=lambda b: b[1],
                                                       reverse=True)]


def _gives_finite_embedding(model: nn.Module, frames: int, feat_dim: int,
                            device: torch.device) -> bool:
    feats = torch.randn(1, frames, feat_dim, generator=torch.Generator().manual_seed(frames))
    try:
        with warnings.catch_warnings():
            # statistics pooling over one frame warns about zero degrees of freedom
            warnings.simplefilter("ignore")
            embedding = model(feats.to(device))
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError):
        # a convolution wider than the input, an empty time axis after striding, ...
        return False
    return bool(torch.isfinite(embedding).all())


@torch.inference_mode()
def min_valid_frames(model: nn.Module, feat_dim: int, device: torch.device,
                     limit: int = 4096) -> int:
    """Fewest input frames for which ``model`` (eval mode) yields a finite embedding.

    Found by doubling then bisection on random features. Unpadded TDNNs need
    their context (XVEC: 16 frames), strided CNNs a few frames after
    downsampling for a standard deviation over time. Shorter utterances are
    skipped by the extractor instead of being given a NaN or an error.
    """
    frames = 1
    while not _gives_finite_embedding(model, frames, feat_dim, device):
        frames *= 2
        if frames > limit:
            raise RuntimeError(f"{type(model).__name__} gives no finite embedding for any "
                               f"input of up to {limit} frames of dimension {feat_dim}")
    low, high = frames // 2, frames  # low fails (or is 0), high works
    while high - low > 1:
        middle = (low + high) // 2
        if _gives_finite_embedding(model, middle, feat_dim, device):
            high = middle
        else:
            low = middle
    return high
