"""RepVGG for speaker verification, with train-time branches and a fused deploy form.

Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021;
Ma et al., "Rep Works in Speaker Verification", arXiv:2110.09720 (the RepSPK
block, "RSBB"). During training each block sums several convolution+BN
branches (and a BN identity branch); in eval mode these are linear, so
:func:`convert_to_deploy` folds them into one biased convolution per block
that computes the same function. Build a model with ``deploy=True`` to get the
fused form directly (e.g. to load a converted checkpoint). Module names follow
WeSpeaker's ``repvgg.py`` so checkpoints load unchanged.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.segment_layers import frames_of_map

# Layers (counted from 1 over all stages) that the "g2"/"g4" variants make groupwise.
_GROUPWISE_LAYERS = tuple(range(2, 27, 2))
_G2_MAP = dict.fromkeys(_GROUPWISE_LAYERS, 2)
_G4_MAP = dict.fromkeys(_GROUPWISE_LAYERS, 4)


class SEBlock2D(nn.Module):
    """Squeeze-and-excitation over the channels of a ``[B, C, F, T]`` map."""

    def __init__(self, in_planes: int, ratio: int = 16, inplace: bool = True):
        super().__init__()
        self.in_planes = in_planes
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc_1 = nn.Linear(in_planes, in_planes // ratio)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc_2 = nn.Linear(in_planes // ratio, in_planes)
        self.sigmoid = nn.Sigmoid()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        batch, channels = inputs.shape[:2]
        squeezed = self.avg_pool(inputs).view(batch, channels)
        scale = self.sigmoid(self.fc_2(self.relu(self.fc_1(squeezed))))
        return inputs * scale.view(batch, channels, 1, 1)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
            dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """A bias-free convolution (``conv``) followed by BatchNorm (``bn``)."""
    branch = nn.Sequential()
    branch.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                        padding=padding, dilation=dilation, groups=groups,
                                        bias=False))
    branch.add_module("bn", nn.BatchNorm2d(out_channels))
    return branch


def _fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``bn(conv(x))`` for a bias-free conv, in float64."""
    std = (bn.running_var.double() + bn.eps).sqrt()
    scale = bn.weight.double() / std
    bias = bn.bias.double() - bn.running_mean.double() * scale
    return kernel.double() * scale.reshape(-1, 1, 1, 1), bias


def _place_kernel(kernel: torch.Tensor, dilation: int, size: int) -> torch.Tensor:
    """Spread a (possibly dilated) square kernel into a centred ``size`` x ``size`` kernel."""
    extent = dilation * (kernel.shape[-1] - 1) + 1
    dilated = kernel.new_zeros(kernel.shape[:2] + (extent, extent))
    dilated[:, :, ::dilation, ::dilation] = kernel
    margin = (size - extent) // 2
    return F.pad(dilated, [margin] * 4)


class _ReparameterisableBlock(nn.Module):
    """Shared behaviour of RepVGG-style blocks: ``se(relu(sum of branches))``.

    A subclass registers its branches (``conv_bn`` Sequentials and an optional
    BatchNorm identity ``rbr_identity``) and names them in ``_branch_names``;
    in deploy form the block holds only ``rbr_reparam``, a biased convolution of
    ``_deploy_kernel_size`` with ``_deploy_padding``.
    """

    _branch_names: Tuple[str, ...] = ()

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int,
                 use_se: bool, deploy_kernel_size: int, deploy_padding: int):
        super().__init__()
        self.in_channels = in_channels
        self.groups = groups
        self._deploy_kernel_size = deploy_kernel_size
        self._deploy_padding = deploy_padding
        self._stride = stride
        self.nonlinearity = nn.ReLU(inplace=True)
        self.se = SEBlock2D(out_channels, 4) if use_se else nn.Identity()
        self.rbr_reparam: Optional[nn.Conv2d] = None
        for name in self._all_branch_names():
            setattr(self, name, None)

    @property
    def deploy(self) -> bool:
        """Whether the block is in its fused, single-convolution form."""
        return self.rbr_reparam is not None

    def _identity_branch(self, in_channels: int, out_channels: int,
                         stride: int) -> Optional[nn.BatchNorm2d]:
        return nn.BatchNorm2d(in_channels) if out_channels == in_channels and stride == 1 else None

    def _make_reparam(self, out_channels: int, padding_mode: str = "zeros") -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, out_channels, self._deploy_kernel_size,
                         stride=self._stride, padding=self._deploy_padding, groups=self.groups,
                         bias=True, padding_mode=padding_mode)

    @classmethod
    def _all_branch_names(cls) -> Tuple[str, ...]:
        # The identity goes last so that branches are summed in WeSpeaker's order.
        return cls._branch_names + ("rbr_identity",)

    def _branches(self) -> List[nn.Module]:
        return [getattr(self, name) for name in self._all_branch_names()
                if getattr(self, name) is not None]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.rbr_reparam is not None:
            summed = self.rbr_reparam(inputs)
        else:
            summed = sum(branch(inputs) for branch in self._branches())
        return self.se(self.nonlinearity(summed))

    def get_equivalent_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Kernel and bias (float64) of the one convolution equal to all branches in eval mode."""
        if self.rbr_reparam is not None:
            raise RuntimeError("the block is already in deploy form")
        size = self._deploy_kernel_size
        kernel_sum, bias_sum = 0, 0
        for branch in self._branches():
            if isinstance(branch, nn.BatchNorm2d):
                kernel, bias = _fold_bn(self._identity_kernel(branch.weight), branch)
                kernel = _place_kernel(kernel, 1, size)
            else:
                kernel, bias = _fold_bn(branch.conv.weight, branch.bn)
                kernel = _place_kernel(kernel, branch.conv.dilation[0], size)
            kernel_sum, bias_sum = kernel_sum + kernel, bias_sum + bias
        return kernel_sum, bias_sum

    def _identity_kernel(self, like: torch.Tensor) -> torch.Tensor:
        """A 1x1 (grouped) convolution kernel that copies its input."""
        group_in = self.in_channels // self.groups
        kernel = like.new_zeros(self.in_channels, group_in, 1, 1)
        channels = torch.arange(self.in_channels, device=like.device)
        kernel[channels, channels % group_in, 0, 0] = 1.0
        return kernel

    def switch_to_deploy(self) -> None:
        """Replace the branches by one fused convolution (exact in eval mode)."""
        if self.rbr_reparam is not None:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        reference = next(b for b in self._branches() if not isinstance(b, nn.BatchNorm2d)).conv
        reparam = self._make_reparam(reference.out_channels, reference.padding_mode)
        reparam.to(device=reference.weight.device, dtype=reference.weight.dtype)
        with torch.no_grad():
            reparam.weight.copy_(kernel)
            reparam.bias.copy_(bias)
        for name in self._all_branch_names():
            setattr(self, name, None)
        self.rbr_reparam = reparam


class RepVGGBlock(_ReparameterisableBlock):
    """RepVGG block: 3x3 conv+BN, 1x1 conv+BN and (same shape) a BN identity branch."""

    _branch_names = ("rbr_dense", "rbr_1x1")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1,
                 padding_mode: str = "zeros", deploy: bool = False, use_se: bool = False):
        if kernel_size != 3 or padding != 1 or dilation != 1:
            raise ValueError("RepVGGBlock supports only kernel_size=3, padding=1, dilation=1")
        super().__init__(in_channels, out_channels, stride, groups, use_se,
                         deploy_kernel_size=3, deploy_padding=1)
        if deploy:
            self.rbr_reparam = self._make_reparam(out_channels, padding_mode)
        else:
            self.rbr_identity = self._identity_branch(in_channels, out_channels, stride)
            self.rbr_dense = conv_bn(in_channels, out_channels, 3, stride, 1, groups=groups)
            self.rbr_1x1 = conv_bn(in_channels, out_channels, 1, stride, 0, groups=groups)


class RepSPKBlock(_ReparameterisableBlock):
    """RepSPK block (RSBB): 3x3 conv+BN, dilation-2 3x3 conv+BN and a BN identity branch.

    The dilated branch covers a 5x5 field, so the fused convolution is 5x5.
    """

    _branch_names = ("rbr_dense", "rbr_dense_dilation")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, branch_dilation: int = 2, groups: int = 1,
                 padding_mode: str = "zeros", deploy: bool = False, use_se: bool = False):
        if kernel_size != 3 or padding != 1 or dilation != 1 or branch_dilation != 2:
            raise ValueError("RepSPKBlock supports only kernel_size=3, padding=1, dilation=1, "
                             "branch_dilation=2")
        deploy_kernel_size = (kernel_size - 1) * branch_dilation + 1
        super().__init__(in_channels, out_channels, stride, groups, use_se,
                         deploy_kernel_size=deploy_kernel_size, deploy_padding=branch_dilation)
        self.branch_dilation = branch_dilation
        if deploy:
            self.rbr_reparam = self._make_reparam(out_channels, padding_mode)
        else:
            self.rbr_identity = self._identity_branch(in_channels, out_channels, stride)
            self.rbr_dense = conv_bn(in_channels, out_channels, 3, stride, 1, groups=groups)
            self.rbr_dense_dilation = conv_bn(in_channels, out_channels, 3, stride,
                                              branch_dilation, dilation=branch_dilation,
                                              groups=groups)


_BLOCKS = {"RepVGG": RepVGGBlock, "RepSPK": RepSPKBlock}


class RepVGG(nn.Module):
    """RepVGG speaker embedding network: ``[B, T, feat_dim]`` -> ``[B, embed_dim]``.

    ``stage0`` is a single block from the input plane; stages 1-4 have
    ``num_blocks`` blocks of width ``(64, 128, 256, 512) * width_multiplier``;
    ``strides`` (five entries) give each stage's first-block stride.
    """

    def __init__(self, head_inplanes: int = 1, block: str = "RepVGG",
                 num_blocks: Sequence[int] = (), strides: Sequence[int] = (),
                 base_width: int = 64, width_multiplier: Sequence[float] = (),
                 override_groups_map: Optional[Dict[int, int]] = None, deploy: bool = False,
                 use_se: bool = False, pooling_func: str = "ASTP", feat_dim: int = 80,
                 embed_dim: int = 256):
        super().__init__()
        if len(num_blocks) != 4 or len(width_multiplier) != 4 or len(strides) != 5:
            raise ValueError("RepVGG needs 4 num_blocks, 4 width_multiplier and 5 strides")
        if block not in _BLOCKS:
            raise ValueError(f"unknown RepVGG block {block!r}; choose one of {sorted(_BLOCKS)}")
        self.override_groups_map = override_groups_map or {}
        if 0 in self.override_groups_map:
            raise ValueError("stage0 cannot be groupwise (layer 0 in override_groups_map)")
        widths = [w * base_width / 64.0 for w in width_multiplier]
        self.deploy = deploy
        self.use_se = use_se
        self._block = _BLOCKS[block]
        self.downsample_multiple = 1
        for stride in strides:
            self.downsample_multiple *= stride

        self.in_planes = min(64, int(64 * widths[0]))
        self.stage0 = self._block(head_inplanes, out_channels=self.in_planes, kernel_size=3,
                                  stride=strides[0], padding=1, deploy=deploy, use_se=use_se)
        self.cur_layer_idx = 1
        self.stage1 = self._make_stage(int(64 * widths[0]), num_blocks[0], strides[1])
        self.stage2 = self._make_stage(int(128 * widths[1]), num_blocks[1], strides[2])
        self.stage3 = self._make_stage(int(256 * widths[2]), num_blocks[2], strides[3])
        self.stage4 = self._make_stage(int(512 * widths[3]), num_blocks[3], strides[4])
        self.output_planes = self.in_planes
        self.stats_dim = self.output_planes * int(feat_dim / 8)

        self.pool = get_pooling(pooling_func, in_dim=self.stats_dim)
        self.pool_out_dim = self.pool.get_out_dim()
        self.seg = nn.Linear(self.pool_out_dim, embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # overwritten at once, but it draws from the generator as WeSpeaker's init
                # does, so a seed gives WeSpeaker's initial weights
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _make_stage(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            groups = self.override_groups_map.get(self.cur_layer_idx, 1)
            blocks.append(self._block(self.in_planes, out_channels=planes, kernel_size=3,
                                      stride=block_stride, padding=1, groups=groups,
                                      deploy=self.deploy, use_se=self.use_se))
            self.in_planes = planes
            self.cur_layer_idx += 1
        return nn.Sequential(*blocks)

    def _feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage0(x.transpose(1, 2).unsqueeze(1))
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features before pooling, ``[B, T', C * F']``."""
        return frames_of_map(self._feature_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg(self.pool(self._feature_map(x)))


def convert_to_deploy(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fuse every RepVGG/RepSPK block of ``model`` into its single-convolution deploy form.

    The result computes the same function as ``model`` in eval mode (the fusion
    uses the BatchNorm running statistics) and has the state_dict layout of a
    model built with ``deploy=True``. ``model`` is left untouched unless
    ``inplace``.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, _ReparameterisableBlock):
            module.switch_to_deploy()
    if isinstance(model, RepVGG):
        model.deploy = True
    return model


# name: (block, num_blocks, width_multiplier, groups map, SE by default)
_VARIANTS = {
    "REPVGG_TINY_A0": ("RepVGG", (3, 4, 23, 3), (0.5, 0.5, 0.5, 0.5), None, False),
    "REPVGG_TINY_RSBB_A0": ("RepSPK", (3, 4, 23, 3), (0.5, 0.5, 0.5, 0.5), None, False),
    "REPVGG_A0": ("RepVGG", (2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5), None, False),
    "REPVGG_RSBB_A0": ("RepSPK", (2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5), None, False),
    "REPVGG_A1": ("RepVGG", (2, 4, 14, 1), (1, 1, 1, 2.5), None, False),
    "REPVGG_A2": ("RepVGG", (2, 4, 14, 1), (1.5, 1.5, 1.5, 2.75), None, False),
    "REPVGG_RSBB_A2": ("RepSPK", (2, 4, 14, 1), (1.5, 1.5, 1.5, 2.75), None, False),
    "REPVGG_B0": ("RepVGG", (4, 6, 16, 1), (1, 1, 1, 2.5), None, False),
    "REPVGG_RSBB_B0": ("RepSPK", (4, 6, 16, 1), (1, 1, 1, 2.5), None, False),
    "REPVGG_B1": ("RepVGG", (4, 6, 16, 1), (2, 2, 2, 4), None, False),
    "REPVGG_B1g2": ("RepVGG", (4, 6, 16, 1), (2, 2, 2, 4), _G2_MAP, False),
    "REPVGG_B1g4": ("RepVGG", (4, 6, 16, 1), (2, 2, 2, 4), _G4_MAP, False),
    "REPVGG_B2": ("RepVGG", (4, 6, 16, 1), (2.5, 2.5, 2.5, 5), None, False),
    "REPVGG_B2g2": ("RepVGG", (4, 6, 16, 1), (2.5, 2.5, 2.5, 5), _G2_MAP, False),
    "REPVGG_B2g4": ("RepVGG", (4, 6, 16, 1), (2.5, 2.5, 2.5, 5), _G4_MAP, False),
    "REPVGG_B3": ("RepVGG", (4, 6, 16, 1), (3, 3, 3, 5), None, False),
    "REPVGG_B3g2": ("RepVGG", (4, 6, 16, 1), (3, 3, 3, 5), _G2_MAP, False),
    "REPVGG_B3g4": ("RepVGG", (4, 6, 16, 1), (3, 3, 3, 5), _G4_MAP, False),
    "REPVGG_D2SE": ("RepVGG", (8, 14, 24, 1), (2.5, 2.5, 2.5, 5), _G4_MAP, True),
}
_STRIDES = (1, 1, 2, 2, 2)


def _factory(block: str, num_blocks: Sequence[int], width_multiplier: Sequence[float],
             groups_map: Optional[Dict[int, int]], se_default: bool) -> Callable[..., RepVGG]:
    def build(feat_dim: int = 80, embed_dim: int = 256, pooling_func: str = "TSTP",
              deploy: bool = False, use_se: bool = se_default) -> RepVGG:
        return RepVGG(block=block, num_blocks=num_blocks, strides=_STRIDES,
                      width_multiplier=width_multiplier, override_groups_map=groups_map,
                      deploy=deploy, use_se=use_se, pooling_func=pooling_func,
                      feat_dim=feat_dim, embed_dim=embed_dim)
    return build


MODELS: Dict[str, Callable[..., nn.Module]] = {
    name: _factory(*variant) for name, variant in _VARIANTS.items()}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 256} for name in MODELS}
# The results table reports RepVGG in its re-parameterised deployment form.
DEPLOYED_FORM_ARGS = {"deploy": True}
