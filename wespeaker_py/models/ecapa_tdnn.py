"""ECAPA-TDNN (Desplanques et al., Interspeech 2020) as in WeSpeaker.

A 1-D convolution stem, three SE-Res2Blocks with growing dilation, a 1x1
convolution over the concatenated block outputs (multi-layer feature
aggregation, always 1536 channels), attentive statistics pooling and a linear
embedding layer. The GLOB variants give the pooling attention the utterance
mean and std as global context. Module names match WeSpeaker's.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.pooling import get_pooling

# Width of the aggregated frame features fed to pooling, whatever ``channels`` is.
_MFA_CHANNELS = 512 * 3


class Res2Conv1dReluBn(nn.Module):
    """Res2Net-style hierarchical convolution: ``scale`` groups of channels, each
    convolved after adding the previous group's output; the last group passes through."""

    def __init__(self, channels: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True, scale: int = 4):
        super().__init__()
        if channels % scale != 0:
            raise ValueError(f"channels {channels} must be divisible by scale {scale}")
        self.scale = scale
        self.width = channels // scale
        self.nums = scale if scale == 1 else scale - 1
        self.convs = nn.ModuleList([
            nn.Conv1d(self.width, self.width, kernel_size, stride, padding, dilation, bias=bias)
            for _ in range(self.nums)
        ])
        self.bns = nn.ModuleList([nn.BatchNorm1d(self.width) for _ in range(self.nums)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(x, self.width, dim=1)
        outputs = []
        previous = None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            group = groups[i] if previous is None else previous + groups[i]
            previous = bn(F.relu(conv(group)))
            outputs.append(previous)
        if self.scale != 1:
            outputs.append(groups[self.nums])
        return torch.cat(outputs, dim=1)


class Conv1dReluBn(nn.Module):
    """Conv1d, ReLU, BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, dilation: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                              bias=bias)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class SE_Connect(nn.Module):
    """Squeeze-and-excitation gate over channels from the time-averaged input."""

    def __init__(self, channels: int, se_bottleneck_dim: int = 128):
        super().__init__()
        self.linear1 = nn.Linear(channels, se_bottleneck_dim)
        self.linear2 = nn.Linear(se_bottleneck_dim, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * gate.unsqueeze(2)


class SE_Res2Block(nn.Module):
    """1x1 conv, dilated Res2 conv, 1x1 conv, SE gate, plus the residual input."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, scale: int):
        super().__init__()
        self.se_res2block = nn.Sequential(
            Conv1dReluBn(channels, channels, kernel_size=1, stride=1, padding=0),
            Res2Conv1dReluBn(channels, kernel_size, stride, padding, dilation, scale=scale),
            Conv1dReluBn(channels, channels, kernel_size=1, stride=1, padding=0),
            SE_Connect(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se_res2block(x)


class ECAPA_TDNN(nn.Module):
    """ECAPA-TDNN encoder; ``forward`` returns the ``[B, embed_dim]`` embedding.

    ``emb_bn`` adds a BatchNorm after the embedding layer (WeSpeaker uses it
    with SSL front-ends).
    """

    def __init__(self, channels: int = 512, feat_dim: int = 80, embed_dim: int = 192,
                 pooling_func: str = "ASTP", global_context_att: bool = False,
                 emb_bn: bool = False):
        super().__init__()
        self.layer1 = Conv1dReluBn(feat_dim, channels, kernel_size=5, padding=2)
        self.layer2 = SE_Res2Block(channels, kernel_size=3, stride=1, padding=2, dilation=2,
                                   scale=8)
        self.layer3 = SE_Res2Block(channels, kernel_size=3, stride=1, padding=3, dilation=3,
                                   scale=8)
        self.layer4 = SE_Res2Block(channels, kernel_size=3, stride=1, padding=4, dilation=4,
                                   scale=8)
        self.conv = nn.Conv1d(channels * 3, _MFA_CHANNELS, kernel_size=1)
        self.pool = get_pooling(pooling_func, in_dim=_MFA_CHANNELS,
                                global_context_att=global_context_att)
        self.pool_out_dim = self.pool.get_out_dim()
        self.bn = nn.BatchNorm1d(self.pool_out_dim)
        self.linear = nn.Linear(self.pool_out_dim, embed_dim)
        self.emb_bn = emb_bn
        self.bn2 = nn.BatchNorm1d(embed_dim) if emb_bn else nn.Identity()

    def _aggregated_frames(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` features to the aggregated ``[B, 1536, T]`` frame features."""
        out1 = self.layer1(x.transpose(1, 2))
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        return self.conv(torch.cat([out2, out3, out4], dim=1))

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T, 1536]``."""
        return self._aggregated_frames(x).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, feat_dim]`` features to ``[B, embed_dim]`` embeddings."""
        out = self.bn(self.pool(F.relu(self._aggregated_frames(x))))
        return self.bn2(self.linear(out))


def _ecapa_factory(channels: int, global_context_att: bool):
    def factory(feat_dim: int, embed_dim: int, pooling_func: str = "ASTP",
                emb_bn: bool = False) -> ECAPA_TDNN:
        return ECAPA_TDNN(channels=channels, feat_dim=feat_dim, embed_dim=embed_dim,
                          pooling_func=pooling_func, global_context_att=global_context_att,
                          emb_bn=emb_bn)
    return factory


MODELS = {
    "ECAPA_TDNN_c512": _ecapa_factory(512, global_context_att=False),
    "ECAPA_TDNN_c1024": _ecapa_factory(1024, global_context_att=False),
    "ECAPA_TDNN_GLOB_c512": _ecapa_factory(512, global_context_att=True),
    "ECAPA_TDNN_GLOB_c1024": _ecapa_factory(1024, global_context_att=True),
}

# WeSpeaker's generic name: the class itself, with all its keyword arguments.
GENERIC_MODELS = {"ECAPA_TDNN": ECAPA_TDNN}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 192} for name in (*MODELS, *GENERIC_MODELS)}
