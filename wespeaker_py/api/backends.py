"""The onnxruntime engine behind :class:`~wespeaker_py.api.SpeakerModel`.

The torch engine is the runtime layer's
:class:`~wespeaker_py.runtime.engine.TorchBackend`; :class:`OnnxBackend` offers
the same members, so the one embedding loop
(:func:`~wespeaker_py.runtime.embedding.embed_stream`) runs either. Both take
mono int16-scale waveforms at their sample rate. ``prepare`` turns one waveform
into what is batched (the waveform itself here: the graph holds the
front-end), and ``embed`` runs a batch of prepared inputs of equal length that
came at one rate. The torch engine applies a band fill in ``prepare``, this one
in ``embed``, through the graph's optional ``band_fill`` input.

Both follow a :class:`~wespeaker_py.runtime.long_audio.LongAudioPolicy`: an input
longer than its threshold (5 minutes by default) is embedded in chunks, in bounded
memory. The graph holds the front-end, so here every model takes the approximate path
of :mod:`~wespeaker_py.runtime.long_audio`: the duration-weighted mean of the graph's
embeddings of near-equal chunks of the waveform (each chunk mean-normalised alone),
where the torch engine is exact for frame-local models.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch

from wespeaker_py.export.waveform_onnx import (BAND_FILL_INPUT, INPUT_NAME, OUTPUT_NAME,
                                               as_onnx_batch, graph_takes_band_fill,
                                               read_waveform_onnx_info)
from wespeaker_py.frontend.band_fill import BandFill, BandFillError, check_fits
from wespeaker_py.frontend.framing import frame_params, frame_span, num_frames
from wespeaker_py.runtime.identity import file_identity
from wespeaker_py.runtime.long_audio import LongAudioPolicy, mean_of_chunks
from wespeaker_py.utils.onnx_session import open_onnx_session


class OnnxBackend:
    """A waveform-to-embedding ONNX graph (``export --onnx --with_frontend``) in onnxruntime.

    ``long_audio`` says from what length an input is embedded in chunks.
    """

    kind = "onnx"

    def __init__(self, path: str, num_threads: Optional[int] = None,
                 long_audio: LongAudioPolicy = LongAudioPolicy()):
        self.session = open_onnx_session(path, num_threads,
                                         purpose="running an ONNX speaker model")
        self.info = read_waveform_onnx_info(self.session, path)
        self.path = path
        self.sample_rate = int(self.info["sample_rate"])
        self.embed_dim = int(self.info["embed_dim"])
        self.min_samples = int(self.info["min_samples"])
        self.min_seconds = self.min_samples / self.sample_rate
        self.takes_band_fills = graph_takes_band_fill(self.session)
        self.long_audio = long_audio
        # every export so far records its framing; a graph without it is taken to have
        # fbank's defaults (25 ms windows, 10 ms shift). A TFMel graph pads its input, so
        # it makes about one frame more of a chunk than this snip-edges count says: the
        # chunks stay near-equal and their weights near-exact.
        self.frame_ms = (float(self.info.get("frame_length", 25.0)),
                         float(self.info.get("frame_shift", 10.0)))
        self.band_fills: Dict[int, BandFill] = {}
        self._identity: Optional[str] = None

    def set_band_fills(self, fills: Iterable[BandFill]) -> None:
        """Feed these to the graph for audio heard at their rates, in place of any before;
        each must fit the graph's fbank, or none is taken."""
        chosen: Dict[int, BandFill] = {}
        for fill in fills:
            if not self.takes_band_fills:
                raise BandFillError(f"{self.path}: {self._why_no_band_fill_input()}")
            check_fits(fill, self.sample_rate, int(self.info.get("num_mel_bins", 0)),
                       self.path)
            chosen[fill.heard_rate] = fill
        self.band_fills = chosen

    def band_fill_for(self, heard_rate: int) -> Optional[BandFill]:
        """The band fill for audio heard at exactly ``heard_rate``, or None."""
        return self.band_fills.get(heard_rate)

    def prepare(self, wav: np.ndarray, heard_rate: int = 0) -> torch.Tensor:
        """The waveform itself: the graph computes its own features (and fills them in
        :meth:`embed`)."""
        return torch.as_tensor(wav)

    def missing_band_fill(self, heard_rate: int) -> str:
        """Why audio heard at ``heard_rate`` keeps its empty top band ('' when a band
        fill fills it)."""
        if self.band_fill_for(heard_rate) is not None:
            return ""
        if not self.takes_band_fills:
            return self._why_no_band_fill_input()
        return (f"the model has no band fill for {heard_rate} Hz (learn one with the torch "
                f"model, 'wespeaker-py band-fill', and export again)")

    def _why_no_band_fill_input(self) -> str:
        frontend = self.info.get("frontend")   # not recorded by graphs of earlier exports
        if frontend not in (None, "FbankFeatures"):
            return f"a {frontend} front-end takes no band fill"
        advice = "export it again" if frontend else "if its front-end is fbank, export it again"
        return (f"the graph was exported without a band_fill input: {advice} "
                f"('wespeaker-py export --with_frontend') to use the model's band fill")

    def is_too_short(self, prepared: torch.Tensor) -> bool:
        return int(prepared.shape[0]) < self.min_samples

    def embed(self, batch: torch.Tensor, heard_rate: int = 0) -> np.ndarray:
        """``[B, samples]`` int16-scale waveforms that came at ``heard_rate`` (0: at the
        model's) -> ``[B, E]`` embeddings; a batch over the :attr:`long_audio` threshold
        one waveform at a time, each in chunks."""
        wavs = batch.numpy()
        if self._frames_of(wavs.shape[1]) > self._frames_of_seconds(
                self.long_audio.threshold_seconds):
            return np.concatenate([self._embed_long(wav, heard_rate) for wav in wavs])
        return self._run(wavs, heard_rate)

    def _run(self, wavs: np.ndarray, heard_rate: int) -> np.ndarray:
        feed = {INPUT_NAME: as_onnx_batch(wavs)}
        fill = self.band_fill_for(heard_rate)
        if fill is not None:
            feed[BAND_FILL_INPUT] = fill.affine()
        return self.session.run([OUTPUT_NAME], feed)[0]

    def _frames_of(self, samples: int) -> int:
        return num_frames(samples, self.sample_rate, *self.frame_ms)

    def _frames_of_seconds(self, seconds: float) -> int:
        return self._frames_of(int(seconds * self.sample_rate))

    def _embed_long(self, wav: np.ndarray, heard_rate: int) -> np.ndarray:
        """``[1, E]``: the mean of the graph's embeddings of chunks of one waveform, each
        chunk the samples of its frames."""
        window, shift = frame_params(self.sample_rate, *self.frame_ms)

        def embed_chunk(start: int, stop: int) -> torch.Tensor:
            piece = wav[None, frame_span(start, stop, window, shift)]
            return torch.from_numpy(self._run(piece, heard_rate))
        return mean_of_chunks(self._frames_of(wav.shape[0]),
                              self._frames_of_seconds(self.long_audio.chunk_seconds),
                              embed_chunk).numpy()

    @property
    def identity(self) -> str:
        """The identity of the model the graph was exported from (the file's digest for a
        graph exported before identities were recorded)."""
        if self._identity is None:
            self._identity = str(self.info.get("identity") or file_identity(self.path))
        return self._identity

    def describe(self) -> Dict[str, Any]:
        return dict(self.info, engine="onnxruntime (CPU)",
                    min_seconds=round(self.min_seconds, 3),
                    band_fill_input=self.takes_band_fills,
                    long_audio=f"mean of chunk embeddings above "
                               f"{self.long_audio.threshold_seconds:g} s")
