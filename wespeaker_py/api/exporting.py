"""ONNX export of a loaded torch :class:`~wespeaker_py.api.SpeakerModel`.

The model came from :func:`~wespeaker_py.runtime.builder.load_embedder`, as the
one ``python -m wespeaker_py.bin.export_onnx`` exports does, and the feature-input
graph is written by the same :func:`~wespeaker_py.export.onnx_export.export_onnx`.
An output path naming a folder (an existing one, or one ending in ``/``) gets
:data:`ONNX_NAME` inside it. The waveform graph carries the model's identity
(:mod:`wespeaker_py.runtime.identity`), so galleries and calibrations made with the
torch model work with the graph too, and it takes the model's files along: the mean
vector, calibration, window LDAs and band fills, written beside the graph under its
stem (``model.onnx``: ``model.band_fill_8000hz.npz``, ...), where
:func:`~wespeaker_py.load_model` finds them. The feature-input graph computes the
embeddings before mean subtraction, as the waveform graph does; its mean vector goes
beside it too (``model.mean_vec.npy``). Such files of an earlier export at the same
path go once the new graph is checked, before it replaces the earlier graph.
"""
from __future__ import annotations

import copy
import functools
import os
import shutil
from typing import Callable, Dict, List, Tuple, Union

import numpy as np
import torch.nn as nn

from wespeaker_py.api.calibration import CALIBRATION_NAME
from wespeaker_py.api.loading import MEAN_NAME
from wespeaker_py.diarization.options import NARROWBAND_WINDOW_LDA, WINDOW_LDA_NAME
from wespeaker_py.errors import WespeakerError
from wespeaker_py.export.checks import exportable_model
from wespeaker_py.export.onnx_export import export_onnx, require_onnx_packages
from wespeaker_py.export.waveform_onnx import export_waveform_onnx
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.frontend.band_fill import band_fill_files, band_fill_name
from wespeaker_py.frontend.tfmel import TFMelFeatures
from wespeaker_py.utils.file_utils import atomic_path, files_named_by_rate
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

ONNX_NAME = "model.onnx"


def onnx_output_path(path: str) -> str:
    """``path``, or ``path/model.onnx`` when ``path`` is a folder or ends with a separator
    (the folder is created then). Any other name must end in ``.onnx``: that is how
    :func:`~wespeaker_py.api.load_model` knows a graph from a checkpoint."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        return os.path.join(path, ONNX_NAME)
    if not path.endswith(".onnx"):
        raise WespeakerError(f"--onnx {path}: name the graph NAME.onnx (load_model takes a "
                             f"file of another name for a checkpoint), or give a folder "
                             f"(ending in '/') to write {ONNX_NAME} in")
    return path


def _export_parts(model) -> Tuple[Union[FbankFeatures, TFMelFeatures], nn.Module, int]:
    """CPU copies of the model's front-end and network (the loaded model stays where it
    is, on a GPU say), and the feature size."""
    try:
        require_onnx_packages()
    except ImportError as error:
        raise WespeakerError(str(error)) from None
    backend = model.backend
    if backend.kind != "torch":
        raise WespeakerError(f"{model.source} is not a torch model; only those export")
    network, feat_dim = exportable_model(backend.embedder, model.source)  # ConfigError: exit 2
    return (copy.deepcopy(backend.embedder.frontend).cpu().eval(),
            copy.deepcopy(network).cpu().eval(), feat_dim)


def export_waveform_graph(model, path: str) -> List[str]:
    """Write ``model`` (its fbank or TFMel front-end inside) as a waveform-input ONNX graph to
    :func:`onnx_output_path` of ``path`` (see
    :func:`~wespeaker_py.export.waveform_onnx.export_waveform_onnx`), with its
    :func:`companions` beside it; the paths written, the graph's first."""
    frontend, network, _ = _export_parts(model)
    path = onnx_output_path(path)
    beside = companions(model)   # gathered first: a band fill that does not fit stops here
    min_samples = model.backend.min_samples
    info = {"model": model.name, "sample_rate": frontend.sample_rate,
            "embed_dim": model.embed_dim, "num_mel_bins": frontend.output_dim,
            "frame_length": frontend.frame_length, "frame_shift": frontend.frame_shift,
            "cmn": getattr(frontend, "cmn", False), "identity": model.identity,
            "frontend": type(frontend).__name__,
            "params_millions": round(sum(p.numel() for p in network.parameters()) / 1e6, 3)}
    return _export_with_companions(path, beside, functools.partial(
        export_waveform_onnx, frontend, network, path, info, min_samples))


def export_feats_onnx(model, path: str) -> List[str]:
    """Write the speaker model alone (features in), as ``bin.export_onnx`` does, to
    :func:`onnx_output_path` of ``path``, with the model's mean vector beside it (not
    subtracted inside the graph, as the waveform graph's is not); the paths written, the
    graph's first."""
    _, network, feat_dim = _export_parts(model)
    path = onnx_output_path(path)
    return _export_with_companions(path, _mean_vector(model), functools.partial(
        export_onnx, network, feat_dim, path))


def _mean_vector(model) -> Dict[str, Callable[[str], None]]:
    """The model's mean vector as a companion (none when it has none)."""
    if model.mean_vec is None:
        return {}
    return {MEAN_NAME: functools.partial(np.save, arr=model.mean_vec)}


def companions(model) -> Dict[str, Callable[[str], None]]:
    """What goes beside a waveform graph of ``model``, by name, each with a function that
    writes it to a path: the mean vector, the calibration and window LDAs
    (:meth:`~wespeaker_py.api.SpeakerModel.companion_files`) and the band fills it uses
    (:meth:`~wespeaker_py.api.SpeakerModel.band_fills`: none for a front-end that takes
    none)."""
    items = _mean_vector(model)
    for name, source in model.companion_files().items():
        items[name] = functools.partial(shutil.copyfile, source)
    for rate, fill in model.band_fills().items():
        items[band_fill_name(rate)] = fill.save
    return items


def _companion_prefix(graph_path: str) -> str:
    """What the companions of ``graph_path`` start with: its path without ``.onnx``, and a
    dot."""
    return os.path.splitext(graph_path)[0] + "."


def _export_with_companions(path: str, items: Dict[str, Callable[[str], None]],
                            export: Callable[..., object]) -> List[str]:
    """Run ``export``, which writes a graph to ``path`` and takes ``before_replace``, then
    :func:`write_companions` ``items``; the paths written, the graph's first.

    Every companion of an earlier export at ``path`` is removed once the new graph passed
    its check and just before it replaces the earlier one, so that an export stopped
    half-way never leaves that export's files beside the new graph (which would take them
    as its own); a failed export leaves the earlier one whole."""
    prefix = _companion_prefix(path)

    def remove_earlier() -> None:
        earlier = [prefix + name for name in (MEAN_NAME, CALIBRATION_NAME, WINDOW_LDA_NAME)]
        earlier += files_named_by_rate(prefix, NARROWBAND_WINDOW_LDA)
        earlier += band_fill_files(prefix)
        for stale in sorted(set(earlier)):
            if os.path.isfile(stale):
                os.remove(stale)
                if stale[len(prefix):] not in items:
                    logger.warning("removed %s: an earlier export's, and this model has none",
                                   stale)

    export(before_replace=remove_earlier)
    return [path] + write_companions(items, path)


def write_companions(items: Dict[str, Callable[[str], None]], graph_path: str) -> List[str]:
    """Write ``items`` (:func:`companions`) beside ``graph_path`` under its stem, each
    atomically; the paths written."""
    prefix = _companion_prefix(graph_path)
    written = []
    for name, write in items.items():
        with atomic_path(prefix + name) as tmp_path:
            write(tmp_path)
        written.append(prefix + name)
    return written
