"""EER, minDCF and DET points against brute force over thresholds and hand-computed cases."""
import numpy as np
import pytest

from wespeaker_py.scoring.metrics import (compute_det_points, compute_eer, compute_min_dcf,
                                          target_labels)


def brute_force_points(scores, labels):
    """Miss / false-alarm rates for every threshold (accept score > t), one loop each."""
    tgt = scores[labels == 1]
    non = scores[labels == 0]
    thresholds = [-np.inf] + sorted(set(scores.tolist()))
    fnr = [np.mean(tgt <= t) for t in thresholds]
    fpr = [np.mean(non > t) for t in thresholds]
    return np.array(thresholds), np.array(fnr), np.array(fpr)


def brute_force_eer(scores, labels):
    _, fnr, fpr = brute_force_points(scores, labels)
    for k in range(len(fnr)):
        if fnr[k] == fpr[k]:
            return fnr[k]
        if fnr[k] > fpr[k]:
            # straight line between the points k-1 and k, intersected with fnr == fpr
            x0, y0, x1, y1 = fpr[k - 1], fnr[k - 1], fpr[k], fnr[k]
            t = (y0 - x0) / ((x1 - x0) - (y1 - y0))
            return y0 + t * (y1 - y0)
    raise AssertionError("no crossing")


def brute_force_min_dcf(scores, labels, p_target, c_miss, c_fa):
    tgt = scores[labels == 1]
    non = scores[labels == 0]
    best = np.inf
    for t in [-np.inf, np.inf] + scores.tolist():
        cost = c_miss * p_target * np.mean(tgt <= t) + c_fa * (1 - p_target) * np.mean(non > t)
        best = min(best, cost)
    return best / min(c_miss * p_target, c_fa * (1 - p_target))


def random_trials(rng, n, tied):
    labels = (rng.random(n) < 0.3).astype(int)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + 1.5 * labels
    if tied:
        scores = np.round(scores * 2) / 2  # a handful of distinct values, many ties
    return scores, labels


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force(seed, tied):
    rng = np.random.default_rng(seed)
    scores, labels = random_trials(rng, 300, tied)
    assert compute_eer(scores, labels) == pytest.approx(brute_force_eer(scores, labels), abs=1e-12)
    # the last two: C_fa (1 - P) below C_miss P, the normaliser's other term
    costs = [(0.01, 1, 1), (0.05, 1, 1), (0.3, 2, 1), (0.001, 1, 10), (0.9, 1, 1), (0.01, 100, 1)]
    for p_target, c_miss, c_fa in costs:
        assert compute_min_dcf(scores, labels, p_target, c_miss, c_fa) == pytest.approx(
            brute_force_min_dcf(scores, labels, p_target, c_miss, c_fa), abs=1e-12)
    points = compute_det_points(scores, labels)
    thresholds, fnr, fpr = brute_force_points(scores, labels)
    np.testing.assert_array_equal(points.thresholds, thresholds)
    np.testing.assert_allclose(points.fnr, fnr, atol=1e-12)
    np.testing.assert_allclose(points.fpr, fpr, atol=1e-12)


def test_eer_lies_between_error_bounds_of_real_thresholds():
    rng = np.random.default_rng(7)
    scores, labels = random_trials(rng, 2000, tied=True)
    _, fnr, fpr = brute_force_points(scores, labels)
    eer = compute_eer(scores, labels)
    # the interpolated EER lies between the best "both errors below" and the best
    # "both errors above" that real thresholds reach
    assert np.max(np.minimum(fnr, fpr)) - 1e-12 <= eer <= np.min(np.maximum(fnr, fpr)) + 1e-12


def test_untied_scores_match_untied_cumulative_definition():
    """Without ties the result equals the per-trial cumulative (WeSpeaker-style) EER."""
    rng = np.random.default_rng(3)
    scores, labels = random_trials(rng, 500, tied=False)
    order = np.argsort(scores)
    sorted_labels = labels[order]
    fnr = np.cumsum(sorted_labels) / sorted_labels.sum()
    fpr = 1 - np.cumsum(1 - sorted_labels) / (1 - sorted_labels).sum()
    diff = fnr - fpr
    x1 = np.flatnonzero(diff >= 0)[0]
    x2 = np.flatnonzero(diff < 0)[-1]
    a = (fnr[x1] - fpr[x1]) / (fpr[x2] - fpr[x1] - (fnr[x2] - fnr[x1]))
    assert compute_eer(scores, labels) == pytest.approx(fnr[x1] + a * (fnr[x2] - fnr[x1]))


def test_hand_computed_cases():
    # separable: EER 0, minDCF 0
    assert compute_eer([0.1, 0.35, 0.4, 0.8], [0, 0, 1, 1]) == 0.0
    assert compute_min_dcf([0.1, 0.35, 0.4, 0.8], [0, 0, 1, 1]) == 0.0
    # N .1, T .2, N .3, T .4: threshold 0.2 gives 1/2 misses and 1/2 false alarms
    assert compute_eer([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]) == pytest.approx(0.5)
    # N .1, N .2, T .3, N .4: points (fpr, fnr) = (1/3, 0) and (1/3, 1) bracket the
    # diagonal; the segment between them is vertical at fpr = 1/3
    assert compute_eer([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 0]) == pytest.approx(1 / 3)
    # all scores tied: only accept-all / reject-all exist, EER is the midpoint
    assert compute_eer([0.5] * 4, [0, 1, 0, 1]) == pytest.approx(0.5)
    # p_target 0.5: best threshold 0.35 -> one false alarm of three, no miss:
    # cost 0.5 * 1/3, normalised by 0.5
    assert compute_min_dcf([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 0], p_target=0.5) == \
        pytest.approx(1 / 3)
    # p_target 0.01: rejecting all costs 0.01 (normalised 1); accepting above 0.35
    # costs 0.99 / 3 -> minDCF = 1
    assert compute_min_dcf([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 0]) == pytest.approx(1.0)


def test_ties_across_classes_do_not_create_unreachable_points():
    # a target and a nontarget share the score 0.5: no threshold separates them
    points = compute_det_points([0.5, 0.5, 0.9, 0.1], [1, 0, 1, 0])
    assert len(points.thresholds) == 4  # -inf, 0.1, 0.5, 0.9
    np.testing.assert_allclose(points.fnr, [0, 0, 0.5, 1.0])
    np.testing.assert_allclose(points.fpr, [1, 0.5, 0, 0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="both target and nontarget"):
        compute_eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        compute_eer([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="labels"):
        compute_eer([0.1, 0.2, 0.3], [1, 0])


@pytest.mark.parametrize("labels", [[True, True, False, False], [1, 1, 0, 0], [1.0, 1.0, 0.0, 0.0],
                                    ["target", "target", "nontarget", "nontarget"],
                                    ["Target", "tgt", "imp", "nontgt"],
                                    np.array([1, 1, 0, 0], dtype=object)])
def test_labels_are_booleans_zero_one_or_the_trial_lists_words(labels):
    # the words once all counted as targets: "got 4 targets of 4"
    np.testing.assert_array_equal(target_labels(labels), [True, True, False, False])
    assert compute_eer([0.9, 0.8, 0.3, 0.1], labels) == 0.0


@pytest.mark.parametrize("labels, seen", [([1, 1, -1, -1], "-1, 1"),
                                          ([-1, -1, 1, 1], "-1, 1"),
                                          (["1", "1", "0", "0"], "'0', '1'"),
                                          ([2, 0, 1, 0], "0, 1, 2"),
                                          ([np.nan, 0, 1, 0], "0.0, 1.0, nan"),
                                          ([None, 0, 1, 0], "None, 0, 1"),
                                          (list(range(10)), r"0, 1, 2, 3, 4, 5, \.\.\. "
                                                            r"\(10 distinct values\)")])
def test_other_labels_are_refused_naming_the_values_seen(labels, seen):
    with pytest.raises(ValueError, match=rf"labels must be 1/True for targets and 0/False for "
                                         rf"nontargets \(or 'target'/'nontarget'\), got {seen}$"):
        compute_eer(np.linspace(0, 1, len(labels)), labels)


@pytest.mark.parametrize("costs, named", [({"c_fa": 0}, "c_fa=0"), ({"c_miss": -1}, "c_miss=-1"),
                                          ({"c_fa": np.nan}, "c_fa=nan"),
                                          ({"c_miss": np.inf}, "c_miss=inf")])
def test_min_dcf_refuses_costs_that_are_not_finite_and_positive(costs, named):
    # these once gave minDCF nan, or 1.000 for a negative cost
    with pytest.raises(ValueError, match=f"{named} must be a finite number above 0"):
        compute_min_dcf([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], **costs)


def test_compute_metrics_passes_each_cost_to_its_place(tmp_path, capsys):
    from wespeaker_py.bin import compute_metrics
    rng = np.random.default_rng(7)
    scores, labels = random_trials(rng, 400, False)
    path = tmp_path / "trials.score"
    path.write_text("".join(f"e{i} t{i} {score:.6f} {'target' if label else 'nontarget'}\n"
                            for i, (score, label) in enumerate(zip(scores, labels))))
    scores = np.array([float(f"{score:.6f}") for score in scores])   # as the file holds them
    for p_target, c_miss, c_fa in [(0.01, 10, 1), (0.05, 1, 10)]:
        [(_, _, min_dcf)] = compute_metrics.main([
            "--p_target", str(p_target), "--c_miss", str(c_miss), "--c_fa", str(c_fa),
            str(path)])
        assert min_dcf == pytest.approx(
            brute_force_min_dcf(scores, labels, p_target, c_miss, c_fa), abs=1e-12)
