"""Cluster refinements that work on any labelling: merging, folding, and noise assignment.

* :func:`merge_close_clusters` and :func:`fold_small_clusters` are 3D-Speaker's
  post-processing: join the two clusters whose centroids have the highest
  cosine while it is above a threshold; give each window of a cluster with
  ``min_size`` windows or fewer to the nearest centroid of the larger clusters.
* :func:`attach_unassigned` is the step after HDBSCAN in WeSpeaker's
  UMAP clusterer: windows HDBSCAN left as noise start as clusters of their own
  and are joined greedily, highest average cosine first, while that average is
  at least ``merge_cutoff``; two clusters that each hold an HDBSCAN cluster never
  join (a cluster that took in noise keeps that protection, as in WeSpeaker);
  then clusters under ``min_size`` windows go to the large cluster of highest
  average cosine (if at least ``absorb_cutoff``).

All work on cluster sums of unit vectors, so the cost grows with the number of
clusters, not of windows squared.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from wespeaker_py.diarization.graph import unit_rows


def _centroids(unit: np.ndarray, labels: np.ndarray, names: np.ndarray) -> np.ndarray:
    return unit_rows(np.stack([unit[labels == name].mean(axis=0) for name in names]))


def merge_close_clusters(embeddings: np.ndarray, labels: np.ndarray, threshold: float,
                         max_clusters: Optional[int] = None) -> np.ndarray:
    """Join the two clusters with the closest centroids while their cosine is at least
    ``threshold`` or there are more than ``max_clusters`` clusters."""
    unit, labels = unit_rows(embeddings), labels.copy()
    while True:
        names = np.unique(labels)
        if len(names) < 2:
            return labels
        cosines = _centroids(unit, labels, names)
        cosines = np.triu(cosines @ cosines.T, 1) - np.tril(np.full((len(names),) * 2, 3.0))
        first, second = np.unravel_index(np.argmax(cosines), cosines.shape)
        too_many = max_clusters is not None and len(names) > max_clusters
        if cosines[first, second] < threshold and not too_many:
            return labels
        labels[labels == names[second]] = names[first]


def fold_small_clusters(embeddings: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Windows of clusters with at most ``min_size`` windows go to the nearest larger centroid."""
    unit, labels = unit_rows(embeddings), labels.copy()
    names, sizes = np.unique(labels, return_counts=True)
    large = names[sizes > min_size]
    small = np.isin(labels, names[sizes <= min_size])
    if not small.any() or len(large) == 0:
        return labels
    centroids = _centroids(unit, labels, large)
    labels[small] = large[np.argmax(unit[small] @ centroids.T, axis=1)]
    return labels


def attach_unassigned(embeddings: np.ndarray, labels: np.ndarray, merge_cutoff: float = 0.3,
                      min_size: int = 3, absorb_cutoff: float = 0.0) -> np.ndarray:
    """Labels without noise (``-1``), as described in the module doc."""
    unit = unit_rows(embeddings)
    labels = np.asarray(labels, dtype=np.int64)
    found = [int(name) for name in np.unique(labels) if name >= 0]
    members = [np.flatnonzero(labels == name) for name in found]
    members += [np.array([index]) for index in np.flatnonzero(labels < 0)]
    fixed = np.array([index < len(found) for index in range(len(members))])
    sums = np.stack([unit[group].sum(axis=0) for group in members]) if members else unit[:0]
    sizes = np.array([len(group) for group in members], dtype=np.float64)
    alive = np.ones(len(members), dtype=bool)
    dots = sums @ sums.T
    while alive.sum() > 1:
        average = dots / np.outer(sizes, sizes)
        allowed = np.outer(alive, alive) & ~np.outer(fixed, fixed)
        np.fill_diagonal(allowed, False)
        average[~allowed] = -np.inf
        first, second = np.unravel_index(np.argmax(average), average.shape)
        if average[first, second] < merge_cutoff:
            break
        members[first] = np.concatenate([members[first], members[second]])
        sizes[first] += sizes[second]
        fixed[first] = fixed[first] or fixed[second]
        dots[first, :] += dots[second, :]
        dots[:, first] += dots[:, second]
        alive[second] = False
    result = np.empty(len(labels), dtype=np.int64)
    live = np.flatnonzero(alive)
    large = [index for index in live if sizes[index] >= min_size]
    for index in live:
        target = index
        if sizes[index] < min_size and large:
            average = dots[index, large] / (sizes[index] * sizes[large])
            if average.max() >= absorb_cutoff:
                target = large[int(np.argmax(average))]
        result[members[index]] = target
    return result
