"""Whisper-PMFA (WeSpeaker's ``whisper_PMFA``): partial multi-scale feature aggregation.

The model reads what the Whisper front-end (:mod:`wespeaker_py.frontend.whisper`) hands
over: the outputs of several Whisper encoder blocks side by side, layer-normalised,
``[B, T, feat_dim]``. It pools them over time with attentive statistics pooling with
global context (ASTP), batch-normalises the pooled statistics and projects them to the
embedding. State-dict keys are WeSpeaker's (``pooling.linear1``, ``pooling.linear2``,
``bn.norm``, ``fc``).

WeSpeaker's config (``whisper_PMFA_stage0.yaml``) spells the model
``Whisper_PMFA_large_v2``, which its own model lookup does not find (its run.sh passes
``--model whisper_PMFA_large_v2``); both spellings name the same model here.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from wespeaker_py.models.pooling import get_pooling

FRONTEND = "whisper_encoder"


class _BatchNorm(nn.Module):
    """BatchNorm1d kept under ``norm`` (WeSpeaker's speechbrain-style wrapper, ``bn.norm.*``)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class WhisperPMFA(nn.Module):
    """ASTP over the Whisper front-end's features, BatchNorm, a linear embedding.

    Args:
        feat_dim: width of a front-end frame (``output_size * (layer_ed - layer_st + 1)``).
        embed_dim: embedding size.

    The pooling is ASTP whose attention also sees each channel's utterance mean and
    std (global context), as in WeSpeaker.
    """

    def __init__(self, feat_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.pooling = get_pooling("ASTP", in_dim=feat_dim, global_context_att=True)
        pooled = self.pooling.get_out_dim()
        self.bn = _BatchNorm(pooled)
        self.fc = nn.Linear(pooled, embed_dim)

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the pooling reads: the front-end's features themselves, ``[B, T, feat_dim]``."""
        if x.dim() != 3 or x.shape[-1] != self.feat_dim:
            raise ValueError(f"whisper_PMFA reads [batch, frames, {self.feat_dim}] (the Whisper "
                             f"front-end's features), got shape {tuple(x.shape)}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling(self.frame_level_features(x).transpose(1, 2))
        return self.fc(self.bn(pooled))


def whisper_PMFA_large_v2(feat_dim: int, embed_dim: int) -> WhisperPMFA:  # noqa: N802
    """WeSpeaker's ``whisper_PMFA_large_v2``, the head of its Whisper large-v2 recipe."""
    return WhisperPMFA(feat_dim=feat_dim, embed_dim=embed_dim)


# WeSpeaker's name, and the spelling of its recipe config
MODELS = {"whisper_PMFA_large_v2": whisper_PMFA_large_v2,
          "Whisper_PMFA_large_v2": whisper_PMFA_large_v2}

# WeSpeaker's VoxCeleb v1 Whisper-PMFA recipe's model_args beyond the input size
# (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 192} for name in MODELS}
# The outputs of Whisper large-v2's blocks 17-24 side by side.
RECIPE_FEAT_DIM = 8 * 1280
