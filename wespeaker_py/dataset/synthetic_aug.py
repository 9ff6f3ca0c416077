"""Synthetic stand-ins for MUSAN and RIRS_NOISES, for recipes that run offline.

The files are laid out and listed the way the VoxCeleb recipe lists the real
corpora (``<data>/musan/wav.scp`` keyed ``noise/...``, ``music/...``,
``speech/...`` and ``<data>/rirs/wav.scp``), so the training pipeline treats
them exactly like the real material:

- noise: white, pink and brown noise (power spectra 1, 1/f, 1/f^2);
- music: sums of harmonic tones with slow note changes;
- speech (babble): 3 to 7 training utterances summed, each resampled to the
  rate of the set; an utterance that cannot be read, or holds no usable audio
  (empty, silent, NaN), is skipped (logged, and counted at the end) and another
  drawn in its place;
- RIRs: a direct-path impulse followed by exponentially decaying Gaussian
  noise whose decay gives an RT60 drawn from a range.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from wespeaker_py.audio import INT16_SCALE, open_audio, read_checked, write_wav
from wespeaker_py.errors import AudioInputError, WespeakerError
from wespeaker_py.utils.logging_utils import listed_names
from wespeaker_py.utils.tables import write_table

logger = logging.getLogger(__name__)

# the fewest speech files babble is drawn from (a babble sums 3 to 7 draws)
MIN_BABBLE_SOURCES = 3


class SpeechSourceError(WespeakerError, ValueError):
    """Too few usable speech files to make babble from (or none to take a rate from)."""


def speech_sample_rate(speech_wavs: Sequence[str]) -> int:
    """The sample rate of the first of ``speech_wavs`` that opens as audio (a
    ``command |`` entry is run); those before it are logged as skipped. A
    :class:`SpeechSourceError` when none opens."""
    for wav in speech_wavs:
        try:
            with open_audio(wav) as handle:
                return handle.samplerate
        except AudioInputError as error:
            logger.warning("%s; taking the sample rate from the next speech file", error)
    raise SpeechSourceError(f"none of the {len(speech_wavs)} speech files opens as audio, "
                            f"so none gives a sample rate")


def coloured_noise(num_samples: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power spectrum falls as ``1 / f**exponent`` (0 white, 1 pink, 2 brown)."""
    spectrum = (rng.standard_normal(num_samples // 2 + 1)
                + 1j * rng.standard_normal(num_samples // 2 + 1))
    freqs = np.arange(num_samples // 2 + 1, dtype=np.float64)
    freqs[0] = 1.0
    spectrum /= freqs ** (exponent / 2.0)
    signal = np.fft.irfft(spectrum, n=num_samples)
    return (signal / (np.abs(signal).max() + 1e-12)).astype(np.float32)


def harmonic_music(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A crude music-like signal: chords of harmonic tones changing every 0.25-1 s."""
    out = np.zeros(num_samples, dtype=np.float64)
    start = 0
    while start < num_samples:
        length = min(num_samples - start, int(rng.uniform(0.25, 1.0) * sample_rate))
        t = np.arange(length) / sample_rate
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) * 50.0)
        for _ in range(rng.integers(1, 4)):
            fundamental = 110.0 * 2 ** (rng.integers(0, 36) / 12.0)
            for harmonic in range(1, 5):
                if fundamental * harmonic < sample_rate / 2:
                    out[start:start + length] += envelope * np.sin(
                        2 * np.pi * fundamental * harmonic * t) / harmonic
        start += length
    return (out / (np.abs(out).max() + 1e-12)).astype(np.float32)


def babble(utterances: Sequence[np.ndarray], num_samples: int,
           rng: np.random.Generator) -> np.ndarray:
    """Sum of the given utterances, each tiled to ``num_samples`` at a random offset."""
    out = np.zeros(num_samples, dtype=np.float64)
    for utt in utterances:
        tiled = np.resize(utt, num_samples + len(utt))
        offset = rng.integers(0, len(utt))
        piece = tiled[offset:offset + num_samples]
        out += piece / (np.sqrt(np.mean(piece ** 2)) + 1e-12)
    return (out / (np.abs(out).max() + 1e-12)).astype(np.float32)


def synthetic_rir(sample_rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Impulse response: a unit direct path, then noise decaying 60 dB over ``rt60`` seconds."""
    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    decay = np.exp(-6.9078 * t / rt60)  # ln(1000): amplitude falls by 60 dB at t = rt60
    tail = rng.standard_normal(length) * decay * 0.3
    pre_delay = int(0.002 * sample_rate)  # the first reflection arrives after the direct path
    tail[:pre_delay] = 0.0
    tail[0] = 1.0
    return (tail / np.abs(tail).max()).astype(np.float32)


def make_synthetic_aug_data(out_dir: str, speech_wavs: Sequence[str], sample_rate: int = 16000,
                            num_noise: int = 12, num_music: int = 6, num_babble: int = 6,
                            num_rirs: int = 20, duration: float = 8.0,
                            rt60_range: Tuple[float, float] = (0.2, 1.0),
                            seed: int = 0) -> Dict[str, str]:
    """Write synthetic noise and RIR sets under ``out_dir``; return the paths of both lists.

    ``speech_wavs`` are the utterances babble is made from, at any rate (resampled to
    ``sample_rate``); unusable ones are skipped (see :class:`_BabbleSources`), and fewer
    than :data:`MIN_BABBLE_SOURCES` usable ones is a :class:`SpeechSourceError`.
    Gives ``{"musan": <out_dir>/musan/wav.scp, "rirs": <out_dir>/rirs/wav.scp}``.
    """
    if len(speech_wavs) < MIN_BABBLE_SOURCES:
        raise SpeechSourceError(f"babble needs at least {MIN_BABBLE_SOURCES} speech files, "
                                f"got {len(speech_wavs)}")
    rng = np.random.default_rng(seed)
    num_samples = int(duration * sample_rate)
    musan_dir = os.path.join(out_dir, "musan")
    rirs_dir = os.path.join(out_dir, "rirs")
    musan_entries: List[Tuple[str, str]] = []

    colours = (("white", 0.0), ("pink", 1.0), ("brown", 2.0))
    for index in range(num_noise):
        name, exponent = colours[index % len(colours)]
        key = f"noise/synthetic/{name}-{index:04d}.wav"
        path = os.path.abspath(os.path.join(musan_dir, key))
        write_wav(path, 0.5 * coloured_noise(num_samples, exponent, rng), sample_rate)
        musan_entries.append((key, path))

    for index in range(num_music):
        key = f"music/synthetic/music-{index:04d}.wav"
        path = os.path.abspath(os.path.join(musan_dir, key))
        write_wav(path, 0.5 * harmonic_music(num_samples, sample_rate, rng), sample_rate)
        musan_entries.append((key, path))

    sources = _BabbleSources(speech_wavs, sample_rate)
    for index in range(num_babble):
        chosen = rng.choice(len(speech_wavs), size=int(rng.integers(3, 8)), replace=True)
        utterances = [sources.read(int(i), rng) for i in chosen]
        key = f"speech/synthetic/babble-{index:04d}.wav"
        path = os.path.abspath(os.path.join(musan_dir, key))
        write_wav(path, 0.5 * babble(utterances, num_samples, rng), sample_rate)
        musan_entries.append((key, path))

    rir_entries: List[Tuple[str, str]] = []
    for index in range(num_rirs):
        rt60 = float(rng.uniform(*rt60_range))
        key = f"simulated_rirs/synthetic/rir-{index:04d}-rt60-{rt60:.2f}.wav"
        path = os.path.abspath(os.path.join(rirs_dir, key))
        write_wav(path, 0.9 * synthetic_rir(sample_rate, rt60, rng), sample_rate)
        rir_entries.append((key, path))

    lists = {"musan": os.path.join(musan_dir, "wav.scp"), "rirs": os.path.join(rirs_dir, "wav.scp")}
    write_table(lists["musan"], musan_entries)
    write_table(lists["rirs"], rir_entries)
    sources.report_skipped()
    return lists


class _BabbleSources:
    """The speech files babble is drawn from, read at one rate. A file that cannot be read
    (or holds no usable audio) is set aside once, logged, and another file is drawn in its
    place; :meth:`report_skipped` counts them at the end."""

    def __init__(self, wavs: Sequence[str], sample_rate: int):
        self.wavs = wavs
        self.sample_rate = sample_rate
        self.skipped: Dict[int, str] = {}   # index -> why

    def read(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """The first channel of file ``index`` in [-1, 1] at the set's rate, or of another
        file drawn with ``rng`` when it is unusable."""
        while True:
            if index not in self.skipped:
                try:
                    return self._read(self.wavs[index])
                except AudioInputError as error:
                    self.skipped[index] = str(error)
                    logger.warning("babble: skipping %s; drawing another speech file", error)
            usable = [i for i in range(len(self.wavs)) if i not in self.skipped]
            if len(usable) < MIN_BABBLE_SOURCES:
                raise SpeechSourceError(
                    f"babble needs at least {MIN_BABBLE_SOURCES} usable speech files; "
                    f"{len(self.skipped)} of the {len(self.wavs)} given are not "
                    f"({self._skipped_names()}; the first: {self.skipped[min(self.skipped)]})")
            index = int(rng.choice(usable))

    def _read(self, wav: str) -> np.ndarray:
        with open_audio(wav) as handle:
            return read_checked(handle, self.sample_rate) / np.float32(INT16_SCALE)

    def _skipped_names(self) -> str:
        return listed_names([self.wavs[index] for index in sorted(self.skipped)], most=3)

    def report_skipped(self) -> None:
        """Log how many speech files were skipped as unusable, if any."""
        if self.skipped:
            logger.warning("babble: skipped %d unusable speech file(s) of %d, made from the "
                           "others: %s", len(self.skipped), len(self.wavs),
                           self._skipped_names())
