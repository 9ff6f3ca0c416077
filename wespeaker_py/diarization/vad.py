"""Speech activity detection: where in a recording someone speaks.

Two detectors share one interface, ``detector(waveform, sample_rate)`` -> a
sorted list of ``(start, end)`` speech regions in seconds:

* :class:`SileroVAD` (the default) runs the Silero VAD network (MIT licence)
  from the ONNX file that the ``silero-vad`` package ships, with onnxruntime;
  nothing is downloaded at run time and the package's own Python code (which
  wants torchaudio for audio I/O) is never imported.
* :class:`EnergyVAD` thresholds frame energy; it needs nothing beyond numpy and
  is meant for tests and clean synthetic audio.

Both turn per-frame speech probabilities into regions the same way
(:func:`probabilities_to_regions`): hysteresis between an onset and an offset
threshold, short pauses bridged, too-short regions dropped, a little padding.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Tuple

import numpy as np

from wespeaker_py.errors import MissingPackagesError
from wespeaker_py.utils.onnx_session import open_onnx_session

Region = Tuple[float, float]
VoiceActivityDetector = Callable[[np.ndarray, int], List[Region]]
VAD_NAMES = ("silero", "energy")


@dataclass(frozen=True)
class RegionRules:
    """How frame probabilities become speech regions (Silero's published defaults)."""

    threshold: float = 0.5          # a region starts when the probability reaches this
    offset_threshold: float = 0.35  # ... and ends when it falls below this
    min_speech: float = 0.25        # seconds; shorter regions are dropped
    min_silence: float = 0.1        # seconds; shorter pauses inside speech are bridged
    pad: float = 0.03               # seconds added on both sides of each region


def probabilities_to_regions(probs: np.ndarray, hop: float, duration: float,
                             rules: RegionRules = RegionRules()) -> List[Region]:
    """Per-frame speech probabilities (frame ``i`` covers ``[i*hop, (i+1)*hop)``) -> regions."""
    raw: List[List[float]] = []
    speaking = False
    for index, prob in enumerate(probs):
        if not speaking and prob >= rules.threshold:
            speaking = True
            raw.append([index * hop, duration])
        elif speaking and prob < rules.offset_threshold:
            speaking = False
            raw[-1][1] = index * hop
    bridged: List[List[float]] = []
    for start, end in raw:
        if bridged and start - bridged[-1][1] < rules.min_silence:
            bridged[-1][1] = end
        else:
            bridged.append([start, end])
    regions: List[Region] = []
    for start, end in bridged:
        if end - start < rules.min_speech:
            continue
        start, end = max(0.0, start - rules.pad), min(duration, end + rules.pad)
        if regions and start <= regions[-1][1]:  # padding made two regions touch
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions


class EnergyVAD:
    """Speech where a 25 ms frame (10 ms hop) is loud, relative to the file and absolutely.

    A frame counts as speech when its energy is above ``floor_db`` (dB re full
    scale) and within ``dynamic_range_db`` of the file's loud frames (the 95th
    percentile), so pure silence or faint noise yields no speech at all.
    """

    def __init__(self, floor_db: float = -55.0, dynamic_range_db: float = 30.0,
                 rules: RegionRules = RegionRules(threshold=0.5, offset_threshold=0.5)):
        self.floor_db = floor_db
        self.dynamic_range_db = dynamic_range_db
        self.rules = rules

    def frame_energies_db(self, waveform: np.ndarray, sample_rate: int) -> Tuple[np.ndarray, float]:
        """Energy of each frame in dB re full scale, and the hop in seconds."""
        frame, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
        if waveform.size < frame:
            return np.zeros(0, dtype=np.float64), hop / sample_rate
        count = 1 + (waveform.size - frame) // hop
        frames = np.lib.stride_tricks.sliding_window_view(waveform, frame)[::hop][:count]
        power = np.mean(np.square(frames, dtype=np.float64), axis=1)
        return 10.0 * np.log10(power + 1e-12), hop / sample_rate

    def __call__(self, waveform: np.ndarray, sample_rate: int) -> List[Region]:
        energies, hop = self.frame_energies_db(waveform, sample_rate)
        if energies.size == 0:
            return []
        loud = np.percentile(energies, 95)
        threshold = max(self.floor_db, loud - self.dynamic_range_db)
        speech = (energies > threshold).astype(np.float32)
        return probabilities_to_regions(speech, hop, waveform.size / sample_rate, self.rules)


def silero_model_path(file_name: str = "silero_vad.onnx") -> str:
    """Path of a model file shipped in the installed ``silero-vad`` package (not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise MissingPackagesError("the Silero VAD needs the package silero-vad: "
                                   "pip install 'wespeaker_py[diar]' (or use --vad energy)")
    path = os.path.join(os.path.dirname(spec.origin), "data", file_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the installed silero-vad package has no {file_name}")
    return path


class SileroVAD:
    """Silero VAD v5+ (ONNX) at 16 or 8 kHz: 512 (256) sample windows with a 64 (32) sample context.

    The network is recurrent; it runs window by window carrying its state, as
    its authors do. ``num_threads`` bounds onnxruntime's threads (the model is
    tiny: more threads only add overhead).
    """

    RATES = {16000: (512, 64), 8000: (256, 32)}

    def __init__(self, model_path: Optional[str] = None, num_threads: int = 1,
                 rules: RegionRules = RegionRules()):
        self.session = open_onnx_session(
            model_path or silero_model_path(), num_threads, purpose="the Silero VAD",
            install="pip install 'wespeaker_py[diar]' (or use --vad energy)")
        self.rules = rules

    def speech_probabilities(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """One speech probability per window; a last partial window is zero-padded."""
        if sample_rate not in self.RATES:
            raise ValueError(f"Silero VAD runs at 16000 or 8000 Hz, got {sample_rate}")
        window, context_size = self.RATES[sample_rate]
        num_windows = -(-waveform.size // window)
        padded = np.zeros(num_windows * window, dtype=np.float32)
        padded[:waveform.size] = waveform
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, context_size), dtype=np.float32)
        rate = np.array(sample_rate, dtype=np.int64)
        probs = np.empty(num_windows, dtype=np.float32)
        for index in range(num_windows):
            chunk = np.concatenate([context, padded[None, index * window:(index + 1) * window]],
                                   axis=1)
            out, state = self.session.run(None, {"input": chunk, "state": state, "sr": rate})
            probs[index] = out[0, 0]
            context = chunk[:, -context_size:]
        return probs

    def __call__(self, waveform: np.ndarray, sample_rate: int) -> List[Region]:
        probs = self.speech_probabilities(waveform, sample_rate)
        hop = self.RATES[sample_rate][0] / sample_rate
        return probabilities_to_regions(probs, hop, waveform.size / sample_rate, self.rules)


@functools.lru_cache(maxsize=None)
def build_vad(name: str, rules: Optional[RegionRules] = None) -> VoiceActivityDetector:
    """``"silero"`` (default of the pipeline) or ``"energy"``; one shared instance per setting.

    ``rules`` apply to Silero; the energy detector takes their durations (its frames are
    speech or not, so no probability thresholds).
    """
    if name == "silero":
        return SileroVAD(rules=rules or RegionRules())
    if name == "energy":
        if rules is None:
            return EnergyVAD()
        return EnergyVAD(rules=replace(rules, threshold=0.5, offset_threshold=0.5))
    raise ValueError(f"unknown VAD {name!r}; choose from {', '.join(VAD_NAMES)}")
