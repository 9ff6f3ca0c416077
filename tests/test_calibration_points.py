"""The operating points a calibration records, against error rates counted here."""
import numpy as np
import pytest

from wespeaker_py.api.calibration import fit_calibration


@pytest.mark.parametrize("seed", range(3))
def test_the_eer_point_lies_where_false_accepts_and_rejects_are_equal(seed):
    rng = np.random.default_rng(seed)
    target = rng.normal(0.3, 0.25, 1000)      # wide targets, narrow nontargets: the
    nontarget = rng.normal(0.1, 0.05, 1000)   # EER point is far from the least total error
    scores = np.concatenate([target, nontarget])
    labels = np.concatenate([np.ones(1000, bool), np.zeros(1000, bool)])
    calibration = fit_calibration(scores, labels)
    point = calibration.operating_points["eer"]
    false_accept = np.mean(nontarget > point.threshold)   # "same" above the threshold
    false_reject = np.mean(target <= point.threshold)
    one_trial = 1 / 1000
    assert abs(false_accept - false_reject) <= 2 * one_trial
    assert (point.false_accept, point.false_reject) == pytest.approx(
        (false_accept, false_reject), abs=one_trial)
    assert false_accept == pytest.approx(calibration.eer, abs=2 * one_trial)
