"""Building blocks shared by the ResNet-like families (ResNet, Res2Net, ERes2Net, SimAM-ResNet).

All of them run a 2-D network over the (frequency, time) plane of the
features: a 3x3 stem and four stages of residual blocks, the last three
halving both axes. Module names follow WeSpeaker's, so the state_dict keys of
every family are unchanged (``tests/data/wespeaker_state_dict_keys.json``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# (in_planes, planes, stride) -> block; the block has an ``expansion`` attribute.
BlockFactory = Callable[[int, int, int], nn.Module]
STAGE_STRIDES = (1, 2, 2, 2)


class ClippedReLU(nn.Hardtanh):
    """ReLU clipped at 20 (a Hardtanh on [0, 20]), as in the 3D-Speaker Res2Nets."""

    def __init__(self, inplace: bool = False):
        super().__init__(0.0, 20.0, inplace)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 'same' convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def shortcut_branch(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity (an empty Sequential) or a strided 1x1 conv + BN when the shape changes."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut_branch(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual connection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = shortcut_branch(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class MultiScaleBlock(nn.Module):
    """The Res2Net block: the bottleneck split into ``scale`` channel groups.

    Each convolved group first adds the previous group's output, then passes a
    3x3 convolution; with ``pass_last_group`` (Res2Net) the last group skips
    its convolution, without (ERes2Net) all ``scale`` groups are convolved.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, base_width: int = 32,
                 scale: int = 2, expansion: int = 2, pass_last_group: bool = False):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.expansion = expansion
        self.conv1 = conv1x1(in_planes, width * scale, stride)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = scale - 1 if pass_last_group else scale
        self.convs = nn.ModuleList([conv3x3(width, width) for _ in range(self.nums)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(self.nums)])
        self.relu = ClippedReLU(inplace=True)
        self.conv3 = conv1x1(width * scale, planes * expansion)
        self.bn3 = nn.BatchNorm2d(planes * expansion)
        self.shortcut = shortcut_branch(in_planes, planes * expansion, stride)
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
        outputs.extend(groups[self.nums:])
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        return self.relu(out + self.shortcut(x))


def make_stage(block: BlockFactory, in_planes: int, planes: int, num_blocks: int,
               stride: int) -> nn.Sequential:
    """``num_blocks`` blocks, the first with ``stride``; chains each block's output width."""
    blocks = []
    for block_stride in [stride] + [1] * (num_blocks - 1):
        blocks.append(block(in_planes, planes, block_stride))
        in_planes = planes * blocks[-1].expansion
    return nn.Sequential(*blocks)


class ResNetTrunk(nn.Module):
    """Stem (3x3 conv, BN, ReLU) and stages ``layer1``..``layer4``: ``[B, 1, F, T]`` in.

    Stage ``i`` has ``m_channels * 2**i`` planes and ``stage_blocks[i]``
    blocks; stages 2-4 halve frequency and time; ``out_planes`` is the last
    stage's width. Families subclass it so the
    modules stay at the top level of their state_dict, as in WeSpeaker.
    """

    def __init__(self, m_channels: int, num_blocks: Sequence[int],
                 stage_blocks: Sequence[BlockFactory]):
        super().__init__()
        self.conv1 = nn.Conv2d(1, m_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        in_planes = m_channels
        for index, (block, count, stride) in enumerate(zip(stage_blocks, num_blocks,
                                                           STAGE_STRIDES)):
            stage = make_stage(block, in_planes, m_channels * 2 ** index, count, stride)
            setattr(self, f"layer{index + 1}", stage)
            in_planes = m_channels * 2 ** index * stage[-1].expansion
        self.out_planes = in_planes

    def stem(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` features through the stem, as a ``[B, C, F, T]`` map."""
        return F.relu(self.bn1(self.conv1(features.transpose(1, 2).unsqueeze(1))))

    def feature_map(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` features to the last stage's ``[B, C, F / 8, T / 8]`` map."""
        out = self.stem(features)
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))
