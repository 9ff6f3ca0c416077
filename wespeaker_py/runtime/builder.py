"""The one way to build a speaker model from a config, and a trained one from (config, checkpoint).

:func:`build_speaker_model` makes the architecture a config names (random
weights); training attaches its head and SSL front-end to it. :func:`load_embedder`
makes what every user of a trained model runs: the config's front-end followed by
the speaker model with the checkpoint's weights, in eval mode. Extraction, the
Python API (torch), export and diarization all get their model from it.

A checkpoint's model state holds the speaker model, the training head under
``projection.`` (ignored here: embeddings come before the head) and, for a
model trained on an SSL front-end, that front-end under ``frontend.`` (a frozen
front-end's WavLM weights may be left out; they then come from the pretrained
weights the config names). Everything else must match the built model exactly.
A RepVGG model comes back fused into its deploy form. A loaded embedder knows its
identity (:mod:`.identity`), computed on first use.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from wespeaker_py.config import ConfigError, ModelConfig
from wespeaker_py.frontend.factory import build_frontend, model_feat_dim
from wespeaker_py.frontend.ssl import with_pretrained_frontend_weights
from wespeaker_py.models import check_frontend, get_model
from wespeaker_py.models.repvgg import convert_to_deploy
from wespeaker_py.runtime.checkpoint import (FRONTEND_PREFIX, load_weights, model_state_of,
                                             read_checkpoint, split_checkpoint_state)
from wespeaker_py.runtime.identity import embedder_identity, frontend_settings


def check_model_frontend(config: ModelConfig) -> None:
    """ConfigError unless ``config.model`` reads the features of ``dataset_args.frontend``
    (a TFMel config with an fbank model, or the reverse, fails here, before any data)."""
    try:
        check_frontend(config.model, config.dataset_args.frontend)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_speaker_model(config: ModelConfig, feat_dim: Optional[int] = None) -> nn.Module:
    """``config.model`` built with ``config.model_args`` (no head, random weights).

    ``feat_dim`` fills ``model_args.feat_dim: -1``, WeSpeaker's "size of the
    front-end output" for SSL front-ends; left at -1 it is an error, as is an
    argument the model does not take (both name the key), as is a model with a
    front-end it does not read (:func:`check_model_frontend`).
    """
    check_model_frontend(config)
    model_args = dict(config.model_args)
    if model_args.get("feat_dim") == -1:
        if feat_dim is None:
            raise ConfigError("config key 'model_args.feat_dim' is -1 (the front-end's size), "
                              "which only a front-end with weights (dataset_args.frontend: "
                              "s3prl, w2vbert or whisper_encoder) can fill")
        model_args["feat_dim"] = feat_dim
    try:
        return get_model(config.model, **model_args)
    except (TypeError, ValueError) as err:   # an unknown argument, or a value it refuses
        raise ConfigError(
            f"config key 'model_args' does not fit {config.model}: {err}") from None


class SpeakerEmbedder(nn.Module):
    """Waveforms to embeddings: a feature front-end followed by the speaker model.

    ``settings`` are the front-end settings that enter :attr:`identity`
    (:func:`~wespeaker_py.runtime.identity.frontend_settings`).
    """

    def __init__(self, frontend: nn.Module, model: nn.Module,
                 settings: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.frontend = frontend
        self.model = model
        self.settings = dict(settings or {})
        self._identity: Optional[str] = None

    @property
    def identity(self) -> str:
        """Digest of the weights and front-end settings (:mod:`~wespeaker_py.runtime.identity`),
        computed once."""
        if self._identity is None:
            self._identity = embedder_identity(self.model, self.frontend, self.settings)
        return self._identity

    def features(self, wavs: torch.Tensor) -> torch.Tensor:
        """``[B, samples]`` waveforms (int16 scale) to ``[B, frames, dim]`` features."""
        return self.frontend(wavs)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, frames, dim]`` features to ``[B, embed_dim]`` embeddings."""
        return self.model(feats)


def load_embedder(config: ModelConfig, checkpoint_path: str) -> SpeakerEmbedder:
    """Front-end (``config.dataset_args``) and speaker model with the checkpoint's weights.

    The front-end is fbank, TFMel, an SSL model, W2V-BERT or Whisper
    (``dataset_args.frontend``).
    Head tensors are ignored; ``frontend.*`` tensors load strictly into the
    front-end, except that a frozen SSL front-end's missing WavLM weights come
    from its pretrained path; any other missing, unexpected or misshapen tensor
    is a :class:`~wespeaker_py.runtime.checkpoint.CheckpointMismatchError`
    naming it. Comes back in eval mode, RepVGG fused into its deploy form.
    """
    speaker_state, frontend_state = split_checkpoint_state(
        model_state_of(read_checkpoint(checkpoint_path)))
    # the checkpoint holds a W2V-BERT or Whisper front-end's weights: only its
    # architecture is built
    frontend = build_frontend(config.dataset_args, pretrained=False).eval()
    model = build_speaker_model(config, model_feat_dim(frontend))
    load_weights(model, speaker_state, checkpoint_path, allow_head_truncation=False)
    model.eval()
    convert_to_deploy(model, inplace=True)
    embedder = SpeakerEmbedder(frontend, model, frontend_settings(config.dataset_args))
    completed = with_pretrained_frontend_weights(embedder, frontend_state, checkpoint_path)
    load_weights(frontend, {key[len(FRONTEND_PREFIX):]: tensor
                            for key, tensor in completed.items()},
                 checkpoint_path, allow_head_truncation=False)
    return embedder.eval()
