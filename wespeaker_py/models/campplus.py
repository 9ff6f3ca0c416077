"""CAM++: a densely connected TDNN with context-aware masking.

Wang et al., "CAM++: A Fast and Efficient Network for Speaker Verification
Using Context-Aware Masking", arXiv:2303.00332. A small 2-D convolutional
front (FCM) turns the fbank into frequency-aware channels; three dense TDNN
blocks follow, each layer gated by a mask computed from utterance-level and
segment-level (100-frame) context. Module names follow WeSpeaker's
``campplus.py`` so checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.pooling import get_pooling

# Frames per segment for the segment-level context of the CAM mask.
_CAM_SEGMENT_FRAMES = 100


def build_nonlinear(config_str: str, channels: int) -> nn.Sequential:
    """A chain of activations/normalisations from a spec such as ``"batchnorm-relu"``.

    Known parts: ``relu``, ``prelu``, ``batchnorm`` and ``batchnorm_`` (a
    BatchNorm without affine parameters).
    """
    chain = nn.Sequential()
    for part in config_str.split("-"):
        if part == "relu":
            chain.add_module("relu", nn.ReLU(inplace=True))
        elif part == "prelu":
            chain.add_module("prelu", nn.PReLU(channels))
        elif part == "batchnorm":
            chain.add_module("batchnorm", nn.BatchNorm1d(channels))
        elif part == "batchnorm_":
            chain.add_module("batchnorm", nn.BatchNorm1d(channels, affine=False))
        else:
            raise ValueError(f"unknown part {part!r} in config_str {config_str!r}; "
                             "expected relu, prelu, batchnorm or batchnorm_")
    return chain


class TDNNLayer(nn.Module):
    """A 1-D convolution followed by a nonlinearity chain; ``padding=-1`` means 'same'."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = False,
                 config_str: str = "batchnorm-relu"):
        super().__init__()
        if padding < 0:
            if kernel_size % 2 == 0:
                raise ValueError(f"'same' padding needs an odd kernel size, got {kernel_size}")
            padding = (kernel_size - 1) // 2 * dilation
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=padding, dilation=dilation, bias=bias)
        self.nonlinear = build_nonlinear(config_str, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """A TDNN convolution whose output is gated by a context-aware mask.

    The mask comes from the sum of the utterance mean and the mean of the
    100-frame segment each frame falls in, through a two-layer bottleneck.
    """

    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int, dilation: int, bias: bool, reduction: int = 2):
        super().__init__()
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size, stride=stride,
                                      padding=padding, dilation=dilation, bias=bias)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(bn_channels // reduction, out_channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.linear_local(x)
        context = x.mean(dim=-1, keepdim=True) + self.segment_means(x)
        mask = self.sigmoid(self.linear2(self.relu(self.linear1(context))))
        return local * mask

    @staticmethod
    def segment_means(x: torch.Tensor, seg_len: int = _CAM_SEGMENT_FRAMES) -> torch.Tensor:
        """Each frame replaced by the mean of its ``seg_len``-frame segment (last one partial)."""
        means = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
        return means.repeat_interleave(seg_len, dim=-1)[..., :x.shape[2]]


class CAMDenseTDNNLayer(nn.Module):
    """A pre-activation 1x1 bottleneck followed by a :class:`CAMLayer`."""

    def __init__(self, in_channels: int, out_channels: int, bn_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1, bias: bool = False,
                 config_str: str = "batchnorm-relu"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"CAMDenseTDNNLayer needs an odd kernel size, got {kernel_size}")
        padding = (kernel_size - 1) // 2 * dilation
        self.nonlinear1 = build_nonlinear(config_str, in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = build_nonlinear(config_str, bn_channels)
        self.cam_layer = CAMLayer(bn_channels, out_channels, kernel_size, stride=stride,
                                  padding=padding, dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(self.nonlinear1(x))
        return self.cam_layer(self.nonlinear2(x))


class CAMDenseTDNNBlock(nn.ModuleList):
    """Densely connected CAM layers: each layer's output is appended to its input."""

    def __init__(self, num_layers: int, in_channels: int, out_channels: int, bn_channels: int,
                 kernel_size: int, stride: int = 1, dilation: int = 1, bias: bool = False,
                 config_str: str = "batchnorm-relu"):
        super().__init__()
        for index in range(num_layers):
            self.add_module(f"tdnnd{index + 1}", CAMDenseTDNNLayer(
                in_channels=in_channels + index * out_channels, out_channels=out_channels,
                bn_channels=bn_channels, kernel_size=kernel_size, stride=stride,
                dilation=dilation, bias=bias, config_str=config_str))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    """Nonlinearity then a 1x1 convolution; shrinks the channels between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True,
                 config_str: str = "batchnorm-relu"):
        super().__init__()
        self.nonlinear = build_nonlinear(config_str, in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    """A 1x1 convolution then a nonlinearity; accepts ``[B, C]`` as well as ``[B, C, T]``."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False,
                 config_str: str = "batchnorm-relu"):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=bias)
        self.nonlinear = build_nonlinear(config_str, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = self.linear(x.unsqueeze(-1)).squeeze(-1)
        else:
            x = self.linear(x)
        return self.nonlinear(x)


class BasicResBlock(nn.Module):
    """A 2-D residual block that strides the frequency axis only (time is kept)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=(stride, 1), padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=(stride, 1),
                          bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """Front-end convolution module: 2-D residual blocks that reduce frequency by 8.

    Maps ``[B, feat_dim, T]`` to ``[B, out_channels, T]`` with
    ``out_channels = m_channels * (feat_dim // 8)``.
    """

    def __init__(self, num_blocks: Sequence[int] = (2, 2), m_channels: int = 32,
                 feat_dim: int = 80):
        super().__init__()
        self.in_planes = m_channels
        self.conv1 = nn.Conv2d(1, m_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = self._make_layer(m_channels, num_blocks[0], stride=2)
        self.layer2 = self._make_layer(m_channels, num_blocks[1], stride=2)
        self.conv2 = nn.Conv2d(m_channels, m_channels, kernel_size=3, stride=(2, 1), padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            blocks.append(BasicResBlock(self.in_planes, planes, block_stride))
            self.in_planes = planes * BasicResBlock.expansion
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])


class CAMPPlus(nn.Module):
    """CAM++ speaker embedding network: ``[B, T, feat_dim]`` -> ``[B, embed_dim]``.

    The pooling layer is registered twice, as ``pool`` and as ``xvector.stats``,
    as in WeSpeaker, so that poolings with parameters give the same state_dict keys.
    """

    # (layers, kernel size, dilation) of the three dense blocks.
    _DENSE_BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))

    def __init__(self, feat_dim: int = 80, embed_dim: int = 512, pooling_func: str = "TSTP",
                 growth_rate: int = 32, bn_size: int = 4, init_channels: int = 128,
                 config_str: str = "batchnorm-relu"):
        super().__init__()
        self.head = FCM(num_blocks=(2, 2), feat_dim=feat_dim)
        self.xvector = nn.Sequential()
        self.xvector.add_module("tdnn", TDNNLayer(self.head.out_channels, init_channels, 5,
                                                  stride=2, dilation=1, padding=-1,
                                                  config_str=config_str))
        channels = init_channels
        for index, (num_layers, kernel_size, dilation) in enumerate(self._DENSE_BLOCKS, start=1):
            self.xvector.add_module(f"block{index}", CAMDenseTDNNBlock(
                num_layers=num_layers, in_channels=channels, out_channels=growth_rate,
                bn_channels=bn_size * growth_rate, kernel_size=kernel_size, dilation=dilation,
                config_str=config_str))
            channels += num_layers * growth_rate
            self.xvector.add_module(f"transit{index}", TransitLayer(
                channels, channels // 2, bias=False, config_str=config_str))
            channels //= 2
        self.xvector.add_module("out_nonlinear", build_nonlinear(config_str, channels))

        self.pool = get_pooling(pooling_func, in_dim=channels)
        self.pool_out_dim = self.pool.get_out_dim()
        self.xvector.add_module("stats", self.pool)
        self.xvector.add_module("dense", DenseLayer(self.pool_out_dim, embed_dim,
                                                    config_str="batchnorm_"))
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T', D]`` (T' = ceil(T / 2))."""
        x = self.head(x.transpose(1, 2))
        for layer in self.xvector[:-2]:
            x = layer(x)
        return x.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(x.transpose(1, 2)))


MODELS: Dict[str, Callable[..., nn.Module]] = {"CAMPPlus": CAMPPlus}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 512} for name in MODELS}
