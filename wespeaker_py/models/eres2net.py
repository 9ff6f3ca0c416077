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
from functools import partial
from typing import Callable, Dict, Sequence

import torch
import torch.nn as nn

from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.resnet_blocks import (ClippedReLU, MultiScaleBlock, ResNetTrunk,
                                               conv1x1, conv3x3, shortcut_branch)
from wespeaker_py.models.segment_layers import MapPoolingHead, attach_segment_layers


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


class BasicBlockERes2NetAFF(nn.Module):
    """A multi-scale block whose later groups are merged in by an :class:`AFF`, not summed."""

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
        self.relu = ClippedReLU(inplace=True)
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


class ERes2Net(MapPoolingHead, ResNetTrunk):
    """ERes2Net speaker embedding network: ``[B, T, feat_dim]`` -> ``[B, embed_dim]``.

    Stages 1-2 use multi-scale blocks convolving every group
    (:class:`~wespeaker_py.models.resnet_blocks.MultiScaleBlock`), stages 3-4
    the AFF variant; stages 2-4 halve both frequency and time.
    """

    def __init__(self, m_channels: int, num_blocks: Sequence[int], base_width: int = 32,
                 scale: int = 2, expansion: int = 2, feat_dim: int = 80,
                 embed_dim: int = 192, pooling_func: str = "TSTP", two_emb_layer: bool = False):
        block_args = dict(base_width=base_width, scale=scale, expansion=expansion)
        block = partial(MultiScaleBlock, **block_args)
        block_fuse = partial(BasicBlockERes2NetAFF, **block_args)
        super().__init__(m_channels, num_blocks, [block, block, block_fuse, block_fuse])
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.stats_dim = int(feat_dim / 8) * m_channels * 8
        self.expansion = expansion

        # Global fusion: bring stage i's (fused) output to stage i+1's resolution.
        stage_channels = [m_channels * expansion * 2 ** i for i in range(4)]
        self.layer1_downsample = conv3x3(stage_channels[0], stage_channels[1], stride=2)
        self.layer2_downsample = conv3x3(stage_channels[1], stage_channels[2], stride=2)
        self.layer3_downsample = conv3x3(stage_channels[2], stage_channels[3], stride=2)
        self.fuse_mode12 = AFF(channels=stage_channels[1])
        self.fuse_mode123 = AFF(channels=stage_channels[2])
        self.fuse_mode1234 = AFF(channels=stage_channels[3])

        self.pool = get_pooling(pooling_func, in_dim=self.stats_dim * expansion)
        self.pool_out_dim = self.pool.get_out_dim()
        attach_segment_layers(self, self.pool_out_dim, embed_dim, two_emb_layer)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map fused with the earlier stages' (global fusion)."""
        out1 = self.layer1(self.stem(x))
        out2 = self.layer2(out1)
        fused12 = self.fuse_mode12(out2, self.layer1_downsample(out1))
        out3 = self.layer3(out2)
        fused123 = self.fuse_mode123(out3, self.layer2_downsample(fused12))
        out4 = self.layer4(out3)
        return self.fuse_mode1234(out4, self.layer3_downsample(fused123))


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


def generic_eres2net(m_channels: int, num_blocks: Sequence[int], baseWidth: int = 32,
                     scale: int = 2, expansion: int = 2, *, feat_dim: int = 80,
                     embed_dim: int = 192, pooling_func: str = "TSTP",
                     two_emb_layer: bool = False) -> ERes2Net:
    """WeSpeaker's generic ``ERes2Net`` with its keyword names (``baseWidth``).

    WeSpeaker's ``block`` and ``block_fuse`` (classes, between ``expansion``
    and ``feat_dim``) are not taken: the blocks are always its defaults.
    """
    return ERes2Net(m_channels, num_blocks, base_width=baseWidth, scale=scale,
                    expansion=expansion, feat_dim=feat_dim, embed_dim=embed_dim,
                    pooling_func=pooling_func, two_emb_layer=two_emb_layer)


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "ERes2Net34_Base": ERes2Net34_Base,
    "ERes2Net34_Large": ERes2Net34_Large,
    "ERes2Net34_aug": ERes2Net34_aug,
}

GENERIC_MODELS: Dict[str, Callable[..., nn.Module]] = {"ERes2Net": generic_eres2net}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 512} for name in (*MODELS, *GENERIC_MODELS)}
