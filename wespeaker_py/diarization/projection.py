"""A window LDA: a projection of window embeddings learnt from labelled speakers.

Diarization clusters 1.5 s windows, which a speaker model trained on longer
utterances separates less well than whole utterances. A linear discriminant
analysis fitted on windows of known speakers (the model's training speakers,
say) keeps the directions that tell speakers apart and drops those that do not;
clustering the projected windows counted speakers better on our synthetic
conversations (``bench/results_diarization_clustering.md``, "Fourth session").

:func:`fit_window_lda` fits it on ``[N, D]`` window embeddings and their speaker
labels; :class:`WindowLDA` projects (``(unit(x) - mean) @ matrix``), and is
saved as ``window_lda.npz`` beside the model
(:data:`~wespeaker_py.diarization.options.WINDOW_LDA_NAME`), with the
identity of the model whose windows it learnt from, so that it is not used with
another model unnoticed. One learnt for audio heard at a lower rate (8 kHz calls
for a 16 kHz model; from windows narrow-banded to it and wide-band ones of the same
speakers) records that ``heard_rate`` and is saved as
``window_lda_<rate>hz.npz`` (:func:`~wespeaker_py.diarization.options.window_lda_name`);
diarization uses it for recordings at or below that rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from wespeaker_py.utils.vectors import unit_rows
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.npz_files import NpzArray, NpzKind, read_npz

logger = get_logger(__name__)

DEFAULT_LDA_DIM = 32  # measured: 16-64 all helped, 32 best over two models
_WINDOW_LDA_FILE = NpzKind("window LDA", "`wespeaker-py window-lda`", {
    "mean": NpzArray("number", 1), "matrix": NpzArray("number", 2),
    "identity": NpzArray("text", 0), "num_speakers": NpzArray("integer", 0),
    "num_windows": NpzArray("integer", 0),
    # files written before these were recorded: learnt at the model's rate, no band fill
    "heard_rate": NpzArray("integer", 0, required=False),
    "band_fill": NpzArray("text", 0, required=False)})


class WindowLDAError(WespeakerError, ValueError):
    """Window LDA data or a file that cannot be used, naming what is wrong."""


@dataclass
class WindowLDA:
    """``(unit(x) - mean) @ matrix`` (``mean`` ``[D]``, ``matrix`` ``[D, d]``), and its source."""

    mean: np.ndarray
    matrix: np.ndarray
    identity: str = ""
    num_speakers: int = 0
    num_windows: int = 0
    heard_rate: int = 0  # the rate its windows were heard at, below the model's; 0: the model's
    band_fill: str = ""  # digest of the band fill its windows went through; "": none

    @property
    def input_dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.matrix.shape[1])

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """``[N, D]`` window embeddings -> ``[N, d]``."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.input_dim:
            raise WindowLDAError(f"the window LDA takes {self.input_dim}-dim embeddings, got "
                                 f"shape {embeddings.shape}; was it trained with another model?")
        return (unit_rows(embeddings) - self.mean) @ self.matrix

    def describe(self) -> str:
        """One line for logs: its dimensions and what it learnt from."""
        heard = f", for audio heard at {self.heard_rate} Hz" if self.heard_rate else ""
        return (f"{self.input_dim} -> {self.output_dim} dims, learnt from {self.num_windows} "
                f"windows of {self.num_speakers} speakers{heard}")

    def save(self, path: str) -> None:
        """Write it to ``path`` (``.npz``) atomically."""
        with atomic_open(path, "wb") as handle:
            np.savez(handle, mean=self.mean, matrix=self.matrix, identity=np.array(self.identity),
                     num_speakers=self.num_speakers, num_windows=self.num_windows,
                     heard_rate=self.heard_rate, band_fill=np.array(self.band_fill))

    @classmethod
    def load(cls, path: str) -> "WindowLDA":
        """Read one written by :meth:`save`; a missing or malformed file names itself."""
        stored = read_npz(path, _WINDOW_LDA_FILE, WindowLDAError)
        lda = cls(np.asarray(stored["mean"], dtype=np.float64),
                  np.asarray(stored["matrix"], dtype=np.float64),
                  str(stored["identity"]), int(stored["num_speakers"]),
                  int(stored["num_windows"]), int(stored.get("heard_rate", 0)),
                  str(stored.get("band_fill", "")))
        if (lda.mean.shape != (lda.input_dim,)
                or not np.isfinite(lda.matrix).all() or not np.isfinite(lda.mean).all()):
            raise WindowLDAError(f"window LDA {path}: mean {lda.mean.shape} and matrix "
                                 f"{lda.matrix.shape} do not fit together or are not finite")
        return lda


def fit_window_lda(embeddings: np.ndarray, speakers: Sequence[str], dim: int = DEFAULT_LDA_DIM,
                   identity: str = "", heard_rate: int = 0, band_fill: str = "") -> WindowLDA:
    """An LDA of ``[N, D]`` window embeddings (length-normalised) by their ``speakers``.

    ``dim`` is capped, with a warning, at one less than the number of speakers and
    at ``D`` (what an LDA can give). Fewer than two speakers, or no more windows than
    speakers, is an error.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(speakers)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise WindowLDAError(f"{len(labels)} speaker labels for embeddings of shape "
                             f"{embeddings.shape}")
    num_speakers = len(np.unique(labels))
    if num_speakers < 2 or len(labels) <= num_speakers:
        raise WindowLDAError(f"a window LDA needs windows of at least two speakers and more "
                             f"windows than speakers; got {len(labels)} windows of "
                             f"{num_speakers} speaker(s)")
    if dim < 1:
        raise WindowLDAError(f"the window LDA's dim must be at least 1, got {dim}")
    kept = min(dim, num_speakers - 1, embeddings.shape[1])
    if kept < dim:
        why = ("one learnt from this few speakers can merge speakers it did not see (the "
               "mini recipe learns it from 93)" if num_speakers - 1 < embeddings.shape[1]
               else "the embeddings have no more")
        logger.warning("a window LDA learnt from %d speakers (%d-dim embeddings) keeps %d "
                       "dimensions, not the %d asked for: %s", num_speakers,
                       embeddings.shape[1], kept, dim, why)
    dim = kept
    lda = LinearDiscriminantAnalysis(solver="svd").fit(unit_rows(embeddings), labels)
    return WindowLDA(lda.xbar_.astype(np.float64), lda.scalings_[:, :dim].astype(np.float64),
                     identity, num_speakers, len(labels), heard_rate, band_fill)
