"""Neighbour graphs of window embeddings and the small end of their Laplacian spectrum.

Everything here scales to long recordings: nothing holds an ``N x N`` matrix
when ``N`` exceeds :data:`DENSE_LIMIT` (4 h of speech is about 19k windows; a
dense float64 matrix of that size is 2.9 GB). Each row's strongest neighbours
are found block by block (``block x N`` cosines at a time), the graph is a
sparse matrix, and its smallest Laplacian eigenvalues come from LOBPCG
block iterations (ARPACK's Lanczos took over 300 s at 4 h, restarting in the
packed bulk of the spectrum). Up to ``DENSE_LIMIT`` windows the same graph is a
dense array and the spectrum comes from LAPACK, which is exact and faster at that size.
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple, Union

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg

from wespeaker_py.diarization.options import ClusteringOptionError

DENSE_LIMIT = 3000  # windows; 3000^2 float64 is 72 MB
# a cosine-weighted edge's least weight: a kept neighbour with a cosine at or below 0 stays
# linked, so weighting never cuts a window off that the binary graph connects
MIN_EDGE_WEIGHT = 0.01
LOBPCG_ITERATIONS = 100  # 1 h of windows: the count is settled by 50, 100 takes 3 s
Matrix = Union[np.ndarray, scipy.sparse.csr_matrix]


def strongest_neighbours(unit: np.ndarray, keep: int, block: int = 1024
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """Indices ``[N, keep]`` and cosines of each row's ``keep`` most similar rows, weakest first.

    A row's own index is among them (its cosine is 1). Rows tied at the cut
    are chosen arbitrarily (as WeSpeaker's sort does); real embeddings have no ties.
    """
    count = len(unit)
    keep = max(1, min(keep, count))
    indices = np.empty((count, keep), dtype=np.int64)
    cosines = np.empty((count, keep), dtype=np.float64)
    for begin in range(0, count, block):
        sims = unit[begin:begin + block] @ unit.T
        strongest = np.argpartition(sims, count - keep, axis=1)[:, count - keep:]
        values = np.take_along_axis(sims, strongest, axis=1)
        order = np.argsort(values, axis=1, kind="stable")
        indices[begin:begin + block] = np.take_along_axis(strongest, order, axis=1)
        cosines[begin:begin + block] = np.take_along_axis(values, order, axis=1)
    return indices, cosines


def neighbour_graph(indices: np.ndarray, count: int, dense: bool,
                    cosines: Optional[np.ndarray] = None) -> Matrix:
    """``0.5 (B + B^T)`` with a zero diagonal, where ``B[i, j]`` is set for each kept neighbour.

    ``B[i, j]`` is 1 (a binarised graph, as WeSpeaker prunes) or, with ``cosines``
    (``[N, keep]``, aligned with ``indices``), the neighbour's cosine, at least
    :data:`MIN_EDGE_WEIGHT`: a cosine-weighted graph, whose strongest edges count
    most and which links the same windows. Dense (an array) or sparse (CSR); the
    two hold the same values.
    """
    rows = np.repeat(np.arange(count), indices.shape[1])
    values = (np.ones(rows.size, dtype=np.float64) if cosines is None else
              np.clip(np.asarray(cosines, dtype=np.float64).ravel(), MIN_EDGE_WEIGHT, None))
    cols = indices.ravel()
    if dense:
        graph = np.zeros((count, count), dtype=np.float64)
        graph[rows, cols] = values
        graph = 0.5 * (graph + graph.T)
        np.fill_diagonal(graph, 0.0)
        return graph
    off = rows != cols   # a row's own entry only ever lands on the diagonal, which is zeroed
    graph = scipy.sparse.csr_matrix((values[off], (rows[off], cols[off])), shape=(count, count))
    return (0.5 * (graph + graph.T)).tocsr()


def separate_groups(graph: Matrix) -> np.ndarray:
    """Each window's connected component of ``graph`` (dense or sparse), numbered from 0.

    A Laplacian has one zero eigenvalue per component, so a graph with more
    components than the eigenvalues looked at shows no eigengap among them.
    """
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]


def laplacian(graph: Matrix, normalised: bool = False) -> Matrix:
    """The unnormalised Laplacian ``D - A`` (``D``: row sums of ``|A|``).

    ``normalised``: the symmetric normalised one, ``D^-1/2 (D - A) D^-1/2``
    (a row without edges stays zero), whose eigenvalues lie in ``[0, 2]``.
    """
    sparse = scipy.sparse.issparse(graph)
    degrees = np.asarray(abs(graph).sum(axis=1)).ravel()
    lap = (scipy.sparse.diags(degrees) - graph).tocsr() if sparse else np.diag(degrees) - graph
    if not normalised:
        return lap
    scale = np.divide(1.0, np.sqrt(degrees), out=np.zeros_like(degrees), where=degrees > 0)
    if sparse:
        return (scipy.sparse.diags(scale) @ lap @ scipy.sparse.diags(scale)).tocsr()
    return scale[:, None] * lap * scale[None, :]


def smallest_eigenpairs(matrix: Matrix, count: int, seed: int = 0
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues (ascending) of a symmetric PSD matrix and their vectors.

    Dense: LAPACK on the wanted index range. Sparse: LOBPCG on the whole block
    of ``count`` vectors, preconditioned by the inverse diagonal (the degrees of
    a Laplacian), started from seeded random vectors. At most
    :data:`LOBPCG_ITERATIONS` iterations: the near-zero eigenvalues that carry
    the speakers converge first and to full precision; past the eigengap the
    values sit in a tightly packed bulk, where they are right to a few digits
    long before their vectors converge, which is all the eigengap needs.
    LOBPCG cannot give a fifth of the spectrum or more: a sparse matrix asked
    for that many goes dense up to :data:`DENSE_LIMIT` rows, and above it is a
    :class:`~wespeaker_py.diarization.options.ClusteringOptionError` (the
    module's promise: no ``N x N`` matrix there).
    """
    size = matrix.shape[0]
    count = max(1, min(count, size))
    if scipy.sparse.issparse(matrix) and size <= 5 * count:
        # LOBPCG needs a block well under a fifth of the size; LAPACK needs the dense matrix
        if size > DENSE_LIMIT:
            raise ClusteringOptionError(
                f"{count} eigenvectors of {size} windows (for that many speakers) need a dense "
                f"{size} x {size} matrix; more than {DENSE_LIMIT} windows are clustered sparsely, "
                f"for fewer than a fifth as many speakers: lower num_speakers or max_speakers")
        matrix = matrix.toarray()
    if not scipy.sparse.issparse(matrix):
        try:
            return scipy.linalg.eigh(matrix, subset_by_index=[0, count - 1])
        except np.linalg.LinAlgError:
            # LAPACK's dsyevr can fail where the range ends inside a run of equal
            # eigenvalues (a graph of many alike groups); the whole spectrum does not
            values, vectors = scipy.linalg.eigh(matrix)
            return values[:count], vectors[:, :count]
    diagonal = matrix.diagonal()
    inverse = np.divide(1.0, diagonal, out=np.ones_like(diagonal), where=diagonal > 0)
    start = np.random.default_rng(seed).standard_normal((size, count))
    with warnings.catch_warnings():
        # stopping at the iteration cap with the bulk unconverged is expected (see above)
        warnings.simplefilter("ignore", UserWarning)
        values, vectors = scipy.sparse.linalg.lobpcg(
            matrix, start, M=scipy.sparse.diags(inverse), largest=False, tol=1e-6,
            maxiter=LOBPCG_ITERATIONS)
    order = np.argsort(values)
    return values[order], vectors[:, order]


def largest_eigenvalue(matrix: Matrix, seed: int = 0) -> float:
    """The largest eigenvalue of a symmetric matrix (dense or sparse), by Lanczos iterations."""
    size = matrix.shape[0]
    if not abs(matrix).sum():
        return 0.0
    if size <= 3:
        dense = matrix.toarray() if scipy.sparse.issparse(matrix) else matrix
        return float(np.linalg.eigvalsh(dense)[-1])
    start = np.random.default_rng(seed).standard_normal(size)
    return float(scipy.sparse.linalg.eigsh(matrix, k=1, which="LA", v0=start, tol=1e-6)[0][0])
