"""Pooling layers: turn frame-level features into one utterance-level vector.

Class names, constructor arguments and parameter names follow WeSpeaker's
``pooling_layers`` so checkpoints load unchanged; a model's ``pooling_func``
string is looked up in :data:`POOLING_LAYERS` by :func:`get_pooling`.

What every layer of :data:`POOLING_LAYERS` offers (``tests/test_pooling.py`` checks
each one):

- its constructor takes the input size as ``in_dim`` (the channels, times the
  frequency bins for a 4-D input) and accepts, and ignores, keyword arguments it
  does not use: models pass ``global_context_att`` (ECAPA-TDNN, ReDimNet,
  ReDimNet2) and ``hidden_dim`` (W2VBert_Adapter_MFA) whatever their
  ``pooling_func`` names;
- ``forward`` takes frame features with time on the last axis, ``[B, C, T]``
  (TDNN-like encoders) or ``[B, C, F, T]`` (ResNet-like encoders, whose channel
  and frequency axes are flattened together), and
  returns ``[B, get_out_dim()]``;
- ``get_out_dim()`` gives that output size.

:data:`MOMENT_POOLINGS` are the layers whose output is a function of the mean and
variance of each input channel over time alone, so that a long input can be pooled
exactly from moments gathered chunk by chunk (``runtime/long_audio.py``); a layer
added there must also be computed by :func:`pool_from_moments`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.models.protocol import ModelArgError

# Floor added to variances before the square root, as in WeSpeaker.
_VAR_EPS = 1e-7


def _as_channels_by_time(x: torch.Tensor) -> torch.Tensor:
    """Flatten ``[B, C, F, T]`` to ``[B, C*F, T]``; leave ``[B, C, T]`` alone."""
    if x.dim() == 4:
        return x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    if x.dim() != 3:
        raise ValueError(f"pooling expects a 3-D or 4-D input, got shape {tuple(x.shape)}")
    return x


def _temporal_std(x: torch.Tensor) -> torch.Tensor:
    """Unbiased standard deviation over the last axis, floored for a stable gradient."""
    return torch.sqrt(torch.var(x, dim=-1) + _VAR_EPS)


def _weighted_stats(x: torch.Tensor, weights: torch.Tensor, var_floor: float) -> torch.Tensor:
    """Concatenate the weighted mean and std of ``x`` over time (weights sum to 1)."""
    mean = torch.sum(weights * x, dim=-1)
    # weights * (x ** 2), WeSpeaker's order: (weights * x) * x rounds differently
    var = torch.sum(weights * (x ** 2), dim=-1) - mean ** 2
    return torch.cat([mean, torch.sqrt(var.clamp(min=var_floor))], dim=1)


class TAP(nn.Module):
    """Temporal average pooling: the mean over time."""

    def __init__(self, in_dim: int = 0, **kwargs):
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1).flatten(start_dim=1)

    def get_out_dim(self) -> int:
        self.out_dim = self.in_dim
        return self.out_dim


class TSDP(nn.Module):
    """Temporal standard-deviation pooling: the std over time only."""

    def __init__(self, in_dim: int = 0, **kwargs):
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _temporal_std(x).flatten(start_dim=1)

    def get_out_dim(self) -> int:
        self.out_dim = self.in_dim
        return self.out_dim


class TSTP(nn.Module):
    """Temporal statistics pooling (x-vector): mean and std over time, concatenated."""

    def __init__(self, in_dim: int = 0, **kwargs):
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1).flatten(start_dim=1)
        std = _temporal_std(x).flatten(start_dim=1)
        return torch.cat((mean, std), dim=1)

    def get_out_dim(self) -> int:
        self.out_dim = self.in_dim * 2
        return self.out_dim


class ASTP(nn.Module):
    """Attentive statistics pooling with channel- and context-dependent weights (ECAPA-TDNN).

    With ``global_context_att`` the attention also sees the utterance mean and
    std of every channel, which is the "GLOB" variant of ECAPA-TDNN.
    """

    def __init__(self, in_dim: int, bottleneck_dim: int = 128,
                 global_context_att: bool = False, **kwargs):
        super().__init__()
        self.in_dim = in_dim
        self.global_context_att = global_context_att
        attention_in = in_dim * 3 if global_context_att else in_dim
        # 1x1 convolutions act as per-frame linear layers without transposes.
        self.linear1 = nn.Conv1d(attention_in, bottleneck_dim, kernel_size=1)
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Contiguous, as WeSpeaker's conv outputs are: a transposed [B, T, D] view would
        # reduce over time in another order and round differently (by ~1e-7).
        x = _as_channels_by_time(x).contiguous()
        if self.global_context_att:
            mean = x.mean(dim=-1, keepdim=True).expand_as(x)
            std = torch.sqrt(torch.var(x, dim=-1, keepdim=True) + _VAR_EPS).expand_as(x)
            attention_in = torch.cat((x, mean, std), dim=1)
        else:
            attention_in = x
        # tanh rather than ReLU in the hidden layer: ReLU here trains poorly.
        scores = self.linear2(torch.tanh(self.linear1(attention_in)))
        return _weighted_stats(x, torch.softmax(scores, dim=2), _VAR_EPS)

    def get_out_dim(self) -> int:
        self.out_dim = 2 * self.in_dim
        return self.out_dim


class ASP(nn.Module):
    """Attentive statistics pooling of SimAM-ResNet (ReLU + BatchNorm attention).

    Give either ``in_planes`` and ``acoustic_dim`` (a ResNet whose last stage has
    ``8 * in_planes`` channels over ``acoustic_dim / 8`` frequency bins), or the
    flattened input size as ``input_dim`` (``in_dim`` is accepted as an alias so
    that ``pooling_func: ASP`` also works in models that pass ``in_dim``).
    """

    def __init__(self, in_planes: Optional[int] = None, acoustic_dim: Optional[int] = None,
                 input_dim: Optional[int] = None, hidden_dim: Optional[int] = None,
                 in_dim: Optional[int] = None, **kwargs):
        super().__init__()
        input_dim = input_dim if input_dim is not None else in_dim
        if input_dim is not None:
            self.feature_dim = input_dim
        elif in_planes is not None and acoustic_dim is not None:
            self.feature_dim = in_planes * 8 * int(acoustic_dim / 8)
        else:
            raise ValueError("ASP needs either in_planes and acoustic_dim, or input_dim / in_dim")
        self.out_dim = self.feature_dim * 2
        hidden_dim = hidden_dim or 128
        self.attention = nn.Sequential(
            nn.Conv1d(self.feature_dim, hidden_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden_dim),
            nn.Conv1d(hidden_dim, self.feature_dim, kernel_size=1),
            nn.Softmax(dim=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and x.shape[1] != self.feature_dim:
            x = x.transpose(1, 2)  # [B, T, D] from transformer front-ends
        x = _as_channels_by_time(x)
        return _weighted_stats(x, self.attention(x), 1e-5)

    def get_out_dim(self) -> int:
        return self.out_dim


class MHASTP(nn.Module):
    """Multi-head attentive statistics pooling (arXiv:1906.09890).

    The channels are split into ``head_num`` equal groups; each group gets its
    own attention network of ``layer_num`` 1x1 convolutions and its own
    weighted mean and std. ``d_s > 1`` makes the attention vector-valued
    (one weight per channel of the group) instead of one weight per frame.
    """

    def __init__(self, in_dim: int, layer_num: int = 2, head_num: int = 2, d_s: int = 1,
                 bottleneck_dim: int = 64, **kwargs):
        super().__init__()
        if in_dim % head_num != 0:
            raise ValueError(f"MHASTP: in_dim {in_dim} is not divisible by head_num {head_num}")
        self.in_dim = in_dim
        self.head_num = head_num
        head_dim = in_dim // head_num
        self.d_s = head_dim if d_s > 1 else 1
        widths = [head_dim] + [bottleneck_dim] * (layer_num - 1) + [self.d_s]
        heads = []
        for _ in range(head_num):
            head = nn.Sequential()
            for layer in range(layer_num):
                head.add_module(f"att_{layer}", nn.Conv1d(widths[layer], widths[layer + 1], 1, 1))
                if layer < layer_num - 1:
                    head.add_module(f"tanh{layer}", nn.Tanh())
            heads.append(head)
        self.heads_att_trans = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_channels_by_time(x)
        groups = torch.chunk(x, self.head_num, dim=1)
        stats = [_weighted_stats(group, F.softmax(head(group), dim=-1), _VAR_EPS)
                 for group, head in zip(groups, self.heads_att_trans)]
        return torch.cat(stats, dim=1)

    def get_out_dim(self) -> int:
        self.out_dim = 2 * self.in_dim
        return self.out_dim


class MQMHASTP(nn.Module):
    """Multi-query multi-head attentive statistics pooling (arXiv:2110.05042).

    ``query_num`` independent :class:`MHASTP` layers whose outputs are concatenated.
    """

    def __init__(self, in_dim: int, layer_num: int = 2, query_num: int = 2, head_num: int = 8,
                 d_s: int = 2, bottleneck_dim: int = 64, **kwargs):
        super().__init__()
        self.n_query = nn.ModuleList([
            MHASTP(in_dim, layer_num=layer_num, head_num=head_num, d_s=d_s,
                   bottleneck_dim=bottleneck_dim)
            for _ in range(query_num)
        ])
        self.query_num = query_num
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_channels_by_time(x)
        return torch.cat([query(x) for query in self.n_query], dim=-1)

    def get_out_dim(self) -> int:
        self.out_dim = self.in_dim * 2 * self.query_num
        return self.out_dim


class XI(nn.Module):
    """Xi-vector posterior pooling (Lee, Wang & Koshinaka, IEEE SPL 2021).

    Each frame is treated as a noisy observation of the utterance vector with a
    learned per-frame, per-channel precision; the output is the mean of the
    Gaussian posterior given a learned Gaussian prior. The prior acts as one
    extra pseudo-frame. With ``stddev`` the posterior-weighted std is appended.

    Input ``[B, in_dim, T]``, or ``[B, C, F, T]`` with ``C * F == in_dim``; output
    ``[B, get_out_dim()]``.
    """

    # Log-precision range kept away from overflow in exp().
    _LOGPREC_LIMIT = 15.0

    def __init__(self, in_dim: int, hidden_size: int = 256, stddev: bool = False,
                 train_mean: bool = True, train_prec: bool = True, **kwargs):
        super().__init__()
        self.input_dim = in_dim
        self.stddev = stddev
        self.output_dim = 2 * in_dim if stddev else in_dim
        self.prior_mean = nn.Parameter(torch.zeros(1, in_dim), requires_grad=train_mean)
        self.prior_logprec = nn.Parameter(torch.zeros(1, in_dim), requires_grad=train_prec)
        self.softmax = nn.Softmax(dim=2)
        self.lin1_relu_bn = nn.Sequential(
            nn.Conv1d(in_dim, hidden_size, kernel_size=1, stride=1, bias=True),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden_size),
        )
        self.lin2 = nn.Conv1d(hidden_size, in_dim, kernel_size=1, stride=1, bias=True)
        self.softplus2 = nn.Softplus(beta=1, threshold=20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = _as_channels_by_time(x)
        if flat.shape[1] != self.input_dim:
            raise ValueError(f"XI pooling expects [B, {self.input_dim}, T] or [B, C, F, T] with "
                             f"C*F = {self.input_dim}, got {tuple(x.shape)}")
        x = flat
        batch = x.shape[0]
        # The network predicts a std-like positive value; square it in the log domain.
        frame_logprec = 2.0 * torch.log(self.softplus2(self.lin2(self.lin1_relu_bn(x))))
        frame_logprec = frame_logprec.clamp(min=-self._LOGPREC_LIMIT, max=self._LOGPREC_LIMIT)
        logprec = torch.cat(
            (frame_logprec, self.prior_logprec.expand(batch, -1).unsqueeze(2)), dim=2)
        observations = torch.cat((x, self.prior_mean.expand(batch, -1).unsqueeze(2)), dim=2)
        weights = self.softmax(logprec)
        posterior_mean = torch.sum(observations * weights, dim=2)
        if not self.stddev:
            return posterior_mean
        second_moment = torch.sum(observations.pow(2) * weights, dim=2)
        sigma = torch.sqrt(torch.clamp(second_moment - posterior_mean ** 2, min=1.0e-12))
        return torch.cat((posterior_mean, sigma), dim=1)

    def get_out_dim(self) -> int:
        return self.output_dim

    def get_prior(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The learned prior mean and log-precision, each ``[1, in_dim]``.

        Nothing in this package calls it: it mirrors WeSpeaker's ``XI.get_prior``, so that
        code written against WeSpeaker's pooling layer runs on ours unchanged.
        """
        return self.prior_mean, self.prior_logprec


POOLING_LAYERS = {
    cls.__name__: cls for cls in (TAP, TSDP, TSTP, ASTP, ASP, MHASTP, MQMHASTP, XI)
}


def get_pooling(name: str, **kwargs) -> nn.Module:
    """Build the pooling layer called ``name`` (a WeSpeaker ``pooling_func``); a name not in
    :data:`POOLING_LAYERS` is a :class:`ModelArgError` for ``pooling_func``."""
    if name not in POOLING_LAYERS:
        raise ModelArgError("pooling_func", name, f"no pooling layer has that name; choose one "
                                                  f"of {', '.join(sorted(POOLING_LAYERS))}")
    return POOLING_LAYERS[name](**kwargs)


# Poolings whose output is a function of the first and second moments of their input
# over time only, so that they can be computed from statistics gathered piecewise.
MOMENT_POOLINGS = (TAP, TSDP, TSTP)


def time_moments(x: torch.Tensor) -> Tuple[int, torch.Tensor, torch.Tensor]:
    """``(frames, mean, M2)`` of a pooling input over time, per flattened channel, in float64.

    ``M2`` is the sum of squared deviations from the mean; two such triples combine
    exactly (Chan et al.'s parallel update), which :func:`pool_from_moments` consumes.
    """
    flat = _as_channels_by_time(x).double()
    mean = flat.mean(dim=-1)
    m2 = (flat - mean.unsqueeze(-1)).square_().sum(dim=-1)
    return int(flat.shape[-1]), mean, m2


def pool_from_moments(pool: nn.Module, frames: int, mean: torch.Tensor,
                      m2: torch.Tensor) -> torch.Tensor:
    """What a :data:`MOMENT_POOLINGS` layer gives for an input with these moments over time.

    Equals ``pool(x)`` up to float rounding (the moments are float64, the result
    float32): TAP the mean, TSDP the unbiased std, TSTP both, as in their ``forward``.
    """
    if not isinstance(pool, MOMENT_POOLINGS):
        raise TypeError(f"{type(pool).__name__} is not computed from moments over time")
    std = torch.sqrt(m2 / (frames - 1) + _VAR_EPS)
    if isinstance(pool, TAP):
        return mean.float()
    if isinstance(pool, TSDP):
        return std.float()
    return torch.cat((mean, std), dim=1).float()
