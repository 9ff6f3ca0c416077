"""Res2Net for speaker verification (the 3D-Speaker variant WeSpeaker ships).

Gao et al., "Res2Net: A New Multi-scale Backbone Architecture", TPAMI 2021.
Each block splits its bottleneck into ``scale`` channel groups; all but the
last pass a 3x3 convolution, each adding the previous group's output first, and
the last group passes through unchanged. Module names follow WeSpeaker's
``res2net.py`` so checkpoints load unchanged.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.eres2net import ReLU, conv1x1, conv3x3, shortcut_branch
from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.segment_layers import attach_segment_layers, segment_embedding


class BasicBlockRes2Net(nn.Module):
    """Res2Net bottleneck block with a 2x channel expansion."""

    expansion = 2

    def __init__(self, in_planes: int, planes: int, stride: int = 1, base_width: int = 32,
                 scale: int = 2):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.conv1 = conv1x1(in_planes, width * scale, stride)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = scale - 1
        self.convs = nn.ModuleList([conv3x3(width, width) for _ in range(self.nums)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(self.nums)])
        self.relu = ReLU(inplace=True)
        self.conv3 = conv1x1(width * scale, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = shortcut_branch(in_planes, planes * self.expansion, stride)
        self.stride = stride
        self.width = width
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, dim=1)
        outputs = []
        previous = None
        for group, conv, bn in zip(groups, self.convs, self.bns):
            previous = group if previous is None else previous + group
            previous = self.relu(bn(conv(previous)))
            outputs.append(previous)
        outputs.append(groups[self.nums])
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        return self.relu(out + self.shortcut(x))


class Res2Net(nn.Module):
    """Res2Net speaker embedding network: ``[B, T, feat_dim]`` -> ``[B, embed_dim]``.

    Stages 2-4 halve both frequency and time.
    """

    def __init__(self, m_channels: int, num_blocks: Sequence[int],
                 block: type = BasicBlockRes2Net, feat_dim: int = 80, embed_dim: int = 192,
                 pooling_func: str = "TSTP", two_emb_layer: bool = False):
        super().__init__()
        self.in_planes = m_channels
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.stats_dim = int(feat_dim / 8) * m_channels * 8

        self.conv1 = nn.Conv2d(1, m_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = self._make_layer(block, m_channels, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, m_channels * 2, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, m_channels * 4, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, m_channels * 8, num_blocks[3], stride=2)

        self.pool = get_pooling(pooling_func, in_dim=self.stats_dim * block.expansion)
        self.pool_out_dim = self.pool.get_out_dim()
        attach_segment_layers(self, self.pool_out_dim, embed_dim, two_emb_layer)

    def _make_layer(self, block: type, planes: int, num_blocks: int,
                    stride: int) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            blocks.append(block(self.in_planes, planes, block_stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*blocks)

    def _feature_map(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.transpose(1, 2).unsqueeze(1))))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def get_frame_level_feat(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T', C * F']``."""
        return torch.flatten(self._feature_map(x).transpose(1, 3), 2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return segment_embedding(self, self.pool(self._feature_map(x)))


def Res2Net34_Base(feat_dim: int = 80, embed_dim: int = 256, pooling_func: str = "TSTP",
                   two_emb_layer: bool = False) -> Res2Net:
    """Res2Net-34 with 32 base channels."""
    return Res2Net(32, [3, 4, 6, 3], feat_dim=feat_dim, embed_dim=embed_dim,
                   pooling_func=pooling_func, two_emb_layer=two_emb_layer)


def Res2Net34_Large(feat_dim: int = 80, embed_dim: int = 256, pooling_func: str = "TSTP",
                    two_emb_layer: bool = False) -> Res2Net:
    """Res2Net-34 with 64 base channels."""
    return Res2Net(64, [3, 4, 6, 3], feat_dim=feat_dim, embed_dim=embed_dim,
                   pooling_func=pooling_func, two_emb_layer=two_emb_layer)


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "Res2Net34_Base": Res2Net34_Base,
    "Res2Net34_Large": Res2Net34_Large,
}
