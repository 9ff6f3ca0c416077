"""What every exporter shares: the fbank model to export, and checking the export against it."""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
import torch.nn as nn

from wespeaker_py.config import ConfigError, ModelConfig
from wespeaker_py.errors import RunFailedError
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.frontend.tfmel import TFMelFeatures
from wespeaker_py.runtime import SpeakerEmbedder, load_embedder

# Front-ends with no weights of their own, which the exporters can rebuild or trace.
EXPORTABLE_FRONTENDS = ("fbank", "tfmel")
# Exporters that record one run (tracing) use this many frames for the example input.
EXAMPLE_FRAMES = 200
# the example input's shape, then (batch, frames) pairs that differ from it in both axes
CHECK_SHAPES: Tuple[Tuple[int, int], ...] = ((1, 200), (3, 123), (2, 301))


class ExportMismatchError(RunFailedError):
    """The exported model does not compute what the eager model computes."""


def load_exportable_embedder(config: ModelConfig, checkpoint: str) -> SpeakerEmbedder:
    """The trained model of ``config`` + ``checkpoint``; refuses an SSL front-end first."""
    frontend = config.dataset_args.frontend
    if frontend not in EXPORTABLE_FRONTENDS:
        raise ConfigError(f"config key 'dataset_args.frontend' is {frontend!r}: export needs "
                          f"a model on {' or '.join(EXPORTABLE_FRONTENDS)} features")
    return load_embedder(config, checkpoint)


def exportable_model(embedder: SpeakerEmbedder, source: str) -> Tuple[nn.Module, int]:
    """The eval-mode speaker model of an fbank or TFMel ``embedder`` and its input
    feature dimension."""
    if not isinstance(embedder.frontend, (FbankFeatures, TFMelFeatures)):
        raise ConfigError(f"{source}: only fbank and TFMel models export, this one uses "
                          f"{type(embedder.frontend).__name__}")
    return embedder.model.eval(), embedder.frontend.output_dim


def example_features(batch: int, frames: int, feat_dim: int, seed: int = 0) -> torch.Tensor:
    """Reproducible random ``[batch, frames, feat_dim]`` features."""
    return torch.randn(batch, frames, feat_dim, generator=torch.Generator().manual_seed(seed))


def check_against_eager(exported: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
                        feat_dim: int, shapes: Sequence[Tuple[int, int]] = CHECK_SHAPES,
                        tolerance: float = 1e-4) -> float:
    """Largest difference between ``exported`` and ``model`` on random features, relative
    to the output scale when that exceeds 1 (untrained models can output huge values).

    Raises :class:`ExportMismatchError` when it exceeds ``tolerance`` or a shape differs.
    """
    worst = 0.0
    with torch.no_grad():
        for index, (batch, frames) in enumerate(shapes):
            feats = example_features(batch, frames, feat_dim, seed=index + 1)
            difference = compare_with_eager(exported(feats), model(feats),
                                            f"input {tuple(feats.shape)}", tolerance)
            worst = max(worst, difference)
    return worst


def compare_with_eager(got: torch.Tensor, expected: torch.Tensor, what: str,
                       tolerance: float) -> float:
    """Largest difference of an exported output from the eager one, relative to the output
    scale when that exceeds 1 (untrained models can output huge values).

    Raises :class:`ExportMismatchError` naming ``what`` (the input) when the shapes differ
    or the difference exceeds ``tolerance``.
    """
    if got.shape != expected.shape:
        raise ExportMismatchError(f"{what}: exported output has shape {tuple(got.shape)}, "
                                  f"eager {tuple(expected.shape)}")
    scale = max(1.0, float(expected.abs().max()))
    difference = float((got - expected).abs().max()) / scale
    if not difference <= tolerance:
        raise ExportMismatchError(f"{what}: exported output differs from eager by "
                                  f"{difference:.3g} (> {tolerance})")
    return difference
