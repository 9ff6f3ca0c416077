"""Long inputs in bounded memory: the model run over overlapping chunks of the features.

A model's activations grow with the input's length (a 1-hour file took 11.6 GB
whole), so an input longer than :attr:`LongAudioPolicy.threshold_seconds`
(:data:`LONG_AUDIO_SECONDS`, 5 minutes, by default) goes through the model
in chunks of about :data:`CHUNK_SECONDS`; shorter inputs take the
whole-utterance path unchanged (bit-identical). Two ways, by model:

* **exact** — a :class:`~wespeaker_py.models.protocol.FrameLocalModel` (the
  ResNet family, Res2Net, ERes2Net, Gemini DF-ResNet, XVEC) with a
  statistics pooling (TAP / TSDP / TSTP): each chunk runs through the body with a
  margin of at least the body's receptive field on both sides, the margin's
  output frames are dropped, and the first and second moments of the rest are
  combined (float64) before pooling. The embedding equals the whole-utterance
  one up to float rounding.
* **approximate** — every other model (ECAPA-TDNN's squeeze-excitation and
  CAM++'s context masks average over the whole input; attentive poolings
  weigh frames against each other): the features are cut into near-equal
  chunks, each is embedded whole, and the embedding is the duration-weighted
  mean of the chunk embeddings. bench/results_long_audio.md gives its cosine
  to the whole-utterance embedding.

The features themselves come in chunks from the fbank front-end
(:meth:`~wespeaker_py.frontend.features.FbankFeatures.features_in_chunks`).

A waveform ONNX graph (:class:`~wespeaker_py.api.backends.OnnxBackend`) holds the
front-end and the model in one, so it takes the approximate path for every model: the
waveform is cut into the samples of the same :func:`near_equal_chunks` of its frames,
each runs through the graph, and :func:`mean_of_chunks` combines them. The one
difference from the torch approximate path is that each chunk's features are
mean-normalised over the chunk, not over the whole input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn

from wespeaker_py.models.pooling import MOMENT_POOLINGS, pool_from_moments, time_moments
from wespeaker_py.models.protocol import is_frame_local

# Inputs longer than this go through the model in chunks. Whole, peak memory grows
# with the input: an hour took 11.6 GB with ResNet34 (~3 MB per second of audio) and
# 1.1 GB with ECAPA c512 (bench/results_long_audio.md), so 5 minutes keeps ResNet34
# near 1 GB; no recipe's evaluation utterance is that long, so their embeddings
# are unchanged.
LONG_AUDIO_SECONDS = 300.0
# Length of one chunk of the long path (before margins).
CHUNK_SECONDS = 60.0
# Input frames of the probe that measures a frame-local body's receptive field.
_PROBE_FRAMES = 1024


@dataclass(frozen=True)
class LongAudioPolicy:
    """When an input counts as long, and the length of its chunks (both in seconds)."""

    threshold_seconds: float = LONG_AUDIO_SECONDS
    chunk_seconds: float = CHUNK_SECONDS

    def __post_init__(self):
        if not (self.chunk_seconds > 0 and self.threshold_seconds > 0):
            raise ValueError(f"long-audio threshold and chunk length must be positive, got "
                             f"{self.threshold_seconds} and {self.chunk_seconds}")


@dataclass(frozen=True)
class BodyGeometry:
    """A frame-local body's time stride and the margin (input frames) a chunk needs."""

    stride: int
    margin: int


def chunked_exactly(model: nn.Module) -> bool:
    """Whether ``model`` takes the exact chunked path (frame-local body, moment pooling)."""
    return is_frame_local(model) and isinstance(model.pool, MOMENT_POOLINGS)


@torch.inference_mode()
def body_geometry(model: nn.Module, feat_dim: int, device: torch.device) -> BodyGeometry:
    """Stride and margin of ``model.pooling_input``, measured on one probe input.

    Every convolution and pooling module that runs adds ``(kernel - 1) x dilation``
    times its input's stride to the receptive field; parallel branches are all
    added, which can only over-estimate it (a wider margin, still exact).
    """
    layers = (nn.Conv1d, nn.Conv2d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
    extent = [1.0]

    def widen(module: nn.Module, inputs: Tuple[torch.Tensor, ...], _output) -> None:
        kernel, dilation = _last(module.kernel_size), _last(getattr(module, "dilation", 1))
        extent[0] += (kernel - 1) * dilation * _PROBE_FRAMES / inputs[0].shape[-1]

    hooks = [m.register_forward_hook(widen) for m in model.modules() if isinstance(m, layers)]
    try:
        out_frames = model.pooling_input(
            torch.zeros(1, _PROBE_FRAMES, feat_dim, device=device)).shape[-1]
    finally:
        for hook in hooks:
            hook.remove()
    stride = max(1, round(_PROBE_FRAMES / out_frames))
    return BodyGeometry(stride, stride * math.ceil(extent[0] / stride))


def _last(value) -> int:
    return int(value[-1] if isinstance(value, (tuple, list)) else value)


def chunk_spans(frames: int, chunk: int, geometry: BodyGeometry
                ) -> List[Tuple[int, int, int, int]]:
    """``(start, stop, keep_start, keep_stop)`` of each chunk of ``frames`` input frames.

    The chunk ``[start, stop)`` is a core of ``chunk`` frames (rounded to the stride)
    widened by the margin on each side; ``[keep_start, keep_stop)`` are its output
    frames that belong to the core (``keep_stop`` None: to the end). Starts are
    multiples of the stride, so chunk output ``i`` is whole-input output
    ``start / stride + i``.
    """
    stride, margin = geometry.stride, geometry.margin
    core = max(stride, chunk // stride * stride)
    spans = []
    for core_start in range(0, frames, core):
        core_stop = core_start + core
        start = max(0, core_start - margin)
        last = core_stop + margin >= frames
        stop = frames if last else core_stop + margin
        spans.append((start, stop, (core_start - start) // stride,
                      None if last else (core_stop - start) // stride))
        if last:
            break
    return spans


def _embed_exactly(model: nn.Module, feats: torch.Tensor, chunk: int,
                   geometry: BodyGeometry) -> torch.Tensor:
    """``[1, E]``: moments of the frame-level outputs gathered chunk by chunk, then pooled."""
    count, mean, m2 = 0, None, None
    for start, stop, keep_start, keep_stop in chunk_spans(feats.shape[1], chunk, geometry):
        part = model.pooling_input(feats[:, start:stop])[..., keep_start:keep_stop]
        n, part_mean, part_m2 = time_moments(part)
        if mean is None:
            count, mean, m2 = n, part_mean, part_m2
            continue
        total = count + n
        delta = part_mean - mean
        mean = mean + delta * (n / total)
        m2 = m2 + part_m2 + delta.square() * (count * n / total)
        count = total
    return model.embedding_of_pooled(pool_from_moments(model.pool, count, mean, m2))


def near_equal_chunks(frames: int, chunk: int) -> List[Tuple[int, int]]:
    """``(start, stop)`` of the ``ceil(frames / chunk)`` near-equal chunks that cover
    ``frames`` frames in order (each at most ``chunk`` frames long)."""
    pieces = math.ceil(frames / chunk)
    bounds = [round(i * frames / pieces) for i in range(pieces + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def mean_of_chunks(frames: int, chunk: int,
                   embed: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """``[1, E]`` float32: the duration-weighted mean (summed in float64) of
    ``embed(start, stop)``, the ``[1, E]`` embedding of frames ``[start, stop)``, over the
    :func:`near_equal_chunks` of ``frames`` frames."""
    total: Optional[torch.Tensor] = None
    for start, stop in near_equal_chunks(frames, chunk):
        weighted = embed(start, stop).double() * ((stop - start) / frames)
        total = weighted if total is None else total + weighted
    return total.float()


def _embed_mean_of_chunks(model: nn.Module, feats: torch.Tensor, chunk: int) -> torch.Tensor:
    """``[1, E]``: :func:`mean_of_chunks` of the model's embeddings of chunks of ``feats``."""
    return mean_of_chunks(feats.shape[1], chunk, lambda start, stop: model(feats[:, start:stop]))


@torch.inference_mode()
def embed_long(model: nn.Module, feats: torch.Tensor, chunk_frames: int,
               geometry: Optional[BodyGeometry] = None) -> torch.Tensor:
    """Embeddings ``[B, E]`` of long features ``[B, frames, dim]``, one input at a time.

    ``geometry`` (from :func:`body_geometry`) selects the exact path, which needs
    :func:`chunked_exactly`; without it, the mean of chunk embeddings.
    """
    rows = []
    for row in feats.split(1):
        if geometry is not None:
            rows.append(_embed_exactly(model, row, chunk_frames, geometry))
        else:
            rows.append(_embed_mean_of_chunks(model, row, chunk_frames))
    return torch.cat(rows)
