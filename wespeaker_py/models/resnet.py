"""ResNet speaker encoders (ResNet18 ... ResNet293) as in WeSpeaker.

A 2-D ResNet over the (frequency, time) plane of the fbank features: a 3x3
stem, four stages of basic or bottleneck blocks (the last three halve both
axes), then a pooling layer over time on the flattened channel x frequency
axis and one or two embedding layers. Module names match WeSpeaker's, so its
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from typing import Dict, List, Union

from wespeaker_py.models.pooling import get_pooling
from wespeaker_py.models.resnet_blocks import BasicBlock, BlockFactory, Bottleneck, ResNetTrunk
from wespeaker_py.models.segment_layers import (MapPoolingHead, attach_segment_layers,
                                                check_frequency_stride)


class ResNet(MapPoolingHead, ResNetTrunk):
    """ResNet encoder + pooling + embedding layer(s).

    Args:
        block: BasicBlock or Bottleneck.
        num_blocks: blocks in each of the four stages.
        m_channels: channels of the first stage (doubled at each later stage).
        feat_dim: input feature dimension (a multiple of 8).
        embed_dim: embedding size.
        pooling_func: a name from :mod:`wespeaker_py.models.pooling`.
        two_emb_layer: add ReLU, BatchNorm (no affine) and a second linear
            layer after the first embedding; the second one is returned.
    """

    def __init__(self, block: BlockFactory, num_blocks: List[int], m_channels: int = 32,
                 feat_dim: int = 40, embed_dim: int = 128, pooling_func: str = "TSTP",
                 two_emb_layer: bool = False):
        check_frequency_stride(feat_dim, 8, "ResNet")
        super().__init__(m_channels, num_blocks, [block] * 4)
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        # Channels x frequency bins after three halvings, for a BasicBlock network.
        self.stats_dim = int(feat_dim / 8) * m_channels * 8
        self.pool = get_pooling(pooling_func, in_dim=self.stats_dim * block.expansion)
        self.pool_out_dim = self.pool.get_out_dim()
        attach_segment_layers(self, self.pool_out_dim, embed_dim, two_emb_layer)


def _resnet_factory(block: BlockFactory, num_blocks: List[int]):
    def factory(feat_dim: int, embed_dim: int, pooling_func: str = "TSTP",
                two_emb_layer: bool = False, m_channels: int = 32) -> ResNet:
        return ResNet(block, num_blocks, m_channels=m_channels, feat_dim=feat_dim,
                      embed_dim=embed_dim, pooling_func=pooling_func,
                      two_emb_layer=two_emb_layer)
    return factory


_BLOCKS_BY_NAME: Dict[str, BlockFactory] = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}


def generic_resnet(block: Union[str, BlockFactory], num_blocks: List[int],
                   **model_args) -> ResNet:
    """WeSpeaker's generic ``ResNet``; the other ``model_args`` are :class:`ResNet`'s.

    ``block`` is BasicBlock or Bottleneck, the class or its name (a YAML config
    can only name it).
    """
    if isinstance(block, str):
        if block not in _BLOCKS_BY_NAME:
            raise ValueError(f"model_args 'block' must be one of "
                             f"{', '.join(_BLOCKS_BY_NAME)}, got {block!r}")
        block = _BLOCKS_BY_NAME[block]
    return ResNet(block, num_blocks, **model_args)


MODELS = {
    "ResNet18": _resnet_factory(BasicBlock, [2, 2, 2, 2]),
    "ResNet34": _resnet_factory(BasicBlock, [3, 4, 6, 3]),
    "ResNet50": _resnet_factory(Bottleneck, [3, 4, 6, 3]),
    "ResNet101": _resnet_factory(Bottleneck, [3, 4, 23, 3]),
    "ResNet152": _resnet_factory(Bottleneck, [3, 8, 36, 3]),
    "ResNet221": _resnet_factory(Bottleneck, [6, 16, 48, 3]),
    "ResNet293": _resnet_factory(Bottleneck, [10, 20, 64, 3]),
}

GENERIC_MODELS = {"ResNet": generic_resnet}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 256} for name in (*MODELS, *GENERIC_MODELS)}
