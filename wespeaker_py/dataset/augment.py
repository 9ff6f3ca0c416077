"""Additive noise and reverberation, as WeSpeaker's ``add_reverb_noise`` processor.

With probability ``aug_prob`` a training chunk is either reverberated (a random
RIR, normalised to unit energy, full convolution cut to the chunk length, so the
RIR's own onset delay is kept) or mixed with noise at a random SNR chosen by the
noise key's type; the result is then scaled to a peak of 1 (on the [-1, 1]
scale), exactly as WeSpeaker does.

Noise types follow WeSpeaker (MUSAN keys such as ``noise/free-sound/...``):
``noise`` 0-15 dB, ``music`` 5-15 dB, ``speech`` 10-30 dB, anything else 0-15 dB;
keys starting with ``babble`` give Kaldi-style babble: 3-7 babble utterances,
each at its own SNR in 13-20 dB. Only the noise segment needed is read.

Drawing and reading (:meth:`Augmenter.plan`) are apart from the arithmetic
(:func:`apply_plan` here, or :mod:`~wespeaker_py.dataset.device_augment` on
the training device), so both paths take the same random draws.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import scipy.fft

from wespeaker_py.audio import INT16_SCALE, AudioCheckError, is_pipe, open_audio, read_whole
from wespeaker_py.dataset.chunk import read_random_chunk
from wespeaker_py.dataset.lists import read_audio_list
from wespeaker_py.dataset.stats import PipelineStats
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

# WeSpeaker's floor inside the dB computations (on the [-1, 1] scale).
POWER_FLOOR = 1e-4


@dataclass(frozen=True)
class NoiseType:
    """SNR range (dB) and how many noise signals of this type are mixed in."""

    snr_low: float
    snr_high: float
    min_count: int = 1
    max_count: int = 1


NOISE_TYPES: Dict[str, NoiseType] = {
    "noise": NoiseType(0.0, 15.0),
    "music": NoiseType(5.0, 15.0),
    "speech": NoiseType(10.0, 30.0),
    "babble": NoiseType(13.0, 20.0, 3, 7),
}
OTHER_NOISE = NoiseType(0.0, 15.0)


def noise_type_name(key: str) -> Optional[str]:
    """The :data:`NOISE_TYPES` name whose prefix the key starts with, or None."""
    for name in NOISE_TYPES:
        if key.startswith(name):
            return name
    return None


def power_db(signal: np.ndarray) -> float:
    """Mean power in dB with WeSpeaker's floor (signal on the [-1, 1] scale)."""
    return 10.0 * np.log10(np.mean(np.square(signal, dtype=np.float64)) + POWER_FLOOR)


def scale_noise_to_snr(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Scale ``noise`` so that ``power_db(audio) - power_db(scaled) == snr_db`` (WeSpeaker)."""
    gain = np.sqrt(10.0 ** ((power_db(audio) - power_db(noise) - snr_db) / 10.0))
    return (gain * noise).astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with an energy-normalised RIR and keep the first ``len(audio)`` samples."""
    energy = np.sqrt(np.sum(np.square(rir, dtype=np.float64)))
    if energy == 0.0:
        raise ValueError("the impulse response is all zeros")
    out = full_convolution(audio, (rir / energy).astype(np.float32))
    return out[:audio.size].astype(np.float32)


def full_convolution(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The full linear convolution of two non-empty 1-D real arrays, by real FFTs.

    It computes what ``scipy.signal.fftconvolve(signal, kernel, mode="full")`` does
    (same FFT length and dtype), without importing ``scipy.signal``: that import takes
    about a second, and every DataLoader worker would pay it again at each epoch.
    """
    if signal.size == 1 or kernel.size == 1:
        return signal * kernel   # exact, and what fftconvolve does with a one-sample input
    size = signal.size + kernel.size - 1
    fft_size = scipy.fft.next_fast_len(size, True)
    product = scipy.fft.rfft(signal, fft_size) * scipy.fft.rfft(kernel, fft_size)
    return scipy.fft.irfft(product, fft_size)[:size]


def peak_normalise(audio: np.ndarray) -> np.ndarray:
    """Scale to a peak of just under 1, as WeSpeaker does after augmenting."""
    return (audio / (np.max(np.abs(audio)) + POWER_FLOOR)).astype(np.float32)


@dataclass
class AugmentPlan:
    """The augmentation drawn for one chunk: reverb with ``rir``, or ``noises`` at ``snrs``.

    Signals are as read (int16 scale): the whole RIR, and noise segments of the
    chunk's length.
    """

    rir: Optional[np.ndarray] = None
    noises: List[np.ndarray] = field(default_factory=list)
    snrs: List[float] = field(default_factory=list)


def apply_plan(wav: np.ndarray, plan: AugmentPlan) -> np.ndarray:
    """Reverberate or add the noises to an int16-scale chunk, then peak-normalise."""
    audio = wav / INT16_SCALE
    if plan.rir is not None:
        mixed = reverberate(audio, plan.rir)
    else:
        mixed = audio.astype(np.float32, copy=True)
        for noise, snr in zip(plan.noises, plan.snrs):
            mixed += scale_noise_to_snr(audio, noise / INT16_SCALE, snr)
    return peak_normalise(mixed) * np.float32(INT16_SCALE)


class AugmentListError(WespeakerError):
    """A noise or RIR list that training cannot use: a folder (WeSpeaker's LMDB, say), or
    one none of whose files can be read (training would not augment)."""


# the file that makes a folder one of WeSpeaker's LMDB sets (tools/make_lmdb.py)
LMDB_DATA_FILE = "data.mdb"


def read_augment_list(path: str, what: str, config_key: str) -> List[Tuple[str, str]]:
    """The ``(key, wav)`` entries of the ``what`` list (``noise`` or ``RIR``) at ``path``,
    given as ``config_key`` (the config key and flag: ``noise_data``, ``reverb_data``).

    A folder is an :class:`AugmentListError` naming ``config_key`` and saying which file to
    give instead: WeSpeaker's LMDB sets (a folder holding ``data.mdb``) are not read here.
    """
    if os.path.isdir(path):
        raise AugmentListError(_folder_given(path, what, config_key))
    return read_audio_list(path)


def _folder_given(path: str, what: str, config_key: str) -> str:
    where = f"{config_key} {path} (--{config_key} or the config key)"
    if os.path.isfile(os.path.join(path, LMDB_DATA_FILE)):
        source = os.path.join(os.path.dirname(os.path.normpath(path)), "wav.scp")
        instead = (f"give the wav.scp it was made from: {source}" if os.path.isfile(source)
                   else "give the wav.scp it was made from (WeSpeaker's run.sh makes "
                        "data/musan/lmdb from data/musan/wav.scp and data/rirs/lmdb from "
                        "data/rirs/wav.scp)")
        return (f"{where}: a WeSpeaker LMDB {what} set (it holds {LMDB_DATA_FILE}), a format "
                f"wespeaker_py does not read; {instead}")
    inside = os.path.join(path, "wav.scp")
    instead = (f"give its wav.scp: {inside}" if os.path.isfile(inside)
               else "give a wav.scp or raw.list file")
    return f"{where}: a folder, not a {what} list; {instead}"


def _unusable(wav: str) -> bool:
    """A listed file that is missing or empty (a pipe command cannot be checked unrun)."""
    if is_pipe(wav):
        return False
    try:
        return os.path.getsize(wav) == 0
    except OSError:
        return True


def check_augment_list(path: str, what: str, config_key: str) -> List[Tuple[str, str]]:
    """Read the ``what`` list (``noise`` or ``RIR``) at ``path``, given as ``config_key``,
    and check its files exist.

    A folder is an :class:`AugmentListError` (:func:`read_augment_list`), and so is every
    file missing or empty, naming the list and the count; some of them a warning with
    the count (those are skipped and counted as ``bad_augmentation_source`` when drawn).
    Returns the entries.
    """
    entries = read_augment_list(path, what, config_key)
    missing = [(key, wav) for key, wav in entries if _unusable(wav)]
    if len(missing) == len(entries):
        key, wav = missing[0]
        raise AugmentListError(f"{path}: all {len(entries)} files of this {what} list are "
                               f"missing or empty (the first: {key} {wav}); fix the paths, "
                               f"or train without it")
    if missing:
        logger.warning("%s: %d of the %d files of this %s list are missing or empty (the "
                       "first: %s); they are skipped when drawn", path, len(missing),
                       len(entries), what, missing[0][1])
    return entries


class Augmenter:
    """Reverb and noise sources from lists, applied to chunks at a fixed sample rate."""

    def __init__(self, reverb_data: Optional[str], noise_data: Optional[str],
                 sample_rate: int):
        self.sample_rate = sample_rate
        self.rirs: List[Tuple[str, str]] = (read_augment_list(reverb_data, "RIR", "reverb_data")
                                            if reverb_data else [])
        self.noises: List[Tuple[str, str]] = (read_augment_list(noise_data, "noise", "noise_data")
                                              if noise_data else [])
        self.babble = [entry for entry in self.noises if noise_type_name(entry[0]) == "babble"]

    @property
    def enabled(self) -> bool:
        """Whether any augmentation source was given."""
        return bool(self.rirs or self.noises)

    def __call__(self, wav: np.ndarray, rng: np.random.Generator,
                 stats: PipelineStats) -> np.ndarray:
        """Reverberate or add noise to an int16-scale chunk; unchanged if the source is bad."""
        plan = self.plan(wav.size, rng, stats)
        return wav if plan is None else apply_plan(wav, plan)

    def plan(self, length: int, rng: np.random.Generator,
             stats: PipelineStats) -> Optional[AugmentPlan]:
        """Draw reverb or noise for a chunk of ``length`` samples and read its sources.

        None (counted in ``stats``) when a source cannot be used: the chunk is then
        kept unaugmented.
        """
        use_reverb = bool(self.rirs) and (not self.noises or int(rng.integers(1, 3)) == 1)
        try:
            if use_reverb:
                return AugmentPlan(rir=self._read_rir(rng))
            return self._plan_noise(length, rng)
        except _SourceError as err:
            stats.skip_source(err.key, str(err.cause))
            return None

    def _read_rir(self, rng: np.random.Generator) -> np.ndarray:
        key, path = self.rirs[int(rng.integers(0, len(self.rirs)))]
        try:
            with open_audio(path, name=key) as handle:
                rir = read_whole(handle, self.sample_rate)
        except AudioCheckError as err:
            raise _SourceError(key, err) from None
        if not np.any(rir):
            raise _SourceError(key, ValueError("the impulse response is all zeros"))
        return _finite(rir, key)

    def _noise_segment(self, key: str, path: str, length: int,
                       rng: np.random.Generator) -> np.ndarray:
        try:
            with open_audio(path, name=key) as handle:
                segment = read_random_chunk(handle, length, self.sample_rate, rng)
        except AudioCheckError as err:
            raise _SourceError(key, err) from None
        return _finite(segment, key)

    def _plan_noise(self, length: int, rng: np.random.Generator) -> AugmentPlan:
        key, path = self.noises[int(rng.integers(0, len(self.noises)))]
        type_name = noise_type_name(key)
        noise_type = NOISE_TYPES.get(type_name, OTHER_NOISE)
        sources = [(key, path)]
        if type_name == "babble":
            # distinct talkers where the list has enough of them
            count = int(rng.integers(noise_type.min_count, noise_type.max_count + 1))
            picks = rng.choice(len(self.babble), size=count, replace=len(self.babble) < count)
            sources = [self.babble[int(index)] for index in picks]
        plan = AugmentPlan()
        for source_key, source_path in sources:
            plan.noises.append(self._noise_segment(source_key, source_path, length, rng))
            plan.snrs.append(float(rng.uniform(noise_type.snr_low, noise_type.snr_high)))
        return plan


class _SourceError(WespeakerError):
    """A noise or RIR file could not be used (the sample is kept unaugmented)."""

    def __init__(self, key: str, cause: Exception):
        super().__init__(f"{key}: {cause}")
        self.key = key
        self.cause = cause


def _finite(samples: np.ndarray, key: str) -> np.ndarray:
    """``samples``, or :class:`_SourceError` if any is NaN or infinite: the peak
    normalisation would spread one over the whole augmented chunk."""
    bad = samples.size - np.count_nonzero(np.isfinite(samples))
    if bad:
        raise _SourceError(key, ValueError(f"{bad} of its {samples.size} samples read are NaN "
                                           f"or infinite"))
    return samples
