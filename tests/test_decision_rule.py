"""The operating points a decision may name: api.calibration.OPERATING_POINTS, which the
threshold rule checks and the command line offers; the scores a decision is made on, and the
probability it reports."""
import math

import pytest

from wespeaker_py.api.calibration import (OPERATING_POINTS, Calibration, OperatingPoint,
                                          load_calibration, probability, save_calibration)
from wespeaker_py.api.decisions import check_decision_rule, decide_score
from wespeaker_py.cli.main import build_parser
from wespeaker_py.errors import WespeakerError


def test_an_operating_point_the_calibration_does_not_measure_is_refused_at_once():
    # before anything is embedded, with or without a calibration, naming those there are
    with pytest.raises(WespeakerError, match=r"--operating_point, operating_point=\) is one "
                                             r"of eer, fa1, got 'fa5'"):
        check_decision_rule(None, "fa5", None)
    for point in OPERATING_POINTS:
        check_decision_rule(None, point, None)


@pytest.mark.parametrize("command", ["verify", "identify"])
def test_the_command_line_offers_the_operating_points(command):
    subcommands = build_parser()._subparsers._group_actions[0].choices
    (flag,) = [action for action in subcommands[command]._actions
               if action.dest == "operating_point"]
    assert tuple(flag.choices) == OPERATING_POINTS


def _calibration():
    points = {"eer": OperatingPoint(0.5, 0.1, 0.1), "fa1": OperatingPoint(0.7, 0.01, 0.3)}
    return Calibration(weight=10.0, bias=-5.0, eer=0.1, cllr=0.5, num_target=10,
                       num_nontarget=10, operating_points=points)


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, 2.0, -3.0, 1.00001])
@pytest.mark.parametrize("calibrated, rule", [(False, {}), (False, {"threshold": 0.3}),
                                              (True, {}), (True, {"prior": 0.01}),
                                              (True, {"threshold": 0.3})])
def test_a_score_that_is_no_cosine_is_refused_not_decided(score, calibrated, rule):
    # a NaN score (of a vector without direction, say) once read as "different speakers"
    # with P(same) 0.0, and 2.0 as a certain "same speaker"
    calibration = _calibration() if calibrated else None
    with pytest.raises(WespeakerError, match=rf"a score to decide on is a cosine: it must be "
                                             rf"a finite number between -1 and 1, got {score}"):
        decide_score(score, calibration, rule.get("prior"), None, rule.get("threshold"))


def test_a_cosine_rounded_just_past_its_range_is_still_decided():
    assert decide_score(1.0 + 1e-7, _calibration(), None, None, None).decision
    assert not decide_score(-1.0 - 1e-7, None, None, None, None).decision


def test_the_probability_of_a_nan_llr_is_nan_not_zero():
    assert math.isnan(probability(math.nan, 0.01))
    assert probability(-1000.0, 0.5) == 0.0 and probability(math.inf, 0.5) == 1.0
    assert probability(0.0, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("name, value", [("weight", math.nan), ("bias", math.inf),
                                         ("bias", -math.inf)])
def test_a_calibration_file_with_a_weight_or_bias_that_is_no_number_is_refused(
        tmp_path, name, value):
    # json writes and reads NaN and Infinity; such a fit would decide every trial the same way
    path = str(tmp_path / "calibration.json")
    save_calibration(path, _calibration())
    assert load_calibration(path).weight == 10.0
    calibration = _calibration()
    setattr(calibration, name, value)
    save_calibration(path, calibration)
    with pytest.raises(WespeakerError, match=rf"calibration.json: calibration {name} is "
                                             rf"-?(nan|inf), not a finite number"):
        load_calibration(path)


@pytest.mark.parametrize("prior", [0.01, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("step", [-0.1, -0.01, 0.01, 0.1])
def test_the_bayes_rule_decides_same_where_the_posterior_is_above_one_half(prior, step):
    # weight 10, bias 0: the LLR is ten times the score; scores just either side of the
    # prior's threshold, log((1 - prior) / prior), against the posterior's definition
    score = math.log((1 - prior) / prior) / 10 + step   # within [-1, 1] for these priors
    llr = score * 10
    calibration = Calibration(weight=10.0, bias=0.0, eer=0.1, cllr=0.5, num_target=10,
                              num_nontarget=10)
    posterior = 1 / (1 + math.exp(-(llr + math.log(prior / (1 - prior)))))
    verified = decide_score(score, calibration, prior, None, None)
    assert verified.llr == pytest.approx(llr)
    assert verified.probability == pytest.approx(posterior)
    assert verified.decision == (posterior > 0.5)
