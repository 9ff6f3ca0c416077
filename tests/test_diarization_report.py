"""The DER/JER tables of wespeaker_py.diarization.report, called from Python, checked against
hand-computed scores."""
import logging
import os

import pytest

import wespeaker_py.diarization as diarization
from wespeaker_py.diarization import metrics, report
from wespeaker_py.diarization.plot import file_name
from wespeaker_py.diarization.report import (comparison_table, plot_systems, read_scored,
                                             score_system, score_table)
from wespeaker_py.diarization.rttm import write_rttm
from wespeaker_py.diarization.turns import Turn

# x talks 0-4, y 4-6; the system holds x's speaker (s) on until 5, so y's 4-5 is confused
REF = {"a": [Turn(0.0, 4.0, "x"), Turn(4.0, 6.0, "y")]}
HYP = {"a": [Turn(0.0, 5.0, "s"), Turn(5.0, 6.0, "t")]}
# By hand (x pairs with s, y with t):
#   collar 0:   confusion 1 s of 6 s scored                        -> DER 16.67 %
#   collar 0.5: no-score zones [0, 0.5], [3.5, 4.5], [5.5, 6] leave 4 s scored, of which
#               4.5-5 is confused                                  -> DER 0.5 / 4 = 12.50 %
#   JER: x~s 1 - 4/5 = 0.2, y~t 1 - 1/2 = 0.5, mean over x and y   -> 35.00 % at any collar
DER_BY_COLLAR = {0.0: 100.0 / 6, 0.5: 12.5}
JER = 35.0


def test_score_system_gives_the_hand_computed_der_per_collar_and_one_jer():
    score = score_system(REF, HYP, [0.0, 0.5])
    assert score.der_by_collar == pytest.approx(DER_BY_COLLAR)
    assert list(score.der_by_collar) == [0.0, 0.5]
    assert score.jer == pytest.approx(JER)
    with pytest.raises(ValueError, match="collars is empty"):
        score_system(REF, HYP, [])


@pytest.fixture
def rttms(tmp_path):
    ref, hyp = str(tmp_path / "ref.rttm"), str(tmp_path / "sys.rttm")
    write_rttm(ref, REF)
    write_rttm(hyp, {**HYP, "only_in_sys": [Turn(0.0, 1.0, "s")]})
    return ref, hyp


def test_comparison_table_rows_hold_the_hand_computed_scores(rttms):
    ref, hyp = rttms
    table = comparison_table(ref, {"mine": hyp, "perfect": ref}, [0.0, 0.5])
    assert table.splitlines() == [
        "| system | DER % (collar 0) | DER % (collar 0.5) | JER % | right count | too few "
        "| too many |",
        "|---|---|---|---|---|---|---|",
        "| mine | 16.67 | 12.50 | 35.00 | 100% (1/1) | 0 | 0 |",
        "| perfect | 0.00 | 0.00 | 0.00 | 100% (1/1) | 0 | 0 |"]


def test_score_table_pools_each_condition(rttms):
    ref, hyp = rttms
    table, pooled = score_table(ref, hyp, [0.0, 0.5], per_file=True)
    assert list(pooled) == [(0.0, True), (0.0, False), (0.5, True), (0.5, False)]
    for (collar, _), score in pooled.items():   # no overlapped speech: excluding it is moot
        assert score.der == pytest.approx(DER_BY_COLLAR[collar])
        assert score.jer == pytest.approx(JER)
    assert "| a | 0.5 | scored | 0.00 | 0.00 | 12.50 | 12.50 | 35.00 |" in table.splitlines()
    assert "| all (1) | 0 | excluded | 0.00 | 0.00 | 16.67 | 16.67 | 35.00 |" in table.splitlines()


def test_read_scored_leaves_out_and_names_the_system_s_other_recordings(rttms, caplog):
    ref, hyp = rttms
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.diarization.report"):
        scored = read_scored(ref, hyp)
    assert sorted(scored.hyp) == ["a"] and scored.regions is None
    assert "1 recordings are not in" in caplog.text and "only_in_sys" in caplog.text


def test_plot_systems_draws_each_system_in_its_own_folder(rttms, tmp_path):
    ref, hyp = rttms
    plots = str(tmp_path / "plots")
    drawn = plot_systems(ref, {"mine/v2": hyp, "perfect": ref}, plots)
    # the reference's recording and the system's left-out one are not drawn
    assert drawn == {os.path.join(plots, file_name("mine/v2")): 1,
                     os.path.join(plots, "perfect"): 1}
    for folder in drawn:
        assert os.listdir(folder) == ["a.png"]


def test_score_conditions_scores_each_condition_as_score_recordings_with_one_jer_each(
        monkeypatch):
    ref = {**REF, "b": [Turn(0.0, 3.0, "x"), Turn(2.0, 4.0, "y")]}   # b has overlap
    hyp = {**HYP, "b": [Turn(0.0, 4.0, "s")]}
    conditions = [(0.0, True), (0.0, False), (0.5, True), (0.5, False)]
    alone = {(collar, overlap): metrics.score_recordings(ref, hyp, collar, not overlap)
             for collar, overlap in conditions}
    calls = []
    counted = metrics.speaker_jaccard
    monkeypatch.setattr(metrics, "speaker_jaccard",
                        lambda *args: calls.append(args[0]) or counted(*args))
    scores = metrics.score_conditions(ref, hyp, conditions)
    assert len(calls) == 2   # once per recording, not once per recording and condition
    assert list(scores) == conditions
    for condition, (files, pooled) in scores.items():
        expected_files, expected_pooled = alone[condition]
        assert (pooled.der, pooled.jer) == (expected_pooled.der, expected_pooled.jer)
        assert {name: (score.der, score.jer) for name, score in files.items()} == {
            name: (score.der, score.jer) for name, score in expected_files.items()}


def test_the_report_functions_are_exported_by_the_diarization_package():
    public = [name for name in dir(report) if not name.startswith("_")
              and getattr(getattr(report, name), "__module__", None) == report.__name__]
    assert public and set(public) <= set(diarization.__all__)
    for name in public:
        assert getattr(diarization, name) is getattr(report, name)
