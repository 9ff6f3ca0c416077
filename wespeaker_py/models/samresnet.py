"""SimAM-ResNet with attentive statistics pooling (the VoxBlink2 models).

Lin et al., "VoxBlink2: A 100K+ Speaker Recognition Corpus and the Open-Set
Speaker-Identification Benchmark", Interspeech 2024; SimAM from Yang et al.,
"SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural
Networks", ICML 2021. A ResNet whose basic blocks re-weight their residual
branch with SimAM's parameter-free energy attention, pooled by :class:`ASP`.
Module names follow WeSpeaker's ``samresnet.py`` so checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn

from wespeaker_py.models.pooling import ASP
from wespeaker_py.models.resnet_blocks import ResNetTrunk, conv3x3, shortcut_branch
from wespeaker_py.models.segment_layers import frames_of_map

# Regulariser of SimAM's energy function.
_SIMAM_LAMBDA = 1e-4


def simam(x: torch.Tensor, lambda_p: float = _SIMAM_LAMBDA) -> torch.Tensor:
    """SimAM attention: scale each element by sigmoid of its inverse energy.

    Elements far from their channel's mean over the (frequency, time) plane,
    relative to the channel variance, get weights close to 1.
    """
    n = x.shape[2] * x.shape[3] - 1
    squared_dev = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    variance = squared_dev.sum(dim=[2, 3], keepdim=True) / n
    inverse_energy = squared_dev / (4 * (variance + lambda_p)) + 0.5
    return x * torch.sigmoid(inverse_energy)


class SimAMBasicBlock(nn.Module):
    """ResNet basic block with SimAM applied to the residual branch before the sum."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut_branch(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = simam(self.bn2(self.conv2(out)))
        return self.relu(out + self.downsample(x))


class SimAMResNetASP(nn.Module):
    """SimAM-ResNet speaker embedding network: ``[B, T, acoustic_dim]`` -> ``[B, embed_dim]``.

    The trunk is ``front`` (stages of :class:`SimAMBasicBlock`, widths
    ``in_planes * (1, 2, 4, 8)``), the pooling ``pooling`` and the embedding
    layer ``bottleneck``, optionally preceded by dropout.
    """

    def __init__(self, num_blocks: Sequence[int], in_planes: int = 64, embed_dim: int = 256,
                 acoustic_dim: int = 80, dropout: float = 0.0):
        super().__init__()
        self.front = ResNetTrunk(in_planes, num_blocks, [SimAMBasicBlock] * 4)
        self.pooling = ASP(in_planes, acoustic_dim)
        self.bottleneck = nn.Linear(self.pooling.out_dim, embed_dim)
        self.drop = nn.Dropout(dropout) if dropout else None

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T / 8, C * F / 8]``."""
        return frames_of_map(self.front.feature_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = self.pooling(self.front.feature_map(x))
        if self.drop is not None:
            stats = self.drop(stats)
        return self.bottleneck(stats)


def _factory(num_blocks: Sequence[int]) -> Callable[..., SimAMResNetASP]:
    def build(in_planes: int = 64, embed_dim: int = 256, acoustic_dim: Optional[int] = None,
              dropout: float = 0.0, feat_dim: Optional[int] = None) -> SimAMResNetASP:
        # WeSpeaker names the input size acoustic_dim here; feat_dim (the name
        # every other family uses) is accepted as a synonym.
        if acoustic_dim is not None and feat_dim is not None and acoustic_dim != feat_dim:
            raise ValueError(f"acoustic_dim ({acoustic_dim}) and feat_dim ({feat_dim}) disagree")
        input_dim = acoustic_dim if acoustic_dim is not None else feat_dim
        return SimAMResNetASP(num_blocks, in_planes=in_planes, embed_dim=embed_dim,
                              acoustic_dim=80 if input_dim is None else input_dim,
                              dropout=dropout)
    return build


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "SimAM_ResNet34_ASP": _factory((3, 4, 6, 3)),
    "SimAM_ResNet100_ASP": _factory((6, 16, 24, 3)),
}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 256} for name in MODELS}
# WeSpeaker's SimAM-ResNet calls its input size acoustic_dim instead of feat_dim.
INPUT_SIZE_KEY = "acoustic_dim"
