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
beside it too (``model.mean_vec.npy``). Both graphs record the model's name, identity,
front-end settings and embedding size in their metadata
(:mod:`~wespeaker_py.export.metadata`). The files are written under temporary names
before the graph is checked and take their places just before the graph replaces an
earlier one; an earlier export's files there that this export does not write go then.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
from typing import Callable, Dict, Iterator, List, Tuple, Union

import torch.nn as nn

from wespeaker_py.api.companion_files import MEAN_NAME, companion_prefix, companions_at
from wespeaker_py.errors import WespeakerError
from wespeaker_py.export.checks import exportable_model
from wespeaker_py.export.metadata import model_info
from wespeaker_py.export.onnx_export import export_onnx, require_onnx_packages
from wespeaker_py.export.waveform_onnx import export_waveform_onnx
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.frontend.band_fill import band_fill_name
from wespeaker_py.frontend.tfmel import TFMelFeatures
from wespeaker_py.io.layout import ONNX_NAME
from wespeaker_py.scoring.embeddings import save_mean_vector
from wespeaker_py.utils.atomic_files import atomic_path
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)


@contextlib.contextmanager
def _graph_file(path: str) -> Iterator[str]:
    """:func:`onnx_target` of ``path``, its folder created when ``path`` names one; a folder
    created here is removed again when the export fails and leaves it empty."""
    target = onnx_target(path)
    folder = os.path.dirname(target) if target != path else None
    created = folder is not None and not os.path.isdir(folder)
    if created:
        os.makedirs(folder)
    try:
        yield target
    except BaseException:
        if created and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
        raise


def onnx_target(path: str) -> str:
    """The graph file ``--onnx path`` writes: ``path``, or ``path/model.onnx`` when ``path``
    is a folder or ends with a separator. Any other name must end in ``.onnx``: that is how
    :func:`~wespeaker_py.api.load_model` knows a graph from a checkpoint."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        return os.path.join(path, ONNX_NAME)
    if not path.endswith(".onnx"):
        raise WespeakerError(f"--onnx {path}: name the graph NAME.onnx (load_model takes a "
                             f"file of another name for a checkpoint), or give a folder "
                             f"(ending in '/') to write {ONNX_NAME} in")
    return path


def _export_parts(model) -> Tuple[Union[FbankFeatures, TFMelFeatures], nn.Module, int]:
    """CPU copies of the model's front-end and network (the loaded model stays where it
    is, on a GPU say), and the feature size."""
    require_onnx_packages()
    backend = model.backend
    if backend.kind != "torch":
        raise WespeakerError(f"{model.source} is not a torch model; only those export")
    network, feat_dim = exportable_model(backend.embedder, model.source)  # ConfigError: exit 2
    return (copy.deepcopy(backend.embedder.frontend).cpu().eval(),
            copy.deepcopy(network).cpu().eval(), feat_dim)


def export_waveform_graph(model, path: str) -> List[str]:
    """Write ``model`` (its fbank or TFMel front-end inside) as a waveform-input ONNX graph to
    :func:`onnx_target` of ``path`` (see
    :func:`~wespeaker_py.export.waveform_onnx.export_waveform_onnx`), with its
    :func:`companions` beside it; the paths written, the graph's first."""
    frontend, network, _ = _export_parts(model)
    beside = companions(model)   # gathered first: a band fill that does not fit stops here
    min_samples = model.backend.min_samples
    info = model_info(model.name, frontend, network, model.identity)
    with _graph_file(path) as graph:
        return export_with_companions(graph, beside, functools.partial(
            export_waveform_onnx, frontend, network, graph, info, min_samples))


def export_feats_onnx(model, path: str) -> List[str]:
    """Write the speaker model alone (features in), as ``bin.export_onnx`` does, to
    :func:`onnx_target` of ``path``, with the model's mean vector beside it (not
    subtracted inside the graph, as the waveform graph's is not); the paths written, the
    graph's first."""
    frontend, network, feat_dim = _export_parts(model)
    info = model_info(model.name, frontend, network, model.identity)
    with _graph_file(path) as graph:
        return export_with_companions(graph, _mean_vector(model), functools.partial(
            export_onnx, network, feat_dim, graph, info=info))


def _mean_vector(model) -> Dict[str, Callable[[str], None]]:
    """The model's mean vector as a companion (none when it has none)."""
    if model.mean_vec is None:
        return {}
    return {MEAN_NAME: functools.partial(save_mean_vector, mean_vec=model.mean_vec)}


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


def _remove_stale(paths: List[str]) -> None:
    """Remove ``paths``, an earlier export's files that this export does not write."""
    for stale in paths:
        os.remove(stale)
        logger.warning("removed %s: an earlier export's, not written by this export", stale)


def export_with_companions(path: str, items: Dict[str, Callable[[str], None]],
                           export: Callable[..., object]) -> List[str]:
    """Write ``items`` beside ``path`` (under its stem) to temporary names, then run
    ``export``, which writes a graph to ``path`` and takes ``before_replace``; the paths
    written, the graph's first.

    Once the new graph passed its check, and just before it replaces the earlier one, the
    new files are renamed into place and the earlier export's others are removed. A stop
    before that leaves the earlier export whole (the temporary files removed), one after the
    graph's rename the new graph with all its files (no other graph's beside it, none of its
    own missing); for a stop in between, see the order below."""
    prefix = companion_prefix(path)
    mean_path = prefix + MEAN_NAME
    with contextlib.ExitStack() as staged:
        # atomic_path renames as the stack unwinds, last in first out: the mean vector,
        # in first, is renamed last
        for name in sorted(items, key=lambda name: name != MEAN_NAME):
            items[name](staged.enter_context(atomic_path(prefix + name)))

        def put_in_place() -> None:
            # A stop between these changes and the graph's rename leaves the earlier graph
            # with (some of) the new files. A calibration or window LDA records the identity
            # of the model it was made with, so the earlier graph refuses a new one naming
            # both; a mean vector records nothing, and the earlier graph would embed with
            # another's (or without its own) unnoticed. So the mean vector changes last,
            # one rename before the graph.
            stale = [earlier for name, earlier in companions_at(prefix).items()
                     if name not in items]
            _remove_stale([earlier for earlier in stale if earlier != mean_path])
            staged.close()
            _remove_stale([earlier for earlier in stale if earlier == mean_path])

        export(before_replace=put_in_place)
    return [path] + [prefix + name for name in items]
