"""Verification decisions: a score, and the model's calibration if it has one, turned into a
"same speaker?" answer by the threshold rule or the Bayes rule; and the candidates of an
identification, each with the answer verification would give it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Set, Tuple

from wespeaker_py.api.calibration import (OPERATING_POINTS, Calibration, check_prior,
                                          probability)
from wespeaker_py.errors import WespeakerError
from wespeaker_py.runtime.identity import ModelMismatchError
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

# the decision threshold on the cosine score when a model has no calibration
UNCALIBRATED_THRESHOLD = 0.5
# the prior that P(same) is shown at when none is given (the decision is a threshold's then)
NO_PRIOR = 0.5
# how far outside [-1, 1] a score may lie by float rounding and still be a cosine
COSINE_TOLERANCE = 1e-6
# the mismatches (their messages) that a ranking without a rule has warned about
_WARNED_RANKINGS: Set[str] = set()


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

    @property
    def verdict(self) -> str:
        """The decision in words: ``same speaker`` or ``different speakers``."""
        return "same speaker" if self.decision else "different speakers"

    def describe_rule(self) -> str:
        """The rule that decided, in words (e.g. ``threshold rule: score > 0.8573, the eer
        operating point``)."""
        if not self.calibrated:
            return (f"UNCALIBRATED decision: score > {self.threshold:g}; run 'wespeaker-py "
                    f"calibrate' for a trustworthy one")
        if self.rule == "bayes":
            return (f"Bayes rule at prior {self.prior:g}: same speaker when P(same) > 0.5, "
                    f"i.e. LLR > {bayes_llr_threshold(self.prior):.3f}")
        return (f"threshold rule: score > {self.threshold:.4f}, the {self.operating_point} "
                f"operating point")

    def describe(self) -> str:
        """One line for people, naming the rule that decided."""
        if not self.calibrated:
            return f"score {self.score:.4f}: {self.verdict} ({self.describe_rule()})"
        return (f"score {self.score:.4f}, LLR {self.llr:.3f}, P(same | prior {self.prior:g}) "
                f"= {self.probability:.3f}: {self.verdict} ({self.describe_rule()})")


class Candidate(tuple):
    """One enrolled speaker of an identification: the ``(speaker, score)`` pair (cosine
    after mean subtraction) it has always been, so ``for name, score in ranking`` reads
    it, with :attr:`verification`: the :class:`Verification` that verifying the recording
    against that speaker gives (its ``llr``, ``decision`` and rule), or None when no
    decision was made (a model without calibration, and no threshold given)."""

    verification: Optional[Verification]

    def __new__(cls, speaker: str, score: float,
                verification: Optional[Verification] = None) -> "Candidate":
        candidate = super().__new__(cls, (speaker, score))
        candidate.verification = verification
        return candidate

    def __getnewargs__(self) -> Tuple[str, float, Optional[Verification]]:
        # what pickle and copy rebuild it from (a plain tuple's would drop the verification)
        return self.speaker, self.score, self.verification

    def __repr__(self) -> str:
        return f"Candidate({self.speaker!r}, {self.score!r}, verification={self.verification!r})"

    @property
    def speaker(self) -> str:
        """The enrolled speaker's name."""
        return self[0]

    @property
    def score(self) -> float:
        """The cosine of the recording with the speaker's mean embedding, in [-1, 1]."""
        return self[1]


def bayes_llr_threshold(prior: float) -> float:
    """The LLR above which "same speaker" is the more probable answer at ``prior``:
    log((1 - prior) / prior)."""
    return math.log((1.0 - prior) / prior)


def check_decision_rule(prior: Optional[float], operating_point: Optional[str],
                        threshold: Optional[float]) -> None:
    """A valid ``prior`` and ``operating_point`` (one of :data:`OPERATING_POINTS`), if any,
    and at most one way to decide: a prior (the Bayes rule), or an operating point or
    threshold (the threshold rule)."""
    if operating_point is not None and operating_point not in OPERATING_POINTS:
        raise WespeakerError(f"an operating point (--operating_point, operating_point=) is "
                             f"one of {', '.join(OPERATING_POINTS)}, got {operating_point!r}")
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


def calibration_for_ranking(read: Callable[[], Optional[Calibration]],
                            rule_given: bool) -> Optional[Calibration]:
    """The calibration that ``read`` gives, to decide each candidate of an identification
    with. One that does not fit the model (``read`` raises :class:`ModelMismatchError`) stays
    an error when ``rule_given`` (a prior, operating point or threshold asked for a
    decision); a plain ranking goes on without decisions (None), as without a calibration,
    with one warning per file and reason."""
    try:
        return read()
    except ModelMismatchError as error:
        if rule_given:
            raise
        if str(error) not in _WARNED_RANKINGS:
            _WARNED_RANKINGS.add(str(error))
            logger.warning("%s; until then identify ranks the speakers without deciding "
                           "(each candidate's verification is None)", error)
        return None


def check_score(score: float) -> None:
    """Raise unless ``score`` is a cosine: a finite number in [-1, 1] (give or take
    :data:`COSINE_TOLERANCE`). A NaN, say from a vector without direction, is no evidence
    of different speakers."""
    if not -1.0 - COSINE_TOLERANCE <= score <= 1.0 + COSINE_TOLERANCE:   # NaN fails too
        raise WespeakerError(f"a score to decide on is a cosine: it must be a finite number "
                             f"between -1 and 1, got {score}")


def decide_score(score: float, calibration: Optional[Calibration], prior: Optional[float],
                 operating_point: Optional[str], threshold: Optional[float]) -> Verification:
    """The :class:`Verification` of ``score`` (a cosine, see :func:`check_score`) under
    ``calibration`` (None: uncalibrated), by the rule that ``prior``, ``operating_point`` or
    ``threshold`` names, once :func:`check_decision_rule` and
    :func:`check_rule_has_calibration` have passed them."""
    check_score(score)
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
        operating_point = operating_point or OPERATING_POINTS[0]
        threshold = calibration.threshold(operating_point)
    else:
        operating_point = "given"
    return Verification(score=score, decision=score > threshold, threshold=float(threshold),
                        operating_point=operating_point, calibrated=True, llr=llr,
                        probability=probability(llr, NO_PRIOR), prior=NO_PRIOR)
