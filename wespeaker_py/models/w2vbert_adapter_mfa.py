"""W2V-BERT 2.0 + adapter multi-layer feature aggregation (WeSpeaker's ``W2VBert_Adapter_MFA``).

The model reads every hidden state of the W2V-BERT front-end
(:mod:`wespeaker_py.frontend.w2vbert`): the front-end hands them over
concatenated along the feature axis, ``[B, T, (num_frontend_hidden_layers + 1)
* feat_dim]``, so that they travel through the toolkit's ``[B, frames, dim]``
plumbing like any other features. The last ``n_mfa_layers`` states each pass
their own small adapter (Linear, LayerNorm, ReLU, Linear to ``adapter_dim``);
the adapted states are concatenated, pooled over time (ASP by default) and
projected to the embedding. State-dict keys are WeSpeaker's
(``adapter_layers.<i>.{0,1,3}``, ``pooling.*``, ``bottleneck``).

WeSpeaker's forward returns ``(0, embedding)``; this one returns the embedding,
as every model here does.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from wespeaker_py.models.pooling import get_pooling

FRONTEND = "w2vbert"


class W2VBert_Adapter_MFA(nn.Module):  # noqa: N801 (WeSpeaker's name)
    """Adapters over the last ``n_mfa_layers`` W2V-BERT states, pooled into one embedding.

    Args:
        feat_dim: hidden size ``D`` of each front-end state.
        embed_dim: embedding size.
        pooling_func: a WeSpeaker pooling name: ASP (WeSpeaker's, its attention
            ``adapter_dim`` wide) or any other pooling here (TSTP, ASTP, ...).
        n_mfa_layers: how many of the last states to use; -1 uses all
            ``num_frontend_hidden_layers + 1``.
        adapter_dim: width of each adapter.
        dropout: dropout before the bottleneck (0 = none).
        num_frontend_hidden_layers: transformer layers of the front-end.
    """

    def __init__(self, feat_dim: int, embed_dim: int = 256, pooling_func: str = "ASP",
                 n_mfa_layers: int = -1, adapter_dim: int = 128, dropout: float = 0.0,
                 num_frontend_hidden_layers: int = 24):
        super().__init__()
        self.feat_dim = feat_dim
        self.num_states = num_frontend_hidden_layers + 1
        self.n_mfa_layers = self.num_states if n_mfa_layers == -1 else n_mfa_layers
        if not 1 <= self.n_mfa_layers <= self.num_states:
            raise ValueError(f"n_mfa_layers must be -1 or in [1, {self.num_states}] "
                             f"(num_frontend_hidden_layers + 1), got {n_mfa_layers}")
        self.adapter_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(feat_dim, adapter_dim), nn.LayerNorm(adapter_dim),
                          nn.ReLU(True), nn.Linear(adapter_dim, adapter_dim))
            for _ in range(self.n_mfa_layers))
        # every pooling reads in_dim (ASP as an alias of its input_dim); ASP's attention is
        # adapter_dim wide, as in WeSpeaker, and the others ignore hidden_dim
        self.pooling = get_pooling(pooling_func, in_dim=adapter_dim * self.n_mfa_layers,
                                   hidden_dim=adapter_dim)
        self.bottleneck = nn.Linear(self.pooling.get_out_dim(), embed_dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def input_dim(self) -> int:
        """Width of the features this model reads (all front-end states side by side)."""
        return self.num_states * self.feat_dim

    def _states(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_dim():
            raise ValueError(
                f"W2VBert_Adapter_MFA reads [batch, frames, {self.num_states} x {self.feat_dim}] "
                f"(every W2V-BERT hidden state side by side), got shape {tuple(x.shape)}")
        batch, frames, _ = x.shape
        return x.view(batch, frames, self.num_states, self.feat_dim)

    def frame_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """The adapted, concatenated states ``[B, T, n_mfa_layers * adapter_dim]``."""
        states = self._states(x)[:, :, self.num_states - self.n_mfa_layers:]
        return torch.cat([adapter(states[:, :, i])
                          for i, adapter in enumerate(self.adapter_layers)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling(self.frame_level_features(x).transpose(1, 2))
        return self.bottleneck(self.drop(pooled))


MODELS = {"W2VBert_Adapter_MFA": W2VBert_Adapter_MFA}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {name: {"embed_dim": 256, "pooling_func": "ASP", "adapter_dim": 128,
                            "num_frontend_hidden_layers": 24} for name in MODELS}
# The hidden size of W2V-BERT 2.0.
RECIPE_FEAT_DIM = 1024
