"""Blocks shared by ReDimNet (redimnet.py) and ReDimNet2 (redimnet2.py).

Both families move a feature map between a 2D layout ``[B, C, F, T]`` (channels
by frequency by time) and a 1D layout ``[B, F*C, T]`` (frequency-major stacking
of the channels) and mix the two with 2D convolution blocks and 1D time-context
blocks. Attribute names follow WeSpeaker's modules so that its checkpoints load
strictly.
"""
from __future__ import annotations

import math

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.protocol import ModelArgError


def to_1d(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, F, T]`` -> ``[B, F*C, T]`` (frequency-major)."""
    batch, channels, freqs, frames = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, freqs * channels, frames)


def to_2d(x: torch.Tensor, channels: int, freqs: int) -> torch.Tensor:
    """Inverse of :func:`to_1d`: ``[B, F*C, T]`` -> ``[B, C, F, T]``."""
    batch, _, frames = x.shape
    return x.reshape(batch, freqs, channels, frames).permute(0, 2, 1, 3)


class To1d(nn.Module):
    """:func:`to_1d` as a module (a parameter-free step inside ``nn.Sequential``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_1d(x)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of ``[B, C, ...]`` (WeSpeaker's ``LayerNorm(channels_first)``)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        shape = (-1,) + (1,) * (x.dim() - 2)
        return self.weight.view(shape) * x + self.bias.view(shape)


class ConvNeXtLikeBlock(nn.Module):
    """Residual depthwise convolutions (one per kernel size, concatenated) -> BN -> act -> 1x1."""

    def __init__(self, channels: int, dim: int = 2, kernel_sizes: Sequence = ((3, 3),),
                 group_divisor: Optional[int] = 1, activation: str = "gelu"):
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
        groups = channels // group_divisor if group_divisor is not None else 1
        self.dwconvs = nn.ModuleList([
            conv(channels, channels, kernel_size=tuple(ks) if isinstance(ks, (list, tuple))
                 else ks, padding="same", groups=groups) for ks in kernel_sizes])
        self.norm = norm(channels * len(kernel_sizes))
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.pwconv1 = conv(channels * len(kernel_sizes), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([dwconv(x) for dwconv in self.dwconvs], dim=1)
        return x + self.pwconv1(self.act(self.norm(out)))


class FrequencySE(nn.Module):
    """Squeeze-excitation over the frequency axis of ``[B, C, F, T]`` (WeSpeaker's fwSEBlock)."""

    def __init__(self, num_freq: int, num_feats: int = 64):
        super().__init__()
        self.squeeze = nn.Linear(num_freq, num_feats)
        self.exitation = nn.Linear(num_feats, num_freq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.exitation(F.relu(self.squeeze(x.mean(dim=(1, 3))))))
        return x * weights[:, None, :, None]


class ResBasicBlock(nn.Module):
    """ResNet basic block with grouped 3x3 + pointwise convolutions, ReLU before BN.

    With ``group_divisor`` None the 3x3 convolutions are dense and there are no
    pointwise ones; ``use_fwse`` adds a frequency-wise SE before the residual sum.
    """

    def __init__(self, in_planes: int, planes: int, num_freq: int, se_channels: int = 64,
                 group_divisor: Optional[int] = 4, use_fwse: bool = False):
        super().__init__()
        grouped = group_divisor is not None
        self.conv1 = nn.Conv2d(in_planes, in_planes if grouped else planes, 3, padding=1,
                               bias=False, groups=in_planes // group_divisor if grouped else 1)
        self.conv1pw = nn.Conv2d(in_planes, planes, 1) if grouped else nn.Identity()
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False,
                               groups=planes // group_divisor if grouped else 1)
        self.conv2pw = nn.Conv2d(planes, planes, 1) if grouped else nn.Identity()
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = FrequencySE(num_freq, se_channels) if use_fwse else nn.Identity()
        if planes != in_planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, bias=False),
                                            nn.BatchNorm2d(planes))
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(F.relu(self.conv1pw(self.conv1(x))))
        out = self.se(self.bn2(self.conv2pw(self.conv2(out))))
        return F.relu(out + self.downsample(x))


BLOCK_2D_TYPES = ("convnext_like", "convnext_like_relu", "basic_resnet", "basic_resnet_fwse")


class ConvBlock2d(nn.Module):
    """One 2D block of a stage, chosen by ``block_type`` (one of :data:`BLOCK_2D_TYPES`)."""

    def __init__(self, c: int, f: int, block_type: str = "convnext_like",
                 group_divisor: Optional[int] = 1, kernel_sizes: Sequence = ((3, 3),)):
        super().__init__()
        if block_type.startswith("convnext_like"):
            self.conv_block = ConvNeXtLikeBlock(
                c, dim=2, kernel_sizes=kernel_sizes, group_divisor=group_divisor,
                activation="relu" if block_type.endswith("_relu") else "gelu")
        elif block_type in ("basic_resnet", "basic_resnet_fwse"):
            self.conv_block = ResBasicBlock(c, c, f, se_channels=min(64, max(c, 32)),
                                            group_divisor=group_divisor,
                                            use_fwse=block_type.endswith("_fwse"))
        else:
            raise ValueError(f"unknown block_2d_type {block_type!r}; "
                             f"expected one of {', '.join(BLOCK_2D_TYPES)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class MultiHeadAttention(nn.Module):
    """Self-attention over ``[B, T, D]`` with separate q/k/v/out projections."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape
        return x.view(batch, frames, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        query = self._heads(self.q_proj(x) * self.scaling)
        key = self._heads(self.k_proj(x))
        value = self._heads(self.v_proj(x))
        weights = torch.softmax(query @ key.transpose(-1, -2), dim=-1)
        out = (weights @ value).transpose(1, 2).reshape(batch, frames, dim)
        return self.out_proj(out)


class FeedForward(nn.Module):
    """Linear -> GELU (tanh approximation, in WeSpeaker's own arithmetic) -> linear."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.intermediate_dense = nn.Linear(hidden_size, intermediate_size)
        self.output_dense = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(_tanh_gelu(self.intermediate_dense(x)))


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation written out as WeSpeaker's ReDimNet computes it
    (``F.gelu(approximate="tanh")`` differs from it by rounding, up to 2.4e-7)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                       * (x + 0.044715 * torch.pow(x, 3.0))))


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer layer over channels-first ``[B, D, T]`` input."""

    def __init__(self, n_state: int, n_mlp: int, n_head: int, ln_eps: float = 1e-6):
        super().__init__()
        self.attention = MultiHeadAttention(n_state, n_head)
        self.layer_norm = nn.LayerNorm(n_state, eps=ln_eps)
        self.feed_forward = FeedForward(n_state, n_mlp)
        self.final_layer_norm = nn.LayerNorm(n_state, eps=ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 1)
        x = self.layer_norm(x + self.attention(x))
        x = self.final_layer_norm(x + self.feed_forward(x))
        return x.permute(0, 2, 1)


class PosEncConv(nn.Module):
    """Convolutional positional encoding: ``x + LayerNorm(depthwise conv(x))``."""

    def __init__(self, channels: int, kernel_size: int, groups: Optional[int] = None):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2,
                              groups=channels if groups is None else groups)
        self.norm = ChannelsFirstLayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(x))


BLOCK_1D_TYPES = ("conv+att", "att", "fc")
# The attention heads of the 1D blocks that attend ("conv+att", "att").
ATTENTION_HEADS = 4


def _feat_dim_problem(feat_dim: int, C: int, stages: Sequence[Tuple[int, Optional[int]]],
                      attends: bool) -> Optional[str]:
    """Why the layers cannot split ``feat_dim`` bins (None if they can); ``stages`` holds
    each stage's (frequency stride, 1D block reduction or None)."""
    bins = feat_dim
    for index, (freq_stride, reduction) in enumerate(stages):
        if bins % freq_stride:
            return (f"stage {index}'s frequency stride {freq_stride} does not divide the "
                    f"{bins} bins it gets")
        bins //= freq_stride
        if attends and reduction is not None and (feat_dim * C // reduction) % ATTENTION_HEADS:
            return (f"stage {index}'s 1D block gets {feat_dim} x C={C} // {reduction} = "
                    f"{feat_dim * C // reduction} channels, not a multiple of its "
                    f"{ATTENTION_HEADS} attention heads")
    return None


def check_feat_dim(feat_dim: int, C: int, stages: Sequence[Tuple[int, Optional[int]]],
                   block_1d_type: str, arg: str = "feat_dim") -> None:
    """A :class:`ModelArgError` naming ``arg`` (the input bins' argument) unless a
    ReDimNet's layers can split ``feat_dim`` bins of ``C`` channels.

    ``stages`` holds each stage's (frequency stride, 1D block reduction or None):
    every stride must divide the bins left to its stage and every attending 1D
    block's width ``feat_dim * C // reduction`` must split into the heads. The
    error lists the nearest values that work.
    """
    attends = block_1d_type != "fc"
    problem = _feat_dim_problem(feat_dim, C, stages, attends)
    if problem is None:
        return
    below: List[int] = [dim for dim in range(feat_dim - 1, 0, -1)
                        if _feat_dim_problem(dim, C, stages, attends) is None][:2]
    above: List[int] = [dim for dim in range(feat_dim + 1, 4 * feat_dim + 64)
                        if _feat_dim_problem(dim, C, stages, attends) is None][:2]
    near = sorted(below + above)
    hint = f"; values that work nearby: {', '.join(map(str, near))}" if near else ""
    raise ModelArgError(arg, feat_dim, problem + hint)


class TimeContextBlock1d(nn.Module):
    """Residual 1D block over ``[B, C, T]``: reduce to ``hC`` channels, mix over time, expand.

    ``conv+att`` (every released model): four ConvNeXt-like blocks with kernels
    7, 19, 31, 59, then a transformer layer; ``att``: positional conv +
    transformer layer; ``fc``: a pointwise MLP.
    """

    def __init__(self, C: int, hC: int, block_type: str = "conv+att", pos_ker_sz: int = 59):
        super().__init__()
        self.red_dim_conv = nn.Sequential(nn.Conv1d(C, hC, 1), ChannelsFirstLayerNorm(hC))
        if block_type == "conv+att":
            self.tcm = nn.Sequential(
                *[ConvNeXtLikeBlock(hC, dim=1, kernel_sizes=[k]) for k in (7, 19, 31, 59)],
                TransformerEncoderLayer(n_state=hC, n_mlp=hC, n_head=ATTENTION_HEADS))
        elif block_type == "att":
            self.tcm = nn.Sequential(PosEncConv(hC, pos_ker_sz, groups=hC),
                                     TransformerEncoderLayer(n_state=hC, n_mlp=hC * 2,
                                                             n_head=ATTENTION_HEADS))
        elif block_type == "fc":
            self.tcm = nn.Sequential(nn.Conv1d(hC, hC * 2, 1), ChannelsFirstLayerNorm(hC * 2),
                                     nn.GELU(), nn.Conv1d(hC * 2, hC, 1))
        else:
            raise ValueError(f"unknown block_1d_type {block_type!r}; "
                             f"expected one of {', '.join(BLOCK_1D_TYPES)}")
        self.exp_dim_conv = nn.Conv1d(hC, C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.exp_dim_conv(self.tcm(self.red_dim_conv(x)))
