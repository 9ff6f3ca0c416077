"""UMAP + HDBSCAN clustering, WeSpeaker's command-line default, and calibrated agglomerative.

``umap-hdbscan`` follows ``wespeaker/diar/umap_clusterer.py``: UMAP to
``min(32, N - 2)`` dimensions (cosine metric, 16 neighbours, minimum distance
0.05, seed 2023), HDBSCAN (at least 4 windows a cluster, one cluster allowed;
scikit-learn's, >= 1.3) on that, then the noise windows attached by
:func:`~.refine.attach_unassigned`. UMAP needs ``umap-learn``
(``pip install 'wespeaker_py[diar-umap]'``). Two windows or fewer are one speaker.

``agglomerative``: average-linkage clustering of cosine distances cut at a
threshold calibrated on labelled conversations (``bench/diarization_eval.py``).
Above :data:`~.graph.DENSE_LIMIT` windows, k-means first groups them into
that many small groups and the linkage runs on the groups' centroids, so no
``N x N`` distance matrix is built.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from wespeaker_py.diarization.graph import DENSE_LIMIT
from wespeaker_py.utils.vectors import unit_rows
from wespeaker_py.diarization.options import check_method_packages
from wespeaker_py.diarization.refine import attach_unassigned


def umap_hdbscan_labels(embeddings: np.ndarray, n_neighbors: int = 16, min_dist: float = 0.05,
                        min_cluster_size: int = 4, seed: int = 2023) -> np.ndarray:
    """Labels of ``[N, D]`` embeddings by UMAP + HDBSCAN + noise attachment (module doc)."""
    count = len(embeddings)
    if count <= 2:
        return np.zeros(count, dtype=np.int64)
    check_method_packages("umap-hdbscan")
    import umap
    from sklearn.cluster import HDBSCAN
    reduced = umap.UMAP(n_components=min(32, count - 2), metric="cosine",
                        n_neighbors=min(n_neighbors, count - 1), min_dist=min_dist,
                        random_state=seed, n_jobs=1).fit_transform(unit_rows(embeddings))
    labels = HDBSCAN(min_cluster_size=min_cluster_size,
                     allow_single_cluster=True, copy=True).fit_predict(reduced)
    return attach_unassigned(embeddings, labels)


def agglomerative_labels(embeddings: np.ndarray, threshold: Optional[float] = None,
                         num_clusters: Optional[int] = None, seed: int = 0) -> np.ndarray:
    """Average-linkage labels cut at cosine distance ``threshold`` (or at ``num_clusters``).

    A row of zeros (a window without a direction) is at distance 1 from every
    other row and 0 from other zero rows: scikit-learn's cosine metric refuses
    such rows, so then the distances are passed precomputed (the same values for
    every pair of nonzero rows, so the same clusters for them).
    """
    from sklearn.cluster import AgglomerativeClustering
    if threshold is None and num_clusters is None:
        raise ValueError("agglomerative_labels needs a threshold or a number of clusters")
    count = len(embeddings)
    if count <= 1:
        return np.zeros(count, dtype=np.int64)
    unit = unit_rows(embeddings)
    groups = np.arange(count)
    if count > DENSE_LIMIT:
        from sklearn.cluster import MiniBatchKMeans
        groups = MiniBatchKMeans(n_clusters=DENSE_LIMIT, random_state=seed, n_init=1,
                                 batch_size=4096).fit_predict(unit)
        _, groups = np.unique(groups, return_inverse=True)  # k-means may leave a group empty
        sums = np.zeros((groups.max() + 1, unit.shape[1]))
        np.add.at(sums, groups, unit)
        unit = unit_rows(sums)
    if num_clusters is not None:
        cut = dict(n_clusters=max(1, min(num_clusters, len(unit))))
    else:
        cut = dict(n_clusters=None, distance_threshold=threshold)
    metric, points = "cosine", unit
    if not unit.any(axis=1).all():
        metric, points = "precomputed", cosine_distances_with_zero_rows(unit)
    model = AgglomerativeClustering(metric=metric, linkage="average", **cut)
    return model.fit_predict(points).astype(np.int64)[groups]


def cosine_distances_with_zero_rows(unit: np.ndarray) -> np.ndarray:
    """``[N, N]`` cosine distances of ``unit`` rows as SciPy's ``pdist`` gives them (what
    scikit-learn's cosine linkage uses), with 1 between a zero row and any other
    row and 0 between two zero rows."""
    from scipy.spatial.distance import pdist, squareform
    zero = ~unit.any(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        distances = squareform(pdist(unit, "cosine"))
    distances[zero, :] = 1.0
    distances[:, zero] = 1.0
    distances[np.ix_(zero, zero)] = 0.0
    return distances
