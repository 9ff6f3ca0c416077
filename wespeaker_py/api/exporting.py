"""ONNX export of a loaded torch :class:`~wespeaker_py.api.SpeakerModel`.

The model came from :func:`~wespeaker_py.runtime.builder.load_embedder`, as the
one ``python -m wespeaker_py.bin.export_onnx`` exports does, and the feature-input
graph is written by the same :func:`~wespeaker_py.export.onnx_export.export_onnx`.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch.nn as nn

from wespeaker_py.errors import WespeakerError
from wespeaker_py.export.checks import exportable_model
from wespeaker_py.export.onnx_export import export_onnx, require_onnx_packages
from wespeaker_py.export.waveform_onnx import export_waveform_onnx
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.frontend.tfmel import TFMelFeatures


def _export_parts(model) -> Tuple[Union[FbankFeatures, TFMelFeatures], nn.Module, int]:
    try:
        require_onnx_packages()
    except ImportError as error:
        raise WespeakerError(str(error)) from None
    backend = model.backend
    if backend.kind != "torch":
        raise WespeakerError(f"{model.source} is not a torch model; only those export")
    network, feat_dim = exportable_model(backend.embedder, model.source)  # ConfigError: exit 2
    return backend.embedder.frontend, network.cpu(), feat_dim


def export_waveform_graph(model, path: str) -> float:
    """Write ``model`` (its fbank or TFMel front-end inside) as a waveform-input ONNX graph; see
    :func:`~wespeaker_py.export.waveform_onnx.export_waveform_onnx`."""
    frontend, network, _ = _export_parts(model)
    min_samples = model.backend.min_samples
    info = {"model": model.name, "sample_rate": frontend.sample_rate,
            "embed_dim": model.embed_dim, "num_mel_bins": frontend.output_dim,
            "frame_length": frontend.frame_length, "frame_shift": frontend.frame_shift,
            "cmn": getattr(frontend, "cmn", False),
            "params_millions": round(sum(p.numel() for p in network.parameters()) / 1e6, 3)}
    return export_waveform_onnx(frontend, network, path, info, min_samples)


def export_feats_onnx(model, path: str) -> None:
    """Write the speaker model alone (features in), as ``bin.export_onnx`` does."""
    _, network, feat_dim = _export_parts(model)
    export_onnx(network, feat_dim, path, mean_vec=model.mean_vec)
