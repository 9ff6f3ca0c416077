"""ReDimNet (Yakovlev et al., 2024, "Reshape Dimensions Network for Speaker Recognition").

The backbone keeps a 1D feature map ``[B, F*C, T]`` at a fixed size: each stage
takes a learned softmax-weighted sum of all earlier stage outputs, reshapes it
to 2D ``[B, c, f, T]`` with its own channel/frequency split, runs 2D blocks,
flattens back and optionally runs a 1D time-context block. ``ReDimNetB0`` ...
``ReDimNetB6`` are WeSpeaker's configurations; they read fbank features
``[B, T, feat_dim]`` (72 bins in WeSpeaker's ``redimnet.yaml``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.redimnet_blocks import (ChannelsFirstLayerNorm, ConvBlock2d,
                                                 TimeContextBlock1d, To1d, check_feat_dim, to_1d,
                                                 to_2d)
from wespeaker_py.models.segment_layers import attach_segment_layers, segment_embedding

# One stage: (frequency stride, 2D blocks, channel expansion, kernel sizes (unused by
# WeSpeaker's ReDimNet v1), 1D block reduction or None for no 1D block).
Stage = Tuple[int, int, float, Sequence, Optional[int]]


class ReDimNetBackbone(nn.Module):
    """``[B, 1, F, T]`` -> ``[B, F*C, T]`` (or ``[B, out_channels, T]`` after the MFA conv)."""

    def __init__(self, F: int, C: int, block_1d_type: str, block_2d_type: str,
                 stages_setup: Sequence[Stage], group_divisor: Optional[int],
                 out_channels: Optional[int]):
        super().__init__()
        strides = [stage[0] for stage in stages_setup]
        if any(stride not in (1, 2, 3) for stride in strides):
            raise ValueError(f"stages_setup: each stage's frequency stride must be 1, 2 or 3, "
                             f"got {strides}")
        check_feat_dim(F, C, [(stage[0], stage[4]) for stage in stages_setup], block_1d_type)
        self.F, self.C = F, C
        width = F * C
        # Mixing weights of the stage inputs: stage i sees the stem and i earlier outputs.
        self.inputs_weights = nn.ParameterList(
            [nn.Parameter(torch.ones(1, 1, 1, 1), requires_grad=False)]
            + [nn.Parameter(torch.zeros(1, n + 1, width, 1))
               for n in range(1, len(stages_setup) + 1)])
        self.stem = nn.Sequential(nn.Conv2d(1, C, 3, padding="same"), ChannelsFirstLayerNorm(C))
        self.num_stages = len(stages_setup)
        self.stages_cfs = []
        c, f = C, F
        for index, (stride, num_blocks, conv_exp, _, att_block_red) in enumerate(stages_setup):
            self.stages_cfs.append((c, f))
            wide = int(stride * c * conv_exp)
            layers = [nn.Conv2d(c, wide, kernel_size=(stride, 1), stride=(stride, 1))]
            c, f = stride * c, f // stride
            layers += [ConvBlock2d(wide, f, block_type=block_2d_type, group_divisor=group_divisor)
                       for _ in range(num_blocks)]
            if conv_exp != 1:  # back to c channels so that c * f stays F * C
                layers.append(nn.Sequential(
                    nn.Conv2d(wide, c, 3, padding="same",
                              groups=c // group_divisor if group_divisor is not None else 1),
                    nn.BatchNorm2d(c, eps=1e-6), nn.GELU(), nn.Conv2d(c, c, 1)))
            layers.append(To1d())
            if att_block_red is not None:
                layers.append(TimeContextBlock1d(width, width // att_block_red, block_1d_type))
            setattr(self, f"stage{index}", nn.Sequential(*layers))
        if out_channels is not None:
            self.mfa = nn.Sequential(nn.Conv1d(width, out_channels, 1, padding="same"),
                                     nn.BatchNorm1d(out_channels))
        else:
            self.mfa = nn.Identity()

    def _mix(self, outputs, index: int) -> torch.Tensor:
        weights = torch.softmax(self.inputs_weights[index], dim=1)
        return (weights * torch.stack(outputs, dim=1)).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [to_1d(self.stem(x))]
        for index in range(self.num_stages):
            c, f = self.stages_cfs[index]
            stage = getattr(self, f"stage{index}")
            outputs.append(stage(to_2d(self._mix(outputs, index), c, f)))
        return self.mfa(self._mix(outputs, -1))


_K = ((3, 3),)

# WeSpeaker's default stages (its "M version"), those of ReDimNetB2.
_M_STAGES = ((1, 2, 1, _K, 12), (2, 2, 1, _K, 12), (1, 3, 1, _K, 12), (2, 4, 1, _K, 8),
             (1, 4, 1, _K, 8), (2, 4, 1, _K, 4))


class ReDimNet(nn.Module):
    """ReDimNet encoder; ``forward`` maps ``[B, T, feat_dim]`` to ``[B, embed_dim]``.

    The defaults are those of WeSpeaker's generic ``ReDimNet``.
    """

    def __init__(self, feat_dim: int = 72, C: int = 16, block_1d_type: str = "conv+att",
                 block_2d_type: str = "basic_resnet", stages_setup: Sequence[Stage] = _M_STAGES,
                 group_divisor: Optional[int] = 4,
                 out_channels: Optional[int] = None, embed_dim: int = 192,
                 pooling_func: str = "ASTP", global_context_att: bool = True,
                 two_emb_layer: bool = False):
        super().__init__()
        self.backbone = ReDimNetBackbone(feat_dim, C, block_1d_type, block_2d_type,
                                         stages_setup, group_divisor, out_channels)
        self.pool = get_pooling(pooling_func, in_dim=out_channels or C * feat_dim,
                                global_context_att=global_context_att)
        self.pool_out_dim = self.pool.get_out_dim()
        attach_segment_layers(self, self.pool_out_dim, embed_dim, two_emb_layer)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x.transpose(1, 2).unsqueeze(1))

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T, F*C]``."""
        return self._frames(x).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, feat_dim]`` features to ``[B, embed_dim]`` embeddings."""
        return segment_embedding(self, self.pool(self._frames(x)))


def _redimnet_factory(C: int, block_2d_type: str, group_divisor: Optional[int],
                      stages_setup: Sequence[Stage], default_feat_dim: int = 72):
    def factory(feat_dim: int = default_feat_dim, embed_dim: int = 192,
                pooling_func: str = "ASTP", two_emb_layer: bool = False) -> ReDimNet:
        return ReDimNet(feat_dim=feat_dim, C=C, block_1d_type="conv+att",
                        block_2d_type=block_2d_type, stages_setup=stages_setup,
                        group_divisor=group_divisor, embed_dim=embed_dim,
                        pooling_func=pooling_func, two_emb_layer=two_emb_layer)
    return factory


# WeSpeaker's configurations (wespeaker/models/redimnet.py).
MODELS = {
    "ReDimNetB0": _redimnet_factory(10, "basic_resnet", 1, [
        (1, 2, 1, _K, 30), (2, 3, 2, _K, 30), (1, 3, 3, _K, 30), (2, 4, 2, _K, 10),
        (1, 3, 1, _K, 10)], default_feat_dim=60),
    "ReDimNetB1": _redimnet_factory(12, "convnext_like", 8, [
        (1, 2, 1, _K, None), (2, 3, 1, _K, None), (3, 4, 1, _K, 12), (2, 5, 1, _K, 12),
        (2, 3, 1, _K, 8)]),
    "ReDimNetB2": _redimnet_factory(16, "convnext_like", 4, _M_STAGES),
    "ReDimNetB3": _redimnet_factory(16, "basic_resnet_fwse", 1, [
        (1, 6, 4, _K, 32), (2, 6, 2, _K, 32), (1, 8, 2, _K, 32), (2, 10, 2, _K, 16),
        (1, 10, 1, _K, 16), (2, 8, 1, _K, 16)]),
    "ReDimNetB4": _redimnet_factory(32, "basic_resnet_fwse", 1, [
        (1, 4, 2, _K, 48), (2, 4, 2, _K, 48), (1, 6, 2, _K, 48), (2, 6, 1, _K, 32),
        (1, 8, 1, _K, 24), (2, 4, 1, _K, 16)]),
    "ReDimNetB5": _redimnet_factory(32, "basic_resnet_fwse", 16, [
        (1, 4, 2, _K, 48), (2, 4, 2, _K, 48), (1, 6, 2, _K, 48), (2, 6, 1, _K, 32),
        (1, 8, 1, _K, 24), (2, 4, 1, _K, 16)]),
    "ReDimNetB6": _redimnet_factory(32, "basic_resnet", 32, [
        (1, 4, 4, _K, 32), (2, 6, 2, _K, 32), (1, 6, 2, _K, 24), (3, 8, 1, _K, 24),
        (1, 8, 1, _K, 16), (2, 8, 1, _K, 16)]),
}

# WeSpeaker's generic name: the class itself, with all its keyword arguments.
GENERIC_MODELS = {"ReDimNet": ReDimNet}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 192} for name in (*MODELS, *GENERIC_MODELS)}
# WeSpeaker's redimnet*.yaml use 72 mel bins.
RECIPE_FEAT_DIM = 72
