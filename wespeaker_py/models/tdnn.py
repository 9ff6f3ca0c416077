"""Kaldi-style x-vector TDNN (Snyder et al., ICASSP 2018) as in WeSpeaker.

Five TDNN layers (dilated 1-D convolutions, unpadded, so the output is 14
frames shorter than the input), statistics pooling, then two embedding layers;
the second one is the embedding. Module names match WeSpeaker's.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.pooling import get_pooling


class TdnnLayer(nn.Module):
    """Conv1d over time, ReLU, then a BatchNorm without affine parameters (as in Kaldi)."""

    def __init__(self, in_dim: int, out_dim: int, context_size: int, dilation: int = 1,
                 padding: int = 0):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.context_size = context_size
        self.dilation = dilation
        self.padding = padding
        self.conv_1d = nn.Conv1d(in_dim, out_dim, context_size, dilation=dilation,
                                 padding=padding)
        self.bn = nn.BatchNorm1d(out_dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv_1d(x)))


class XVEC(nn.Module):
    """The x-vector network; ``forward`` returns the second embedding layer's output."""

    def __init__(self, feat_dim: int = 40, hid_dim: int = 512, stats_dim: int = 1500,
                 embed_dim: int = 512, pooling_func: str = "TSTP"):
        super().__init__()
        self.feat_dim = feat_dim
        self.stats_dim = stats_dim
        self.embed_dim = embed_dim
        self.frame_1 = TdnnLayer(feat_dim, hid_dim, context_size=5, dilation=1)
        self.frame_2 = TdnnLayer(hid_dim, hid_dim, context_size=3, dilation=2)
        self.frame_3 = TdnnLayer(hid_dim, hid_dim, context_size=3, dilation=3)
        self.frame_4 = TdnnLayer(hid_dim, hid_dim, context_size=1, dilation=1)
        self.frame_5 = TdnnLayer(hid_dim, stats_dim, context_size=1, dilation=1)
        self.pool = get_pooling(pooling_func, in_dim=stats_dim)
        self.pool_out_dim = self.pool.get_out_dim()
        self.seg_1 = nn.Linear(self.pool_out_dim, embed_dim)
        self.seg_bn_1 = nn.BatchNorm1d(embed_dim, affine=False)
        self.seg_2 = nn.Linear(embed_dim, embed_dim)

    def _frame_layers(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` features to ``[B, stats_dim, T - 14]``."""
        out = x.transpose(1, 2)
        for layer in (self.frame_1, self.frame_2, self.frame_3, self.frame_4, self.frame_5):
            out = layer(out)
        return out

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T - 14, stats_dim]``."""
        return self._frame_layers(x).transpose(1, 2)

    def pooling_input(self, x: torch.Tensor) -> torch.Tensor:
        """The ``[B, stats_dim, T - 14]`` frames the pooling layer reads (a local function)."""
        return self._frame_layers(x)

    def embedding_of_pooled(self, stats: torch.Tensor) -> torch.Tensor:
        """The embedding (second segment layer) of the pooled statistics."""
        return self.seg_2(self.seg_bn_1(F.relu(self.seg_1(stats))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, feat_dim]`` (T >= 15) to ``[B, embed_dim]``."""
        return self.embedding_of_pooled(self.pool(self.pooling_input(x)))


MODELS = {"XVEC": XVEC}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 512} for name in MODELS}
