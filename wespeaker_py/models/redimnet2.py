"""ReDimNet2: ReDimNet with time striding (PalabraAI's redimnet2, as WeSpeaker ships it).

Unlike ReDimNet, each stage may also stride in time: a stage downsamples the
weighted sum of all earlier full-rate 1D outputs by its cumulative time stride,
runs 2D and 1D blocks at that rate and upsamples its output back (nearest), so
every stage output stays ``[B, F*C, T]``. ``ReDimNet2B0`` ... ``ReDimNet2B6``
are WeSpeaker's configurations, trained on the TFMel front-end
(``dataset_args.frontend: tfmel``, see :mod:`wespeaker_py.frontend.tfmel`).

Layout: like every model here, ``forward`` takes ``[B, T, feat_dim]``;
WeSpeaker's ReDimNet2 takes TFMel's ``[B, feat_dim, T]`` and the front-end
here gives frames first, so the two compose to the same network.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.protocol import ModelArgError
from wespeaker_py.models.redimnet_blocks import (ChannelsFirstLayerNorm, ConvBlock2d,
                                                 TimeContextBlock1d, To1d, check_feat_dim, to_2d)

# The front-end every ReDimNet2 model reads (models.check_frontend holds configs to it).
FRONTEND = "tfmel"


class StageMix(nn.Module):
    """Softmax-weighted sum of ``N`` 1D feature maps, one weight per map and channel."""

    def __init__(self, num_inputs: int, width: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, num_inputs, width, 1),
                              requires_grad=num_inputs > 1)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return (torch.softmax(self.w, dim=1) * torch.stack(list(xs), dim=1)).sum(dim=1)


class To2d(nn.Module):
    """``[B, f*c, T]`` -> ``[B, c, f, T]`` for a fixed split."""

    def __init__(self, f: int, c: int):
        super().__init__()
        self.f, self.c = f, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_2d(x, self.c, self.f)


class ReDimNet2Backbone(nn.Module):
    """``[B, 1, F, T]`` -> ``[B, D, T']`` with ``T' = T`` rounded down to the time stride."""

    def __init__(self, F: int, C: int, stages_setup: Sequence, block_1d_type: str = "conv+att",
                 block_2d_type: str = "basic_resnet", group_divisor: Optional[int] = 1,
                 compress_tconvs: bool = True, out_channels: Optional[int] = None,
                 return_2d_output: bool = False):
        super().__init__()
        width = F * C
        self.stem = nn.Sequential(nn.Conv2d(1, C, 3, padding="same"),
                                  ChannelsFirstLayerNorm(C), To1d())
        self.num_stages = len(stages_setup)
        c, f, freq_stride, time_stride = C, F, 1, 1
        for index, (stride, num_blocks, conv_exp, kernel_sizes, att_block_red) in \
                enumerate(stages_setup):
            sf, st = stride
            freq_stride, time_stride = freq_stride * sf, time_stride * st
            wide = int(sf * c * conv_exp)
            layers = [StageMix(index + 1, width), To2d(f=f, c=c),
                      nn.Conv2d(c, wide, kernel_size=(sf, time_stride),
                                stride=(sf, time_stride),
                                groups=math.gcd(c, wide) if compress_tconvs else 1)]
            c, f = sf * c, f // sf
            layers += [ConvBlock2d(int(c * conv_exp), f, block_type=block_2d_type,
                                   group_divisor=group_divisor, kernel_sizes=kernel_sizes)
                       for _ in range(num_blocks)]
            if conv_exp != 1:
                layers.append(nn.Sequential(nn.Conv2d(int(c * conv_exp), c, 1, padding="same"),
                                            nn.BatchNorm2d(c, eps=1e-6)))
            layers.append(To1d())
            if att_block_red is not None:
                layers.append(TimeContextBlock1d(width, width // att_block_red, block_1d_type))
            layers.append(nn.Upsample(scale_factor=time_stride, mode="nearest"))
            setattr(self, f"stage{index}", nn.Sequential(*layers))
        self.fin_wght1d = StageMix(self.num_stages + 1, width)
        self.time_stride = time_stride
        self.freq_stride = freq_stride
        if return_2d_output:
            self.fin_to2d = To2d(f=f, c=c)
            self.head = nn.Conv2d(c, out_channels, 1) if out_channels else nn.Identity()
            self.out_dim = f * (out_channels or c)
        else:
            self.fin_to2d = nn.Identity()
            self.head = nn.Conv1d(width, out_channels, 1) if out_channels else nn.Identity()
            self.out_dim = out_channels or width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1] // self.time_stride * self.time_stride
        outputs = [self.stem(x[..., :frames])]
        for index in range(self.num_stages):
            outputs.append(getattr(self, f"stage{index}")(outputs))
        out = self.head(self.fin_to2d(self.fin_wght1d(outputs)))
        return out.flatten(1, 2) if out.dim() == 4 else out


class ReDimNet2(nn.Module):
    """ReDimNet2 encoder (WeSpeaker's ``ReDimNet2Wrap``): ``[B, T, F]`` -> ``[B, embed_dim]``.

    ``F`` / ``feat_dim`` is the number of mel bins. ``emb_bn`` adds a BatchNorm
    after the embedding layer. WeSpeaker's options for causal, dual-aggregation,
    frequency-position and internal-spectrogram variants are not implemented;
    none of the released configurations uses them (the factories in :data:`MODELS`
    take those arguments at the values that select this network, see
    ``_wrap_args``).
    """

    def __init__(self, F: int = 72, C: int = 24, feat_dim: Optional[int] = None,
                 embed_dim: int = 192, pooling_func: str = "ASTP", two_emb_layer: bool = False,
                 out_channels: Optional[int] = None, block_1d_type: str = "conv+att",
                 block_2d_type: str = "basic_resnet", compress_tconvs: bool = True,
                 return_2d_output: bool = False, stages_setup: Optional[Sequence] = None,
                 group_divisor: Optional[int] = 1, global_context_att: bool = True,
                 emb_bn: bool = False):
        super().__init__()
        del two_emb_layer  # accepted and ignored, as in WeSpeaker
        if stages_setup is None:
            raise ValueError("ReDimNet2 needs stages_setup (use ReDimNet2B0 ... ReDimNet2B6)")
        bins, arg = (F, "F") if feat_dim is None else (feat_dim, "feat_dim")
        check_feat_dim(bins, C, [(stride[0], red) for stride, _, _, _, red in stages_setup],
                       block_1d_type, arg)
        self.backbone = ReDimNet2Backbone(
            bins, C, stages_setup,
            block_1d_type=block_1d_type, block_2d_type=block_2d_type,
            group_divisor=group_divisor, compress_tconvs=compress_tconvs,
            out_channels=out_channels, return_2d_output=return_2d_output)
        self.pool = get_pooling(pooling_func, in_dim=self.backbone.out_dim,
                                global_context_att=global_context_att)
        self.pool_out_dim = self.pool.get_out_dim()
        self.bn = nn.BatchNorm1d(self.pool_out_dim)
        self.linear = nn.Linear(self.pool_out_dim, embed_dim)
        self.emb_bn = emb_bn
        if emb_bn:
            self.bn2 = nn.BatchNorm1d(embed_dim)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x.transpose(1, 2).unsqueeze(1))

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T', D]`` (``T'``: whole time strides)."""
        return self._frames(x).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, feat_dim]`` features to ``[B, embed_dim]`` embeddings."""
        out = self.linear(self.bn(self.pool(self._frames(x))))
        return self.bn2(out) if self.emb_bn else out


def _stages(table):
    """Stage tuples from WeSpeaker's ``[[sf, st], blocks, conv_exp, [[kf, kt]], att_red]`` rows."""
    return [((sf, st), blocks, exp, [tuple(k) for k in kernels], red)
            for (sf, st), blocks, exp, kernels, red in table]


# ReDimNet2Wrap's arguments that change nothing here: unused by WeSpeaker itself, or used
# only by its internal spectrogram, which this model never has (see "spec" below).
_NO_EFFECT_ARGS = ("num_classes", "feat_agg_dropout", "head_activation", "feat_type",
                   "hop_length", "spec_params")

# ReDimNet2Wrap's arguments that select variants not implemented here: the values that
# select this network (WeSpeaker's defaults), and what the others would add.
_VARIANT_ARGS = {
    "causal": (("none",), "a causal network"),
    "spec": ((None, "fbank", "pt_stft"), "an internal spectrogram (the TFMel front-end, "
                                         "dataset_args.tfmel_args, computes the features)"),
    "spec_in_channels": ((1,), "a multi-channel spectrogram"),
    "fm_weigthing_type": (("NC",), "another feature-map weighting"),
    "use_freq_pos_enc": ((False,), "a frequency position encoding"),
    "dual_agg": ((False,), "dual aggregation"),
    "agg_gnorm": ((False,), "group norms after aggregation"),
    "pad_right_samples": ((None, 0), "right padding of the input"),
    "before_pool_offset": ((None, 0), "dropping frames before pooling"),
    "return_all_outputs": ((False,), "returning every stage's output"),
}


def _wrap_args(model_args: Mapping[str, Any]) -> Dict[str, Any]:
    """``model_args`` (or a checkpoint's ``model_config``) without the ``ReDimNet2Wrap``
    arguments that :class:`ReDimNet2` has no use for.

    Those that change nothing are dropped; one that selects a variant not implemented
    here is a :class:`ModelArgError` naming it, unless its value selects this network
    (``causal: none``, ``spec: null``, ...).
    """
    for arg, (values, variant) in _VARIANT_ARGS.items():
        if arg in model_args and model_args[arg] not in values:
            raise ModelArgError(arg, model_args[arg], f"{variant} is not implemented here "
                                f"(implemented: {', '.join(map(repr, values))})")
    return {arg: value for arg, value in model_args.items()
            if arg not in _VARIANT_ARGS and arg not in _NO_EFFECT_ARGS}


def _redimnet2_factory(C: int, stages, **defaults):
    """WeSpeaker's ``ReDimNet2Wrap`` with these defaults; ``stages_setup`` None: ``stages``."""
    def factory(stages_setup: Optional[Sequence] = None, **model_args) -> ReDimNet2:
        table = stages if stages_setup is None else stages_setup
        args = dict(defaults, C=C, stages_setup=_stages(table))
        args.update(_wrap_args(model_args))
        return ReDimNet2(**args)
    return factory


_K3 = [[3, 3]]

# ReDimNet2Wrap's default stages, which ReDimNet2B4 uses too.
_WRAP_STAGES = [
    [[1, 1], 2, 4, _K3, 24], [[2, 1], 3, 3, _K3, 24], [[1, 2], 4, 2, _K3, 24],
    [[2, 1], 5, 1, _K3, 24], [[1, 2], 4, 1, _K3, 24], [[2, 1], 3, 1, _K3, 24]]

# WeSpeaker's configurations (wespeaker/models/redimnet2.py).
MODELS = {
    "ReDimNet2B0": _redimnet2_factory(12, [
        [[1, 1], 2, 2, _K3, 36], [[2, 1], 3, 1, _K3, 36], [[1, 2], 4, 1, _K3, 36],
        [[2, 1], 5, 1, _K3, 36], [[1, 2], 4, 1, _K3, 18], [[2, 1], 3, 1, _K3, 18]],
        out_channels=64),
    "ReDimNet2B1": _redimnet2_factory(16, [
        [[1, 1], 2, 2, _K3, 32], [[2, 1], 3, 1, _K3, 32], [[1, 2], 4, 1, _K3, 32],
        [[2, 1], 5, 1, _K3, 32], [[1, 2], 4, 1, _K3, 16], [[2, 1], 3, 1, _K3, 16]],
        out_channels=64),
    "ReDimNet2B2": _redimnet2_factory(20, [
        [[1, 1], 2, 2, [[3, 5]], 40], [[2, 1], 3, 1, [[3, 5]], 30],
        [[1, 2], 4, 1, [[3, 5]], 30], [[3, 1], 5, 1, [[3, 5]], 20],
        [[1, 2], 4, 1, [[3, 7]], 20], [[2, 1], 3, 1, [[3, 7]], 10]],
        out_channels=64),
    "ReDimNet2B3": _redimnet2_factory(24, [
        [[1, 1], 2, 2, _K3, 36], [[2, 1], 3, 1, _K3, 36], [[1, 2], 4, 1, _K3, 36],
        [[2, 1], 5, 1, _K3, 36], [[1, 2], 4, 1, _K3, 18], [[2, 1], 3, 1, _K3, 18]],
        out_channels=64),
    "ReDimNet2B4": _redimnet2_factory(32, _WRAP_STAGES),
    "ReDimNet2B5": _redimnet2_factory(48, [
        [[1, 1], 2, 4, _K3, 48], [[2, 1], 3, 3, _K3, 48], [[1, 2], 4, 2, _K3, 48],
        [[2, 1], 5, 1, _K3, 48], [[1, 2], 4, 1, _K3, 32], [[2, 1], 3, 1, _K3, 32]],
        out_channels=256),
    "ReDimNet2B6": _redimnet2_factory(64, [
        [[1, 1], 3, 3, _K3, 64], [[2, 1], 4, 2, _K3, 64], [[1, 2], 5, 2, _K3, 48],
        [[2, 1], 5, 1, _K3, 48], [[1, 2], 4, 0.75, _K3, 32], [[2, 1], 3, 0.5, _K3, 24]],
        out_channels=224, return_2d_output=True),
}

# WeSpeaker's generic names: ReDimNet2Wrap and ReDimNet2Custom (which only calls it).
# WeSpeaker's ReDimNet2 is the backbone alone (no pooling or embedding), so not a model here.
GENERIC_MODELS = {name: _redimnet2_factory(24, _WRAP_STAGES)
                  for name in ("ReDimNet2Wrap", "ReDimNet2Custom")}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 192} for name in (*MODELS, *GENERIC_MODELS)}
# WeSpeaker's redimnet2*.yaml use 72 TFMel bins.
RECIPE_FEAT_DIM = 72
