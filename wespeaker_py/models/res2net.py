"""Res2Net for speaker verification (the 3D-Speaker variant WeSpeaker ships).

Gao et al., "Res2Net: A New Multi-scale Backbone Architecture", TPAMI 2021.
Each block splits its bottleneck into ``scale`` channel groups; all but the
last pass a 3x3 convolution, each adding the previous group's output first, and
the last group passes through unchanged. Module names follow WeSpeaker's
``res2net.py`` so checkpoints load unchanged.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Sequence

import torch.nn as nn

from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.resnet_blocks import BlockFactory, MultiScaleBlock, ResNetTrunk
from wespeaker_py.models.segment_layers import MapPoolingHead, attach_segment_layers

# Res2Net bottleneck block with a 2x channel expansion; the last group is not convolved.
BasicBlockRes2Net = partial(MultiScaleBlock, base_width=32, scale=2, expansion=2,
                            pass_last_group=True)


class Res2Net(MapPoolingHead, ResNetTrunk):
    """Res2Net speaker embedding network: ``[B, T, feat_dim]`` -> ``[B, embed_dim]``.

    Stages 2-4 halve both frequency and time.
    """

    def __init__(self, m_channels: int, num_blocks: Sequence[int],
                 block: BlockFactory = BasicBlockRes2Net, feat_dim: int = 80,
                 embed_dim: int = 192, pooling_func: str = "TSTP", two_emb_layer: bool = False):
        super().__init__(m_channels, num_blocks, [block] * 4)
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.stats_dim = int(feat_dim / 8) * m_channels * 8
        self.pool = get_pooling(pooling_func, in_dim=int(feat_dim / 8) * self.out_planes)
        self.pool_out_dim = self.pool.get_out_dim()
        attach_segment_layers(self, self.pool_out_dim, embed_dim, two_emb_layer)


def Res2Net34_Base(feat_dim: int = 80, embed_dim: int = 256, pooling_func: str = "TSTP",
                   two_emb_layer: bool = False) -> Res2Net:
    """Res2Net-34 with 32 base channels."""
    return Res2Net(32, [3, 4, 6, 3], feat_dim=feat_dim, embed_dim=embed_dim,
                   pooling_func=pooling_func, two_emb_layer=two_emb_layer)


def Res2Net34_Large(feat_dim: int = 80, embed_dim: int = 256, pooling_func: str = "TSTP",
                    two_emb_layer: bool = False) -> Res2Net:
    """Res2Net-34 with 64 base channels."""
    return Res2Net(64, [3, 4, 6, 3], feat_dim=feat_dim, embed_dim=embed_dim,
                   pooling_func=pooling_func, two_emb_layer=two_emb_layer)


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "Res2Net34_Base": Res2Net34_Base,
    "Res2Net34_Large": Res2Net34_Large,
}

# WeSpeaker's generic name: the class itself (``block`` takes one of our block factories).
GENERIC_MODELS: Dict[str, Callable[..., nn.Module]] = {"Res2Net": Res2Net}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 256} for name in (*MODELS, *GENERIC_MODELS)}
