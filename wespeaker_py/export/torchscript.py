"""TorchScript export of a speaker model (features ``[B, T, F]`` -> embeddings ``[B, E]``).

WeSpeaker scripts the model with ``torch.jit.script``. Our models are written
for eager PyTorch first, and none of the families compiles under the TorchScript
subset today (the shared pooling layers use module-level constants and lists of
inferred size; checked for XVEC, ResNet, ECAPA, CAM++, ERes2Net, SimAM, ReDimNet,
RepVGG and Gemini), so ``method="auto"`` traces in practice and ``script`` is kept
for a model that does compile (one that does not is a :class:`ScriptCompileError`). A trace
records one run, so the exported module is always checked against the eager
model on inputs of other batch sizes and lengths than the traced one before
it is written; a difference is an error, never a silently wrong export. The
file says which model it holds in a JSON extra file
(:mod:`~wespeaker_py.export.metadata`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from wespeaker_py.defaults import TORCHSCRIPT_METHODS as METHODS
from wespeaker_py.errors import WespeakerError, first_line
from wespeaker_py.export.checks import (EXAMPLE_FRAMES, check_against_eager, embedding_size,
                                        example_features, quiet_exporter)
from wespeaker_py.export.metadata import TORCHSCRIPT_INFO_FILE, info_json
from wespeaker_py.runtime.batching import min_valid_frames
from wespeaker_py.utils.atomic_files import atomic_path
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)


class ScriptCompileError(WespeakerError, ValueError):
    """``method="script"`` for a model that torch.jit.script does not compile."""


def to_torchscript(model: nn.Module, feat_dim: int,
                   method: str = "auto") -> torch.jit.ScriptModule:
    """Script (or trace, see the module doc) an eval-mode model; return the TorchScript module."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model = model.eval()
    with quiet_exporter():
        if method in ("auto", "script"):
            try:
                return torch.jit.script(model)
            except Exception as error:  # TorchScript's compiler raises many error types
                reason = first_line(error)
                if method == "script":
                    raise ScriptCompileError(
                        f"{type(model).__name__} does not compile with torch.jit.script "
                        f"({reason}); export it with the method trace or auto (--method)"
                    ) from None
                logger.info("%s does not compile with torch.jit.script (%s); tracing it",
                            type(model).__name__, reason)
        with torch.no_grad():
            return torch.jit.trace(model, example_features(1, EXAMPLE_FRAMES, feat_dim),
                                   check_trace=False)


def _dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers are dynamically quantised to int8.

    Uses torch's eager ``torch.ao.quantization.quantize_dynamic``, which torch has
    announced it will remove (its successor is the separate torchao package).
    """
    quantize = getattr(getattr(torch, "ao", None), "quantization", None)
    quantize = getattr(quantize, "quantize_dynamic", None)
    if quantize is None:
        raise RuntimeError(f"torch {torch.__version__} has no "
                           f"torch.ao.quantization.quantize_dynamic, so no quantised copy "
                           f"can be made: export without one (--output_quant_file, "
                           f"quantized_output_file), or use a torch that has it")
    return quantize(model, {nn.Linear}, dtype=torch.qint8)


def export_torchscript(model: nn.Module, feat_dim: int, output_file: str,
                       quantized_output_file: Optional[str] = None, method: str = "auto",
                       tolerance: float = 1e-4, info: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` as TorchScript to ``output_file`` (atomically), checked against eager.

    With ``quantized_output_file`` a copy whose Linear layers are dynamically
    quantised to int8 is written too, checked against the quantised eager
    model (quantisation itself changes the numbers by design). Each file holds
    ``info`` (:func:`~wespeaker_py.export.metadata.model_info`) with ``embed_dim``,
    ``mean_subtracted`` (false), ``min_frames`` and ``quantized`` as the JSON extra file
    :data:`~wespeaker_py.export.metadata.TORCHSCRIPT_INFO_FILE`.
    """
    model = model.eval()
    measured = dict(info or {}, embed_dim=embedding_size(model, feat_dim),
                    mean_subtracted=False,
                    min_frames=min_valid_frames(model, feat_dim, torch.device("cpu")))
    exports = [(model, output_file, False)]
    if quantized_output_file:
        exports.append((_dynamic_int8(model), quantized_output_file, True))
    for source, path, quantized in exports:
        scripted = to_torchscript(source, feat_dim, method)
        worst = check_against_eager(scripted, source, feat_dim, tolerance=tolerance)
        extra = {TORCHSCRIPT_INFO_FILE: info_json(dict(measured, quantized=quantized))}
        with atomic_path(path) as tmp_path:
            scripted.save(tmp_path, _extra_files=extra)
        logger.info("wrote %s (largest relative difference from eager %.2g)", path, worst)
