"""A small file of enrolled speakers: per speaker the sum and count of unit-length embeddings.

Stored as a NumPy ``.npz`` (no pickles) holding ``names``, ``sums``, ``counts``, the
``model`` it was built with (its name and embedding size) and that model's
``identity`` (:mod:`wespeaker_py.runtime.identity`; galleries written before it was
recorded lack it and are used with a warning), rewritten atomically on every change,
so an interrupted enrolment leaves the previous gallery intact. For each speaker
enrolled from audio that came below the model's rate it also records that rate and
the band fill that audio went through (``narrowband_*`` arrays; see
:mod:`wespeaker_py.frontend.band_fill`), so that a fill learnt or replaced since is
noticed rather than silently compared against, and the mean vector its embeddings had
subtracted (``mean_vec``: a digest, "" for none;
:func:`~wespeaker_py.runtime.identity.mean_vec_digest`). It records a digest of each
recording's embedding (``recording_*`` arrays; :func:`recording_digest`), so that a
recording appended again to its speaker is known and not counted twice (galleries written
before that was recorded know only the recordings enrolled since).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

try:
    import fcntl
except ImportError:  # Windows: enrolments there run unlocked
    fcntl = None

import numpy as np

from wespeaker_py.errors import WespeakerError, did_you_mean
from wespeaker_py.runtime.identity import check_recorded_identity, check_recorded_mean
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.npz_files import NpzArray, NpzKind, read_npz
from wespeaker_py.utils.vectors import MIN_NORM, row_norms, unit_rows

logger = get_logger(__name__)

NARROWBAND_ARRAYS = ("narrowband_names", "narrowband_rates", "narrowband_fills")
RECORDING_ARRAYS = ("recording_names", "recording_digests")
# heard rate -> digest of the band fill audio heard at that rate went through ("": none)
HeardFills = Dict[int, str]
# what a speaker records when its recordings at one rate went through different fills
MIXED_FILLS = "mixed"
_GALLERY_FILE = NpzKind("speaker gallery", "`enroll`", {
    "model": NpzArray("text", 0), "names": NpzArray("text", 1), "sums": NpzArray("number", 2),
    "counts": NpzArray("integer", 1),
    # galleries written before these were recorded lack them
    "identity": NpzArray("text", 0, required=False),
    "mean_vec": NpzArray("text", 0, required=False),
    "narrowband_names": NpzArray("text", 1, required=False),
    "narrowband_rates": NpzArray("integer", 1, required=False),
    "narrowband_fills": NpzArray("text", 1, required=False),
    "recording_names": NpzArray("text", 1, required=False),
    "recording_digests": NpzArray("text", 1, required=False)})


class GalleryFileError(WespeakerError, ValueError):
    """A gallery file that cannot be read (empty, not an ``.npz``, arrays missing or
    inconsistent) or that belongs to another model."""


class SpeakerExistsError(WespeakerError, ValueError):
    """Enrolling a name the gallery already holds, without saying replace or append."""


class SpeakerNotEnrolledError(WespeakerError, ValueError):
    """Removing a name the gallery does not hold."""


class EmptyGalleryError(WespeakerError, ValueError):
    """Identifying against a gallery file that holds no speakers."""


class ZeroEmbeddingError(WespeakerError, ValueError):
    """An embedding, or a speaker's mean one, with no direction (all zeros, or nothing left
    once the mean vector is subtracted) or not finite: it has no cosine with anything."""


def recording_digest(unit_embedding: np.ndarray) -> str:
    """What a gallery records of one enrolled recording: a digest of its unit embedding
    (the same audio through the same model gives the same one)."""
    data = np.ascontiguousarray(unit_embedding, dtype=np.float64).tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


def check_top_k(top_k: int) -> None:
    """Raise unless ``top_k`` (how many speakers to rank) is at least 1."""
    if top_k < 1:
        raise WespeakerError(f"top_k must be at least 1, got {top_k}")


@dataclass
class Gallery:
    """Enrolled speakers; :meth:`centroids` are their unit-length mean embeddings."""

    model: str
    names: List[str] = field(default_factory=list)
    sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    identity: str = ""
    # digest of the mean vector subtracted ("": none; None: a gallery older than the record)
    mean_vec: Optional[str] = ""
    # speaker -> the rates below the model's that its recordings came at, and their fills
    narrowband: Dict[str, HeardFills] = field(default_factory=dict)
    # speaker -> the recording_digest of each recording enrolled (since galleries record it)
    recordings: Dict[str, List[str]] = field(default_factory=dict)

    def check_enrollment(self, name: str, replace: bool = False, append: bool = False) -> None:
        """Raise unless ``name`` may be enrolled: a valid name, new or with replace/append."""
        if not name or any(ch.isspace() for ch in name):
            raise WespeakerError(f"speaker name {name!r} is empty or has whitespace")
        if replace and append:
            raise WespeakerError("choose one of replace (--replace) and append (--append)")
        if name in self.names and not (replace or append):
            count = int(self.counts[self.names.index(name)])
            raise SpeakerExistsError(
                f"speaker {name!r} is already enrolled ({count} recording(s)); pass --replace "
                f"(replace=True) to enroll anew or --append (append=True) to add recordings")

    def add(self, name: str, unit_embeddings: np.ndarray, replace: bool = False,
            append: bool = False, heard: Optional[Mapping[int, str]] = None) -> None:
        """Add unit-length embeddings ``[N, E]`` to speaker ``name``.

        A name already enrolled needs ``replace`` (its earlier recordings are
        dropped) or ``append`` (these are added to them). ``heard``: the rates
        below the model's that these recordings came at, each with the digest
        of its band fill ("" for none); appended through another fill than the
        speaker's earlier recordings at that rate, the rate is marked
        :data:`MIXED_FILLS`, which matches no fill. Callers leave out the recordings
        the speaker already holds (:meth:`enrolled_already`).
        """
        self.check_enrollment(name, replace, append)
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
        if replace:
            self.sums[row], self.counts[row] = 0.0, 0
            self.narrowband.pop(name, None)
            self.recordings.pop(name, None)
        self.sums[row] += unit_embeddings.sum(axis=0)
        self.counts[row] += len(unit_embeddings)
        self.recordings.setdefault(name, []).extend(
            recording_digest(unit) for unit in unit_embeddings)
        recorded = self.narrowband.setdefault(name, {})
        for rate, digest in (heard or {}).items():
            recorded[rate] = digest if recorded.get(rate, digest) == digest else MIXED_FILLS
        if not recorded:
            del self.narrowband[name]

    def remove(self, name: str, path: str) -> None:
        """Drop speaker ``name`` and all it records; one the gallery at ``path`` does not
        hold raises :class:`SpeakerNotEnrolledError` naming those it holds."""
        if name not in self.names:
            held = (f"it holds {listed_names(self.names)}{did_you_mean(name, self.names)}"
                    if self.names else "it holds no speakers")
            raise SpeakerNotEnrolledError(f"gallery {path}: speaker {name!r} is not "
                                          f"enrolled; {held}")
        row = self.names.index(name)
        del self.names[row]
        self.sums = np.delete(self.sums, row, axis=0)
        self.counts = np.delete(self.counts, row)
        self.narrowband.pop(name, None)
        self.recordings.pop(name, None)

    def enrolled_already(self, name: str, unit_embeddings: Sequence[np.ndarray]) -> List[int]:
        """Positions in ``unit_embeddings`` of the recordings speaker ``name`` already holds
        (by :func:`recording_digest`; none for a speaker not enrolled, or enrolled before
        the gallery recorded them)."""
        held = set(self.recordings.get(name, ()))
        return [number for number, unit in enumerate(unit_embeddings)
                if recording_digest(unit) in held]

    def check_has_speakers(self, path: str) -> None:
        """Raise :class:`EmptyGalleryError` when the gallery at ``path`` holds no speakers
        (none enrolled yet, or all removed): there is no one to identify against."""
        if not self.names:
            raise EmptyGalleryError(
                f"gallery {path} holds no speakers (none enrolled yet, or all removed); "
                f"enroll some into it first ('wespeaker-py enroll --gallery {path} NAME "
                f"AUDIO', model.enroll)")

    def stale_band_fills(self, current: Callable[[int], str], only: Optional[str] = None
                         ) -> Dict[int, List[str]]:
        """``{rate: [speakers]}`` enrolled from audio heard at ``rate`` through another band
        fill (or another presence of one) than ``current(rate)`` gives now; ``only``: look
        at that speaker alone."""
        stale: Dict[int, List[str]] = {}
        now: HeardFills = {}
        for name in self.names if only is None else [only]:
            for rate, digest in self.narrowband.get(name, {}).items():
                if rate not in now:
                    now[rate] = current(rate)
                if now[rate] != digest:
                    stale.setdefault(rate, []).append(name)
        return stale

    def centroids(self) -> np.ndarray:
        """Unit-length mean embedding of each speaker, ``[speakers, E]``.

        A speaker whose mean has no direction (no recordings, or embeddings that cancel
        out) raises :class:`ZeroEmbeddingError` naming them.
        """
        means = self.sums / np.maximum(self.counts, 1)[:, None]
        norms = row_norms(means)[:, 0]
        empty = [name for name, norm in zip(self.names, norms) if not norm >= MIN_NORM]
        if empty:
            raise ZeroEmbeddingError(f"speaker(s) {listed_names(empty, 5)} of the "
                                     f"gallery have a mean embedding of no direction (no "
                                     f"recordings, or embeddings that cancel out); enroll "
                                     f"them again with --replace (replace=True)")
        return unit_rows(means)

    def rank(self, unit_embedding: np.ndarray, top_k: int) -> List[Tuple[str, float]]:
        """The ``top_k`` (at least 1) speakers closest (cosine, in [-1, 1]) to
        ``unit_embedding``."""
        check_top_k(top_k)
        if not self.names:
            raise WespeakerError("the gallery holds no speakers; enroll some first")
        # unit vectors' products may round past 1; a cosine is reported in its range
        scores = np.clip(self.centroids() @ np.asarray(unit_embedding, dtype=np.float64),
                         -1.0, 1.0)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [(self.names[i], float(scores[i])) for i in order]


@contextlib.contextmanager
def gallery_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of the gallery at ``path``; another
    process waits until the holder is done. The lock is on the gallery's folder (made
    if missing): the gallery itself is replaced on every write, so a lock on it would
    guard an old file, and a lock file beside it would stay behind. Where the folder
    cannot be locked (NFS refuses flock on a folder) the write goes ahead unlocked,
    with a warning."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle = None
    if fcntl is not None:
        try:
            handle = os.open(folder, os.O_RDONLY)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if handle is not None:
                os.close(handle)
                handle = None
            logger.warning("%s: cannot lock its folder (%s); enrolments into it at the same "
                           "time may lose a speaker", path, error)
    try:
        yield
    finally:
        if handle is not None:
            os.close(handle)   # closing releases the lock


def save_gallery(path: str, gallery: Gallery) -> None:
    """Write ``gallery`` to ``path`` atomically."""
    heard = [(name, rate, digest) for name in gallery.names
             for rate, digest in sorted(gallery.narrowband.get(name, {}).items())]
    recorded = [(name, digest) for name in gallery.names
                for digest in gallery.recordings.get(name, ())]
    with atomic_open(path, "wb") as out:
        np.savez(out, model=np.array(gallery.model), names=np.array(gallery.names, dtype=str),
                 sums=gallery.sums, counts=gallery.counts, identity=np.array(gallery.identity),
                 mean_vec=np.array(gallery.mean_vec or ""),
                 narrowband_names=np.array([name for name, _, _ in heard], dtype=str),
                 narrowband_rates=np.array([rate for _, rate, _ in heard], dtype=np.int64),
                 narrowband_fills=np.array([digest for _, _, digest in heard], dtype=str),
                 recording_names=np.array([name for name, _ in recorded], dtype=str),
                 recording_digests=np.array([digest for _, digest in recorded], dtype=str))


def remove_speaker(path: str, name: str) -> int:
    """Remove speaker ``name`` from the gallery at ``path``, read again and rewritten
    atomically under its lock (:func:`gallery_lock`, as enrolments take it); return how
    many speakers it still holds. Removing the last one leaves a valid gallery with none.

    Nothing is embedded, so no model is needed: the records of the model the gallery was
    made with (name and embedding size, identity, mean vector, the band fills of the
    speakers left) are kept as they are, and checked by the next enrolment or
    identification as before.
    """
    if not os.path.exists(path):   # checked first: the lock would make a missing folder
        raise GalleryFileError(f"gallery {path} does not exist; there is no speaker to "
                               f"remove")
    with gallery_lock(path):
        gallery = read_gallery(path)
        gallery.remove(name, path)
        save_gallery(path, gallery)
    return len(gallery.names)


def read_gallery(path: str) -> Gallery:
    """The gallery stored at ``path``; a file that is not one raises
    :class:`GalleryFileError` saying what is wrong with it."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise GalleryFileError(f"gallery {path} is empty (0 bytes); delete it or enroll "
                               f"into another file")
    data = read_npz(path, _GALLERY_FILE, GalleryFileError)
    gallery = Gallery(model=str(data["model"]), names=[str(n) for n in data["names"]],
                      sums=np.asarray(data["sums"], dtype=np.float64),
                      counts=np.asarray(data["counts"], dtype=np.int64),
                      identity=str(data.get("identity", "")),
                      mean_vec=str(data["mean_vec"]) if "mean_vec" in data else None)
    rows = len(gallery.names)
    if gallery.sums.shape[0] != rows or gallery.counts.shape != (rows,):
        raise GalleryFileError(_GALLERY_FILE.damaged(
            path, f"{rows} names, sums of shape {gallery.sums.shape}, counts of shape "
                  f"{gallery.counts.shape}"))
    gallery.narrowband = _heard_fills(path, data)
    gallery.recordings = _recordings(path, data)
    return gallery


def _heard_fills(path: str, data: Mapping[str, np.ndarray]) -> Dict[str, HeardFills]:
    """The ``narrowband_*`` records of the gallery ``path`` whose arrays are ``data``:
    ``{speaker: {rate: band fill digest}}`` (none in galleries written before band fills)."""
    present = [name for name in NARROWBAND_ARRAYS if name in data]
    if not present:
        return {}
    absent = [name for name in NARROWBAND_ARRAYS if name not in data]
    if absent:
        raise GalleryFileError(_GALLERY_FILE.damaged(path, f"no {', '.join(absent)} array(s)"))
    columns = [data[name] for name in NARROWBAND_ARRAYS]
    if len({len(column) for column in columns}) > 1:
        raise GalleryFileError(_GALLERY_FILE.damaged(
            path, f"{', '.join(NARROWBAND_ARRAYS)} of different lengths"))
    heard: Dict[str, HeardFills] = {}
    for name, rate, digest in zip(*columns):
        heard.setdefault(str(name), {})[int(rate)] = str(digest)
    return heard


def _recordings(path: str, data: Mapping[str, np.ndarray]) -> Dict[str, List[str]]:
    """The ``recording_*`` records of the gallery ``path`` whose arrays are ``data``:
    ``{speaker: [recording digests]}`` (none in galleries written before they were)."""
    present = [name for name in RECORDING_ARRAYS if name in data]
    if not present:
        return {}
    if len(present) < len(RECORDING_ARRAYS) or len(data[RECORDING_ARRAYS[0]]) != len(
            data[RECORDING_ARRAYS[1]]):
        raise GalleryFileError(_GALLERY_FILE.damaged(
            path, f"{' and '.join(RECORDING_ARRAYS)} missing or of different lengths"))
    recordings: Dict[str, List[str]] = {}
    for name, digest in zip(*(data[name] for name in RECORDING_ARRAYS)):
        recordings.setdefault(str(name), []).append(str(digest))
    return recordings


def load_gallery(path: str, model: str, identity: str, force: bool = False,
                 mean_vec: str = "") -> Gallery:
    """The gallery at ``path`` for the model ``model`` (name/embedding size) of ``identity``
    that subtracts the mean vector of digest ``mean_vec``; an empty one when the file does
    not exist yet.

    A gallery of another model name or embedding size is an error; one made by a
    model of another identity, or with another mean vector, is an error unless ``force``
    (then a warning); see :func:`~wespeaker_py.runtime.identity.check_recorded_identity`.
    """
    if not os.path.exists(path):
        return Gallery(model=model, identity=identity, mean_vec=mean_vec)
    gallery = read_gallery(path)
    if gallery.model != model:
        raise GalleryFileError(f"{path} was enrolled with {gallery.model}, not {model}; "
                               f"use another gallery file")
    check_recorded_identity(path, "gallery", gallery.identity, identity, force)
    check_recorded_mean(path, "gallery", gallery.mean_vec, mean_vec, force)
    return gallery
