"""Narrow-band fill: the mel bins that low-rate audio leaves empty, estimated from the bins below.

Audio recorded at 8 kHz and upsampled for a 16 kHz model has nothing above 4 kHz,
so the fbank's top mel bins sit at the noise floor, far below anything the model
heard in training. A model trained without CMN (the mini recipe's) is thrown by
that more than by the missing information: its embeddings of all 8 kHz audio
crowd together. A :class:`BandFill` replaces those bins, frame by frame, with a
linear (ridge) estimate from the bins that the low rate keeps, learnt from
wide-band audio and the same audio brought down to the low rate and back
(:func:`fit_band_fill`). It is applied to the log-mel energies before CMN
(:meth:`~wespeaker_py.frontend.features.FbankFeatures.forward`'s ``band_fill``).

On the mini recipe's test trials brought to 8 kHz, the 16 kHz mini model's cosine
EER falls from 16.1% to 6.5% with it (16 kHz: 4.0%); see docs/diarization.md for
what it does to 8 kHz diarization. Saved as ``band_fill_<rate>hz.npz`` beside the
model (:func:`band_fill_name`), where the API finds it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from wespeaker_py.errors import WespeakerError
from wespeaker_py.frontend.fbank import mel_bin_tops
from wespeaker_py.io.layout import BAND_FILL_NAME
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.npz_files import NpzArray, NpzKind, read_npz
from wespeaker_py.utils.paths import rate_in_name

# the skip reason of an utterance that came below the model's rate: no wide band to learn from
NARROW_SOURCE = "narrow_band_source"
# A bin is filled when its triangle reaches above this share of the low rate's Nyquist
# frequency: resamplers roll off just below Nyquist, so those bins are part-empty too.
USABLE_BAND = 0.975
RIDGE = 1.0  # ridge penalty on the map's weights (the inputs are log energies, ~1-20)
_BAND_FILL_FILE = NpzKind(
    "band fill", "'wespeaker-py band-fill'",
    {"heard_rate": NpzArray("integer", 0), "sample_rate": NpzArray("integer", 0),
     "num_mel_bins": NpzArray("integer", 0), "kept": NpzArray("integer", 1),
     "filled": NpzArray("integer", 1), "weights": NpzArray("number", 2),
     "num_frames": NpzArray("integer", 0)},
    unreadable="{name} {path} cannot be read ({why}); learn one with {written_by}")


class BandFillError(WespeakerError, ValueError):
    """A band fill that cannot be learnt, read or used here, naming what is wrong."""


def band_fill_name(heard_rate: int) -> str:
    """The file name of the band fill for audio heard at ``heard_rate``."""
    return BAND_FILL_NAME.format(int(heard_rate))


def band_fill_rate_of(name: str) -> Optional[int]:
    """The rate a ``band_fill_<rate>hz.npz`` file name is for (None: not such a name)."""
    return rate_in_name(BAND_FILL_NAME, name)


def split_bins(sample_rate: int, num_mel_bins: int, frame_length: float,
               heard_rate: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(kept, filled)``: the mel bins that audio heard at ``heard_rate`` keeps, and
    those it leaves (part-)empty."""
    if not 0 < heard_rate < sample_rate:
        raise BandFillError(f"heard_rate must be between 0 and the model's {sample_rate} Hz, "
                            f"got {heard_rate}")
    tops = mel_bin_tops(sample_rate, num_mel_bins, frame_length)
    kept = np.flatnonzero(tops < USABLE_BAND * heard_rate / 2)
    filled = np.flatnonzero(tops >= USABLE_BAND * heard_rate / 2)
    if kept.size == 0 or filled.size == 0:
        raise BandFillError(f"at {heard_rate} Hz the {num_mel_bins} mel bins of {sample_rate} "
                            f"Hz audio keep {kept.size} and lose {filled.size}: nothing to fill "
                            f"from or nothing to fill")
    return kept, filled


@dataclass
class BandFill:
    """``feats[..., filled] = [feats[..., kept], 1] @ weights``, for audio heard at
    ``heard_rate`` and fed to a model at ``sample_rate``."""

    heard_rate: int
    sample_rate: int
    num_mel_bins: int
    kept: np.ndarray     # [K] bin indices
    filled: np.ndarray   # [F] bin indices
    weights: np.ndarray  # [K + 1, F]; the last row is the bias
    num_frames: int = 0  # frames it was learnt from
    # the indices and weights as tensors, by (device, dtype) of the features they fill
    _tensors: Dict[Tuple[str, torch.dtype], Tuple[torch.Tensor, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def apply(self, feats: torch.Tensor) -> torch.Tensor:
        """``[..., frames, num_mel_bins]`` log-mel energies with the empty bins filled (a copy)."""
        if feats.shape[-1] != self.num_mel_bins:
            raise BandFillError(f"the band fill is for {self.num_mel_bins} mel bins, the "
                                f"features have {feats.shape[-1]}")
        key = (str(feats.device), feats.dtype)
        if key not in self._tensors:
            self._tensors[key] = (
                torch.as_tensor(self.kept, device=feats.device),
                torch.as_tensor(self.filled, device=feats.device),
                torch.as_tensor(self.weights, dtype=feats.dtype, device=feats.device))
        kept, filled, weights = self._tensors[key]
        out = feats.clone()
        out[..., filled] = feats[..., kept] @ weights[:-1] + weights[-1]
        return out

    def affine(self) -> np.ndarray:
        """The same map as one float32 matrix ``[num_mel_bins + 1, num_mel_bins]``:
        ``feats @ m[:-1] + m[-1]`` fills the bins as :meth:`apply` does (the form an
        exported graph takes it in; :func:`identity_affine` leaves every bin as it is)."""
        matrix = identity_affine(self.num_mel_bins).astype(np.float64)
        matrix[:, self.filled] = 0.0
        matrix[np.ix_(self.kept, self.filled)] = self.weights[:-1]
        matrix[-1, self.filled] = self.weights[-1]
        return matrix.astype(np.float32)

    @property
    def digest(self) -> str:
        """16 hex digits naming its bins and weights (recorded by what was learnt through it)."""
        content = hashlib.sha256()
        for array in (self.kept, self.filled, self.weights):
            content.update(np.ascontiguousarray(array).tobytes())
        return content.hexdigest()[:16]

    def describe(self) -> str:
        """One line for logs."""
        return (f"{self.filled.size} of {self.num_mel_bins} mel bins filled from "
                f"{self.kept.size} for {self.heard_rate} Hz audio at {self.sample_rate} Hz, "
                f"learnt from {self.num_frames} frames")

    def save(self, path: str) -> None:
        """Write it to ``path`` (``.npz``) atomically."""
        with atomic_open(path, "wb") as handle:
            np.savez(handle, heard_rate=self.heard_rate, sample_rate=self.sample_rate,
                     num_mel_bins=self.num_mel_bins, kept=self.kept, filled=self.filled,
                     weights=self.weights, num_frames=self.num_frames)

    @classmethod
    def load(cls, path: str) -> "BandFill":
        """Read one written by :meth:`save`; a missing or malformed file names itself."""
        stored = read_npz(path, _BAND_FILL_FILE, BandFillError)
        fill = cls(int(stored["heard_rate"]), int(stored["sample_rate"]),
                   int(stored["num_mel_bins"]), np.asarray(stored["kept"], np.int64),
                   np.asarray(stored["filled"], np.int64),
                   np.asarray(stored["weights"], np.float64), int(stored["num_frames"]))
        bins = np.concatenate([fill.kept, fill.filled])
        if (fill.weights.shape != (fill.kept.size + 1, fill.filled.size)
                or not np.isfinite(fill.weights).all()
                or sorted(bins.tolist()) != list(range(fill.num_mel_bins))):
            raise BandFillError(f"band fill {path}: bins {fill.kept.size} + {fill.filled.size} "
                                f"of {fill.num_mel_bins} and weights {fill.weights.shape} do "
                                f"not fit together or are not finite")
        return fill


def fit_band_fill(pairs: Iterable[Tuple[np.ndarray, np.ndarray]], heard_rate: int,
                  sample_rate: int, num_mel_bins: int, frame_length: float) -> BandFill:
    """Learn the fill from ``(wide, narrow)`` log-mel pairs ``[frames, num_mel_bins]``: the
    same audio as heard at ``sample_rate`` and at ``heard_rate`` (brought down and back)."""
    kept, filled = split_bins(sample_rate, num_mel_bins, frame_length, heard_rate)
    size = kept.size + 1
    gram = np.zeros((size, size))
    cross = np.zeros((size, filled.size))
    frames = 0
    for wide, narrow in pairs:
        count = min(len(wide), len(narrow))
        inputs = np.hstack([np.asarray(narrow[:count, kept], np.float64), np.ones((count, 1))])
        gram += inputs.T @ inputs
        cross += inputs.T @ np.asarray(wide[:count, filled], np.float64)
        frames += count
    if frames <= size:
        raise BandFillError(f"a band fill needs more than {size} frames, got {frames}")
    penalty = RIDGE * np.eye(size)
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    weights = np.linalg.solve(gram + penalty, cross)
    return BandFill(int(heard_rate), int(sample_rate), int(num_mel_bins), kept, filled,
                    weights, frames)


def identity_affine(num_mel_bins: int) -> np.ndarray:
    """The :meth:`BandFill.affine` of no fill: the identity over a zero bias row."""
    return np.vstack([np.eye(num_mel_bins, dtype=np.float32),
                      np.zeros((1, num_mel_bins), np.float32)])


def check_fits(fill: "BandFill", sample_rate: int, num_mel_bins: int, where: str) -> None:
    """Raise :class:`BandFillError` unless ``fill`` is for ``num_mel_bins`` at ``sample_rate``
    (the fbank of ``where``: "the model's fbank", a graph's path)."""
    if (fill.sample_rate, fill.num_mel_bins) != (sample_rate, num_mel_bins):
        raise BandFillError(f"the band fill for {fill.heard_rate} Hz is for {fill.num_mel_bins} "
                            f"mel bins at {fill.sample_rate} Hz; {where} has {num_mel_bins} at "
                            f"{sample_rate} Hz")


def load_band_fills(files: Mapping[str, str]) -> List[BandFill]:
    """The band fills of ``files`` (``{name beside the model: path}``, as
    :func:`~wespeaker_py.api.companion_files.companions_at` lists them), each checked against
    its name."""
    fills = []
    for name, path in files.items():
        fill = BandFill.load(path)
        if band_fill_rate_of(name) != fill.heard_rate:
            raise BandFillError(f"band fill {path} was learnt for {fill.heard_rate} Hz; "
                                f"name it {band_fill_name(fill.heard_rate)}")
        fills.append(fill)
    return fills
