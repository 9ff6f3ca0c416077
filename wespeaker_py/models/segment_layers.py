"""The segment-level embedding layers shared by several ResNet-like families.

After pooling, these models map the utterance statistics to the embedding with
``seg_1`` (a linear layer); with ``two_emb_layer`` a second linear layer
``seg_2`` follows a ReLU and an affine-free BatchNorm ``seg_bn_1``, and its
output is the embedding. The layers are attached to the model itself (not to a
sub-module) because WeSpeaker's checkpoints keep them at the top level.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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
