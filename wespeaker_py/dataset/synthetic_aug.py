"""Synthetic stand-ins for MUSAN and RIRS_NOISES, for recipes that run offline.

The files are laid out and listed the way the VoxCeleb recipe lists the real
corpora (``<data>/musan/wav.scp`` keyed ``noise/...``, ``music/...``,
``speech/...`` and ``<data>/rirs/wav.scp``), so the training pipeline treats
them exactly like the real material:

- noise: white, pink and brown noise (power spectra 1, 1/f, 1/f^2);
- music: sums of harmonic tones with slow note changes;
- speech (babble): 3 to 7 training utterances summed;
- RIRs: a direct-path impulse followed by exponentially decaying Gaussian
  noise whose decay gives an RT60 drawn from a range.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from wespeaker_py.audio import INT16_SCALE, open_audio, write_wav
from wespeaker_py.utils.tables import write_table


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

    ``speech_wavs`` are the utterances babble is made from (at least 3 are needed).
    Gives ``{"musan": <out_dir>/musan/wav.scp, "rirs": <out_dir>/rirs/wav.scp}``.
    """
    if len(speech_wavs) < 3:
        raise ValueError(f"babble needs at least 3 speech files, got {len(speech_wavs)}")
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

    for index in range(num_babble):
        chosen = rng.choice(len(speech_wavs), size=int(rng.integers(3, 8)), replace=True)
        utterances = [_read_mono(speech_wavs[i], sample_rate) for i in chosen]
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
    return lists


def _read_mono(path: str, sample_rate: int) -> np.ndarray:
    """The first channel of ``path`` in [-1, 1], which must be at ``sample_rate``."""
    with open_audio(path) as handle:
        if handle.samplerate != sample_rate:
            raise ValueError(f"{path}: sample rate {handle.samplerate} Hz, babble is made at "
                             f"{sample_rate} Hz")
        return handle.read_all() / np.float32(INT16_SCALE)
