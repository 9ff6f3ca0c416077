"""ONNX export of a loaded torch :class:`~wespeaker_py.api.SpeakerModel`."""
from __future__ import annotations

from wespeaker_py.errors import WespeakerError
from wespeaker_py.export.onnx_export import export_onnx, require_onnx_packages
from wespeaker_py.export.waveform_onnx import export_waveform_onnx
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.frontend.tfmel import TFMelFeatures
from wespeaker_py.frontend.framing import samples_for_frames


def _export_parts(model):
    try:
        require_onnx_packages()
    except ImportError as error:
        raise WespeakerError(str(error)) from None
    backend = model.backend
    if backend.kind != "torch":
        raise WespeakerError(f"{model.source} is not a torch model; only those export")
    frontend = backend.embedder.frontend
    if not isinstance(frontend, (FbankFeatures, TFMelFeatures)):
        raise WespeakerError(f"{model.source}: only fbank and TFMel models export to ONNX, "
                             f"this one uses {type(frontend).__name__}")
    return frontend, backend.embedder.model.cpu().eval()


def export_waveform_graph(model, path: str) -> float:
    """Write ``model`` (fbank front-end inside) as a waveform-input ONNX graph; see
    :func:`~wespeaker_py.export.waveform_onnx.export_waveform_onnx`."""
    frontend, network = _export_parts(model)
    min_samples = samples_for_frames(model.backend.min_frames, frontend.sample_rate,
                                     frontend.frame_length, frontend.frame_shift)
    info = {"model": model.name, "sample_rate": frontend.sample_rate,
            "embed_dim": model.embed_dim, "num_mel_bins": frontend.output_dim,
            "frame_length": frontend.frame_length, "frame_shift": frontend.frame_shift,
            "cmn": getattr(frontend, "cmn", False),
            "params_millions": round(sum(p.numel() for p in network.parameters()) / 1e6, 3)}
    return export_waveform_onnx(frontend, network, path, info, min_samples)


def export_feats_onnx(model, path: str) -> None:
    """Write the speaker model alone (fbank features in), as ``bin.export_onnx`` does."""
    frontend, network = _export_parts(model)
    export_onnx(network, frontend.output_dim, path, mean_vec=model.mean_vec)
