"""A loaded embedder on a torch device, in the form the embedding loop drives.

:class:`TorchBackend` turns one waveform into what is batched (its fbank or SSL
features, so that batches group inputs of equal frame count) and a batch of
those into embeddings. The API's ONNX backend offers the same members
(:class:`~wespeaker_py.runtime.embedding.Backend`), so
:func:`~wespeaker_py.runtime.embedding.embed_stream` runs either. Inputs longer
than its :class:`~wespeaker_py.runtime.long_audio.LongAudioPolicy` threshold get
their fbank and their embedding in chunks (:mod:`wespeaker_py.runtime.long_audio`),
in bounded memory; shorter ones are untouched.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterable, Iterator, Optional

import numpy as np
import torch

from wespeaker_py.frontend.band_fill import BandFill, BandFillError, check_fits
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.models.complexity import count_params
from wespeaker_py.runtime.batching import min_valid_frames
from wespeaker_py.runtime.builder import SpeakerEmbedder
from wespeaker_py.runtime.long_audio import (BodyGeometry, LongAudioPolicy, body_geometry,
                                             chunked_exactly, embed_long)


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """Keep cuDNN convolutions in true float32 (no TF32) so batched equals one-by-one."""
    if device.type != "cuda":
        yield
        return
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False,
                                    allow_tf32=False):
        yield


def fewest_samples(frontend: torch.nn.Module, frames: int) -> int:
    """Fewest samples from which ``frontend`` (anything with ``num_frames(samples)``,
    which grows with the samples: fbank, TFMel, SSL) makes at least ``frames`` frames."""
    high = 1
    while frontend.num_frames(high) < frames:
        high *= 2
    low = high // 2  # too few (or 0)
    while high - low > 1:
        middle = (low + high) // 2
        if frontend.num_frames(middle) >= frames:
            high = middle
        else:
            low = middle
    return high


class TorchBackend:
    """A loaded :class:`SpeakerEmbedder` (front-end + model) on a torch device.

    ``long_audio`` says from what length an input is embedded in chunks.
    """

    kind = "torch"

    def __init__(self, embedder: SpeakerEmbedder, device: torch.device,
                 model_name: Optional[str] = None,
                 long_audio: LongAudioPolicy = LongAudioPolicy()):
        self.embedder = embedder.to(device).eval()
        self.long_audio = long_audio
        self._geometry: Optional[BodyGeometry] = None
        self.device = device
        self.model_name = model_name or type(embedder.model).__name__
        self.sample_rate = int(getattr(embedder.frontend, "sample_rate", 16000))
        self._min_frames: Optional[int] = None
        self._embed_dim: Optional[int] = None
        self.band_fills: Dict[int, BandFill] = {}

    def set_band_fills(self, fills: Iterable[BandFill]) -> None:
        """Fill the empty top mel bins of audio heard at a lower rate with these, in place
        of any before (:mod:`~wespeaker_py.frontend.band_fill`); each must fit the fbank
        front-end, or none is taken."""
        frontend = self.embedder.frontend
        chosen: Dict[int, BandFill] = {}
        for fill in fills:
            if not isinstance(frontend, FbankFeatures):
                raise BandFillError(f"a band fill needs an fbank front-end; this model has "
                                    f"{type(frontend).__name__}")
            check_fits(fill, frontend.sample_rate, frontend.num_mel_bins, "the model's fbank")
            chosen[fill.heard_rate] = fill
        self.band_fills = chosen

    @property
    def takes_band_fills(self) -> bool:
        """Whether the front-end can fill narrow-band audio (fbank features can)."""
        return isinstance(self.embedder.frontend, FbankFeatures)

    def band_fill_for(self, heard_rate: int) -> Optional[BandFill]:
        """The band fill learnt for audio heard at exactly ``heard_rate``, or None (a fill
        learnt at another rate would take empty bins, or leave some, as its input)."""
        return self.band_fills.get(heard_rate)

    def missing_band_fill(self, heard_rate: int) -> str:
        """Why audio heard at ``heard_rate`` keeps its empty top band ('' when a band
        fill fills it)."""
        if self.band_fill_for(heard_rate) is not None:
            return ""
        frontend = self.embedder.frontend
        if not isinstance(frontend, FbankFeatures):
            return f"a {type(frontend).__name__} front-end takes no band fill"
        return (f"the model has no band fill for {heard_rate} Hz (learn one: "
                f"'wespeaker-py band-fill')")

    @property
    def min_frames(self) -> int:
        """Fewest feature frames that give a finite embedding (found on first use)."""
        if self._min_frames is None:
            self._min_frames = min_valid_frames(self.embedder.model,
                                                self.embedder.frontend.output_dim, self.device)
        return self._min_frames

    @property
    def min_samples(self) -> int:
        """Fewest input samples that give :attr:`min_frames` frames."""
        return fewest_samples(self.embedder.frontend, self.min_frames)

    @property
    def min_seconds(self) -> float:
        """Shortest input in seconds (for messages)."""
        return self.min_samples / self.sample_rate

    def cuts_input(self, num_samples: int) -> bool:
        """Whether the front-end embeds only the start of an input of ``num_samples``
        samples (Whisper's, past 30 s); no other front-end cuts its input."""
        cuts = getattr(self.embedder.frontend, "cuts_input", None)
        return cuts is not None and cuts(num_samples)

    def _frames_of(self, seconds: float) -> int:
        return self.embedder.frontend.num_frames(int(seconds * self.sample_rate))

    def _is_long(self, frames: int) -> bool:
        return frames > self._frames_of(self.long_audio.threshold_seconds)

    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:
            feats = torch.zeros(1, max(self.min_frames, 200), self.embedder.frontend.output_dim)
            with torch.inference_mode():
                self._embed_dim = int(self.embedder(feats.to(self.device)).shape[-1])
        return self._embed_dim

    @property
    def identity(self) -> str:
        """The loaded model's identity (:mod:`~wespeaker_py.runtime.identity`)."""
        return self.embedder.identity

    @torch.inference_mode()
    def prepare(self, wav: Any, heard_rate: int = 0) -> torch.Tensor:
        """``[frames, dim]`` features of one int16-scale waveform (array or tensor);
        ``heard_rate``: the rate the audio came at, when below the model's (its
        :meth:`band_fill_for` is applied)."""
        samples = torch.as_tensor(wav).to(self.device, non_blocking=True)
        frontend = self.embedder.frontend
        fill = self.band_fill_for(heard_rate)
        with exact_fp32(self.device):
            if not isinstance(frontend, FbankFeatures):
                return self.embedder.features(samples.unsqueeze(0))[0]
            if self._is_long(frontend.num_frames(int(samples.shape[-1]))):
                chunk = self._frames_of(self.long_audio.chunk_seconds)
                return frontend.features_in_chunks(samples, chunk, fill)[0]
            return frontend(samples.unsqueeze(0), fill)[0]

    def is_too_short(self, prepared: torch.Tensor) -> bool:
        return int(prepared.shape[0]) < self.min_frames

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor, heard_rate: int = 0) -> np.ndarray:
        """``[B, frames, dim]`` features -> ``[B, E]`` float32 embeddings (``heard_rate``
        is not needed: :meth:`prepare` applied the band fill)."""
        with exact_fp32(self.device):
            if self._is_long(int(batch.shape[1])):
                return self._embed_long(batch).float().cpu().numpy()
            return self.embedder(batch).float().cpu().numpy()

    def _embed_long(self, batch: torch.Tensor) -> torch.Tensor:
        model = self.embedder.model
        if chunked_exactly(model) and self._geometry is None:
            self._geometry = body_geometry(model, int(batch.shape[2]), self.device)
        return embed_long(model, batch, self._frames_of(self.long_audio.chunk_seconds),
                          self._geometry)

    def describe(self) -> Dict[str, Any]:
        frontend = self.embedder.frontend
        params = count_params(self.embedder.model)
        return {"engine": f"torch ({self.device})", "model": self.model_name,
                "params_millions": round(params / 1e6, 3), "embed_dim": self.embed_dim,
                "sample_rate": self.sample_rate, "frontend": frontend.extra_repr()
                if hasattr(frontend, "extra_repr") else type(frontend).__name__,
                "min_seconds": round(self.min_seconds, 3)}
