"""ONNX export of a whole embedder: waveform ``wavs`` [B, samples] -> embedding ``embs`` [B, E].

The graph holds the front-end (Kaldi fbank + CMN, or TFMel) as well as the speaker model,
so a runtime needs no feature code: it feeds float32 audio in [-1, 1] at the
model's sample rate (as soundfile reads it) and gets embeddings. Batch and
length axes are dynamic; all waveforms of one batch have the same length.

Every linear step of Kaldi's fbank (framing, DC removal, pre-emphasis, window,
DFT) folds into one strided convolution whose kernels are the real and
imaginary DFT rows of that combined map, computed in float64; the power
spectrum, mel matrix, log floor and CMN follow. The written file is checked
against the eager path (:func:`~wespeaker_py.frontend.fbank.fbank` + CMN +
model) with onnxruntime on three lengths before it is moved into place, by the
rule of :class:`~wespeaker_py.export.checks.EagerReference` (a float64 copy of
front-end and model measures the eager path's own rounding).

A graph with the fbank front-end also takes an optional second input ``band_fill``
([mel + 1, mel], applied to the log-mel energies before CMN: ``feats @ m[:-1] + m[-1]``,
see :meth:`~wespeaker_py.frontend.band_fill.BandFill.affine`). It is an initializer
holding the identity, so a runtime that feeds only ``wavs`` gets the plain model, and
one that has a band fill for narrow-band audio feeds its matrix.

The graph carries metadata (:mod:`~wespeaker_py.export.metadata`: kind
``waveform_embedding``, model name and identity, sample rate, fbank settings, embedding
size, shortest input) that :func:`wespeaker_py.load_model` reads back.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from wespeaker_py.audio import INT16_SCALE
from wespeaker_py.export.checks import EagerReference, embedding_size, quiet_exporter
from wespeaker_py.export.metadata import (INFO_KEY, WAVEFORM_KIND, add_onnx_metadata,
                                          read_onnx_info)
from wespeaker_py.export.onnx_export import DEFAULT_OPSET, require_onnx_packages
from wespeaker_py.frontend.band_fill import (BandFill, BandFillError, identity_affine,
                                             split_bins)
from wespeaker_py.frontend.fbank import (LOG_FLOOR, PREEMPHASIS, mel_matrix, padded_fft_size,
                                         window_function)
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.frontend.framing import frame_params
from wespeaker_py.frontend.specaug import apply_cmn
from wespeaker_py.utils.atomic_files import atomic_path
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.onnx_session import open_onnx_session
from wespeaker_py.utils.values import is_whole_number

logger = get_logger(__name__)

INPUT_NAME = "wavs"
BAND_FILL_INPUT = "band_fill"
OUTPUT_NAME = "embs"
# lengths (seconds) of the random waveforms the export is checked on
CHECK_SECONDS = (1.0, 2.37, 4.1)
# the counts of a waveform graph's metadata that its runtime cannot do without
REQUIRED_COUNTS = ("sample_rate", "embed_dim", "min_samples")


def _frame_transform(window_length: int) -> torch.Tensor:
    """``[W, W]`` float64 matrix ``L`` with ``frame @ L`` = hamming * preemph(frame - mean)."""
    eye = torch.eye(window_length, dtype=torch.float64)
    centred = eye - 1.0 / window_length            # rows: basis frames minus their mean
    emphasised = centred.clone()
    emphasised[:, 1:] -= PREEMPHASIS * centred[:, :-1]
    emphasised[:, 0] *= 1.0 - PREEMPHASIS
    return emphasised * window_function("hamming", window_length)[None, :]


class ConvFbank(nn.Module):
    """Kaldi fbank (no dither, hamming window) + optional CMN as export-friendly operations."""

    def __init__(self, features: FbankFeatures):
        super().__init__()
        if features.spec_aug and features.training:
            raise ValueError("export the front-end in eval mode")
        sample_rate = features.sample_rate
        window_length, shift = frame_params(sample_rate, features.frame_length,
                                            features.frame_shift)
        fft_size = padded_fft_size(window_length)
        bins = fft_size // 2
        transform = _frame_transform(window_length)
        angles = 2.0 * math.pi * torch.outer(torch.arange(window_length, dtype=torch.float64),
                                             torch.arange(bins, dtype=torch.float64)) / fft_size
        real = transform @ torch.cos(angles)          # [W, bins]
        imag = transform @ torch.sin(angles)
        kernels = torch.cat([real, imag], dim=1).T.unsqueeze(1)   # [2 * bins, 1, W]
        self.register_buffer("kernels", kernels.float())
        self.register_buffer("mel", mel_matrix(sample_rate, fft_size,
                                               features.num_mel_bins).float())
        self.shift = shift
        self.bins = bins
        # a positive index: the TorchScript exporter shares the constant -1 among nodes and
        # can rewrite it for one of them (CAM++'s x.shape[-1] did), breaking the others
        self.num_mel_bins = int(features.num_mel_bins)
        self.cmn = features.cmn

    def forward(self, wavs: torch.Tensor,
                band_fill: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, samples]`` int16-scale waveforms -> ``[B, frames, mel]`` features;
        ``band_fill``: a ``[mel + 1, mel]`` affine map of the log-mel energies (before CMN)."""
        spectrum = nn.functional.conv1d(wavs.unsqueeze(1), self.kernels, stride=self.shift)
        real, imag = spectrum[:, :self.bins], spectrum[:, self.bins:]
        power = (real * real + imag * imag).transpose(1, 2)      # [B, frames, bins]
        feats = torch.log(torch.clamp(torch.matmul(power, self.mel), min=LOG_FLOOR))
        if band_fill is not None:
            rows = self.num_mel_bins
            feats = torch.matmul(feats, band_fill[:rows]) + band_fill[rows]
        if self.cmn:
            feats = apply_cmn(feats)
        return feats


class WaveformEmbedder(nn.Module):
    """[-1, 1] waveforms -> embeddings: scale to int16, front-end, speaker model.

    Fbank runs as :class:`ConvFbank` (and takes a band fill); the TFMel front-end is
    convolutions already and goes in as it is.
    """

    def __init__(self, features: nn.Module, model: nn.Module):
        super().__init__()
        self.takes_band_fill = isinstance(features, FbankFeatures)
        self.frontend = ConvFbank(features) if self.takes_band_fill else features
        self.model = model

    def forward(self, wavs: torch.Tensor,
                band_fill: Optional[torch.Tensor] = None) -> torch.Tensor:
        if band_fill is None:
            return self.model(self.frontend(wavs * INT16_SCALE))
        return self.model(self.frontend(wavs * INT16_SCALE, band_fill))


class EagerPath(nn.Module):
    """What the graph is checked against: the eager front-end (its float64 copy runs the
    fbank in float64 too) and speaker model on [-1, 1] waveforms."""

    def __init__(self, features: nn.Module, model: nn.Module):
        super().__init__()
        self.features = features
        self.model = model

    def forward(self, wavs: torch.Tensor, band_fill: Optional[BandFill] = None) -> torch.Tensor:
        if band_fill is None:
            return self.model(self.features(wavs * INT16_SCALE))
        return self.model(self.features(wavs * INT16_SCALE, band_fill=band_fill))


def _check_fill(features: FbankFeatures) -> Optional[BandFill]:
    """A band fill for audio heard at half the model's rate, with made-up weights: what
    the graph's ``band_fill`` input is checked with (None: the mel bins cannot be split
    so, as with very few of them)."""
    try:
        kept, filled = split_bins(features.sample_rate, features.num_mel_bins,
                                  features.frame_length, features.sample_rate // 2)
    except BandFillError:
        return None
    weights = np.random.default_rng(0).normal(0.0, 0.1, (kept.size + 1, filled.size))
    return BandFill(features.sample_rate // 2, features.sample_rate, features.num_mel_bins,
                    kept, filled, weights)


def _check(session, features: FbankFeatures, model: nn.Module, min_samples: int,
           tolerance: float, takes_band_fill: bool) -> float:
    """Compare the graph with the eager path on :data:`CHECK_SECONDS`' lengths (the last
    one also through a band fill, when the graph takes one), as
    :class:`~wespeaker_py.export.checks.EagerReference` does; the largest difference."""
    reference = EagerReference(EagerPath(features, model))
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    fill = _check_fill(features) if takes_band_fill else None
    for index, seconds in enumerate(CHECK_SECONDS):
        samples = max(min_samples, int(seconds * features.sample_rate))
        batch = 1 + index % 2
        # a noisy chirp-like signal: energy in every mel band, as speech has
        time = torch.arange(samples, dtype=torch.float64) / features.sample_rate
        tone = 0.3 * torch.sin(2 * math.pi * (200 + 300 * time) * time)
        wavs = (tone + 0.05 * torch.randn(batch, samples, generator=generator,
                                          dtype=torch.float64)).float()
        checks = [(None, {INPUT_NAME: wavs.numpy()})]
        if fill is not None and index == len(CHECK_SECONDS) - 1:
            checks.append((fill, {INPUT_NAME: wavs.numpy(), BAND_FILL_INPUT: fill.affine()}))
        for band_fill, feed in checks:
            got = torch.from_numpy(session.run([OUTPUT_NAME], feed)[0])
            what = f"{batch} x {samples} samples" + (", band fill" if band_fill else "")
            worst = max(worst, reference.compare(got, (wavs,), what, tolerance,
                                                 band_fill=band_fill))
    return worst


def export_waveform_onnx(features: FbankFeatures, model: nn.Module, output_model: str,
                         info: Dict[str, Any], min_samples: int,
                         opset_version: int = DEFAULT_OPSET, tolerance: float = 1e-3,
                         before_replace: Optional[Callable[[], None]] = None) -> float:
    """Write the waveform-to-embedding graph of ``features`` + ``model`` to ``output_model``.

    ``info`` (:func:`~wespeaker_py.export.metadata.model_info`) is stored as metadata
    together with ``embed_dim``, ``mean_subtracted`` (false: a waveform graph leaves the
    mean vector to its runtime) and ``min_samples``, the shortest input that gives an
    embedding. The file appears only after onnxruntime's output matched the eager path
    on three lengths within ``tolerance`` (relative to the output scale when that
    exceeds 1) or, past it, within
    :data:`~wespeaker_py.export.checks.EAGER_ERROR_FACTOR` times the eager path's own
    float32 error against float64; ``before_replace`` runs then, just before it takes
    the place of ``output_model``. Returns the largest difference seen.
    """
    require_onnx_packages()
    onnx = importlib.import_module("onnx")
    features = features.eval()
    model = model.eval()
    wrapped = WaveformEmbedder(features, model).eval()
    example = torch.zeros(1, max(min_samples, features.sample_rate))
    example[0].normal_(generator=torch.Generator().manual_seed(1)).mul_(0.1)
    inputs, names = (example,), [INPUT_NAME]
    if wrapped.takes_band_fill:
        no_fill = identity_affine(features.num_mel_bins)
        inputs, names = (example, torch.from_numpy(no_fill)), [INPUT_NAME, BAND_FILL_INPUT]
    with atomic_path(output_model) as tmp_path:
        with torch.no_grad(), quiet_exporter():
            torch.onnx.export(wrapped, inputs, tmp_path, dynamo=False,
                              opset_version=opset_version, do_constant_folding=True,
                              input_names=names, output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "B", 1: "samples"},
                                            OUTPUT_NAME: {0: "B"}})
        graph = onnx.load(tmp_path)
        if wrapped.takes_band_fill:
            # an input with an initializer of its name is optional: the identity by default
            graph.graph.initializer.append(
                importlib.import_module("onnx.numpy_helper").from_array(no_fill, BAND_FILL_INPUT))
        add_onnx_metadata(graph, WAVEFORM_KIND, dict(
            info, embed_dim=embedding_size(model, features.output_dim),
            mean_subtracted=False, min_samples=int(min_samples)))
        onnx.save(graph, tmp_path)
        session = open_onnx_session(tmp_path)
        worst = _check(session, features, model, min_samples, tolerance,
                       wrapped.takes_band_fill)
        if before_replace is not None:
            before_replace()
    logger.info("wrote %s (largest relative difference from eager %.2g)", output_model, worst)
    return worst


def graph_takes_band_fill(session) -> bool:
    """Whether a waveform graph has the optional ``band_fill`` input (graphs exported
    before it was added have not)."""
    return any(node.name == BAND_FILL_INPUT for node in session.get_overridable_initializers())


def read_waveform_onnx_info(session, path: str) -> Dict[str, Any]:
    """The metadata of a graph written by :func:`export_waveform_onnx`.

    Raises ValueError naming ``path`` and the kind its metadata records for any other
    ONNX graph (e.g. one that takes fbank features), and naming ``path`` and the key when
    one of :data:`REQUIRED_COUNTS` is missing or not a whole number >= 1.
    """
    kind, info = read_onnx_info(session.get_modelmeta().custom_metadata_map, path)
    inputs = [node.name for node in session.get_inputs()]
    if kind != WAVEFORM_KIND or inputs != [INPUT_NAME]:
        recorded = "no wespeaker_py kind recorded" if kind is None else f"a {kind} graph"
        raise ValueError(f"{path} is an ONNX model of another kind ({recorded}, inputs "
                         f"{inputs}); load_model takes the waveform graph of "
                         f"'wespeaker-py export --onnx --with_frontend'")
    for key in REQUIRED_COUNTS:
        if key not in info:
            problem = f"has no {key!r}"
        elif not is_whole_number(info[key]) or info[key] < 1:
            problem = f"records {key}={info[key]!r}, not a whole number >= 1"
        else:
            continue
        raise ValueError(f"{path}: the ONNX metadata {INFO_KEY!r} of this waveform graph "
                         f"{problem}; export the model again with 'wespeaker-py export "
                         f"--onnx --with_frontend'")
    return info


def as_onnx_batch(wavs: np.ndarray) -> np.ndarray:
    """``[B, samples]`` int16-scale waveforms as the graph's [-1, 1] float32 input."""
    return np.asarray(wavs, dtype=np.float32) / np.float32(INT16_SCALE)
