"""The two engines behind :class:`~wespeaker_py.api.SpeakerModel`: torch and onnxruntime.

Both take mono int16-scale waveforms at their sample rate. ``prepare`` turns
one waveform into what is batched (fbank features for torch, so batches group
utterances of equal frame count as ``bin.extract`` does; the waveform itself
for ONNX, whose graph holds the front-end), and ``embed`` runs a batch of
prepared inputs of equal length.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Dict, Optional

import numpy as np
import torch

from wespeaker_py.export.waveform_onnx import (INPUT_NAME, INT16_SCALE, OUTPUT_NAME,
                                               read_waveform_onnx_info)
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.inference.batching import min_valid_frames
from wespeaker_py.inference.embedding import exact_fp32
from wespeaker_py.inference.model_loading import SpeakerEmbedder


class TorchBackend:
    """A loaded :class:`SpeakerEmbedder` (front-end + model) on a torch device."""

    kind = "torch"

    def __init__(self, embedder: SpeakerEmbedder, config: Dict[str, Any],
                 device: torch.device):
        self.embedder = embedder.to(device).eval()
        self.config = config
        self.device = device
        frontend = embedder.frontend
        self.sample_rate = int(getattr(frontend, "sample_rate", 16000))
        self._min_frames: Optional[int] = None
        self._embed_dim: Optional[int] = None

    @property
    def min_frames(self) -> int:
        """Fewest feature frames that give a finite embedding (found on first use)."""
        if self._min_frames is None:
            self._min_frames = min_valid_frames(self.embedder.model,
                                                self.embedder.frontend.output_dim, self.device)
        return self._min_frames

    @property
    def min_seconds(self) -> float:
        """Shortest input in seconds (for messages)."""
        frontend = self.embedder.frontend
        if isinstance(frontend, FbankFeatures):
            return ((self.min_frames - 1) * frontend.frame_shift + frontend.frame_length) / 1000
        return self.min_frames * 0.02  # SSL front-ends: one frame per 20 ms

    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:
            feats = torch.zeros(1, max(self.min_frames, 200), self.embedder.frontend.output_dim)
            with torch.inference_mode():
                self._embed_dim = int(self.embedder(feats.to(self.device)).shape[-1])
        return self._embed_dim

    @torch.inference_mode()
    def prepare(self, wav: np.ndarray) -> torch.Tensor:
        """``[frames, dim]`` features of one waveform."""
        samples = torch.from_numpy(wav).to(self.device)
        return self.embedder.features(samples.unsqueeze(0))[0]

    def is_too_short(self, prepared: torch.Tensor) -> bool:
        return int(prepared.shape[0]) < self.min_frames

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """``[B, frames, dim]`` features -> ``[B, E]`` float32 embeddings."""
        with exact_fp32(self.device):
            return self.embedder(batch).float().cpu().numpy()

    def describe(self) -> Dict[str, Any]:
        frontend = self.embedder.frontend
        params = sum(p.numel() for p in self.embedder.model.parameters())
        return {"engine": f"torch ({self.device})", "model": self.config.model,
                "params_millions": round(params / 1e6, 3), "embed_dim": self.embed_dim,
                "sample_rate": self.sample_rate, "frontend": frontend.extra_repr()
                if hasattr(frontend, "extra_repr") else type(frontend).__name__,
                "min_seconds": round(self.min_seconds, 3)}


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

    def prepare(self, wav: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(wav)

    def is_too_short(self, prepared: torch.Tensor) -> bool:
        return int(prepared.shape[0]) < self.min_samples

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """``[B, samples]`` int16-scale waveforms -> ``[B, E]`` embeddings."""
        feed = (batch.numpy() / np.float32(INT16_SCALE)).astype(np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: feed})[0]

    def describe(self) -> Dict[str, Any]:
        return dict(self.info, engine="onnxruntime (CPU)",
                    min_seconds=round(self.min_seconds, 3))
