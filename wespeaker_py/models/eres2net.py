"""ERes2Net: Res2Net with local and global attentional feature fusion.

Chen et al., "An Enhanced Res2Net with Local and Global Feature Fusion for
Speaker Verification", arXiv:2305.12838. Inside a block (local fusion), the
deeper stages merge each Res2Net scale with the previous one through an
attentional fusion (:class:`AFF`) instead of a sum; across stages (global
fusion), the outputs of stages 1-4 are merged bottom-up, each downsampled by a
strided 3x3 convolution and fused with the next stage by an AFF. Module names
follow WeSpeaker's ``eres2net.py`` so checkpoints load unchanged.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.segment_layers import attach_segment_layers, segment_embedding


class ReLU(nn.Hardtanh):
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


class AFF(nn.Module):
    """Attentional feature fusion of two maps with the same shape.

    A 1x1 bottleneck over both maps predicts a weight ``w`` in (0, 2) per
    element; the output is ``x * w + y * (2 - w)``.
    """

    def __init__(self, channels: int = 64, r: int = 4):
        super().__init__()
        inter_channels = int(channels // r)
        self.local_att = nn.Sequential(
            nn.Conv2d(channels * 2, inter_channels, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(inter_channels),
            nn.SiLU(inplace=True),
            nn.Conv2d(inter_channels, channels, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, ds_y: torch.Tensor) -> torch.Tensor:
        weight = 1.0 + torch.tanh(self.local_att(torch.cat((x, ds_y), dim=1)))
        return x * weight + ds_y * (2.0 - weight)


class BasicBlockERes2Net(nn.Module):
    """Res2Net block whose ``scale`` groups each pass a 3x3 conv, summing in the previous group."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, base_width: int = 32,
                 scale: int = 2, expansion: int = 2):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.conv1 = conv1x1(in_planes, width * scale, stride)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = scale
        self.expansion = expansion
        self.convs = nn.ModuleList([conv3x3(width, width) for _ in range(scale)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(scale)])
        self.relu = ReLU(inplace=True)
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
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        return self.relu(out + self.shortcut(x))


class BasicBlockERes2NetAFF(nn.Module):
    """Like :class:`BasicBlockERes2Net`, but each later group is merged in by an :class:`AFF`."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, base_width: int = 32,
                 scale: int = 2, expansion: int = 2):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.conv1 = conv1x1(in_planes, width * scale, stride)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = scale
        self.expansion = expansion
        self.conv2_1 = conv3x3(width, width)
        self.bn2_1 = nn.BatchNorm2d(width)
        self.convs = nn.ModuleList([conv3x3(width, width) for _ in range(scale - 1)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(scale - 1)])
        self.fuse_models = nn.ModuleList([AFF(channels=width) for _ in range(scale - 1)])
        self.relu = ReLU(inplace=True)
        self.conv3 = conv1x1(width * scale, planes * expansion)
        self.bn3 = nn.BatchNorm2d(planes * expansion)
        self.shortcut = shortcut_branch(in_planes, planes * expansion, stride)
        self.stride = stride
        self.width = width
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, dim=1)
        previous = self.relu(self.bn2_1(self.conv2_1(groups[0])))
        outputs = [previous]
        for group, conv, bn, fuse in zip(groups[1:], self.convs, self.bns, self.fuse_models):
            previous = self.relu(bn(conv(fuse(previous, group))))
            outputs.append(previous)
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        return self.relu(out + self.shortcut(x))


class ERes2Net(nn.Module):
    """ERes2Net speaker embedding network: ``[B, T, feat_dim]`` -> ``[B, embed_dim]``.

    Stages 1-2 use :class:`BasicBlockERes2Net`, stages 3-4 the AFF variant;
    stages 2-4 halve both frequency and time.
    """

    def __init__(self, m_channels: int, num_blocks: Sequence[int], base_width: int = 32,
                 scale: int = 2, expansion: int = 2, block: type = BasicBlockERes2Net,
                 block_fuse: type = BasicBlockERes2NetAFF, feat_dim: int = 80,
                 embed_dim: int = 192, pooling_func: str = "TSTP", two_emb_layer: bool = False):
        super().__init__()
        self.in_planes = m_channels
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.stats_dim = int(feat_dim / 8) * m_channels * 8
        self.expansion = expansion

        self.conv1 = nn.Conv2d(1, m_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        block_args = dict(base_width=base_width, scale=scale, expansion=expansion)
        self.layer1 = self._make_layer(block, m_channels, num_blocks[0], 1, block_args)
        self.layer2 = self._make_layer(block, m_channels * 2, num_blocks[1], 2, block_args)
        self.layer3 = self._make_layer(block_fuse, m_channels * 4, num_blocks[2], 2, block_args)
        self.layer4 = self._make_layer(block_fuse, m_channels * 8, num_blocks[3], 2, block_args)

        # Global fusion: bring stage i's (fused) output to stage i+1's resolution.
        stage_channels = [m_channels * expansion * 2 ** i for i in range(4)]
        self.layer1_downsample = nn.Conv2d(stage_channels[0], stage_channels[1], kernel_size=3,
                                           stride=2, padding=1, bias=False)
        self.layer2_downsample = nn.Conv2d(stage_channels[1], stage_channels[2], kernel_size=3,
                                           stride=2, padding=1, bias=False)
        self.layer3_downsample = nn.Conv2d(stage_channels[2], stage_channels[3], kernel_size=3,
                                           stride=2, padding=1, bias=False)
        self.fuse_mode12 = AFF(channels=stage_channels[1])
        self.fuse_mode123 = AFF(channels=stage_channels[2])
        self.fuse_mode1234 = AFF(channels=stage_channels[3])

        self.pool = get_pooling(pooling_func, in_dim=self.stats_dim * expansion)
        self.pool_out_dim = self.pool.get_out_dim()
        attach_segment_layers(self, self.pool_out_dim, embed_dim, two_emb_layer)

    def _make_layer(self, block: type, planes: int, num_blocks: int, stride: int,
                    block_args: dict) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            blocks.append(block(self.in_planes, planes, block_stride, **block_args))
            self.in_planes = planes * self.expansion
        return nn.Sequential(*blocks)

    def _fused_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.transpose(1, 2).unsqueeze(1))))
        out1 = self.layer1(out)
        out2 = self.layer2(out1)
        fused12 = self.fuse_mode12(out2, self.layer1_downsample(out1))
        out3 = self.layer3(out2)
        fused123 = self.fuse_mode123(out3, self.layer2_downsample(fused12))
        out4 = self.layer4(out3)
        return self.fuse_mode1234(out4, self.layer3_downsample(fused123))

    def get_frame_level_feat(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T', C * F']``."""
        return torch.flatten(self._fused_feature_map(x).transpose(1, 3), 2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return segment_embedding(self, self.pool(self._fused_feature_map(x)))


def ERes2Net34_Base(feat_dim: int = 80, embed_dim: int = 512, pooling_func: str = "TSTP",
                    two_emb_layer: bool = False) -> ERes2Net:
    """ERes2Net-34 with 32 base channels."""
    return ERes2Net(32, [3, 4, 6, 3], feat_dim=feat_dim, embed_dim=embed_dim,
                    pooling_func=pooling_func, two_emb_layer=two_emb_layer)


def ERes2Net34_Large(feat_dim: int = 80, embed_dim: int = 512, pooling_func: str = "TSTP",
                     two_emb_layer: bool = False) -> ERes2Net:
    """ERes2Net-34 with 64 base channels."""
    return ERes2Net(64, [3, 4, 6, 3], feat_dim=feat_dim, embed_dim=embed_dim,
                    pooling_func=pooling_func, two_emb_layer=two_emb_layer)


def ERes2Net34_aug(feat_dim: int = 80, embed_dim: int = 512, pooling_func: str = "TSTP",
                   two_emb_layer: bool = False, expansion: int = 4, baseWidth: int = 24,
                   scale: int = 3) -> ERes2Net:
    """ERes2Net-34 with 64 base channels, 3 scales and a 4x block expansion.

    ``baseWidth`` keeps WeSpeaker's config key.
    """
    return ERes2Net(64, [3, 4, 6, 3], expansion=expansion, base_width=baseWidth, scale=scale,
                    feat_dim=feat_dim, embed_dim=embed_dim, pooling_func=pooling_func,
                    two_emb_layer=two_emb_layer)


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "ERes2Net34_Base": ERes2Net34_Base,
    "ERes2Net34_Large": ERes2Net34_Large,
    "ERes2Net34_aug": ERes2Net34_aug,
}
