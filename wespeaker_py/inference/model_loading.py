"""A trained speaker model, ready for inference, from its config and a checkpoint.

A checkpoint's model state holds the speaker model, the training head under
``projection.`` (ignored here: embeddings come before the head) and, for a
model trained on an SSL front-end, that front-end under ``frontend.``
(a frozen front-end's WavLM weights may be left out; they then come from the
pretrained weights the config names). Everything else must match the model
built from the config exactly.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from wespeaker_py.frontend.factory import build_frontend
from wespeaker_py.frontend.ssl import with_pretrained_frontend_weights
from wespeaker_py.models import get_model
from wespeaker_py.models.repvgg import convert_to_deploy
from wespeaker_py.train.checkpoint import load_weights, model_state_of, read_checkpoint
from wespeaker_py.config import ModelConfig, load_model_config

HEAD_PREFIX = "projection."
FRONTEND_PREFIX = "frontend."


def read_model_config(path: str) -> ModelConfig:
    """Read an experiment's ``config.yaml``: ``model``, ``model_args`` and ``dataset_args``."""
    return load_model_config(path)


def split_checkpoint_state(state: Mapping[str, torch.Tensor]
                           ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Split a model state into (speaker model, ``frontend.*``) parts; drop the head."""
    speaker: Dict[str, torch.Tensor] = {}
    frontend: Dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(HEAD_PREFIX):
            continue
        (frontend if key.startswith(FRONTEND_PREFIX) else speaker)[key] = tensor
    return speaker, frontend


def _build_and_load(config: ModelConfig, speaker_state: Mapping[str, torch.Tensor],
                    source: str, feat_dim: Optional[int] = None) -> nn.Module:
    model_args = dict(config.model_args)
    if feat_dim is not None and model_args.get("feat_dim") == -1:
        model_args["feat_dim"] = feat_dim  # WeSpeaker's "size of the front-end output"
    model = get_model(config.model, **model_args)
    load_weights(model, speaker_state, source, allow_head_truncation=False)
    model.eval()
    # RepVGG: fuse the training branches (the same function, faster); others unchanged
    convert_to_deploy(model, inplace=True)
    return model


def load_speaker_model(config: ModelConfig, checkpoint_path: str) -> nn.Module:
    """Build ``config.model`` with ``config.model_args``, load its weights, eval mode.

    Head and front-end tensors are ignored; any other missing, unexpected or
    misshapen tensor is an error naming it. A RepVGG model comes back fused
    into its deploy form.
    """
    speaker_state, _ = split_checkpoint_state(model_state_of(read_checkpoint(checkpoint_path)))
    return _build_and_load(config, speaker_state, checkpoint_path)


class SpeakerEmbedder(nn.Module):
    """Waveforms to embeddings: a feature front-end followed by the speaker model."""

    def __init__(self, frontend: nn.Module, model: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.model = model

    def features(self, wavs: torch.Tensor) -> torch.Tensor:
        """``[B, samples]`` waveforms (int16 scale) to ``[B, frames, dim]`` features."""
        return self.frontend(wavs)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, frames, dim]`` features to ``[B, embed_dim]`` embeddings."""
        return self.model(feats)


def load_embedder(config: ModelConfig, checkpoint_path: str) -> SpeakerEmbedder:
    """Front-end (``config.dataset_args``) and speaker model, loaded, in eval mode.

    The front-end is fbank or an SSL model (``dataset_args.frontend: s3prl``);
    its ``frontend.*`` tensors load strictly, except that a frozen SSL
    front-end's missing WavLM weights come from its pretrained path.
    """
    speaker_state, frontend_state = split_checkpoint_state(
        model_state_of(read_checkpoint(checkpoint_path)))
    frontend = build_frontend(config.dataset_args).eval()
    model = _build_and_load(config, speaker_state, checkpoint_path, frontend.output_dim)
    embedder = SpeakerEmbedder(frontend, model)
    completed = with_pretrained_frontend_weights(embedder, frontend_state, checkpoint_path)
    load_weights(frontend, {key[len(FRONTEND_PREFIX):]: tensor
                            for key, tensor in completed.items()},
                 checkpoint_path, allow_head_truncation=False)
    return embedder.eval()
