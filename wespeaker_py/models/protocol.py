"""The interface every registered speaker model offers."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from wespeaker_py.errors import WespeakerError


class ModelArgError(WespeakerError, ValueError):
    """A model argument whose value the model cannot be built with.

    ``arg`` is the argument's name (a ``model_args`` key), ``value`` its value
    and ``reason`` why it does not fit; the model builder names the key where
    the value came from.
    """

    def __init__(self, arg: str, value: Any, reason: str):
        super().__init__(f"{arg} is {value!r}: {reason}")
        self.arg, self.value, self.reason = arg, value, reason


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


@runtime_checkable
class FrameLocalModel(Protocol):
    """A speaker model whose layers before pooling are local in time.

    A model offers these members only if every value of ``pooling_input(x)``
    (what ``self.pool`` reads, time on the last axis) depends on a bounded window
    of input frames (convolutions, eval-mode BatchNorm, pointwise layers; nothing
    that averages over the whole utterance, such as squeeze-excitation or
    SimAM), and ``forward(x) == embedding_of_pooled(pool(pooling_input(x)))``.
    Long inputs can then run through the body in overlapping chunks with the
    whole-utterance result (:mod:`wespeaker_py.runtime.long_audio`).
    """

    pool: torch.nn.Module

    def pooling_input(self, x: torch.Tensor) -> torch.Tensor:
        ...

    def embedding_of_pooled(self, stats: torch.Tensor) -> torch.Tensor:
        ...


def is_frame_local(model: torch.nn.Module) -> bool:
    """Whether ``model`` offers :class:`FrameLocalModel`'s members.

    Looked up as attributes, not by ``isinstance``: from Python 3.12 a protocol
    check looks attributes up statically and misses ``pool``, which a module
    keeps among its sub-modules.
    """
    return (isinstance(getattr(model, "pool", None), torch.nn.Module)
            and callable(getattr(model, "pooling_input", None))
            and callable(getattr(model, "embedding_of_pooled", None)))
