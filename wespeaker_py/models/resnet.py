"""ResNet speaker encoders (ResNet18 ... ResNet293) as in WeSpeaker.

A 2-D ResNet over the (frequency, time) plane of the fbank features: a 3x3
stem, four stages of basic or bottleneck blocks (the last three halve both
axes), then a pooling layer over time on the flattened channel x frequency
axis and one or two embedding layers. Module names match WeSpeaker's, so its
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from typing import List, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.pooling import get_pooling


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity when shapes agree, otherwise a strided 1x1 projection."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual connection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(nn.Module):
    """ResNet encoder + pooling + embedding layer(s).

    Args:
        block: BasicBlock or Bottleneck.
        num_blocks: blocks in each of the four stages.
        m_channels: channels of the first stage (doubled at each later stage).
        feat_dim: input feature dimension (should be a multiple of 8).
        embed_dim: embedding size.
        pooling_func: a name from :mod:`wespeaker_py.models.pooling`.
        two_emb_layer: add ReLU, BatchNorm (no affine) and a second linear
            layer after the first embedding; the second one is returned.
    """

    def __init__(self, block: Block, num_blocks: List[int], m_channels: int = 32,
                 feat_dim: int = 40, embed_dim: int = 128, pooling_func: str = "TSTP",
                 two_emb_layer: bool = False):
        super().__init__()
        self.in_planes = m_channels
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        # Channels x frequency bins after three halvings, for a BasicBlock network.
        self.stats_dim = int(feat_dim / 8) * m_channels * 8
        self.two_emb_layer = two_emb_layer

        self.conv1 = nn.Conv2d(1, m_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = self._make_layer(block, m_channels, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, m_channels * 2, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, m_channels * 4, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, m_channels * 8, num_blocks[3], stride=2)

        self.pool = get_pooling(pooling_func, in_dim=self.stats_dim * block.expansion)
        self.pool_out_dim = self.pool.get_out_dim()
        self.seg_1 = nn.Linear(self.pool_out_dim, embed_dim)
        if two_emb_layer:
            self.seg_bn_1 = nn.BatchNorm1d(embed_dim, affine=False)
            self.seg_2 = nn.Linear(embed_dim, embed_dim)
        else:
            self.seg_bn_1 = nn.Identity()
            self.seg_2 = nn.Identity()

    def _make_layer(self, block: Block, planes: int, num_blocks: int,
                    stride: int) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, block_stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` features to the last stage's ``[B, C, F/8, T/8]`` map."""
        x = x.transpose(1, 2).unsqueeze(1)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        return self.layer4(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, feat_dim]`` features to ``[B, embed_dim]`` embeddings."""
        embedding = self.seg_1(self.pool(self.frame_level_features(x)))
        if self.two_emb_layer:
            embedding = self.seg_2(self.seg_bn_1(F.relu(embedding)))
        return embedding


def _resnet_factory(block: Block, num_blocks: List[int]):
    def factory(feat_dim: int, embed_dim: int, pooling_func: str = "TSTP",
                two_emb_layer: bool = False, m_channels: int = 32) -> ResNet:
        return ResNet(block, num_blocks, m_channels=m_channels, feat_dim=feat_dim,
                      embed_dim=embed_dim, pooling_func=pooling_func,
                      two_emb_layer=two_emb_layer)
    return factory


MODELS = {
    "ResNet18": _resnet_factory(BasicBlock, [2, 2, 2, 2]),
    "ResNet34": _resnet_factory(BasicBlock, [3, 4, 6, 3]),
    "ResNet50": _resnet_factory(Bottleneck, [3, 4, 6, 3]),
    "ResNet101": _resnet_factory(Bottleneck, [3, 4, 23, 3]),
    "ResNet152": _resnet_factory(Bottleneck, [3, 8, 36, 3]),
    "ResNet221": _resnet_factory(Bottleneck, [6, 16, 48, 3]),
    "ResNet293": _resnet_factory(Bottleneck, [10, 20, 64, 3]),
}
