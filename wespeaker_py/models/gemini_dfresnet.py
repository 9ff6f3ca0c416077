"""Gemini DF-ResNet: a depth-first ResNet of inverted bottlenecks with the Gemini strides.

Liu et al., "DF-ResNet: Boosting Speaker Verification Performance with
Depth-First Design", Interspeech 2022; Liu et al., "Golden Gemini is All You
Need: Finding the Sweet Spots for Speaker Verification", arXiv:2312.03620.
Four strided 3x3 convolutions each halve the frequency axis, but only the
second halves time (the "T14c" strategy), so the frame rate stays high. Module
names follow WeSpeaker's ``gemini_dfresnet.py`` so checkpoints load unchanged.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.segment_layers import (MapPoolingHead, attach_segment_layers,
                                                check_frequency_stride)

# Stride of each of the four downsampling convolutions, on frequency and on time.
_FREQ_STRIDES = (2, 2, 2, 2)
_TIME_STRIDES = (1, 2, 1, 1)


class InvertedBottleneck(nn.Module):
    """1x1 expand (x4) -> depthwise 3x3 -> 1x1 project, with a residual connection."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, 4 * dim, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4 * dim)
        self.conv2 = nn.Conv2d(4 * dim, 4 * dim, kernel_size=3, padding=1, groups=4 * dim,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(4 * dim)
        self.conv3 = nn.Conv2d(4 * dim, dim, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + x)


class GeminiDFResNet(MapPoolingHead, nn.Module):
    """Gemini DF-ResNet speaker embedding network: ``[B, T, feat_dim]`` -> ``[B, embed_dim]``.

    ``dims`` has five entries: the stem width, then the width of each stage;
    ``depths`` the number of inverted bottlenecks in each of the four stages.
    """

    def __init__(self, depths: Sequence[int], dims: Sequence[int], feat_dim: int = 40,
                 embed_dim: int = 128, pooling_func: str = "TSTP", two_emb_layer: bool = False):
        super().__init__()
        check_frequency_stride(feat_dim, math.prod(_FREQ_STRIDES), "Gemini DF-ResNet")
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.stats_dim = int(feat_dim / 8 / 2) * dims[-1]

        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(1, dims[0], kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(dims[0]),
            nn.ReLU())])
        for stage in range(4):
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(dims[stage], dims[stage + 1], kernel_size=3,
                          stride=(_FREQ_STRIDES[stage], _TIME_STRIDES[stage]), padding=1,
                          bias=False),
                nn.BatchNorm2d(dims[stage + 1])))
        self.stages = nn.ModuleList([
            nn.Sequential(*[InvertedBottleneck(dims[stage + 1]) for _ in range(depths[stage])])
            for stage in range(4)])

        self.pool = get_pooling(pooling_func, in_dim=self.stats_dim)
        self.pool_out_dim = self.pool.get_out_dim()
        attach_segment_layers(self, self.pool_out_dim, embed_dim, two_emb_layer)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` features to the last stage's map (T' = ceil(T / 2))."""
        out = self.downsample_layers[0](x.transpose(1, 2).unsqueeze(1))
        for downsample, stage in zip(self.downsample_layers[1:], self.stages):
            out = stage(downsample(out))
        return out


# The depth in a name counts the separate downsampling convolutions as layers.
_DEPTHS = {
    "Gemini_DF_ResNet60": (3, 3, 9, 3),
    "Gemini_DF_ResNet114": (3, 3, 27, 3),
    "Gemini_DF_ResNet183": (3, 8, 45, 3),
    "Gemini_DF_ResNet237": (3, 8, 63, 3),
}
_DIMS = (32, 32, 64, 128, 256)


def _factory(depths: Sequence[int]) -> Callable[..., GeminiDFResNet]:
    def build(feat_dim: int = 80, embed_dim: int = 256, pooling_func: str = "TSTP",
              two_emb_layer: bool = False) -> GeminiDFResNet:
        return GeminiDFResNet(depths=depths, dims=_DIMS, feat_dim=feat_dim,
                              embed_dim=embed_dim, pooling_func=pooling_func,
                              two_emb_layer=two_emb_layer)
    return build


MODELS: Dict[str, Callable[..., nn.Module]] = {
    name: _factory(depths) for name, depths in _DEPTHS.items()}

# WeSpeaker's generic name: the class itself, with its ``depths`` and ``dims`` lists.
GENERIC_MODELS: Dict[str, Callable[..., nn.Module]] = {"Gemini_DF_ResNet": GeminiDFResNet}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 256} for name in (*MODELS, *GENERIC_MODELS)}
