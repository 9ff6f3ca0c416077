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
* three windows or fewer (where the pruning keeps no neighbour but a window
  itself, so the graph has no edges) are one speaker, or as many as
  ``num_speakers`` (or ``min_speakers``) asks, grouped by average linkage of
  their cosines (WeSpeaker gives two windows one speaker whatever the count).

Two more additions for counts above ``max_speakers``: a graph that falls
apart into more separate groups than ``max_speakers`` has only zeros among the
eigenvalues looked at, and no eigengap; its groups are the clusters, the
closest joined down to ``max_speakers``, and the count is reported as capped
(at least that many). And the look over twice as many eigenvalues stops at a
count of half the windows: past it a speaker would have one window, and in a
short recording those eigenvalues reach the top of the spectrum. Far more speakers
than that look at (a 32-minute reading of 123 speakers, with 10 allowed) give
near-equal small eigenvalues throughout it, and the largest gap falls at 1; the graph
of each window's :data:`TIGHT_NEIGHBOURS` strongest neighbours still breaks into one
group per speaker or so (50 there, one for a single speaker of 1,500 windows): more
such groups than ``max_speakers`` cap the count too (:func:`tight_group_count`).

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
groups stand out most clearly. Graphs that break into more groups than
``max_speakers``, or into a group no larger than ``p``, are passed over, and
short recordings use ``spectral``'s pruning (:func:`nme_spectral_cluster`).
Above ``DENSE_LIMIT`` windows the candidates stop at :data:`SPARSE_MAX_NEIGHBOURS`
instead of a quarter of the windows, so memory grows with ``N`` rather than
``N^2`` (a quarter of 19,200 windows held 7.5 GB at 4 h).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from wespeaker_py.diarization.density import agglomerative_labels
from wespeaker_py.diarization.graph import (DENSE_LIMIT, Matrix, laplacian, neighbour_graph,
                                            largest_eigenvalue, separate_groups,
                                            smallest_eigenpairs, strongest_neighbours)
from wespeaker_py.diarization.refine import merge_close_clusters
from wespeaker_py.utils.vectors import unit_rows


# NME-SC's largest candidate pruning above DENSE_LIMIT: what max_fraction 0.25 allows at the limit
SPARSE_MAX_NEIGHBOURS = DENSE_LIMIT // 4
# up to this many windows WeSpeaker's pruning keeps no neighbour but each window itself
EDGELESS_WINDOWS = 3
# NME-SC searches its pruning from this many windows on (15 s of speech): below, its
# candidates keep at most 4 neighbours per window (see nme_spectral_cluster)
NME_MIN_WINDOWS = 20
# neighbours per window of the graph that tells many speakers from one (tight_group_count):
# with 2, even one speaker's windows fall into pairs and triples
TIGHT_NEIGHBOURS = 3


@dataclass
class SpectralOutcome:
    """Labels, the number of speakers the eigengap chose (before ``min_speakers``), and ``p``.

    ``at_least``: ``estimated`` counts groups of windows with no edge between them,
    more than ``max_speakers``; each may hold more than one speaker.
    """

    labels: np.ndarray
    estimated: int
    neighbours: int
    at_least: bool = False


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


def tight_group_count(indices: np.ndarray) -> int:
    """The separate groups of more than :data:`TIGHT_NEIGHBOURS` windows in the graph of each
    window's :data:`TIGHT_NEIGHBOURS` strongest neighbours (``indices``: each row's
    strongest, weakest first, as :func:`strongest_neighbours` lists them)."""
    count = indices.shape[0]
    graph = neighbour_graph(indices[:, -TIGHT_NEIGHBOURS:], count, count <= DENSE_LIMIT)
    return int((_group_sizes(graph) > TIGHT_NEIGHBOURS).sum())


def _spectral_labels(graph: Matrix, normalised: bool, embeddings: np.ndarray,
                     num_speakers: Optional[int], min_speakers: int, max_speakers: int,
                     seed: int, gap_ratio: float = 1.0, neighbours: int = 0,
                     tight_groups: int = 0) -> SpectralOutcome:
    """k-means labels on the Laplacian's eigenvectors, and the eigengap's count.

    The count is WeSpeaker's (the first ``max_speakers + 1`` eigenvalues),
    except when the gap over twice as many eigenvalues (up to a count of half
    the windows) lies past ``max_speakers``: then the recording likely has more
    speakers than allowed, the count is ``max_speakers`` and that wider count is
    returned as found; the same with ``tight_groups`` (:func:`tight_group_count`) when
    that is more than ``max_speakers``.
    A graph of more separate groups than ``max_speakers`` has no gap among those
    eigenvalues at all (each group gives one of value 0): its groups are the
    clusters, the closest joined down to ``max_speakers``, and their number is
    returned as found (``at_least``).
    """
    count = graph.shape[0]
    if num_speakers is None:
        groups = separate_groups(graph)
        if groups.max() + 1 > max_speakers:
            labels = merge_close_clusters(embeddings, groups, np.inf, max_speakers)
            return SpectralOutcome(labels, int(groups.max()) + 1, neighbours, True)
    lap = laplacian(graph, normalised)
    wanted = 2 * max_speakers + 2 if num_speakers is None else num_speakers
    values, vectors = smallest_eigenpairs(lap, min(count, max(wanted, min_speakers)), seed)
    estimated = eigengap_count(values, max_speakers, gap_ratio)
    # up to a count of half the windows: past it a speaker would have one window, and
    # when all are computed (few windows) the last gaps are the top of the spectrum
    wider = eigengap_count(values[:count // 2 + 1], 2 * max_speakers + 1)
    if wider > max_speakers:
        estimated = wider
    elif tight_groups > max_speakers:
        estimated = tight_groups
    chosen = num_speakers if num_speakers is not None else max(min(estimated, max_speakers),
                                                               min_speakers)
    chosen = max(1, min(chosen, count))
    return SpectralOutcome(kmeans_labels(vectors[:, :chosen], chosen, seed), estimated,
                           neighbours)


def _few_windows(embeddings: np.ndarray, num_speakers: Optional[int],
                 min_speakers: int) -> SpectralOutcome:
    """Up to :data:`EDGELESS_WINDOWS` windows, whose pruned graph has no edges: one speaker,
    or the count given (or ``min_speakers``), by average-linkage cosine agglomeration."""
    count = len(embeddings)
    wanted = min(num_speakers if num_speakers is not None else min_speakers, count)
    if wanted <= 1:
        return SpectralOutcome(np.zeros(count, dtype=np.int64), 1, 0)
    return SpectralOutcome(agglomerative_labels(embeddings, num_clusters=wanted), 1, 0)


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
    if count <= EDGELESS_WINDOWS:
        return _few_windows(embeddings, num_speakers, min_speakers)
    keep = wespeaker_keep(count, p)
    indices, cosines = strongest_neighbours(unit_rows(embeddings), keep)
    graph = neighbour_graph(indices, count, count <= DENSE_LIMIT,
                            cosines if edge_weights == "cosine" else None)
    return _spectral_labels(graph, normalised, embeddings, num_speakers, min_speakers,
                            max_speakers, seed, gap_ratio, keep, tight_group_count(indices))


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

    The search passes over a candidate graph that breaks into more separate groups
    than ``max_speakers`` (the first ``max_speakers + 1`` eigenvalues are all 0: no
    eigengap), or into a group of no more windows than each keeps (``p``): such a
    group is closed by the pruning alone, its windows each other's ``p`` nearest
    and no other's, and in short recordings the sparsest graphs (``p`` of 2-4) are
    made of such pairs and triples, which the search took for speakers (2 speakers
    in 10 windows came out as 7). WeSpeaker's fixed pruning (the graph of
    :func:`spectral_cluster`, with this method's Laplacian, gap ratio and edge
    weights) clusters the recording instead when

    * it has fewer than :data:`NME_MIN_WINDOWS` windows: the candidates, 2 to a
      quarter of the windows, are then graphs of at most 4 neighbours per window,
      whose spectra spread without a gap;
    * no candidate is left;
    * WeSpeaker's graph (10 neighbours per window) still breaks into more than
      ``max_speakers`` groups: there are more speakers than allowed, every graph
      that shows them is passed over, and denser ones blur them (12 speakers came
      out as 1); the count is capped and reported (see :func:`_spectral_labels`).
    """
    count = len(embeddings)
    if count <= EDGELESS_WINDOWS:
        return _few_windows(embeddings, num_speakers, min_speakers)
    dense = count <= DENSE_LIMIT
    candidates = (nme_candidates(count, max_fraction, volume) if dense else
                  nme_candidates(count, max_fraction, min(volume, 10), SPARSE_MAX_NEIGHBOURS))
    keep = wespeaker_keep(count)
    indices, cosines = strongest_neighbours(unit_rows(embeddings),
                                            int(max(candidates[-1], keep)))

    def graph_of(p: int) -> Matrix:
        first = indices.shape[1] - p   # a row's neighbours are listed weakest first
        return neighbour_graph(indices[:, first:], count, dense,
                               cosines[:, first:] if edge_weights == "cosine" else None)

    fixed = graph_of(keep)
    chosen = None
    if count >= NME_MIN_WINDOWS and (num_speakers is not None
                                     or _group_sizes(fixed).size <= max_speakers):
        chosen = _nme_choice(graph_of, candidates, count, max_speakers, seed)
    p, graph = chosen if chosen is not None else (keep, fixed)
    return _spectral_labels(graph, False, embeddings, num_speakers, min_speakers, max_speakers,
                            seed, gap_ratio, p, tight_group_count(indices))


def _group_sizes(graph: Matrix) -> np.ndarray:
    """The number of windows in each separate group of ``graph``."""
    return np.bincount(separate_groups(graph))


def _nme_choice(graph_of: Callable[[int], Matrix], candidates: np.ndarray, count: int,
                max_speakers: int, seed: int) -> Optional[Tuple[int, Matrix]]:
    """The candidate ``p`` with the smallest ``p / g_p`` and its graph, among those whose
    graph has at most ``max_speakers`` separate groups, each of more than ``p`` windows;
    None when no graph is left."""
    best = None
    for p in candidates:
        graph = graph_of(int(p))
        sizes = _group_sizes(graph)
        if sizes.size > max_speakers or sizes.min() <= p:
            continue
        lap = laplacian(graph)
        values, _ = smallest_eigenpairs(lap, min(count, max_speakers + 1), seed)
        gap = float(np.max(np.diff(values))) if len(values) > 1 else 0.0
        normalised_gap = gap / (largest_eigenvalue(lap, seed) + 1e-10)  # 0 without edges
        ratio = p / (normalised_gap + 1e-10)
        if best is None or ratio < best[0]:
            best = (ratio, int(p), graph)
    return None if best is None else best[1:]
