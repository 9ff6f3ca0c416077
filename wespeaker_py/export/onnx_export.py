"""ONNX export of a speaker model: input ``feats`` [B, T, F] -> output ``embs`` [B, E].

As in WeSpeaker: opset 14, batch and time axes dynamic (or a fixed number of
frames), and optionally a mean embedding subtracted inside the graph. The
exporter is torch's TorchScript-based one (``dynamo=False``): it handles the
dynamic time axis of these convolutional models and needs only the ``onnx``
package, not ``onnxscript``. The written file is loaded back with onnxruntime
and checked against the eager model on other batch sizes and lengths before
it is moved into place. Its metadata says which model it holds and what it
computes (:mod:`~wespeaker_py.export.metadata`).
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from wespeaker_py.export.checks import (CHECK_SHAPES, EXAMPLE_FRAMES, check_against_eager,
                                        embedding_size, example_features, output_held_back,
                                        quiet_exporter)
from wespeaker_py.export.metadata import FEATURE_KIND, add_onnx_metadata
from wespeaker_py.defaults import DEFAULT_OPSET
from wespeaker_py.errors import MissingPackagesError, WespeakerError, first_line
from wespeaker_py.runtime.batching import min_valid_frames
from wespeaker_py.utils.atomic_files import atomic_path
from wespeaker_py.utils.onnx_session import open_onnx_session
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

REQUIRED_PACKAGES = ("onnx", "onnxruntime")
INPUT_NAME = "feats"
OUTPUT_NAME = "embs"


def require_onnx_packages() -> None:
    """Raise :class:`MissingPackagesError` naming the missing packages and how to install
    them."""
    missing = [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackagesError(f"ONNX export needs the package(s) {', '.join(missing)}: "
                                   f"pip install onnx onnxruntime")


class MeanSubtractedEmbedding(nn.Module):
    """The speaker model followed by subtracting a fixed mean embedding."""

    def __init__(self, model: nn.Module, mean_vec: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean_vec", mean_vec)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model(feats) - self.mean_vec


def onnx_runner(path: str):
    """A callable running the ONNX model at ``path`` on CPU with onnxruntime (tensor in/out)."""
    session = open_onnx_session(path)

    def run(feats: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: feats.numpy()})[0])
    return run


class MeanVectorMismatchError(WespeakerError, ValueError):
    """A mean vector whose size is not the model's embedding size."""


class OpsetError(WespeakerError, ValueError):
    """The model holds an operator that the chosen ONNX opset cannot express."""


class TooFewFramesError(WespeakerError, ValueError):
    """A fixed number of input frames below the fewest the model gives an embedding for."""


def export_onnx(model: nn.Module, feat_dim: int, output_model: str, num_frames: int = -1,
                mean_vec: Optional[np.ndarray] = None, opset_version: int = DEFAULT_OPSET,
                tolerance: float = 1e-4,
                before_replace: Optional[Callable[[], None]] = None,
                info: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` as ONNX to ``output_model`` after checking it with onnxruntime.

    ``num_frames > 0`` fixes the time axis (the batch axis stays dynamic; fewer
    frames than the model needs for an embedding raise :class:`TooFewFramesError`);
    otherwise both are dynamic. ``mean_vec`` is subtracted from the embeddings
    inside the graph. ``before_replace`` runs once the graph passed its check, just
    before it takes the place of ``output_model``. The graph's metadata
    (:mod:`~wespeaker_py.export.metadata`, kind ``feature_embedding``) holds ``info``
    (:func:`~wespeaker_py.export.metadata.model_info`) with ``embed_dim``,
    ``mean_subtracted`` and ``min_frames``.
    """
    require_onnx_packages()
    onnx = importlib.import_module("onnx")
    fewest = min_valid_frames(model.eval(), feat_dim, torch.device("cpu"))
    if 0 < num_frames < fewest:
        raise TooFewFramesError(f"{num_frames} frames are fewer than the {fewest} "
                                f"{type(model).__name__} needs for an embedding")
    embed_dim = embedding_size(model, feat_dim)
    mean = torch.zeros(embed_dim) if mean_vec is None else \
        torch.as_tensor(np.asarray(mean_vec), dtype=torch.float32)
    if mean.shape != (embed_dim,):
        raise MeanVectorMismatchError(f"mean vector has shape {tuple(mean.shape)}, the "
                                      f"model's embeddings have {embed_dim} values")
    wrapped = MeanSubtractedEmbedding(model, mean).eval()
    frames = num_frames if num_frames > 0 else EXAMPLE_FRAMES
    dynamic_axes = {INPUT_NAME: {0: "B"}, OUTPUT_NAME: {0: "B"}}
    if num_frames <= 0:
        dynamic_axes[INPUT_NAME][1] = "T"
    check_shapes = ((1, frames), (3, frames)) if num_frames > 0 else CHECK_SHAPES
    with atomic_path(output_model) as tmp_path:
        # the dynamo exporter is the default upstream; see the module doc for why not here
        with torch.no_grad(), quiet_exporter():
            try:
                with output_held_back():
                    torch.onnx.export(wrapped, (example_features(1, frames, feat_dim),),
                                      tmp_path, dynamo=False, opset_version=opset_version,
                                      do_constant_folding=True, input_names=[INPUT_NAME],
                                      output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes)
            except torch.onnx.errors.OnnxExporterError as error:
                raise OpsetError(f"opset {opset_version}: {first_line(error)}") from None
        graph = onnx.load(tmp_path)
        add_onnx_metadata(graph, FEATURE_KIND, dict(
            info or {}, embed_dim=embed_dim, mean_subtracted=mean_vec is not None,
            min_frames=fewest))
        onnx.save(graph, tmp_path)
        runner = onnx_runner(tmp_path)
        worst = check_against_eager(runner, wrapped, feat_dim, check_shapes, tolerance)
        if before_replace is not None:
            before_replace()
    logger.info("wrote %s (largest relative difference from eager %.2g)", output_model, worst)
