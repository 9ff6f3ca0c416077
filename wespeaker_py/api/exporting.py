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
:func:`~wespeaker_py.load_model` finds them.
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
    export_waveform_onnx(frontend, network, path, info, min_samples)
    return [path] + write_companions(beside, path)


def companions(model) -> Dict[str, Callable[[str], None]]:
    """What goes beside a waveform graph of ``model``, by name, each with a function that
    writes it to a path: the mean vector, the calibration and window LDAs
    (:meth:`~wespeaker_py.api.SpeakerModel.companion_files`) and the band fills it uses
    (:meth:`~wespeaker_py.api.SpeakerModel.band_fills`: none for a front-end that takes
    none)."""
    items: Dict[str, Callable[[str], None]] = {}
    if model.mean_vec is not None:
        items[MEAN_NAME] = functools.partial(np.save, arr=model.mean_vec)
    for name, source in model.companion_files().items():
        items[name] = functools.partial(shutil.copyfile, source)
    for rate, fill in model.band_fills().items():
        items[band_fill_name(rate)] = fill.save
    return items


def write_companions(items: Dict[str, Callable[[str], None]], graph_path: str) -> List[str]:
    """Write ``items`` (:func:`companions`) beside ``graph_path`` under its stem, each
    atomically; remove the companions of an earlier export there that ``items`` lacks (the
    graph would take them as its own). The paths written."""
    prefix = os.path.splitext(graph_path)[0] + "."
    written = []
    for name, write in items.items():
        with atomic_path(prefix + name) as tmp_path:
            write(tmp_path)
        written.append(prefix + name)
    earlier = [prefix + name for name in (MEAN_NAME, CALIBRATION_NAME, WINDOW_LDA_NAME)]
    earlier += files_named_by_rate(prefix, NARROWBAND_WINDOW_LDA)
    earlier += band_fill_files(prefix)
    for stale in sorted(set(earlier) - set(written)):
        if os.path.isfile(stale):
            os.remove(stale)
            logger.warning("removed %s: an earlier export's, and this model has none", stale)
    return written


def export_feats_onnx(model, path: str) -> None:
    """Write the speaker model alone (features in), as ``bin.export_onnx`` does, to
    :func:`onnx_output_path` of ``path``."""
    _, network, feat_dim = _export_parts(model)
    export_onnx(network, feat_dim, onnx_output_path(path), mean_vec=model.mean_vec)
