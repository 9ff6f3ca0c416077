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
clusters, not of windows squared: :func:`attach_unassigned` starts from one
cluster per noise window, and holds one row of averages at a time (its time
grows with those clusters squared, its memory with their number).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from wespeaker_py.utils.vectors import unit_rows


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
    sums = np.stack([unit[group].sum(axis=0) for group in members]) if members else unit[:0]
    sizes = np.array([len(group) for group in members], dtype=np.float64)
    fixed = np.arange(len(members)) < len(found)
    alive = _join_by_average(sums, sizes, fixed, members, merge_cutoff)
    live = np.flatnonzero(alive)
    large, small = live[sizes[live] >= min_size], live[sizes[live] < min_size]
    target = live.copy()
    if large.size and small.size:
        average = (sums[small] @ sums[large].T) / np.outer(sizes[small], sizes[large])
        absorbed = average.max(axis=1) >= absorb_cutoff
        target[np.isin(live, small[absorbed])] = large[np.argmax(average[absorbed], axis=1)]
    result = np.empty(len(labels), dtype=np.int64)
    for index, into in zip(live, target):
        result[members[index]] = into
    return result


def _join_by_average(sums: np.ndarray, sizes: np.ndarray, fixed: np.ndarray,
                     members: List[np.ndarray], cutoff: float) -> np.ndarray:
    """Join clusters (in place: their unit-vector ``sums``, ``sizes``, ``fixed`` flags and
    ``members``), highest average cosine first, while it is at least ``cutoff``; two
    ``fixed`` clusters never join. Returns which clusters are left.

    The greedy order is followed by a nearest-neighbour chain: from a cluster to its
    nearest, and on, until two are each other's nearest, which the greedy order
    would join too, since a joined cluster's average with a third is the
    size-weighted mean of its parts' (and the fixed rule only forbids pairs), never
    above the nearer part's. One row of averages at a time: memory grows with
    clusters x dimensions, time with clusters squared.
    """
    alive = np.ones(len(sizes), dtype=bool)
    open_ = alive.copy()    # may still join: its nearest allowed cluster is close enough
    chain: List[int] = []
    while chain or open_.any():
        if not chain:
            chain.append(int(np.argmax(open_)))
        here = chain[-1]
        average = (sums @ sums[here]) / (sizes * sizes[here])
        average[~open_ | (fixed & fixed[here])] = -np.inf
        average[here] = -np.inf
        nearest = int(np.argmax(average))
        if average[nearest] < cutoff:
            # joining others only averages their cosines with it: it stays too far from all
            open_[here] = False
            chain.pop()
            continue
        previous = chain[-2] if len(chain) > 1 else None
        if previous is None or average[previous] < average[nearest]:
            chain.append(nearest)
            continue
        keep, gone = min(here, previous), max(here, previous)
        members[keep] = np.concatenate([members[keep], members[gone]])
        sums[keep] += sums[gone]
        sizes[keep] += sizes[gone]
        fixed[keep] |= fixed[gone]
        alive[gone] = open_[gone] = False
        del chain[-2:]
    return alive
