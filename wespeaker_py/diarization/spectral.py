"""Spectral clustering of window embeddings: WeSpeaker's, its normalised variant, and NME-SC.

``spectral`` reproduces WeSpeaker's ``wespeaker/diar/spectral_clusterer.py``:

* affinity ``(cos + 1) / 2``, pruned per row: the ``keep`` strongest entries of
  a row become 1 and all others 0, with ``keep = min(10, N - 2)`` under 1,000
  windows and ``N - int((1 - p) N)`` (about ``p N``, ``p = 1%``) from 1,000 on;
  the row order of ``(cos + 1) / 2`` is the row order of the cosine, so only
  the cosines are needed;
* symmetrised ``0.5 (B + B^T)``, zero diagonal, unnormalised Laplacian ``D - A``;
* the number of speakers: one plus the position of the largest gap among the
  first ``max_speakers + 1`` eigenvalues, raised to ``min_speakers`` (one
  addition: when the largest gap among twice as many eigenvalues lies past
  ``max_speakers``, the count is ``max_speakers`` and reported as capped, where
  WeSpeaker's rule would pick among near-equal small gaps);
* k-means (10 initialisations) on the matching eigenvectors;
* two windows or fewer are one speaker.

``spectral-norm`` is the same with the symmetric normalised Laplacian
``D^-1/2 (D - A) D^-1/2`` in place of ``D - A``, for both the eigengap and the
eigenvectors (everything else as ``spectral``); through
:mod:`~wespeaker_py.diarization.clustering` it also counts to the last gap at least
``DEFAULT_GAP_RATIO`` (0.8) of the largest (``gap_ratio``, :func:`eigengap_count`)
and weights each kept neighbour by its cosine instead of 1 (``edge_weights``).
On our synthetic conversations the Laplacian gave lower DER than ``spectral`` with two
mini models at the same count accuracy, the gap ratio a better count, and the cosine
weights a better count again: a speaker with only a few windows has few neighbours of
its own among the 10 kept, and weighting lets those few outweigh the weaker links to
others (``bench/results_diarization_clustering.md``).

``nme-sc`` (Park et al., "Auto-tuning spectral clustering for speaker
diarization using normalized maximum eigengap", IEEE SPL 2020; NeMo's
default) chooses the pruning instead of fixing it: for each candidate number
``p`` of neighbours kept per row it computes the binarised graph's Laplacian
spectrum and the normalised maximum eigengap ``g_p`` (the largest gap among
the first ``max_speakers + 1`` eigenvalues over the largest eigenvalue), and
keeps the ``p`` with the smallest ``p / g_p``: the sparsest graph whose
groups stand out most clearly. Above ``DENSE_LIMIT`` windows the candidates
stop at :data:`SPARSE_MAX_NEIGHBOURS` instead of a quarter of the windows,
so memory grows with ``N`` rather than ``N^2`` (a quarter of 19,200 windows
held 7.5 GB at 4 h).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from wespeaker_py.diarization.graph import (DENSE_LIMIT, laplacian, neighbour_graph,
                                            largest_eigenvalue, smallest_eigenpairs,
                                            strongest_neighbours, unit_rows)


# NME-SC's largest candidate pruning above DENSE_LIMIT: what max_fraction 0.25 allows at the limit
SPARSE_MAX_NEIGHBOURS = DENSE_LIMIT // 4


@dataclass
class SpectralOutcome:
    """Labels, the number of speakers the eigengap chose (before ``min_speakers``), and ``p``."""

    labels: np.ndarray
    estimated: int
    neighbours: int


def wespeaker_keep(count: int, p: float = 0.01) -> int:
    """Neighbours kept per row by WeSpeaker's pruning for ``count`` windows."""
    pruned = max(count - 10, 2) if count < 1000 else int((1.0 - p) * count)
    return count - pruned


def eigengap_count(eigenvalues: np.ndarray, max_speakers: int, gap_ratio: float = 1.0) -> int:
    """The count from the gaps between the first ``max_speakers + 1`` eigenvalues.

    One plus the index of the last gap at least ``gap_ratio`` times the largest:
    with ``gap_ratio`` 1 the largest gap (WeSpeaker's rule); below 1, a later gap
    nearly as large wins, which counts a speaker with few windows that the
    largest gap would merge.
    """
    head = eigenvalues[:max_speakers + 1]
    if len(head) < 2:
        return 1
    gaps = np.diff(head)
    if gap_ratio >= 1.0:
        return int(np.argmax(gaps)) + 1
    return int(np.flatnonzero(gaps >= gap_ratio * gaps.max())[-1]) + 1


def kmeans_labels(points: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means with 10 initialisations (scikit-learn), as WeSpeaker runs it."""
    from sklearn.cluster import KMeans
    if num_clusters <= 1:
        return np.zeros(len(points), dtype=np.int64)
    model = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed)
    return model.fit_predict(points).astype(np.int64)


def _spectral_labels(lap, num_speakers: Optional[int], min_speakers: int, max_speakers: int,
                     seed: int, gap_ratio: float = 1.0):
    """k-means labels on the Laplacian's eigenvectors, and the eigengap's count.

    The count is WeSpeaker's (the first ``max_speakers + 1`` eigenvalues),
    except when the gap over twice as many eigenvalues lies past
    ``max_speakers``: then the recording likely has more speakers than allowed,
    the count is ``max_speakers`` and that wider count is returned as found.
    """
    count = lap.shape[0]
    wanted = 2 * max_speakers + 2 if num_speakers is None else num_speakers
    values, vectors = smallest_eigenpairs(lap, min(count, max(wanted, min_speakers)), seed)
    estimated = eigengap_count(values, max_speakers, gap_ratio)
    wider = eigengap_count(values, 2 * max_speakers + 1)
    if wider > max_speakers:
        estimated = wider
    chosen = num_speakers if num_speakers is not None else max(min(estimated, max_speakers),
                                                               min_speakers)
    chosen = max(1, min(chosen, count))
    return kmeans_labels(vectors[:, :chosen], chosen, seed), estimated


def spectral_cluster(embeddings: np.ndarray, num_speakers: Optional[int] = None,
                     min_speakers: int = 1, max_speakers: int = 20, p: float = 0.01,
                     seed: int = 0, normalised: bool = False,
                     gap_ratio: float = 1.0, edge_weights: str = "binary") -> SpectralOutcome:
    """WeSpeaker's spectral clustering (see the module doc) of ``[N, D]`` embeddings.

    ``normalised``: ``spectral-norm``, the symmetric normalised Laplacian instead;
    ``gap_ratio``: see :func:`eigengap_count` (1: WeSpeaker's largest gap);
    ``edge_weights``: ``binary`` (WeSpeaker's) or ``cosine`` (each kept neighbour
    weighted by its cosine, see :func:`~wespeaker_py.diarization.graph.neighbour_graph`).
    """
    count = len(embeddings)
    if count <= 2:
        return SpectralOutcome(np.zeros(count, dtype=np.int64), 1, 0)
    keep = wespeaker_keep(count, p)
    indices, cosines = strongest_neighbours(unit_rows(embeddings), keep)
    graph = neighbour_graph(indices, count, count <= DENSE_LIMIT,
                            cosines if edge_weights == "cosine" else None)
    lap = laplacian(graph, normalised)
    labels, estimated = _spectral_labels(lap, num_speakers, min_speakers, max_speakers, seed,
                                         gap_ratio)
    return SpectralOutcome(labels, estimated, keep)


def nme_candidates(count: int, max_fraction: float = 0.25, volume: int = 30,
                   max_neighbours: Optional[int] = None) -> np.ndarray:
    """Neighbour counts ``p`` to try: up to ``volume`` values spread over ``2..max_fraction*N``.

    ``max_neighbours`` caps the largest. A row's strongest neighbour is itself,
    so ``p = 1`` would leave no edges.
    """
    largest = min(count - 1, int(max_fraction * count))
    if max_neighbours is not None:
        largest = min(largest, max_neighbours)
    largest = max(2, largest)
    return np.unique(np.linspace(2, largest, min(volume, largest - 1)).astype(np.int64))


def nme_spectral_cluster(embeddings: np.ndarray, num_speakers: Optional[int] = None,
                         min_speakers: int = 1, max_speakers: int = 20,
                         max_fraction: float = 0.25, volume: int = 30,
                         seed: int = 0, gap_ratio: float = 1.0,
                         edge_weights: str = "binary") -> SpectralOutcome:
    """NME-SC (see the module doc): the pruning chosen by the normalised maximum eigengap.

    ``gap_ratio`` applies to the count on the chosen graph (:func:`eigengap_count`);
    ``edge_weights`` as in :func:`spectral_cluster`.
    """
    count = len(embeddings)
    if count <= 2:
        return SpectralOutcome(np.zeros(count, dtype=np.int64), 1, 0)
    dense = count <= DENSE_LIMIT
    candidates = (nme_candidates(count, max_fraction, volume) if dense else
                  nme_candidates(count, max_fraction, min(volume, 10), SPARSE_MAX_NEIGHBOURS))
    indices, cosines = strongest_neighbours(unit_rows(embeddings), int(candidates[-1]))
    best = None
    for p in candidates:
        # strongest_neighbours lists a row's neighbours weakest first
        first = indices.shape[1] - p
        lap = laplacian(neighbour_graph(indices[:, first:], count, dense,
                                        cosines[:, first:] if edge_weights == "cosine" else None))
        values, _ = smallest_eigenpairs(lap, min(count, max_speakers + 1), seed)
        gap = float(np.max(np.diff(values))) if len(values) > 1 else 0.0
        normalised_gap = gap / (largest_eigenvalue(lap, seed) + 1e-10)  # 0 without edges
        ratio = p / (normalised_gap + 1e-10)
        if best is None or ratio < best[0]:
            best = (ratio, int(p), lap)
    _, p, lap = best
    labels, estimated = _spectral_labels(lap, num_speakers, min_speakers, max_speakers, seed,
                                         gap_ratio)
    return SpectralOutcome(labels, estimated, p)
