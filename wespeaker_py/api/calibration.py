"""Score calibration of a model: cosine score -> log-likelihood ratio, stored as JSON.

Fitted by logistic regression on labelled trial scores (the Cllr-minimising
linear model of :mod:`wespeaker_py.scoring.qmf`, with the score as its only
feature). ``calibration.json`` also keeps the trial set's EER and two
operating points on the raw score: the EER point and the point of 1 % false
acceptance. A trial is accepted when its score is above a threshold, as in
:mod:`wespeaker_py.scoring.metrics`. It records the ``identity`` of the model
whose scores it was fitted on (:mod:`wespeaker_py.runtime.identity`); a file
without one (written by an older version) is used with a warning. When some of the
trials' audio came below the model's rate, it also records those rates and the band
fill each went through (:mod:`wespeaker_py.frontend.band_fill`), since scores made
through another fill (or none) follow another distribution, and the mean vector
subtracted before each cosine (``mean_vec``: a digest, "" for none;
:func:`~wespeaker_py.runtime.identity.mean_vec_digest`).

A fit needs at least :data:`MIN_TRIALS_PER_CLASS` target and as many nontarget
trials: with fewer, the EER and thresholds mean nothing (two trials give 0 %).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from wespeaker_py.errors import WespeakerError
# unused here: kept importable from this module, where it was defined until io.layout
from wespeaker_py.io.layout import CALIBRATION_NAME  # noqa: F401
from wespeaker_py.runtime.identity import check_recorded_identity, check_recorded_mean
from wespeaker_py.scoring.metrics import (DetPoints, compute_det_points, eer_from_det,
                                          target_labels)
from wespeaker_py.scoring.qmf import cllr, train_calibration
from wespeaker_py.utils.atomic_files import write_json_atomically

FORMAT = "wespeaker_py score calibration"
VERSION = 1
# the operating points fit_calibration measures, by name: the EER point (the default a
# threshold decision takes) and the point of FALSE_ACCEPT_TARGET false acceptance
OPERATING_POINTS = ("eer", "fa1")
FALSE_ACCEPT_TARGET = 0.01
# fewest target trials, and fewest nontarget trials, a calibration is fitted on
MIN_TRIALS_PER_CLASS = 10


class CalibrationMissingError(WespeakerError, FileNotFoundError):
    """A calibration file named explicitly (``--calibration``) that does not exist."""


class TooFewTrialsError(WespeakerError, ValueError):
    """Fewer labelled trials of a class than :data:`MIN_TRIALS_PER_CLASS`."""


@dataclass
class OperatingPoint:
    """A score threshold with the error rates it gave on the calibration trials."""

    threshold: float
    false_accept: float
    false_reject: float


@dataclass
class Calibration:
    """``llr = weight * score + bias``, with the operating points of the fitting trials."""

    weight: float
    bias: float
    eer: float
    cllr: float
    num_target: int
    num_nontarget: int
    operating_points: Dict[str, OperatingPoint] = field(default_factory=dict)
    trials: str = ""
    model: str = ""
    identity: str = ""
    # rates below the model's that some of the trials' audio came at -> digest of the band
    # fill it went through ("": none)
    band_fills: Dict[int, str] = field(default_factory=dict)
    # digest of the mean vector subtracted ("": none; None: a file older than the record)
    mean_vec: Optional[str] = ""

    def llr(self, score: float) -> float:
        """Calibrated log-likelihood ratio (natural log) of a score."""
        return self.weight * float(score) + self.bias

    def threshold(self, operating_point: str) -> float:
        if operating_point not in self.operating_points:
            raise WespeakerError(f"operating point {operating_point!r} is not in the "
                                 f"calibration (known: {', '.join(self.operating_points)})")
        return self.operating_points[operating_point].threshold


def check_prior(prior: float) -> None:
    """Raise unless ``0 < prior < 1``."""
    if not 0 < prior < 1:
        raise WespeakerError(f"prior must lie strictly between 0 and 1, got {prior}")


def check_trial_counts(num_target: int, num_nontarget: int, trials: str = "",
                       cause: str = "") -> None:
    """:class:`TooFewTrialsError` unless both counts reach :data:`MIN_TRIALS_PER_CLASS`;
    ``cause`` (when given) ends its message, saying why the counts are so low."""
    if min(num_target, num_nontarget) < MIN_TRIALS_PER_CLASS:
        raise TooFewTrialsError(
            f"cannot calibrate on {trials or 'these trials'}: {num_target} target and "
            f"{num_nontarget} nontarget trial(s); at least {MIN_TRIALS_PER_CLASS} of each "
            f"are needed" + (f"; {cause}" if cause else ""))


def probability(llr: float, prior: float) -> float:
    """Posterior probability of "same speaker" for a log-likelihood ratio at ``prior``
    (NaN for a NaN ``llr``: it is no evidence of different speakers)."""
    check_prior(prior)
    log_odds = llr + math.log(prior / (1 - prior))
    # below -700 exp overflows; a NaN fails the comparison and stays NaN through the formula
    return 0.0 if log_odds < -700 else 1.0 / (1.0 + math.exp(-log_odds))


def _point(det: DetPoints, index: int) -> OperatingPoint:
    return OperatingPoint(float(det.thresholds[index]), float(det.fpr[index]),
                          float(det.fnr[index]))


def _cannot_calibrate(trials: str, error: ValueError) -> WespeakerError:
    return WespeakerError(f"cannot calibrate on {trials or 'these trials'}: {error}")


def fit_calibration(scores: np.ndarray, labels: np.ndarray, trials: str = "",
                    model: str = "", identity: str = "",
                    band_fills: Optional[Dict[int, str]] = None,
                    mean_vec: str = "") -> Calibration:
    """Fit the score-to-LLR map and measure the operating points on ``scores``/``labels``
    (at least :data:`MIN_TRIALS_PER_CLASS` of each label; labels as
    :func:`~wespeaker_py.scoring.metrics.target_labels` takes them); ``band_fills``,
    ``mean_vec``: see :class:`Calibration`."""
    scores = np.asarray(scores, dtype=np.float64)
    try:
        labels = target_labels(labels)
    except ValueError as error:
        raise _cannot_calibrate(trials, error) from None
    check_trial_counts(int(labels.sum()), int((~labels).sum()), trials)
    try:
        det = compute_det_points(scores, labels)
        linear = train_calibration(scores[:, None], labels)
    except ValueError as error:
        raise _cannot_calibrate(trials, error) from None
    llrs = linear(scores[:, None])
    # the EER point: the threshold where miss and false-alarm rates are closest;
    # 1% FA: the lowest threshold accepting at most 1% of nontargets
    eer_index = int(np.argmin(np.abs(det.fnr - det.fpr)))
    fa_index = int(np.argmax(det.fpr <= FALSE_ACCEPT_TARGET))
    return Calibration(weight=float(linear.weight[0]), bias=float(linear.bias),
                       eer=eer_from_det(det), cllr=cllr(llrs[labels], llrs[~labels]),
                       num_target=int(labels.sum()), num_nontarget=int((~labels).sum()),
                       operating_points=dict(zip(OPERATING_POINTS, (_point(det, eer_index),
                                                                    _point(det, fa_index)))),
                       trials=trials, model=model, identity=identity,
                       band_fills=dict(band_fills or {}), mean_vec=mean_vec)


def save_calibration(path: str, calibration: Calibration) -> None:
    """Write ``calibration`` as JSON, atomically."""
    payload = {"format": FORMAT, "version": VERSION, **asdict(calibration)}
    write_json_atomically(path, payload, indent=2, sort_keys=True, final_newline=True)


def load_calibration(path: str) -> Calibration:
    """Read a file written by :func:`save_calibration`; a bad file names what is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            payload: Dict[str, Any] = json.load(handle)
    except FileNotFoundError:
        raise WespeakerError(f"calibration file {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise WespeakerError(f"{path}: not a calibration file ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WespeakerError(f"{path}: not a calibration file (no \"format\": \"{FORMAT}\")")
    try:
        points = {name: OperatingPoint(**point)
                  for name, point in payload["operating_points"].items()}
        calibration = Calibration(weight=float(payload["weight"]), bias=float(payload["bias"]),
                                  eer=float(payload["eer"]), cllr=float(payload["cllr"]),
                                  num_target=int(payload["num_target"]),
                                  num_nontarget=int(payload["num_nontarget"]),
                                  operating_points=points, trials=str(payload.get("trials", "")),
                                  model=str(payload.get("model", "")),
                                  identity=str(payload.get("identity", "")),
                                  band_fills={int(rate): str(digest) for rate, digest
                                              in payload.get("band_fills", {}).items()},
                                  mean_vec=(None if payload.get("mean_vec") is None
                                            else str(payload["mean_vec"])))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise WespeakerError(f"{path}: calibration file lacks or mistypes {error}") from None
    for name in ("weight", "bias"):
        if not math.isfinite(getattr(calibration, name)):
            # json reads NaN and Infinity; such a fit would decide every trial alike
            raise WespeakerError(f"{path}: calibration {name} is "
                                 f"{getattr(calibration, name)}, not a finite number")
    return calibration


def read_optional_calibration(path: Optional[str], identity: str, force: bool = False,
                              mean_vec: str = "", required: bool = False
                              ) -> Optional[Calibration]:
    """The calibration at ``path`` for the model of ``identity`` subtracting the mean vector
    of digest ``mean_vec``, or None when there is no such file (``required``: a
    :class:`CalibrationMissingError` instead). One fitted with another model or mean
    vector is an error unless ``force`` (see
    :func:`~wespeaker_py.runtime.identity.check_recorded_identity`)."""
    if path is None or not os.path.exists(path):
        if required:
            raise CalibrationMissingError(
                f"calibration file {path} does not exist; fit it with 'wespeaker-py "
                f"calibrate' (model.calibrate), or leave --calibration (calibration=) out to "
                f"use the one beside the model")
        return None
    calibration = load_calibration(path)
    check_recorded_identity(path, "calibration", calibration.identity, identity, force)
    check_recorded_mean(path, "calibration", calibration.mean_vec, mean_vec, force)
    return calibration
