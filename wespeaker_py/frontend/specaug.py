"""Per-utterance mean (and variance) normalisation and SpecAugment on batched features
``[B, T, F]``."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from wespeaker_py.config import DatasetArgs

_VAR_EPS = 1e-7   # WeSpeaker's apply_cmvn


def apply_cmn(feats: torch.Tensor) -> torch.Tensor:
    """Subtract each utterance's mean over time from ``feats`` (``[B, T, F]``)."""
    if feats.dim() != 3:
        raise ValueError(f"feats must be [batch, frames, bins], got shape {tuple(feats.shape)}")
    return feats - feats.mean(dim=1, keepdim=True)


def apply_cmvn(feats: torch.Tensor, norm_mean: bool = True, norm_var: bool = False
               ) -> torch.Tensor:
    """CMVN over time of ``feats`` (``[B, T, F]``), as WeSpeaker's ``apply_cmvn``: each
    utterance's mean subtracted (``norm_mean``), then divided by its standard deviation
    (``norm_var``, unbiased, plus 1e-7 under the root)."""
    if norm_mean:
        feats = apply_cmn(feats)
    if norm_var:
        feats = feats / torch.sqrt(feats.var(dim=1, keepdim=True) + _VAR_EPS)
    return feats


def cmvn_flags(config: DatasetArgs) -> Tuple[bool, bool]:
    """``(norm_mean, norm_var)`` of a config's CMVN: both False when ``cmvn`` is off."""
    return (config.cmvn and config.cmvn_args.norm_mean,
            config.cmvn and config.cmvn_args.norm_var)


def _band_mask(batch: int, size: int, num_masks: int, max_width: int,
               generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """``[batch, size]`` boolean union of ``num_masks`` random bands per row.

    Each band starts uniformly in ``[0, size - 1]`` and is ``[1, max_width]`` wide,
    cut at the end of the axis, as in WeSpeaker's spec_aug.
    """
    positions = torch.arange(size, device=device)
    mask = torch.zeros(batch, size, dtype=torch.bool, device=device)
    for _ in range(num_masks):
        start = torch.randint(0, size, (batch, 1), generator=generator, device=device)
        width = torch.randint(1, max_width + 1, (batch, 1), generator=generator, device=device)
        mask |= (positions >= start) & (positions < start + width)
    return mask


def spec_augment(feats: torch.Tensor, num_t_mask: int = 1, num_f_mask: int = 1,
                 max_t: int = 10, max_f: int = 8, prob: float = 0.6,
                 batch_mask: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """SpecAugment with WeSpeaker's parameters.

    Each utterance of ``feats`` (``[B, T, F]``) is augmented with probability
    ``prob``: ``num_t_mask`` time bands of ``1..max_t`` frames and ``num_f_mask``
    frequency bands of ``1..max_f`` bins are set to zero. By default every
    utterance draws its own masks; with ``batch_mask`` one draw (whether, and
    which bands) applies to the whole batch, as WeSpeaker's executor does.
    Returns a new tensor; ``feats`` is left unchanged. ``generator`` must live
    on ``feats``' device.
    """
    if feats.dim() != 3:
        raise ValueError(f"feats must be [batch, frames, bins], got shape {tuple(feats.shape)}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    for name, count, width in (("max_t", num_t_mask, max_t), ("max_f", num_f_mask, max_f)):
        if count < 0:
            raise ValueError(f"mask counts must be non-negative, got {count}")
        if count > 0 and width < 1:
            raise ValueError(f"{name} must be at least 1 when masks are requested, got {width}")
    batch, frames, bins = feats.shape
    if batch == 0 or frames == 0 or bins == 0:
        return feats.clone()

    device = feats.device
    draws = 1 if batch_mask else batch  # broadcast over the batch when shared
    chosen = torch.rand(draws, generator=generator, device=device) < prob
    time_mask = _band_mask(draws, frames, num_t_mask, max_t, generator, device)
    freq_mask = _band_mask(draws, bins, num_f_mask, max_f, generator, device)
    mask = (time_mask[:, :, None] | freq_mask[:, None, :]) & chosen[:, None, None]
    return feats.masked_fill(mask, 0.0)
