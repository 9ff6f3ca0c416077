"""Choose the front-end named by a config's ``dataset_args.frontend``."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Union

import torch

import torch.nn as nn

from wespeaker_py.config import DatasetArgs, as_dataset_args
from wespeaker_py.config.schema import frontend_choice


def build_frontend(dataset_args: Union[DatasetArgs, Mapping[str, Any]],
                   pretrained: bool = True) -> nn.Module:
    """The front-end module for ``dataset_args`` (the checked block, or a mapping to check):
    the class of its ``frontend``'s entry in
    :data:`~wespeaker_py.config.schema.FRONTENDS`, built by its ``from_dataset_args``.

    ``frontend: fbank`` (the default) gives :class:`FbankFeatures`;
    ``frontend: s3prl`` gives :class:`SSLFrontend` (needs the ``ssl`` extra,
    ``transformers``); ``frontend: tfmel`` gives :class:`TFMelFeatures`
    (ReDimNet2's); ``frontend: w2vbert`` gives :class:`W2VBertFrontend` (the
    ``ssl`` extra); ``frontend: whisper_encoder`` gives :class:`WhisperFrontend`.
    All map int16-scale waveforms ``[B, samples]`` to features ``[B, frames, dim]``
    and expose the feature size as ``output_dim``. ``pretrained=False`` lets the
    W2V-BERT and Whisper front-ends skip reading their pretrained weights, for a
    caller that loads all of them from a checkpoint. A name not in the table is a
    :class:`ConfigError` listing the front-ends.
    """
    config = as_dataset_args(dataset_args)
    return frontend_choice(config.frontend).build_from(config, pretrained=pretrained)


def model_feat_dim(frontend: nn.Module) -> int:
    """What ``model_args.feat_dim`` means for ``frontend``'s features: their width
    (for Whisper, its chosen blocks' outputs side by side), except for W2V-BERT,
    whose features are all its hidden states side by side and whose ``feat_dim`` is
    the width of one (as in WeSpeaker)."""
    from wespeaker_py.frontend.w2vbert import W2VBertFrontend
    if isinstance(frontend, W2VBertFrontend):
        return frontend.output_size()
    return frontend.output_dim


def built_buffers(frontend: nn.Module) -> Dict[str, torch.Tensor]:
    """The entries of ``frontend``'s state that are no parameters: what it computes from its
    settings when it is built (TFMel's DFT kernels and mel banks), never learnt."""
    learnt = {name for name, _ in frontend.named_parameters()}
    return {name: value for name, value in frontend.state_dict().items() if name not in learnt}
