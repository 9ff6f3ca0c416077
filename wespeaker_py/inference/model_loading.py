"""A trained speaker model, ready for inference, from its config and a checkpoint.

A checkpoint's model state holds the speaker model, the training head under
``projection.`` (ignored here: embeddings come before the head) and, for a
model trained on an SSL front-end, that front-end under ``frontend.``
(a frozen front-end's WavLM weights may be left out; they then come from the
pretrained weights the config names). Everything else must match the model
built from the config exactly.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch
import torch.nn as nn

from wespeaker_py.frontend.factory import build_frontend
from wespeaker_py.frontend.ssl import with_pretrained_frontend_weights
from wespeaker_py.models.assembly import load_inference_model
from wespeaker_py.models.checkpoint import (FRONTEND_PREFIX, load_weights, model_state_of,
                                            read_checkpoint, split_checkpoint_state)
from wespeaker_py.utils.config import read_yaml, require_keys


def read_model_config(path: str) -> Dict[str, Any]:
    """Read an experiment's ``config.yaml``, requiring ``model`` and ``model_args``."""
    config = read_yaml(path)
    require_keys(config, ["model", "model_args"])
    return config


def load_speaker_model(config: Mapping[str, Any], checkpoint_path: str) -> nn.Module:
    """Build ``config["model"]`` with ``config["model_args"]``, load its weights, eval mode.

    Head and front-end tensors are ignored; any other missing, unexpected or
    misshapen tensor is an error naming it. A RepVGG model comes back fused
    into its deploy form.
    """
    speaker_state, _ = split_checkpoint_state(model_state_of(read_checkpoint(checkpoint_path)))
    return load_inference_model(config, speaker_state, checkpoint_path)


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


def load_embedder(config: Mapping[str, Any], checkpoint_path: str) -> SpeakerEmbedder:
    """Front-end (``config["dataset_args"]``) and speaker model, loaded, in eval mode.

    The front-end is fbank or an SSL model (``dataset_args.frontend: s3prl``);
    its ``frontend.*`` tensors load strictly, except that a frozen SSL
    front-end's missing WavLM weights come from its pretrained path.
    """
    require_keys(config, ["dataset_args"])
    speaker_state, frontend_state = split_checkpoint_state(
        model_state_of(read_checkpoint(checkpoint_path)))
    frontend = build_frontend(config["dataset_args"]).eval()
    model = load_inference_model(config, speaker_state, checkpoint_path, frontend.output_dim)
    embedder = SpeakerEmbedder(frontend, model)
    completed = with_pretrained_frontend_weights(embedder, frontend_state, checkpoint_path)
    load_weights(frontend, {key[len(FRONTEND_PREFIX):]: tensor
                            for key, tensor in completed.items()},
                 checkpoint_path, allow_head_truncation=False)
    return embedder.eval()
