"""The segment-level embedding layers shared by several ResNet-like families.

After pooling, these models map the utterance statistics to the embedding with
``seg_1`` (a linear layer); with ``two_emb_layer`` a second linear layer
``seg_2`` follows a ReLU and an affine-free BatchNorm ``seg_bn_1``, and its
output is the embedding. The layers are attached to the model itself (not to a
sub-module) because WeSpeaker's checkpoints keep them at the top level.
:class:`MapPoolingHead` is the whole tail of the 2-D families (ResNet, Res2Net,
ERes2Net, Gemini DF-ResNet): pooling of their feature map, then these layers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.protocol import ModelArgError


def attach_segment_layers(model: nn.Module, stats_dim: int, embed_dim: int,
                          two_emb_layer: bool) -> None:
    """Register ``seg_1``, ``seg_bn_1`` and ``seg_2`` on ``model``."""
    model.two_emb_layer = two_emb_layer
    model.seg_1 = nn.Linear(stats_dim, embed_dim)
    if two_emb_layer:
        model.seg_bn_1 = nn.BatchNorm1d(embed_dim, affine=False)
        model.seg_2 = nn.Linear(embed_dim, embed_dim)
    else:
        model.seg_bn_1 = nn.Identity()
        model.seg_2 = nn.Identity()


def segment_embedding(model: nn.Module, stats: torch.Tensor) -> torch.Tensor:
    """The embedding of pooled ``stats`` through the layers of :func:`attach_segment_layers`."""
    embed = model.seg_1(stats)
    if model.two_emb_layer:
        embed = model.seg_2(model.seg_bn_1(F.relu(embed)))
    return embed


def check_frequency_stride(feat_dim: Any, stride: int, model: str) -> None:
    """A :class:`ModelArgError` naming ``feat_dim`` unless it is a positive multiple of
    ``stride``: the total frequency stride of a 2-D family whose pooling is sized (as in
    WeSpeaker) for ``feat_dim / stride`` bins, which any other ``feat_dim`` misses."""
    if isinstance(feat_dim, int) and feat_dim > 0 and feat_dim % stride == 0:
        return
    hint = ""
    if isinstance(feat_dim, int) and feat_dim > 0:
        below = feat_dim // stride * stride
        hint = f", e.g. {below} or {below + stride}" if below else f", e.g. {stride}"
    raise ModelArgError("feat_dim", feat_dim,
                        f"{model} strides the frequency axis by {stride} in all and sizes its "
                        f"pooling for whole strides: feat_dim must be a positive multiple of "
                        f"{stride}{hint}")


class MapPoolingHead:
    """The tail the 2-D families share: their ``feature_map(x)`` (``[B, T, F]`` features
    to a ``[B, C, F', T']`` map) pooled over time by ``self.pool``, then the layers of
    :func:`attach_segment_layers`.

    Mix it in first (``class Net(MapPoolingHead, nn.Module)``) so that its ``forward``
    is the one used; the class defines ``feature_map``, ``pool`` and the segment layers.
    Only for feature maps local in time: ``pooling_input`` and ``embedding_of_pooled``
    make the model a :class:`~wespeaker_py.models.protocol.FrameLocalModel`, which long
    inputs are chunked by.
    """

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map as frame-level features ``[B, T', C * F']``."""
        return frames_of_map(self.feature_map(x))

    def pooling_input(self, x: torch.Tensor) -> torch.Tensor:
        """The map the pooling layer reads."""
        return self.feature_map(x)

    def embedding_of_pooled(self, stats: torch.Tensor) -> torch.Tensor:
        """The embedding of the pooled statistics."""
        return segment_embedding(self, stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, feat_dim]`` features to ``[B, embed_dim]`` embeddings."""
        return self.embedding_of_pooled(self.pool(self.pooling_input(x)))


def frames_of_map(feature_map: torch.Tensor) -> torch.Tensor:
    """A ``[B, C, F, T]`` map as frame-level features ``[B, T, C * F]``, WeSpeaker's layout."""
    return torch.flatten(feature_map.transpose(1, 3), 2, -1)
