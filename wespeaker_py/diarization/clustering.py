"""Grouping window embeddings by speaker: one interface over four methods.

:func:`cluster_windows` (labels plus what the count estimate did) and
:func:`cluster` (labels only) take ``[N, D]`` embeddings and a
:class:`ClusterOptions`:

* ``spectral``: WeSpeaker's spectral clustering, reproduced exactly
  (:mod:`.spectral`);
* ``spectral-norm``: the same neighbours, each edge weighted by its cosine, with the
  symmetric normalised Laplacian, counted to the last eigengap at least ``gap_ratio``
  (default 0.8) of the largest (:mod:`.spectral`; ``ClusterOptions.resolved_gap_ratio``,
  ``resolved_edge_weights``);
* ``nme-sc``: spectral clustering with the pruning chosen per recording by the
  normalised maximum eigengap (:mod:`.spectral`);
* ``umap-hdbscan``: WeSpeaker's command-line default (:mod:`.density`; needs umap-learn);
* ``agglomerative``: average linkage cut at a calibrated cosine distance (:mod:`.density`).

When the number of speakers is estimated, 3D-Speaker's post-processing can
follow (:mod:`.refine`): clusters of at most ``min_cluster_size`` windows are
folded into the nearest larger one, then clusters whose centroids have a
cosine of at least ``merge_threshold`` are joined. With the count given, they
(and ``ahc_threshold``) would do nothing, and are refused.

The number of speakers is kept within ``[min_speakers, max_speakers]`` and
never exceeds the number of embeddings. A method that found more than
``max_speakers`` reports ``capped``, so the caller can say so.

Defaults (``bench/results_diarization_clustering.md``, 24 synthetic
conversations of 2-6 unseen speakers with the mini recipe's model):
see :data:`DEFAULT_METHOD` and :class:`ClusterOptions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from wespeaker_py.diarization.density import agglomerative_labels, umap_hdbscan_labels
from wespeaker_py.diarization.options import DEFAULT_METHOD, ClusterOptions, speaker_bounds
from wespeaker_py.diarization.refine import fold_small_clusters, merge_close_clusters
from wespeaker_py.diarization.spectral import nme_spectral_cluster, spectral_cluster


@dataclass
class Clustering:
    """Labels ``0..k-1`` (by first appearance), and the count before it was capped.

    ``at_least``: ``found`` is a lower bound (a spectral method found that many
    groups of windows with no edge between them).
    """

    labels: np.ndarray
    found: int
    capped: bool
    at_least: bool = False

    @property
    def num_speakers(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0


def _estimate(embeddings: np.ndarray, options: ClusterOptions, num_speakers: Optional[int],
              min_speakers: int, max_speakers: int) -> Tuple[np.ndarray, int, bool]:
    """Labels, the count the method found (before any refinement or cap), and whether that
    count is a lower bound."""
    method, seed = options.method, options.seed
    if method in ("spectral", "spectral-norm"):
        outcome = spectral_cluster(embeddings, num_speakers, min_speakers, max_speakers,
                                   seed=seed, normalised=method == "spectral-norm",
                                   gap_ratio=options.resolved_gap_ratio(),
                                   edge_weights=options.resolved_edge_weights())
        return outcome.labels, outcome.estimated, outcome.at_least
    if method == "nme-sc":
        outcome = nme_spectral_cluster(embeddings, num_speakers, min_speakers, max_speakers,
                                       seed=seed, gap_ratio=options.resolved_gap_ratio(),
                                       edge_weights=options.resolved_edge_weights())
        return outcome.labels, outcome.estimated, outcome.at_least
    if method == "agglomerative":
        labels = agglomerative_labels(embeddings, options.resolved_ahc_threshold(), num_speakers,
                                      seed)
    else:
        labels = umap_hdbscan_labels(embeddings)
    return labels, len(np.unique(labels)), False


def cluster_windows(embeddings: np.ndarray, options: ClusterOptions = ClusterOptions(),
                    num_speakers: Optional[int] = None, min_speakers: Optional[int] = None,
                    max_speakers: Optional[int] = None) -> Clustering:
    """Cluster ``[N, D]`` embeddings (module doc); ``num_speakers`` fixes the count, else it
    is estimated within ``[min_speakers, max_speakers]`` (None: the defaults,
    :func:`~wespeaker_py.diarization.options.speaker_bounds`).

    Options that cannot apply raise
    :class:`~wespeaker_py.diarization.options.ClusteringOptionError` naming them
    (:meth:`ClusterOptions.check`): e.g. ``ahc_threshold`` for a method other than
    ``agglomerative``, or a refinement of the estimated count with ``num_speakers`` given.
    """
    options.check(num_speakers, min_speakers, max_speakers)
    min_speakers, max_speakers = speaker_bounds(min_speakers, max_speakers)
    embeddings = np.asarray(embeddings, dtype=np.float64)
    count = len(embeddings)
    if count <= 1:
        return Clustering(np.zeros(count, dtype=np.int64), count, False)
    labels, found, at_least = _estimate(embeddings, options, num_speakers, min_speakers,
                                        max_speakers)
    if num_speakers is None:
        refined = labels
        if options.min_cluster_size > 0:
            refined = fold_small_clusters(embeddings, refined, options.min_cluster_size)
        if options.merge_threshold is not None:
            refined = merge_close_clusters(embeddings, refined, options.merge_threshold)
        if len(np.unique(refined)) >= min(min_speakers, count):
            labels = refined
        labels = _count_within(embeddings, labels, min_speakers, max_speakers, options.seed)
    else:  # umap-hdbscan finds its own count: bring it to the one given
        labels = _count_within(embeddings, labels, num_speakers, num_speakers, options.seed)
    capped = num_speakers is None and found > max_speakers
    return Clustering(relabel_by_first_appearance(labels), found, capped, capped and at_least)


def _count_within(embeddings: np.ndarray, labels: np.ndarray, low: int, high: int,
                  seed: int) -> np.ndarray:
    """``labels`` with at most ``high`` clusters (the closest merged) and at least ``low``
    (or one per window; spectral clustering with that count otherwise)."""
    if len(np.unique(labels)) > high:
        labels = merge_close_clusters(embeddings, labels, np.inf, high)
    if len(np.unique(labels)) < min(low, len(embeddings)):
        labels = spectral_cluster(embeddings, min(low, len(embeddings)), seed=seed).labels
    return labels


def cluster(embeddings: np.ndarray, method: str = DEFAULT_METHOD,
            num_speakers: Optional[int] = None, min_speakers: Optional[int] = None,
            max_speakers: Optional[int] = None) -> np.ndarray:
    """Speaker labels for ``[N, D]`` embeddings with ``method``'s default settings."""
    options = ClusterOptions(method=method)
    return cluster_windows(embeddings, options, num_speakers, min_speakers, max_speakers).labels


def relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Rename labels so that the first one seen is 0, the next new one 1, and so on."""
    mapping = {}
    for label in labels:
        mapping.setdefault(int(label), len(mapping))
    return np.array([mapping[int(label)] for label in labels], dtype=np.int64)
