"""Building a speaker model from a config: the one function training, extraction,
export and the Python API share, so a config means the same network everywhere."""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn as nn

from wespeaker_py.models import check_frontend, get_model
from wespeaker_py.models.checkpoint import load_weights
from wespeaker_py.models.repvgg import convert_to_deploy
from wespeaker_py.config import ConfigError, ModelConfig


def check_model_frontend(config: ModelConfig) -> None:
    """ConfigError unless ``config.model`` reads the features of ``dataset_args.frontend``."""
    try:
        check_frontend(config.model, config.dataset_args.frontend)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_speaker_model(config: ModelConfig, feat_dim: Optional[int] = None) -> nn.Module:
    """``config.model`` built with ``config.model_args`` (no head, random weights).

    ``feat_dim`` fills ``model_args.feat_dim: -1``, WeSpeaker's "size of the
    front-end output" for SSL front-ends; left at -1 it is an error, as is an
    argument the model does not take (both name the key), and so is a model
    with a front-end it does not read (a TFMel config with an fbank model or
    the reverse).
    """
    check_model_frontend(config)
    model_args = dict(config.model_args)
    if model_args.get("feat_dim") == -1:
        if feat_dim is None:
            raise ConfigError("config key 'model_args.feat_dim' is -1 (the front-end's size), "
                              "which only an SSL front-end (dataset_args.frontend: s3prl) "
                              "can fill")
        model_args["feat_dim"] = feat_dim
    try:
        return get_model(config.model, **model_args)
    except TypeError as err:
        raise ConfigError(
            f"config key 'model_args' does not fit {config.model}: {err}") from None


def load_inference_model(config: ModelConfig, speaker_state: Mapping[str, torch.Tensor],
                         source: str, feat_dim: Optional[int] = None) -> nn.Module:
    """The speaker model of ``config`` with ``speaker_state`` loaded strictly, in eval mode.

    ``speaker_state`` holds no head or front-end tensors (see
    :func:`~wespeaker_py.models.checkpoint.split_checkpoint_state`). A RepVGG
    model comes back fused into its deploy form (the same function, faster).
    """
    model = build_speaker_model(config, feat_dim)
    load_weights(model, speaker_state, source, allow_head_truncation=False)
    model.eval()
    convert_to_deploy(model, inplace=True)
    return model
