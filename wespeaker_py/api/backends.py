"""The onnxruntime engine behind :class:`~wespeaker_py.api.SpeakerModel`.

The torch engine is the runtime layer's
:class:`~wespeaker_py.runtime.engine.TorchBackend`; :class:`OnnxBackend` offers
the same members, so the one embedding loop
(:func:`~wespeaker_py.runtime.embedding.embed_stream`) runs either. Both take
mono int16-scale waveforms at their sample rate. ``prepare`` turns one waveform
into what is batched (the waveform itself here: the graph holds the
front-end), and ``embed`` runs a batch of prepared inputs of equal length.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Dict, Optional

import numpy as np
import torch

from wespeaker_py.audio import INT16_SCALE
from wespeaker_py.export.waveform_onnx import (INPUT_NAME, OUTPUT_NAME,
                                               read_waveform_onnx_info)
from wespeaker_py.runtime.identity import file_identity


class OnnxBackend:
    """A waveform-to-embedding ONNX graph (``export --onnx --with_frontend``) in onnxruntime."""

    kind = "onnx"

    def __init__(self, path: str, num_threads: Optional[int] = None):
        onnxruntime = importlib.import_module("onnxruntime")
        options = onnxruntime.SessionOptions()
        with contextlib.suppress(AttributeError):
            options.log_severity_level = 3
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=["CPUExecutionProvider"])
        self.info = read_waveform_onnx_info(self.session, path)
        self.path = path
        self.sample_rate = int(self.info["sample_rate"])
        self.embed_dim = int(self.info["embed_dim"])
        self.min_samples = int(self.info["min_samples"])
        self.min_seconds = self.min_samples / self.sample_rate
        self._identity: Optional[str] = None

    def prepare(self, wav: np.ndarray, heard_rate: int = 0) -> torch.Tensor:
        """The waveform itself: the graph computes its own features (no band fill)."""
        return torch.as_tensor(wav)

    def missing_band_fill(self, heard_rate: int) -> str:
        """Always a reason: the graph applies no band fill."""
        return "ONNX models apply no band fill (the torch model does: 'wespeaker-py band-fill')"

    def is_too_short(self, prepared: torch.Tensor) -> bool:
        return int(prepared.shape[0]) < self.min_samples

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """``[B, samples]`` int16-scale waveforms -> ``[B, E]`` embeddings."""
        feed = (batch.numpy() / np.float32(INT16_SCALE)).astype(np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: feed})[0]

    @property
    def identity(self) -> str:
        """The identity of the model the graph was exported from (the file's digest for a
        graph exported before identities were recorded)."""
        if self._identity is None:
            self._identity = str(self.info.get("identity") or file_identity(self.path))
        return self._identity

    def describe(self) -> Dict[str, Any]:
        return dict(self.info, engine="onnxruntime (CPU)",
                    min_seconds=round(self.min_seconds, 3))
