"""Verification decisions: a score, and the model's calibration if it has one, turned into a
"same speaker?" answer by the threshold rule or the Bayes rule."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from wespeaker_py.api.calibration import Calibration, check_prior, probability
from wespeaker_py.errors import WespeakerError

# the decision threshold on the cosine score when a model has no calibration
UNCALIBRATED_THRESHOLD = 0.5
# the prior that P(same) is shown at when none is given (the decision is a threshold's then)
NO_PRIOR = 0.5


@dataclass
class Verification:
    """The answer to "same speaker?" for one pair of recordings.

    ``llr`` (natural-log likelihood ratio) and ``probability`` (of the same
    speaker at ``prior``; 0.5 when none was given) are None without a calibration;
    ``decision`` then compares the raw score with ``threshold`` and ``calibrated``
    is False. ``rule`` says what decided: ``threshold`` (the score above
    ``threshold``, the one at ``operating_point``), or ``bayes`` (a prior was given
    to a calibrated model: same speaker when ``probability`` > 0.5, i.e. ``llr`` >
    log((1 - prior) / prior); ``threshold`` and ``operating_point`` are None).
    """

    score: float
    decision: bool
    threshold: Optional[float]
    operating_point: Optional[str]
    calibrated: bool
    llr: Optional[float] = None
    probability: Optional[float] = None
    prior: Optional[float] = None
    rule: str = "threshold"

    def describe(self) -> str:
        """One line for people, naming the rule that decided."""
        verdict = "same speaker" if self.decision else "different speakers"
        if not self.calibrated:
            return (f"score {self.score:.4f}: {verdict} (UNCALIBRATED decision: score > "
                    f"{self.threshold:g}; run 'wespeaker-py calibrate' for a trustworthy "
                    f"one)")
        found = (f"score {self.score:.4f}, LLR {self.llr:.3f}, P(same | prior {self.prior:g}) "
                 f"= {self.probability:.3f}: {verdict}")
        if self.rule == "bayes":
            return (f"{found} (Bayes rule at prior {self.prior:g}: same speaker when "
                    f"P(same) > 0.5, i.e. LLR > {bayes_llr_threshold(self.prior):.3f})")
        return (f"{found} (threshold rule: score > {self.threshold:.4f}, the "
                f"{self.operating_point} operating point)")


def bayes_llr_threshold(prior: float) -> float:
    """The LLR above which "same speaker" is the more probable answer at ``prior``:
    log((1 - prior) / prior)."""
    return math.log((1.0 - prior) / prior)


def check_decision_rule(prior: Optional[float], operating_point: Optional[str],
                        threshold: Optional[float]) -> None:
    """A valid ``prior`` (if any), and at most one way to decide: a prior (the Bayes rule),
    or an operating point or threshold (the threshold rule)."""
    if threshold is not None and not -1.0 <= threshold <= 1.0:   # NaN fails too
        raise WespeakerError(f"a threshold (--threshold, threshold=) is a cosine score: it "
                             f"must lie between -1 and 1, got {threshold}")
    if operating_point is not None and threshold is not None:
        raise WespeakerError("an operating point (--operating_point, operating_point=) and a "
                             "threshold (--threshold, threshold=) each set the score "
                             "threshold: give one of them")
    if prior is None:
        return
    check_prior(prior)
    if operating_point is not None or threshold is not None:
        raise WespeakerError("a prior (--prior, prior=) decides by the Bayes rule, an "
                             "operating point or threshold (--operating_point, --threshold) "
                             "by a score threshold: give one of them")


def check_rule_has_calibration(calibration: Optional[Calibration], prior: Optional[float],
                               operating_point: Optional[str], source: str) -> None:
    """A ``prior`` or ``operating_point`` means nothing without a calibration: refuse them
    (a raw-score ``threshold``, or none, still decides, marked uncalibrated)."""
    if calibration is not None:
        return
    for what, value in (("a prior (--prior, prior=)", prior),
                        ("an operating point (--operating_point, operating_point=)",
                         operating_point)):
        if value is not None:
            raise WespeakerError(f"{what} needs a calibration, and the model {source} has "
                                 f"none: run 'wespeaker-py calibrate' on labelled trials, or "
                                 f"decide with a raw-score threshold (--threshold)")


def decide_score(score: float, calibration: Optional[Calibration], prior: Optional[float],
                 operating_point: Optional[str], threshold: Optional[float]) -> Verification:
    """The :class:`Verification` of ``score`` under ``calibration`` (None: uncalibrated), by
    the rule that ``prior``, ``operating_point`` or ``threshold`` names, once
    :func:`check_decision_rule` and :func:`check_rule_has_calibration` have passed them."""
    if calibration is None:
        point = "default" if threshold is None else "given"
        threshold = UNCALIBRATED_THRESHOLD if threshold is None else float(threshold)
        return Verification(score=score, decision=score > threshold, threshold=threshold,
                            operating_point=point, calibrated=False)
    llr = calibration.llr(score)
    if prior is not None:
        return Verification(score=score, decision=llr > bayes_llr_threshold(prior),
                            threshold=None, operating_point=None, calibrated=True,
                            llr=llr, probability=probability(llr, prior), prior=prior,
                            rule="bayes")
    if threshold is None:
        operating_point = operating_point or "eer"
        threshold = calibration.threshold(operating_point)
    else:
        operating_point = "given"
    return Verification(score=score, decision=score > threshold, threshold=float(threshold),
                        operating_point=operating_point, calibrated=True, llr=llr,
                        probability=probability(llr, NO_PRIOR), prior=NO_PRIOR)
