"""A small file of enrolled speakers: per speaker the sum and count of unit-length embeddings.

Stored as a NumPy ``.npz`` (no pickles) holding ``names``, ``sums``, ``counts``
and the ``model`` it was built with (its name and embedding size), rewritten
atomically on every change, so an interrupted enrolment leaves the previous
gallery intact.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.file_utils import atomic_open


@dataclass
class Gallery:
    """Enrolled speakers; :meth:`centroids` are their unit-length mean embeddings."""

    model: str
    names: List[str] = field(default_factory=list)
    sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, name: str, unit_embeddings: np.ndarray) -> None:
        """Add unit-length embeddings ``[N, E]`` to speaker ``name`` (created if new)."""
        if not name or any(ch.isspace() for ch in name):
            raise WespeakerError(f"speaker name {name!r} is empty or has whitespace")
        unit_embeddings = np.asarray(unit_embeddings, dtype=np.float64)
        if self.sums.size == 0 and not self.names:
            self.sums = np.zeros((0, unit_embeddings.shape[1]))
        if unit_embeddings.shape[1] != self.sums.shape[1]:
            raise WespeakerError(f"embeddings of size {unit_embeddings.shape[1]} do not fit a "
                                 f"gallery of size {self.sums.shape[1]}")
        if name not in self.names:
            self.names.append(name)
            self.sums = np.vstack([self.sums, np.zeros((1, self.sums.shape[1]))])
            self.counts = np.append(self.counts, 0)
        row = self.names.index(name)
        self.sums[row] += unit_embeddings.sum(axis=0)
        self.counts[row] += len(unit_embeddings)

    def centroids(self) -> np.ndarray:
        """Unit-length mean embedding of each speaker, ``[speakers, E]``."""
        means = self.sums / np.maximum(self.counts, 1)[:, None]
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        return means / np.maximum(norms, 1e-12)

    def rank(self, unit_embedding: np.ndarray, top_k: int) -> List[Tuple[str, float]]:
        """The ``top_k`` speakers closest (cosine) to ``unit_embedding``, best first."""
        if not self.names:
            raise WespeakerError("the gallery holds no speakers; enroll some first")
        scores = self.centroids() @ np.asarray(unit_embedding, dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:max(1, top_k)]
        return [(self.names[i], float(scores[i])) for i in order]


def save_gallery(path: str, gallery: Gallery) -> None:
    """Write ``gallery`` to ``path`` atomically."""
    with atomic_open(path, "wb") as out:
        np.savez(out, model=np.array(gallery.model), names=np.array(gallery.names, dtype=str),
                 sums=gallery.sums, counts=gallery.counts)


def load_gallery(path: str, model: str) -> Gallery:
    """The gallery at ``path`` (an empty one when the file does not exist yet).

    A gallery built with another model (name or embedding size) is an error.
    """
    if not os.path.exists(path):
        return Gallery(model=model)
    try:
        with np.load(path, allow_pickle=False) as data:
            gallery = Gallery(model=str(data["model"]), names=[str(n) for n in data["names"]],
                              sums=np.asarray(data["sums"], dtype=np.float64),
                              counts=np.asarray(data["counts"], dtype=np.int64))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise WespeakerError(f"{path}: not a speaker gallery ({error})") from None
    if gallery.model != model:
        raise WespeakerError(f"{path} was enrolled with {gallery.model}, not {model}; "
                             f"use another gallery file")
    return gallery
