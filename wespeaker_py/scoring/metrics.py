"""Verification metrics: DET operating points, EER and normalised minDCF.

Operating points are taken only between distinct score values: a threshold
cannot split trials of equal score, so tied scores move the miss and false-alarm
rates together (tie-correct). A trial is accepted when its score is above the
threshold. All functions sort once and work on cumulative counts.

``compute_eer`` returns a fraction in [0, 1] (multiply by 100 for the percent
figure the recipes print). It is the point where the straight line between the
two operating points that bracket ``P_miss = P_fa`` crosses that diagonal, the
same interpolation WeSpeaker's metric uses.

Labels (:func:`target_labels`) are booleans, the numbers 1 (target) and 0 (nontarget),
or the words of the trial lists (``target``/``nontarget``); anything else, such as the
-1/+1 of other toolkits, is refused rather than read as "nonzero is a target".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from wespeaker_py.scoring.trials import parse_label

# distinct label values a refusal lists
_LABELS_SHOWN = 6


@dataclass
class DetPoints:
    """Operating points in order of increasing threshold.

    ``thresholds[k]``: trials scoring above it are accepted (the first point,
    threshold ``-inf``, accepts everything); ``fnr[k]`` the miss rate and
    ``fpr[k]`` the false-alarm rate there.
    """

    thresholds: np.ndarray
    fnr: np.ndarray
    fpr: np.ndarray


def target_labels(labels: Union[np.ndarray, Sequence]) -> np.ndarray:
    """``labels`` as a flat boolean array, True for targets: booleans, the numbers 1 and 0,
    or the trial lists' words (:func:`~wespeaker_py.scoring.trials.parse_label`). Anything
    else is a ValueError naming the distinct values given."""
    array = np.asarray(labels).ravel()
    if array.dtype == object:
        array = np.asarray(array.tolist())   # numbers, booleans or words held as objects
    if array.dtype == bool:
        return array
    if array.dtype.kind in "iuf":
        targets = array == 1
        if np.all(targets | (array == 0)):
            return targets
    elif array.dtype.kind in "US":
        words, inverse = np.unique(array.astype(str), return_inverse=True)
        parsed = [parse_label(word) for word in words]
        if None not in parsed:
            return np.array(parsed, dtype=bool)[inverse.ravel()]
    try:
        seen = np.unique(array).tolist()
    except TypeError:   # values of kinds that do not sort together
        seen = list(dict.fromkeys(array.tolist()))
    shown = ", ".join(repr(value) for value in seen[:_LABELS_SHOWN])
    more = f", ... ({len(seen)} distinct values)" if len(seen) > _LABELS_SHOWN else ""
    raise ValueError(f"labels must be 1/True for targets and 0/False for nontargets (or "
                     f"'target'/'nontarget'), got {shown}{more}")


def _check(scores: np.ndarray, labels: np.ndarray):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = target_labels(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.shape[0]} scores but {labels.shape[0]} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    num_targets = int(labels.sum())
    if num_targets == 0 or num_targets == labels.size:
        raise ValueError("metrics need both target and nontarget trials "
                         f"(got {num_targets} targets of {labels.size})")
    return scores, labels


def compute_det_points(scores: np.ndarray, labels: np.ndarray) -> DetPoints:
    """Miss and false-alarm rates at every distinct threshold (see :class:`DetPoints`)."""
    scores, labels = _check(scores, labels)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    # last index of each run of equal scores: the only places a threshold can sit
    group_end = np.flatnonzero(np.diff(sorted_scores) != 0)
    group_end = np.append(group_end, sorted_scores.size - 1)
    targets_at_or_below = np.cumsum(sorted_labels)[group_end]
    nontargets_at_or_below = (group_end + 1) - targets_at_or_below
    num_targets = sorted_labels.sum()
    num_nontargets = sorted_labels.size - num_targets
    fnr = np.concatenate([[0.0], targets_at_or_below / num_targets])
    fpr = np.concatenate([[1.0], 1.0 - nontargets_at_or_below / num_nontargets])
    thresholds = np.concatenate([[-np.inf], sorted_scores[group_end]])
    return DetPoints(thresholds=thresholds, fnr=fnr, fpr=fpr)


def eer_from_det(points: DetPoints) -> float:
    """EER (fraction) from DET points, interpolating between the bracketing points."""
    difference = points.fnr - points.fpr  # non-decreasing from -1 to +1
    upper = int(np.argmax(difference >= 0))
    if difference[upper] == 0:
        return float(points.fnr[upper])
    lower = upper - 1
    step = difference[upper] - difference[lower]
    fraction = -difference[lower] / step
    return float(points.fnr[lower] + fraction * (points.fnr[upper] - points.fnr[lower]))


def min_dcf_from_det(points: DetPoints, p_target: float = 0.01, c_miss: float = 1,
                     c_fa: float = 1) -> float:
    """Normalised minimum detection cost from DET points."""
    if not 0 < p_target < 1:
        raise ValueError(f"p_target={p_target} must lie strictly between 0 and 1")
    for name, value in (("c_miss", c_miss), ("c_fa", c_fa)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} must be a finite number above 0")
    cost = c_miss * p_target * points.fnr + c_fa * (1 - p_target) * points.fpr
    # the cost of the best trivial system (accept all or reject all) normalises it;
    # both trivial systems are among the points (first and last)
    default_cost = min(c_miss * p_target, c_fa * (1 - p_target))
    return float(cost.min() / default_cost)


def compute_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate as a fraction in [0, 1]; ``labels`` are 1/True for targets."""
    return eer_from_det(compute_det_points(scores, labels))


def compute_min_dcf(scores: np.ndarray, labels: np.ndarray, p_target: float = 0.01,
                    c_miss: float = 1, c_fa: float = 1) -> float:
    """Normalised minDCF: min over thresholds of ``C_miss P_tgt P_miss + C_fa (1-P_tgt) P_fa``
    divided by ``min(C_miss P_tgt, C_fa (1-P_tgt))`` (the VoxCeleb/NIST definition)."""
    return min_dcf_from_det(compute_det_points(scores, labels), p_target, c_miss, c_fa)
