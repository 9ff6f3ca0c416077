"""Reference definitions for the scoring tests: the per-trial form of QMF's quality features,
the in-memory mean of an embedding set, and a reader of the results table that
``bin.report`` writes."""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from wespeaker_py.io.ark import EmbeddingTable
from wespeaker_py.scoring.qmf import RATIO_FLOOR
from wespeaker_py.scoring.report import COLUMNS
from wespeaker_py.utils.tables import DataFormatError


def pair_features(first: float, second: float) -> Tuple[float, float, float, float]:
    """min, max, max - min and max / min of one quality measure of the two sides of a trial,
    the ratio's denominator kept at least ``RATIO_FLOOR`` in size with its sign: the scalar
    definition that ``qmf.pair_feature_columns`` computes on whole columns."""
    low, high = min(first, second), max(first, second)
    return low, high, high - low, high / math.copysign(max(abs(low), RATIO_FLOOR), low)


def compute_mean_vector(table: EmbeddingTable) -> np.ndarray:
    """Mean embedding of a loaded set, the oracle of
    :func:`wespeaker_py.scoring.embeddings.mean_of_embeddings` (accumulated in float64,
    returned as float32)."""
    if len(table) == 0:
        raise DataFormatError(table.source, None, "holds no embeddings to average")
    return table.matrix.mean(axis=0, dtype=np.float64).astype(np.float32)


def parse_table(text: str) -> List[Dict[str, str]]:
    """The rows of a table written by ``scoring.report.format_table`` as dicts keyed by the
    header. Empty Model/Params cells repeat the row above, as a reader of the table would.
    """
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(rows) < 2:
        raise ValueError("no markdown table found")

    def cells(line: str) -> List[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header = cells(rows[0])
    parsed: List[Dict[str, str]] = []
    for line in rows[2:]:
        values = cells(line)
        if len(values) != len(header):
            raise ValueError(f"row has {len(values)} cells, the header {len(header)}: {line}")
        row = dict(zip(header, values))
        for column in COLUMNS[:2]:
            if not row[column] and parsed:
                row[column] = parsed[-1][column]
        parsed.append(row)
    return parsed


def naive_cosine(a, b):
    """The cosine of two vectors, from its definition."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def naive_norm(score, enroll, test, cohort, top_n, mean_vec):
    """AS-Norm (S-Norm with ``top_n`` the cohort's size) of one trial, sorting the whole
    cohort score list of each side: ``(score, enroll and test magnitudes, enroll and test
    cohort means)``, the reference the batched code is checked against."""
    def side_stats(x):
        x = x - mean_vec
        cohort_scores = sorted((naive_cosine(x, c - mean_vec) for c in cohort), reverse=True)
        top = np.array(cohort_scores[:top_n])
        return top.mean(), top.std(), np.linalg.norm(x)
    e_mean, e_std, e_mag = side_stats(enroll)
    t_mean, t_std, t_mag = side_stats(test)
    normed = 0.5 * ((score - e_mean) / e_std + (score - t_mean) / t_std)
    return normed, e_mag, t_mag, e_mean, t_mean
